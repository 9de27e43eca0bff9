"""One interface for every head, the linear and nonconvex heads, and saving heads safely.

A head is a classifier on features: `poly.PolyHead` (polynomial activation), `relu.ReluHead`
(convex ReLU or gated ReLU), `NetworkHead` (the nonconvex two-layer ReLU head that
`cvxjax.train.head.fit` trains) and `LinearHead` (a last linear layer). Each is a pytree (arrays
as leaves, settings static: it passes through `jax.jit` and `jax.tree.map`) with the methods of
`Head`, so code that evaluates, attacks or certifies a head never asks which kind it is:

    radii = head.certified_radius(Z, y, backbone_lipschitz=L)
    head.summary()  # {"objective": ..., "gap": ..., "violation": ..., "steps": ..., "width": ...}

`save_head(path, head)` writes a head as one zip file: `description.json` (format, version, kind,
static settings, each array's shape and dtype) and one `.npy` file per numeric array;
`load_head(path)` reads back only that JSON and numeric arrays (`numpy.lib.format.read_array`,
which refuses object arrays), so loading a file runs no code from it and no class is looked up
by a name the file gives. A file that is not a saved head, is of another kind or version, or
whose arrays are missing, extra, of other shapes or dtypes, or truncated is refused with a
ValueError naming the file.
"""

import dataclasses
import json
import os
import zipfile
from typing import Any, Callable, Dict, Optional, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from cvxjax import certify, poly, relu
from cvxjax.core.activations import Quadratic


@runtime_checkable
class Head(Protocol):
  """What every head offers; X holds features, shape (n, d).

  `summary()` returns {"objective", "gap", "violation", "steps", "width"}; an entry is None where
  it does not exist for the head, never inf or NaN:
    objective: the training objective the head's solver minimised (None: not reported, as for
      the nonconvex and linear heads).
    gap: a certified bound on objective − global optimum (None: no certificate of optimality,
      as for the nonconvex and linear heads, or a convex head whose solver computes none).
    violation: the largest violation of the solver's constraints (None: the head's solver keeps
      its iterates feasible, as the polynomial ones do, or there are none).
    steps: solver steps taken (None: not reported).
    width: hidden neurons of the two-layer network the head is (None: a linear head).
  """

  def scores(self, X: jnp.ndarray) -> jnp.ndarray:
    """(n, d) -> (n,) scores of a binary head or (n, C) of a multi-class one."""

  def predict(self, X: jnp.ndarray) -> jnp.ndarray:
    """(n, d) -> (n,) labels: ±1 for a binary head, 0..C−1 otherwise."""

  def certified_radius(self, X, y, *, backbone_lipschitz: float = 1.0) -> jnp.ndarray:
    """(n,) ℓ₂ radii certified around each row of X (0 where misclassified), divided by the
    Lipschitz constant of the map from the input to the features."""

  def summary(self) -> Dict[str, Any]:
    """The numbers reported beside the head's accuracies (see the class docstring)."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LinearHead:
  """A last linear layer f(x) = xᵀW + b on features, as Flax's Dense stores it.

  Attributes:
    kernel: (d, C) weights W.
    bias: (C,) biases b.
  """

  kernel: jnp.ndarray
  bias: jnp.ndarray

  def scores(self, X: jnp.ndarray) -> jnp.ndarray:
    """(n, d) -> (n, C) logits."""
    return X @ self.kernel + self.bias

  def predict(self, X: jnp.ndarray) -> jnp.ndarray:
    """(n, d) -> (n,) classes argmax_c f_c."""
    return jnp.argmax(self.scores(X), axis=-1)

  def certified_radius(self, X, y, *, backbone_lipschitz: float = 1.0) -> jnp.ndarray:
    """(n,) the exact pairwise radius of the linear layer (`certify.linear_certified_radius`)."""
    return certify.linear_certified_radius(self.kernel, self.bias, X, y,
                                           backbone_lipschitz=backbone_lipschitz)

  def summary(self) -> Dict[str, Any]:
    """Nothing trained it here and it has no hidden layer: every entry is None."""
    return dict(objective=None, gap=None, violation=None, steps=None, width=None)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NetworkHead:
  """The nonconvex two-layer head relu(x W1 + b1) W2 + b2, d → H → C.

  The layout of `PreActResNet18`'s own head (`cvxjax.train.head.from_model_params`) and of
  `cvxjax.train.head.fit`'s result: `NetworkHead(**params)`.

  Attributes:
    W1: (d, H) first-layer weights. b1: (H,) hidden biases.
    W2: (H, C) output weights. b2: (C,) output biases.
  """

  W1: jnp.ndarray
  b1: jnp.ndarray
  W2: jnp.ndarray
  b2: jnp.ndarray

  def scores(self, X: jnp.ndarray) -> jnp.ndarray:
    """(n, d) -> (n, C) logits."""
    return jax.nn.relu(X @ self.W1 + self.b1) @ self.W2 + self.b2

  def predict(self, X: jnp.ndarray) -> jnp.ndarray:
    """(n, d) -> (n,) classes argmax_c f_c."""
    return jnp.argmax(self.scores(X), axis=-1)

  def certified_radius(self, X, y, *, backbone_lipschitz: float = 1.0) -> jnp.ndarray:
    """(n,) radii of the Lipschitz margin bound (`certify.lipschitz_certified_radius`)."""
    return certify.lipschitz_certified_radius(self.W1, self.W2, X, y, b1=self.b1, b2=self.b2,
                                              backbone_lipschitz=backbone_lipschitz)

  def summary(self) -> Dict[str, Any]:
    """Only the width: nothing certifies the optimality of a nonconvex fit."""
    return dict(objective=None, gap=None, violation=None, steps=None,
                width=int(self.W1.shape[1]))


# The kinds a saved head may have, as its description names them.
KINDS = {"poly": poly.PolyHead, "relu": relu.ReluHead, "network": NetworkHead,
         "linear": LinearHead}
FORMAT = "cvxjax.head"
VERSION = 1
_DESCRIPTION = "description.json"


def kind(head: Head) -> str:
  """The name of a head's class in saved files and results: "poly", "relu", "network", "linear".

  Raises:
    ValueError: if `head` is none of `KINDS`.
  """
  for name, cls in KINDS.items():
    if type(head) is cls:
      return name
  raise ValueError(f"head must be one of {[c.__name__ for c in KINDS.values()]}, "
                   f"got {type(head).__name__}")


def _static(field: dataclasses.Field) -> bool:
  """Whether a head's field is a setting (static in its pytree) rather than an array."""
  return bool(field.metadata.get("static", False))


def _boolean(value) -> bool:
  if not isinstance(value, bool):
    raise ValueError(f"expected true or false, got {value!r}")
  return value


def _number(value) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ValueError(f"expected a number, got {value!r}")
  return float(value)


def _one_of(*allowed) -> Callable[[Any], Any]:
  def check(value):
    if value not in allowed or isinstance(value, bool):
      raise ValueError(f"expected one of {allowed}, got {value!r}")
    return value
  return check


def _activation(value) -> Quadratic:
  if not isinstance(value, list) or len(value) != 3:
    raise ValueError(f"expected the coefficients [a, b, c], got {value!r}")
  return Quadratic(*(_number(v) for v in value))


# JSON value -> setting, for every static field of the heads in KINDS.
_SETTINGS = {"activation": _activation, "binary": _boolean, "bias": _boolean, "eps": _number,
             "p": _one_of(*relu.NORMS), "loss": _one_of(*relu.LOSSES, relu.ONE_VS_ALL)}


def _json_value(value):
  """A static setting as JSON: NamedTuples (the activation) as lists."""
  return list(value) if isinstance(value, tuple) else value


def save_head(path: str, head: Head) -> str:
  """Writes `head` to `path` (a zip file; written whole and then renamed, so never truncated).

  Args:
    path: the file to write (its directory must exist).
    head: a head of one of `KINDS`; its arrays are copied to the host.

  Returns:
    The path written.

  Raises:
    ValueError: if `head` is of no kind in `KINDS` or holds a non-numeric array.
  """
  name = kind(head)
  arrays, settings = {}, {}
  for field in dataclasses.fields(head):
    value = getattr(head, field.name)
    if _static(field):
      settings[field.name] = _json_value(value)
    elif value is not None:
      arrays[field.name] = np.asarray(jax.device_get(value))
      if not np.issubdtype(arrays[field.name].dtype, np.number):
        raise ValueError(f"head.{field.name} must be a numeric array, got dtype "
                         f"{arrays[field.name].dtype}")
    else:
      arrays[field.name] = None
  description = {"format": FORMAT, "version": VERSION, "kind": name, "settings": settings,
                 "arrays": {k: None if a is None else {"shape": list(a.shape), "dtype": a.dtype.str}
                            for k, a in arrays.items()}}
  partial = path + ".partial"
  with zipfile.ZipFile(partial, "w") as archive:
    archive.writestr(_DESCRIPTION, json.dumps(description, indent=1, allow_nan=False))
    for k, a in arrays.items():
      if a is not None:
        with archive.open(f"{k}.npy", "w") as f:
          np.lib.format.write_array(f, a)
  os.replace(partial, path)
  return path


def _read_description(archive: zipfile.ZipFile, path: str) -> Dict[str, Any]:
  try:
    description = json.loads(archive.read(_DESCRIPTION))
  except KeyError:
    raise ValueError(f"{path} is not a saved head: it holds no {_DESCRIPTION}") from None
  except zipfile.BadZipFile as err:
    raise ValueError(f"{path}: {_DESCRIPTION} cannot be read ({err})") from None
  except ValueError as err:
    raise ValueError(f"{path} is not a saved head: {_DESCRIPTION} is not JSON ({err})") from None
  if not isinstance(description, dict) or description.get("format") != FORMAT:
    raise ValueError(f"{path} is not a saved head: its format is not {FORMAT!r}")
  if description.get("version") != VERSION:
    raise ValueError(f"{path} is a saved head of version {description.get('version')!r}; this "
                     f"cvxjax reads version {VERSION}")
  if description.get("kind") not in KINDS:
    raise ValueError(f"{path} holds a head of kind {description.get('kind')!r}, not one of "
                     f"{sorted(KINDS)}")
  for key in ("settings", "arrays"):
    if not isinstance(description.get(key), dict):
      raise ValueError(f"{path}: its description has no {key!r} mapping")
  return description


def _same_names(found, expected, what: str, path: str) -> None:
  if set(found) != set(expected):
    raise ValueError(f"{path}: {what} {sorted(found)} are not the expected {sorted(expected)}")


def _read_array(archive: zipfile.ZipFile, name: str, spec, path: str) -> Optional[np.ndarray]:
  if spec is None:
    return None
  if not (isinstance(spec, dict) and set(spec) == {"shape", "dtype"}):
    raise ValueError(f"{path}: array {name!r} is described by {spec!r}, not its shape and dtype")
  try:
    with archive.open(f"{name}.npy") as f:
      array = np.lib.format.read_array(f, allow_pickle=False)  # numbers only, never objects
  except KeyError:
    raise ValueError(f"{path}: array {name!r} is missing") from None
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
    raise ValueError(f"{path}: array {name!r} cannot be read ({err})") from None
  if list(array.shape) != spec["shape"] or array.dtype.str != spec["dtype"]:
    raise ValueError(f"{path}: array {name!r} has shape {list(array.shape)} and dtype "
                     f"{array.dtype.str}, its description {spec['shape']} and {spec['dtype']}")
  return array


def load_head(path: str) -> Head:
  """The head saved in `path` by `save_head`, its arrays as numpy arrays (as saved: no dtype
  changes); nothing in the file is run.

  Args:
    path: a file written by `save_head`.

  Returns:
    The head, equal to the one saved: same class, settings, and arrays bit for bit.

  Raises:
    ValueError: naming `path`, if it is not a zip file, holds no JSON description of this format
      and version, names an unknown kind, or its settings or arrays are missing, extra,
      malformed, truncated, or differ in shape or dtype from the description.
  """
  try:
    archive = zipfile.ZipFile(path)
  except (zipfile.BadZipFile, EOFError) as err:
    raise ValueError(f"{path} is not a saved head: not a zip file ({err})") from None
  with archive:
    description = _read_description(archive, path)
    cls = KINDS[description["kind"]]
    fields = dataclasses.fields(cls)
    settings, specs = description["settings"], description["arrays"]
    _same_names(settings, [f.name for f in fields if _static(f)], "settings", path)
    _same_names(specs, [f.name for f in fields if not _static(f)], "arrays", path)
    for field in fields:  # only an optional array (default None) may be saved as absent
      if not _static(field) and specs[field.name] is None and field.default is not None:
        raise ValueError(f"{path}: array {field.name!r} is required, the description has null")
    _same_names({n[:-len(".npy")] for n in archive.namelist() if n != _DESCRIPTION},
                [n for n, spec in specs.items() if spec is not None], "array files", path)
    values = {}
    for name, value in settings.items():
      try:
        values[name] = _SETTINGS[name](value)
      except ValueError as err:
        raise ValueError(f"{path}: setting {name!r}: {err}") from None
    for name, spec in specs.items():
      values[name] = _read_array(archive, name, spec, path)
  return cls(**values)
