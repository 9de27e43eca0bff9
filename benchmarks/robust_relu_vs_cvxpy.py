"""Benchmark: robust convex ReLU heads, cvxjax's solvers against CVXPY + Clarabel.

One problem per ball, both solved by both: the first `--n` rows of standardised breast-cancer
data (d = 30, labels ±1), `--patterns` Gaussian gates (`jax.random.key(--seed)`, the same
patterns for both after deduplication), the binary hinge, β = `--beta`, robust against the ℓ∞
ball of radius `--eps_inf` and the ℓ₂ ball of radius `--eps_2` (docs/math.md §4):

  cvxjax:  `relu.fit(..., solver=)` with "admm" and "barrier" (the robust interior-point method,
           what "auto" takes here), each at its default tol and max_steps, timed end to end after
           one untimed call that compiles it; reports objective, certified gap, cone violation
           and steps.
  CVXPY:   `relu.exact_fit(..., solver="CLARABEL")` (the same problem as a conic program),
           timed end to end (problem construction, canonicalisation, Clarabel).

Both times are medians of `--repeats` runs; 'ratio' = CVXPY's time / cvxjax's; 'above' is how far
cvxjax's objective ends above Clarabel's optimum, relative. Run from the repository root:

    python benchmarks/robust_relu_vs_cvxpy.py           # n = 150, P = 24 (a few minutes)
    python benchmarks/robust_relu_vs_cvxpy.py --quick   # n = 40, P = 8 (about a minute)
"""

import os

# XLA's thread pool and OpenBLAS's threads contend on small CPUs (see cvxjax/solvers/loop.py);
# this must happen before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from provenance import git_state  # noqa: E402  (beside this script)
from sklearn import datasets  # noqa: E402

from cvxjax import relu  # noqa: E402

DEFAULT_OUT = os.path.join("benchmarks", "results", "robust_relu_vs_cvxpy.json")
SOLVERS = ("admm", "barrier")  # ADMM and the robust interior-point method ("auto" here)


def load_problem(n: int) -> tuple[np.ndarray, np.ndarray]:
  """The first n rows of standardised breast-cancer data and their ±1 labels."""
  X, y = datasets.load_breast_cancer(return_X_y=True)
  X = (X - X.mean(0)) / X.std(0)
  return X[:n], np.where(y[:n] == 1, 1.0, -1.0)


def timed(fn, repeats: int):
  """(the last result, the median wall time over `repeats` calls)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    times.append(time.perf_counter() - start)
  return result, statistics.median(times)


def bench_ball(X, y, *, p, eps, args) -> list[dict]:
  """Each cvxjax solver and Clarabel on the ball ‖δ‖_p ≤ eps: one row per cvxjax solver."""
  problem = dict(eps=eps, p=p, beta=args.beta, num_patterns=args.patterns,
                 key=jax.random.key(args.seed))
  exact, peer_s = timed(lambda: relu.exact_fit(X, y, solver="CLARABEL", **problem), args.repeats)
  optimum = exact.summary()["objective"]
  rows = []
  for solver in SOLVERS:
    fit = functools.partial(relu.fit, X, y, solver=solver, **problem)
    with warnings.catch_warnings():  # a fit above its tol warns; the table reports its gap
      warnings.simplefilter("ignore")
      fit()  # compiles
      head, ours_s = timed(fit, args.repeats)
    ours = head.summary()
    rows.append(dict(ball=f"l{p}", eps=eps, solver=solver, cvxjax_s=ours_s, clarabel_s=peer_s,
                     ratio=peer_s / ours_s, objective=ours["objective"], gap=ours["gap"],
                     violation=ours["violation"], steps=ours["steps"], optimum=optimum,
                     above=(ours["objective"] - optimum) / abs(optimum),
                     gap_covers_distance=bool(ours["gap"] >= ours["objective"] - optimum)))
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--n", type=int, default=150, help="training rows")
  parser.add_argument("--patterns", type=int, default=24, help="sampled gates P")
  parser.add_argument("--beta", type=float, default=1e-2, help="β")
  parser.add_argument("--eps_inf", type=float, default=0.02, help="ℓ∞ radius")
  parser.add_argument("--eps_2", type=float, default=0.05, help="ℓ₂ radius")
  parser.add_argument("--seed", type=int, default=0, help="seed of the gates")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs per solver (median)")
  parser.add_argument("--quick", action="store_true", help="n = 40, P = 8, one repeat")
  parser.add_argument("--out", default=DEFAULT_OUT, help="JSON results file")
  args = parser.parse_args(argv)
  if args.quick:
    args.n, args.patterns, args.repeats = 40, 8, 1
  X, y = load_problem(args.n)
  load_before = os.getloadavg()
  rows = (bench_ball(X, y, p="inf", eps=args.eps_inf, args=args)
          + bench_ball(X, y, p=2, eps=args.eps_2, args=args))
  meta = dict(argv=sys.argv[1:], args=vars(args), jax=jax.__version__, git=git_state(),
              platform=platform.platform(), cpu_count=os.cpu_count(),
              loadavg_before=load_before, loadavg_after=os.getloadavg())
  print(f"breast cancer n={args.n}, d={X.shape[1]}, P={args.patterns} gates, β={args.beta:g}, "
        f"hinge; medians of {args.repeats} runs")
  print(f"{'ball':>4} {'eps':>6} {'solver':>7} {'cvxjax s':>9} {'Clarabel s':>10} {'ratio':>6} "
        f"{'objective':>12} {'optimum':>12} {'above':>8} {'gap':>8} {'violation':>9} {'steps':>6}")
  for r in rows:
    print(f"{r['ball']:>4} {r['eps']:>6g} {r['solver']:>7} {r['cvxjax_s']:>9.2f} "
          f"{r['clarabel_s']:>10.2f} {r['ratio']:>6.2f} {r['objective']:>12.8g} "
          f"{r['optimum']:>12.8g} {r['above']:>8.1e} "
          f"{r['gap']:>8.1e} {r['violation']:>9.1e} {r['steps']:>6d}")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(dict(meta=meta, results=rows), f, indent=1)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
