"""XLA's FLOP count, planned memory and the median wall clock of one jitted call (shared here)."""

import time
from typing import Callable, NamedTuple, Optional

import jax
import numpy as np


class Cost(NamedTuple):
  """Attributes: gflops (XLA's count; LAPACK calls such as eigh count 0), planned_bytes (the
  arguments, outputs and temporaries XLA plans), seconds (median of the timed calls)."""

  gflops: float
  planned_bytes: int
  seconds: float


def measure(fn: Callable, *args, repeats: int = 3, counted: Optional[Callable] = None) -> Cost:
  """Compiles `fn` for `args`, calls it once untimed, then `repeats` timed calls.

  `counted`, when given, is a function of the same arithmetic whose FLOPs XLA counts in place
  of `fn`'s: XLA counts a loop's body once, so a map over row blocks needs its one-batch twin.
  """
  compiled = jax.jit(fn).lower(*args).compile()
  cost = (compiled if counted is None else jax.jit(counted).lower(*args).compile()).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  memory = compiled.memory_analysis()
  planned = sum(getattr(memory, f, 0) for f in ("temp_size_in_bytes", "argument_size_in_bytes",
                                                "output_size_in_bytes"))
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return Cost(cost.get("flops", float("nan")) / 1e9, int(planned), float(np.median(times)))
