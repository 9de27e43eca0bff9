r"""ReLU and gated-ReLU heads at feature scale: time to a certified gap, steps, peak memory.

  python -m benchmarks.relu_at_scale                  # n 8192, d 512, P 256, C 10: four families
  python -m benchmarks.relu_at_scale --quick          # n 1024, d 32, P 16: a few minutes
  python -m benchmarks.relu_at_scale --n 45000 --families gated relu_l2 --linear-solver cg

Features are `benchmarks.poly_at_scale.mixture` (C Gaussian clusters, 10% of the labels redrawn,
standardised, float32; `--x64` fits in float64). Each family trains one multi-class hinge head
(β = 1e-3) with `relu.fit(..., solver=admm.Solver(linear_solver=--linear-solver), tol=--tol,
max_steps=--max-steps)`: "gated" (gated ReLU), "relu" (convex ReLU), "relu_l2" and "relu_linf"
(convex ReLU robust in the ℓ₂ ball of --eps-l2 and the ℓ∞ ball of --eps-linf, whose patterns
without a robust interior are dropped). Per family: the fit's wall time (sampling the patterns,
the robust cones' check, the convex heads' interior directions, compilation and the steps), its
steps, objective, certified gap and whether it reached --tol (else: missed), the cone violation
before the feasibility step, the patterns kept, one ADMM step's XLA FLOPs and median time on the
fitted patterns, and the process's peak RSS after it. The GPU column is steps × the step's FLOPs
at --tflops: the steps alone, an optimistic projection (host work excluded). Results go to
benchmarks/results/relu_at_scale.json.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # XLA's and OpenBLAS's threads contend

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import costs, poly_at_scale  # noqa: E402
from cvxjax import relu  # noqa: E402
from cvxjax.core import relu as relu_core  # noqa: E402
from cvxjax.solvers import admm  # noqa: E402

DEFAULT_OUT = "benchmarks/results/relu_at_scale.json"
_BETA = 1e-3
FAMILIES = ("gated", "relu", "relu_l2", "relu_linf")


def family_settings(family: str, eps_l2: float, eps_linf: float) -> dict:
  """The `relu.fit` arguments of a family."""
  return {"gated": dict(gated=True), "relu": dict(),
          "relu_l2": dict(eps=eps_l2, p=2), "relu_linf": dict(eps=eps_linf, p="inf")}[family]


def step_cost(X, y, gates, settings: dict, solver: admm.Solver, repeats: int) -> costs.Cost:
  """One ADMM step on the patterns of `gates`: XLA's FLOPs and its median time."""
  problem = relu_core.check_problem(
      X, y, eps=settings.get("eps", 0.0), p=settings.get("p", "inf"), beta=_BETA,
      num_patterns=None, gates=gates, gated=settings.get("gated", False), loss="hinge", key=None,
      drop_empty_cones=False)
  dtype = jnp.result_type(float)
  t = problem.targets
  targets = relu_core.Targets(jnp.asarray(t.labels, jnp.int32), jnp.asarray(t.onehot, dtype),
                              jnp.asarray(t.pairs, dtype))
  P, d = problem.D.shape[1], problem.X.shape[1]
  instance = relu_core.Instance(
      X=jnp.asarray(problem.X, dtype), D=jnp.asarray(problem.D, dtype), targets=targets,
      gates=jnp.asarray(problem.gates, dtype),
      directions=None if problem.gated else jnp.zeros((P, d), dtype),  # unused by the step
      key=jax.random.PRNGKey(0), gated=problem.gated, binary=problem.binary, loss=problem.loss,
      eps=problem.eps, q=problem.q, beta=problem.beta)
  prepared = jax.jit(solver.prepare)(instance)
  state = jax.jit(solver.init)(prepared)
  return costs.measure(solver.step, prepared, state, repeats=repeats)


def run_family(X, y, family: str, args) -> dict:
  settings = family_settings(family, args.eps_l2, args.eps_linf)
  solver = admm.Solver(linear_solver=args.linear_solver, nystrom_rank=args.nystrom_rank)
  start = time.perf_counter()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # a head above tol is reported below, as missed
    head = relu.fit(X, y, beta=_BETA, num_patterns=args.patterns, key=jax.random.PRNGKey(0),
                    solver=solver, tol=args.tol, max_steps=args.max_steps,
                    checkpoint_every=args.check_every, **settings)
    jax.block_until_ready(head.weights)
  seconds = time.perf_counter() - start
  objective, gap, steps = float(head.objective), float(head.gap), int(head.steps)
  cost = step_cost(X, y, np.asarray(head.gates), settings, solver, args.repeats)
  row = dict(family=family, settings={k: str(v) for k, v in settings.items()},
             patterns=int(head.gates.shape[1]), seconds=seconds, steps=steps,
             objective=objective, gap=gap, relative_gap=gap / objective,
             certified=bool(gap <= args.tol * objective), violation=float(head.violation),
             step_gflops=cost.gflops, step_seconds=cost.seconds,
             gpu_seconds=steps * cost.gflops / (args.tflops * 1e3),
             peak_rss_gib=poly_at_scale.peak_rss_gib())
  print(f"  {family}: {seconds:.1f}s, {steps} steps, objective {objective:.6g}, relative gap "
        f"{gap / objective:.2e}{'' if row['certified'] else ' (missed)'}, violation "
        f"{row['violation']:.1e}, {row['patterns']} patterns; step {cost.seconds * 1e3:.0f} ms, "
        f"{cost.gflops:.1f} GFLOP; peak RSS {row['peak_rss_gib']:.2f} GiB", flush=True)
  return row


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--n", type=int, nargs="+", default=[8192], help="training points")
  parser.add_argument("--d", type=int, default=512, help="feature width")
  parser.add_argument("--patterns", type=int, default=256, help="sampled gates P")
  parser.add_argument("--classes", type=int, default=10, help="mixture classes C")
  parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
  parser.add_argument("--eps-l2", type=float, default=0.02, help="ℓ₂ radius of relu_l2")
  parser.add_argument("--eps-linf", type=float, default=1e-3, help="ℓ∞ radius of relu_linf")
  parser.add_argument("--tol", type=float, default=1e-3, help="relative certified gap")
  parser.add_argument("--max-steps", type=int, default=500, help="ADMM steps per head")
  parser.add_argument("--check-every", type=int, default=100, help="steps between certificates")
  parser.add_argument("--linear-solver", default="cholesky", choices=("cholesky", "cg"))
  parser.add_argument("--nystrom-rank", type=int, default=0, help="CG's preconditioner rank")
  parser.add_argument("--tflops", type=float, default=25.0, help="GPU rate of the projection")
  parser.add_argument("--quick", action="store_true", help="n 1024, d 32, P 16, 100 steps")
  args = poly_at_scale.parse_with_run_flags(parser, argv, DEFAULT_OUT)
  if args.quick:
    args.n, args.d, args.patterns, args.max_steps = [1024], 32, 16, 100
  rows = []
  for n in sorted(args.n):
    X, y = poly_at_scale.mixture(n, args.d, args.classes)
    print(f"n={n} d={args.d} P={args.patterns} C={args.classes}", flush=True)
    for family in args.families:
      load_before = os.getloadavg()
      row = run_family(X, y, family, args)
      rows.append(dict(n=n, d=args.d, classes=args.classes, loadavg_before=load_before,
                       loadavg_after=os.getloadavg(), **row))
  poly_at_scale.write_results(args.out, rows, beta=_BETA, argv=vars(args))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
