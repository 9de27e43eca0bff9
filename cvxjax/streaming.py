"""Full passes over feature sets larger than device memory, one chunk of examples at a time.

The streaming solvers (`poly.fit(..., chunk_size=)` with the projected solver,
`relu.fit(..., chunk_size=)` with APG or the penalty method) keep the features on the host, as a
NumPy array or a memory map (`np.load(path, mmap_mode="r")`). Each step is a full pass: a chunk
at a time is put on the device and its gradient is added. The objectives are sums over
examples, so the streamed gradient equals the in-memory one up to the order of the additions,
and the iterates match.
"""

from typing import Callable, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def check_chunk_size(chunk_size, n: Optional[int] = None) -> None:
  """Raises ValueError unless chunk_size is None or an integer ≥ 1 (n, if given, is named)."""
  if chunk_size is not None and not (isinstance(chunk_size, (int, np.integer)) and chunk_size >= 1):
    examples = "" if n is None else f"; n = {n}"
    raise ValueError(f"chunk_size must be None or an integer >= 1 (examples per chunk{examples}), "
                     f"got {chunk_size!r}")


def chunks(arrays: Sequence, chunk_size: int, dtypes: Sequence) -> Iterator[tuple]:
  """Consecutive row blocks of `chunk_size` examples (the last one shorter), on the device.

  Args:
    arrays: host arrays sharing their first axis (the examples).
    chunk_size: examples per chunk.
    dtypes: the device dtype of each array.

  Yields:
    Tuples of device arrays, one row block of each input.
  """
  n = len(arrays[0])
  for start in range(0, n, chunk_size):
    block = slice(start, min(start + chunk_size, n))
    yield tuple(jax.device_put(np.asarray(a[block], dtype))
                for a, dtype in zip(arrays, dtypes, strict=True))


def pass_sum(fn: Callable, arrays: Sequence, chunk_size: int, dtypes: Sequence):
  """Σ over chunks of fn(first, *chunk): a pytree summed on the device.

  `first` is True for the first chunk only, so that terms not summed over examples (the
  regulariser) are counted once.

  Args:
    fn: (first: bool, *chunk arrays) -> pytree of arrays.
    arrays, chunk_size, dtypes: as for `chunks`.

  Returns:
    The summed pytree.
  """
  total = None
  for i, block in enumerate(chunks(arrays, chunk_size, dtypes)):
    part = fn(i == 0, *block)
    # One chunk in flight: bounds device memory, and XLA's CPU runtime deadlocked (idle, in a
    # futex) with a whole pass of large chunks dispatched at once.
    total = jax.block_until_ready(part if total is None else jax.tree.map(jnp.add, total, part))
  return total
