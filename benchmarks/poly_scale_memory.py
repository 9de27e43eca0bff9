"""Peak memory of an adversarial one-vs-all polynomial fit at CIFAR-feature scale.

    python benchmarks/poly_scale_memory.py --n=50000 --d=512 --classes=10 --steps=2

Random features (n × d, float32) and labels in 0..C−1; `poly.fit` with r > 0 picks the
projected solver at this d, which runs the heads one at a time (`head_batch_size=1`) so
memory stays O(n·d + d²). Prints wall time per step and the peak resident set size.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # XLA's and OpenBLAS's threads contend

import resource  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from cvxjax import poly  # noqa: E402

_N = flags.DEFINE_integer("n", 50_000, "training points")
_D = flags.DEFINE_integer("d", 512, "input dimension")
_CLASSES = flags.DEFINE_integer("classes", 10, "one-vs-all heads")
_STEPS = flags.DEFINE_integer("steps", 2, "solver steps")
_R = flags.DEFINE_float("r", 0.5, "adversarial l2 radius")


def main(_):
  rng = np.random.default_rng(0)
  X = rng.normal(size=(_N.value, _D.value)).astype(np.float32)
  y = rng.integers(0, _CLASSES.value, size=_N.value)
  start = time.perf_counter()
  head = poly.fit(X, y, r=_R.value, beta=1e-3, solver="projected", max_steps=_STEPS.value,
                  head_batch_size=1, checkpoint_every=1, progress=True)
  elapsed = time.perf_counter() - start
  peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
  print(f"n={_N.value} d={_D.value} C={_CLASSES.value} steps={int(head.steps)} "
        f"objective={float(head.objective):.6g} time={elapsed:.1f}s "
        f"({elapsed / _STEPS.value:.1f}s/step incl. compile) peak_rss={peak_gib:.2f} GiB")


if __name__ == "__main__":
  app.run(main)
