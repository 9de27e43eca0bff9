"""Head training over a device mesh: examples data-parallel, heads or patterns model-parallel.

A mesh has two axes. "examples" splits the rows of X, of the labels and of the sign patterns,
and "model" splits the polynomial heads of a multi-class fit or the ReLU sign patterns. This
module only places arrays. The solvers stay the same jitted functions: XLA's sharding
propagation (GSPMD) turns their sums over examples into per-device partial sums and one
all-reduce, so there is no communication code here. On several hosts, call
`jax.distributed.initialize()` first; `jax.devices()` then spans every host.
"""

from typing import Any, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

EXAMPLES = "examples"
MODEL = "model"


def make_mesh(examples: Optional[int] = None, model: int = 1, devices=None) -> Mesh:
  """A mesh of `examples` × `model` devices with axes ("examples", "model").

  Args:
    examples: devices along the examples (default: all the devices that `model` leaves).
    model: devices along the heads or patterns.
    devices: the devices to use (default `jax.devices()`, every host's).

  Returns:
    The `jax.sharding.Mesh`.

  Raises:
    ValueError: if the sizes are not positive or need more devices than there are.
  """
  devices = list(jax.devices() if devices is None else devices)
  if not (isinstance(model, (int, np.integer)) and model >= 1):
    raise ValueError(f"model must be an integer >= 1, got {model!r}")
  examples = len(devices) // model if examples is None else examples
  if not (isinstance(examples, (int, np.integer)) and examples >= 1):
    raise ValueError(f"examples must be an integer >= 1, got {examples!r}")
  if examples * model > len(devices):
    raise ValueError(f"a mesh of examples={examples} × model={model} needs "
                     f"{examples * model} devices; there are {len(devices)}")
  grid = np.asarray(devices[:examples * model], dtype=object).reshape(examples, model)
  return Mesh(grid, (EXAMPLES, MODEL))


def check_mesh(mesh: Optional[Mesh]) -> None:
  """Raises ValueError unless `mesh` is None or a cvxjax mesh (see `make_mesh`)."""
  if mesh is None:
    return
  if not isinstance(mesh, Mesh) or set(mesh.axis_names) != {EXAMPLES, MODEL}:
    raise ValueError(f"mesh must be a jax.sharding.Mesh with axes ({EXAMPLES!r}, {MODEL!r}) "
                     f"(see cvxjax.sharding.make_mesh), got {mesh!r}")


def padding(n: int, mesh: Optional[Mesh]) -> int:
  """Rows to append to n examples so that the mesh's example shards split them evenly.

  jax.Array shardings must divide their axis, and real n rarely does (ImageNet's 1,281,167 over
  8 devices). The solvers take padding rows that count nowhere: zero inputs with label 0 for
  the polynomial heads (`poly.objective`), zero inputs, patterns and targets for the ReLU heads
  (`relu.counted`).

  Args:
    n: the number of examples.
    mesh: a mesh from `make_mesh`, or None (no padding).

  Returns:
    The number of rows to append, in [0, mesh.shape["examples"]).
  """
  return 0 if mesh is None else -n % mesh.shape[EXAMPLES]


def pad(array, rows: int, axis: int = 0):
  """`array` (NumPy) with `rows` zero rows appended along `axis`."""
  widths = [(0, 0)] * np.ndim(array)
  widths[axis] = (0, rows)
  return np.pad(np.asarray(array), widths)


def spec(shape: tuple, mesh: Mesh, *, examples: int, model: Optional[int]) -> P:
  """The partition of one array: its first axis of length `examples` over "examples", its first
  other axis of length `model` over "model" when that axis divides evenly, the rest replicated.

  Args:
    shape: the array's shape.
    mesh: a mesh from `make_mesh`.
    examples: n, the number of examples.
    model: the length of the model-parallel axis (heads C, or patterns P), or None.
  """
  names = [None] * len(shape)
  if examples in shape:
    names[shape.index(examples)] = EXAMPLES
  for axis, size in enumerate(shape):
    if (model is not None and size == model and names[axis] is None
        and size % mesh.shape[MODEL] == 0):
      names[axis] = MODEL
      break
  return P(*names)


def place(tree: Any, mesh: Optional[Mesh], *, examples: int, model: Optional[int] = None) -> Any:
  """Every array leaf of `tree` put on `mesh` by `spec` (unchanged when mesh is None).

  Args:
    tree: a pytree of arrays (inputs, or a solver state).
    mesh: a mesh from `make_mesh`, or None.
    examples: n, the number of examples.
    model: the length of the model-parallel axis, or None.

  Returns:
    The same tree, sharded.
  """
  if mesh is None:
    return tree
  def put(leaf):
    shape = np.shape(leaf)
    sharding = NamedSharding(mesh, spec(shape, mesh, examples=examples, model=model))
    return jax.device_put(leaf, sharding)
  return jax.tree.map(put, tree)
