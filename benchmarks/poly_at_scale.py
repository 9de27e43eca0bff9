r"""Polynomial heads at feature scale: time to a certified gap, steps, peak memory, matmul rate.

  python -m benchmarks.poly_at_scale              # n 8192, d 128 and 256, r 0 and 0.5, 2 heads
  python -m benchmarks.poly_at_scale --heads 10   # all ten one-vs-all heads
  python -m benchmarks.poly_at_scale --quick      # n 2048, d 64: a few minutes
  python -m benchmarks.poly_at_scale --n 50000 --d 512 --heads 1 --solvers auto
  python -m benchmarks.poly_at_scale --d 128 --solvers auto --x64   # as the experiments run

Features are a Gaussian mixture of C classes in R^d (standardised, float32: the GPU default;
`--x64` fits in float64, as the experiments do and as the low-rank solver's final certificate,
an interior-point method, needs for tight gaps),
labelled 0..C−1. Each one-vs-all head (class c against the rest) is fitted on its own with
`poly.fit(..., tol=--tol, max_steps=--max-steps)`, so every head has its own time, steps,
objective and certified gap; a head that stops above --tol is reported as missed with the gap it
certified. For each solver and size, the step itself is measured once on one head
(`benchmarks.costs.measure`): XLA's FLOP count of one iteration (eigh counts 0, so the rate is a
lower bound), its median time, and that rate's fraction of this machine's float32 matmul rate.
Peak RSS is the process's, read after each size (sizes run in increasing order). Results go to
benchmarks/results/poly_at_scale.json.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # XLA's and OpenBLAS's threads contend

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import costs  # noqa: E402
from benchmarks.provenance import git_state  # noqa: E402
from benchmarks.scaling import in_one_batch, matmul_peak  # noqa: E402
from cvxjax import DEFAULT_ACTIVATION, poly  # noqa: E402
from cvxjax.core import poly as poly_core  # noqa: E402
from cvxjax.solvers import driver, low_rank, primal_dual  # noqa: E402

DEFAULT_OUT = "benchmarks/results/poly_at_scale.json"
_BETA = 1e-3


def mixture(n: int, d: int, classes: int, seed: int = 0):
  """(X (n, d) float32 standardised, y (n,) in 0..classes−1): Gaussian clusters whose centres
  lie about 2 noise deviations apart, with 10% of the labels redrawn at random, so that no
  head separates its class (a quadratic head separates clean clusters once d² ≳ n)."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(classes, d)) * (2.0 / np.sqrt(2 * d))
  y = rng.integers(0, classes, size=n)
  X = centres[y] + rng.normal(size=(n, d))
  y = np.where(rng.random(n) < 0.1, rng.integers(0, classes, size=n), y)
  X = (X - X.mean(0)) / X.std(0)
  return X.astype(np.float32), y


def peak_rss_gib() -> float:
  """The process's peak resident memory so far, GiB."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def step_rate(solver_name: str, X: np.ndarray, s: np.ndarray, r: float, repeats: int) -> dict:
  """One iteration of `solver_name` on one head: XLA's GFLOPs, median seconds, GFLOP/s.

  FLOPs are counted on the worst case in one batch (`scaling.in_one_batch`: XLA counts a loop
  body once). A primal–dual step is `check_every` iterations in such a loop and a certificate,
  so its iteration (`primal_dual.iterate`) is measured alone; so is the low-rank solver's, as one
  value and gradient of its smoothed objective (an L-BFGS iteration's line search takes one or
  more).
  """
  solver = driver.resolve_solver(solver_name, X.shape[1], False, r)
  problem = poly_core.Problem(jnp.asarray(X), jnp.asarray(s[None]), r=r, beta=_BETA,
                              activation=DEFAULT_ACTIVATION)
  problem = jax.jit(solver.prepare)(problem)
  state = jax.jit(solver.init)(problem)
  if solver.name == "primal_dual":
    head = jax.tree.map(lambda a: a[0], state)
    carry = (head.Z, head.Zp, head.alpha, head.alpha, problem.X, head.multipliers)
    iteration = lambda carry, X, s: primal_dual.iterate(
        carry, X, s, **problem.settings, tau=head.eta / head.omega, sigma=head.eta * head.omega)
    args = (carry, problem.X, problem.S[0])
  elif solver.name == "low_rank":
    factors = jax.tree.map(lambda a: a[0], state.factors)
    iteration = jax.value_and_grad(lambda p, X, s: low_rank.smoothed_objective(
        p, X, s, 1e-3, **problem.settings))
    args = (factors, problem.X, problem.S[0])
  else:
    iteration, args = (lambda p, st: solver.step(p, st)), (problem, state)
  cost = costs.measure(iteration, *args, repeats=repeats, counted=in_one_batch(iteration))
  return dict(gflops=cost.gflops, seconds=cost.seconds, gflops_per_s=cost.gflops / cost.seconds)


def run_size(n, d, classes, heads, r, solver_name, tol, max_steps, peak, repeats) -> dict:
  X, y = mixture(n, d, classes)
  rows = []
  for c in range(heads):
    s = np.where(y == c, 1.0, -1.0).astype(np.float32)
    start = time.perf_counter()
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # a head above tol is reported below, as missed
      chunks = {} if max_steps is None else dict(checkpoint_every=max(1, max_steps // 10))
      head = poly.fit(X, s, r=r, beta=_BETA, solver=solver_name, tol=tol, max_steps=max_steps,
                      **chunks)
    seconds = time.perf_counter() - start
    objective, gap = float(head.objective), float(head.gap)
    rows.append(dict(head=c, seconds=seconds, steps=int(head.steps), objective=objective,
                     gap=gap, relative_gap=gap / objective, certified=gap <= tol * objective))
    print(f"  n={n} d={d} r={r} {solver_name} head {c}: {seconds:.1f}s, {int(head.steps)} "
          f"steps, objective {objective:.6g}, relative gap {gap / objective:.2e}"
          f"{'' if gap <= tol * objective else ' (missed)'}", flush=True)
  rate = step_rate(solver_name, X, np.where(y == 0, 1.0, -1.0).astype(np.float32), r, repeats)
  return dict(n=n, d=d, classes=classes, r=r, solver=solver_name, tol=tol,
              max_steps=max_steps, heads=rows,
              seconds_all_heads=sum(h["seconds"] for h in rows),
              certified_heads=sum(h["certified"] for h in rows),
              median_head_seconds=float(np.median([h["seconds"] for h in rows])),
              step=rate, matmul_fraction=rate["gflops_per_s"] / peak,
              peak_rss_gib=peak_rss_gib())


def parse_with_run_flags(parser: argparse.ArgumentParser, argv, default_out: str):
  """Adds the flags the at-scale benchmarks share (--repeats, --x64, --out), parses `argv` and
  enables float64 when asked."""
  parser.add_argument("--repeats", type=int, default=3, help="timed calls of one step (median)")
  parser.add_argument("--x64", action="store_true", help="fit in float64 (jax_enable_x64)")
  parser.add_argument("--out", default=default_out, help="JSON results file")
  args = parser.parse_args(argv)
  if args.x64:
    jax.config.update("jax_enable_x64", True)
  return args


def write_results(path: str, rows: list, **meta) -> None:
  """Writes {meta: the git state, the devices and `meta`; results: rows} as JSON to `path`."""
  meta = dict(git=git_state(), devices=str(jax.devices()), **meta)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump(dict(meta=meta, results=rows), f, indent=1)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--n", type=int, nargs="+", default=[8192], help="training points")
  parser.add_argument("--d", type=int, nargs="+", default=[128, 256], help="feature widths")
  parser.add_argument("--r", type=float, nargs="+", default=[0.0, 0.5], help="ℓ₂ radii")
  parser.add_argument("--classes", type=int, default=10, help="mixture classes C")
  parser.add_argument("--heads", type=int, default=2,
                      help="one-vs-all heads fitted, classes 0, 1, … (at most C)")
  parser.add_argument("--solvers", nargs="+", default=["auto", "projected"],
                      help="poly.fit solvers ('auto' is the low-rank solver above d = 49)")
  parser.add_argument("--tol", type=float, default=1e-3, help="relative certified gap")
  parser.add_argument("--max-steps", type=int, default=None,
                      help="each head's iteration limit (default: each solver's own)")
  parser.add_argument("--quick", action="store_true", help="n 2048, d 64, 2 heads")
  args = parse_with_run_flags(parser, argv, DEFAULT_OUT)
  if args.quick:
    args.n, args.d, args.heads = [2048], [64], 2
  heads = args.heads
  if not 1 <= heads <= args.classes:
    raise ValueError(f"--heads must be in 1..{args.classes}, got {heads}")
  peak = matmul_peak(args.repeats)
  print(f"float32 matmul: {peak:.1f} GFLOP/s", flush=True)
  rows = []
  for n in sorted(args.n):
    for d in sorted(args.d):
      for r in args.r:
        for solver_name in args.solvers:
          load_before = os.getloadavg()
          row = run_size(n, d, args.classes, heads, r, solver_name, args.tol, args.max_steps,
                         peak, args.repeats)
          row.update(loadavg_before=load_before, loadavg_after=os.getloadavg())
          rows.append(row)
          print(f"n={n} d={d} r={r} {solver_name}: {row['certified_heads']}/{heads} heads "
                f"certified to {args.tol:g} in {row['seconds_all_heads']:.1f}s (median head "
                f"{row['median_head_seconds']:.1f}s); step {row['step']['seconds'] * 1e3:.1f} ms"
                f" at {row['matmul_fraction']:.1%} of matmul; peak RSS "
                f"{row['peak_rss_gib']:.2f} GiB", flush=True)
  write_results(args.out, rows, matmul_gflops_per_s=peak, beta=_BETA, argv=vars(args))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
