"""Peak memory of an adversarial one-vs-all polynomial fit at CIFAR-feature scale.

    python -m benchmarks.poly_scale_memory --n=50000 --d=512 --classes=10 --steps=3
    python -m benchmarks.poly_scale_memory --chunk_size=10000     # streamed from the host

Random features (n × d, float32) and labels in 0..C−1; the projected solver, heads one at a
time (`head_batch_size=1`) so memory stays O(n·d + d²), or streamed in chunks. A one-step
fit compiles first; the timed fit of --steps steps then reuses the compiled code, and its
time includes the final certificate (one more pass). Prints the time per pass and the peak
resident set size of the process.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # XLA's and OpenBLAS's threads contend

import resource  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from cvxjax import poly  # noqa: E402
from cvxjax.solvers import projected  # noqa: E402

_N = flags.DEFINE_integer("n", 50_000, "training points")
_D = flags.DEFINE_integer("d", 512, "input dimension")
_CLASSES = flags.DEFINE_integer("classes", 10, "one-vs-all heads")
_STEPS = flags.DEFINE_integer("steps", 2, "solver steps")
_R = flags.DEFINE_float("r", 0.5, "adversarial l2 radius")
_CHUNK = flags.DEFINE_integer("chunk_size", None, "stream the features in chunks of this size")


def main(_):
  rng = np.random.default_rng(0)
  X = rng.normal(size=(_N.value, _D.value)).astype(np.float32)
  y = rng.integers(0, _CLASSES.value, size=_N.value)
  solver = projected.Solver(head_batch_size=None if _CHUNK.value else 1)
  fit = lambda steps: poly.fit(X, y, r=_R.value, beta=1e-3, solver=solver, max_steps=steps,
                               checkpoint_every=steps, chunk_size=_CHUNK.value)
  start = time.perf_counter()
  fit(1)
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  head = fit(_STEPS.value)
  elapsed = time.perf_counter() - start
  peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
  print(f"n={_N.value} d={_D.value} C={_CLASSES.value} chunk_size={_CHUNK.value} "
        f"steps={int(head.steps)} objective={float(head.objective):.6g} "
        f"first one-step fit (compiles)={compile_s:.1f}s, timed fit={elapsed:.1f}s: "
        f"{elapsed / (_STEPS.value + 1):.2f}s per pass over the data; "
        f"peak_rss={peak_gib:.2f} GiB")


if __name__ == "__main__":
  app.run(main)
