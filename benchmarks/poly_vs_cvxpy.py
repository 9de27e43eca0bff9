"""Benchmark: the JAX interior-point, SDP and barrier solvers against CVXPY + SCS on a poly head.

For each training-set size n it solves one binary polynomial head on standardised breast-cancer
data (d = 30, r = 0.5, β = 1e-3, the default activation) three ways:

  1. CVXPY + SCS on the S-lemma SDP (`cvxjax.exact.solve_poly_sdp`). Its solution is projected
     onto K and its objective evaluated exactly (trust-region margins); SCS's own reported value
     is only as accurate as its tolerance.
  2. The interior-point solver (`cvxjax.solvers.interior`), the S-lemma SDP solver
     (`cvxjax.solvers.sdp`) and the barrier solver (`cvxjax.solvers.barrier`), each run by
     `loop.run`. A traced run, one step per chunk with
     a callback that reads each step's summary, finds the first iterate whose exact objective
     is ≤ SCS's exact objective and the first certified relative gap; the timed runs measure
     the wall clock from `init` to each of them, in chunks that end there. Compilation is off
     the clock (an untimed warm-up run).
  3. The projected optax-Adam baseline (`cvxjax.solvers.projected`), run by `loop.run` for SCS's
     wall clock (or a fixed number of steps), to show where a first-order method stalls.

Run from the repository root:

    python benchmarks/poly_vs_cvxpy.py            # n = 50, 100, 200 (tens of minutes)
    python benchmarks/poly_vs_cvxpy.py --quick    # n = 30 smoke test (well under a minute)

See benchmarks/README.md for how to read the table and the JSON file.
"""

import os

# XLA's thread pool and OpenBLAS's threads contend on small CPUs (see cvxjax/solvers/loop.py);
# this must happen before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from sklearn import datasets  # noqa: E402

from cvxjax import exact, poly  # noqa: E402
from cvxjax.core import poly as poly_core  # noqa: E402
from cvxjax.core import psd  # noqa: E402
from cvxjax.core.activations import DEFAULT_ACTIVATION, Quadratic  # noqa: E402
from cvxjax.solvers import barrier, interior, loop, projected, sdp  # noqa: E402

NEWTON_SOLVERS = {"interior": interior.Solver, "barrier": barrier.Solver, "sdp": sdp.Solver}

DEFAULT_OUT = os.path.join("benchmarks", "results", "poly_vs_cvxpy.json")


def load_problem(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """The first n rows of a fixed-seed permutation of breast cancer, standardised, labels ±1.

  Args:
    n: number of rows (at most 569).
    seed: seed of the permutation.

  Returns:
    (X, y): (n, 30) float64 inputs standardised with the mean and std of these n rows, and
    (n,) labels in {−1, +1}.
  """
  data = datasets.load_breast_cancer()
  if not 0 < n <= data.data.shape[0]:
    raise ValueError(f"n must be in 1..{data.data.shape[0]}, got {n}")
  rows = np.random.default_rng(seed).permutation(data.data.shape[0])[:n]
  X = data.data[rows].astype(np.float64)
  std = X.std(axis=0)
  X = (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)
  y = np.where(data.target[rows] == 1, 1.0, -1.0)
  return X, y


@contextlib.contextmanager
def capture_cvxpy_problems():
  """Records every `cvxpy.Problem` solved inside the block (for its timings and iterations).

  `exact.solve_poly_sdp` returns only the solution; the problem object carries CVXPY's
  compilation time and SCS's own solve time and iteration count.

  Yields:
    A list that receives the solved problems.
  """
  import cvxpy as cp

  solved = []
  original = cp.Problem.solve

  @functools.wraps(original)
  def solve(self, *args, **kwargs):
    solved.append(self)
    return original(self, *args, **kwargs)

  cp.Problem.solve = solve
  try:
    yield solved
  finally:
    cp.Problem.solve = original


def exact_objective_fn(r: float, beta: float, activation: Quadratic):
  """A jitted (Z, Z′, X, s) -> (exact objective of Π_K Z, Π_K Z′, and the projections)."""

  def evaluate(Z, Zp, X, s):
    Z, Zp = psd.project_trace_psd(Z), psd.project_trace_psd(Zp)
    return poly.objective(Z, Zp, X, s, r, beta, activation), Z, Zp

  return jax.jit(evaluate)


def bench_scs(X, y, *, r, beta, activation, eps, repeats, evaluate) -> dict:
  """Times SCS through `exact.solve_poly_sdp` and evaluates its solution exactly.

  Returns:
    A dict with the wall-clock times, SCS's own timings and value, and the exact objective of
    the solution projected onto K (or the error message if SCS failed).
  """
  walls, solves, compiles, iters = [], [], [], []
  result = {"eps": eps, "repeats": repeats}
  for _ in range(repeats):
    with capture_cvxpy_problems() as solved:
      start = time.perf_counter()
      try:
        Z, Zp, value = exact.solve_poly_sdp(X, y, r=r, beta=beta, activation=activation,
                                            solver="SCS", eps=eps)
      except ValueError as err:  # SCS failed or returned an inaccurate status.
        result.update(error=str(err), wall_s=time.perf_counter() - start)
        return result
      walls.append(time.perf_counter() - start)
    if solved:
      problem = solved[-1]
      solves.append(problem.solver_stats.solve_time)
      compiles.append(problem.compilation_time)
      iters.append(problem.solver_stats.num_iters)
  objective, _, _ = evaluate(jnp.asarray(Z), jnp.asarray(Zp), jnp.asarray(X), jnp.asarray(y))
  result.update(
      wall_s=statistics.median(walls), wall_all_s=walls,
      solver_s=statistics.median(solves) if solves else None,
      cvxpy_compile_s=statistics.median(compiles) if compiles else None,
      iterations=iters[-1] if iters else None,
      reported_value=value, exact_objective=float(objective),
      trace_residuals=[float(psd.trace_residual(jnp.asarray(Z))),
                       float(psd.trace_residual(jnp.asarray(Zp)))])
  return result


def _warm_up(solver, problem) -> float:
  """Seconds of one untimed `loop.run` of one step: it compiles every call the timed runs make."""
  start = time.perf_counter()
  jax.block_until_ready(loop.run(solver, problem, max_steps=1, chunk=1).summary)
  return time.perf_counter() - start


def trace(solver, problem, *, max_steps, target, gap_tol) -> dict:
  """One `loop.run` of `solver` from `init`, one step per chunk, until it has reached the
  objective `target` (None: not sought) and a certified relative gap ≤ `gap_tol` (None: not
  sought), or it stops by itself or at `max_steps`.

  The callback reads the summary after every step: its objective is that of an iterate the
  step evaluated (`reported_iterate`), so each event is seen when the step that saw it ends.

  Returns:
    A dict with the events `target` (steps, upper, iterate) and `gap` (steps, upper, lower),
    each None if not reached; `trajectory`, (seconds, upper, lower) after every step; `steps`,
    `upper`, `lower` where the run stopped, and `iterate`, the (Z, Z′) whose objective `upper`
    is.
  """
  out = dict(target=None, gap=None, trajectory=[])
  states = []  # the last two states seen

  def record(state, summary):
    states[:] = [*states[-1:], state]
    steps, upper, gap = int(summary.steps), float(summary.objective), float(summary.gap)
    out.update(steps=steps, upper=upper, lower=upper - gap)
    if steps == 0:  # the initial state
      return False
    out["trajectory"].append((time.perf_counter() - start, upper, upper - gap))
    if out["target"] is None and target is not None and upper <= target:
      out["target"] = dict(steps=steps, upper=upper, iterate=reported_iterate(*states))
    if out["gap"] is None and gap_tol is not None and gap <= gap_tol * abs(upper):
      out["gap"] = dict(steps=steps, upper=upper, lower=upper - gap)
    return ((target is None or out["target"] is not None)
            and (gap_tol is None or out["gap"] is not None))

  start = time.perf_counter()
  loop.run(solver, problem, max_steps=max_steps, chunk=1, callback=record)
  out["iterate"] = reported_iterate(*states)
  return out


def reported_iterate(before, after):
  """(Z, Z′) of the first head whose exact objective the summary after a step reports: the
  barrier's is the iterate the step started from; the interior-point solvers' is the best
  iterate so far, which the step's state keeps."""
  if isinstance(after, (interior.InteriorState, sdp.SdpState)):
    return after.best_Z[0], after.best_Zp[0]
  return before.Z[0], before.Zp[0]


def time_to(solver, problem, events: list) -> list:
  """Seconds from `init` to each of the traced `events` (dicts with steps and upper, in
  increasing steps) in one `loop.run`, in chunks of the first event's steps up to the last
  event: the solver runs as `fit` runs it, a jitted loop of steps per call, with no look at
  the state in between (a chunk ends at each of at most two events).

  Raises:
    RuntimeError: if the run does not retrace the traced objectives at those steps.
  """
  seen = {}

  def stamp(state, summary):
    seen[int(summary.steps)] = (time.perf_counter() - start, float(summary.objective))
    return False

  steps = [event["steps"] for event in events]
  start = time.perf_counter()
  loop.run(solver, problem, max_steps=steps[-1], chunk=steps[0], callback=stamp)
  for event in events:
    if seen.get(event["steps"], (None, None))[1] != event["upper"]:
      raise RuntimeError(f"the timed run did not reach the traced objective {event['upper']!r} "
                         f"at step {event['steps']}: {seen}")
  return [seen[k][0] for k in steps]


def bench_newton(name, X, y, *, r, beta, activation, target, gap_tol, continue_tol, max_steps,
                 repeats, evaluate) -> dict:
  """Times a Newton solver (`NEWTON_SOLVERS[name]`) to SCS's exact objective and to a
  certified relative gap.

  A `trace` of the solver with `tol=gap_tol` finds the steps of both events. If it certifies
  `gap_tol` (and stops) before reaching `target`, a trace with the tolerance `continue_tol`
  finds the step of `target`. Each of the `repeats` then times the runs to those steps
  (`time_to`). Compilation is off the clock (`_warm_up`).

  Returns:
    A dict with the warm-up (compile) times, the median times and step counts of both events,
    the final gap and objective, an exact re-evaluation of both iterates, and the trace's
    trajectory.
  """
  X, s = jnp.asarray(X), jnp.asarray(y)
  settings = dict(r=r, beta=beta, activation=activation)
  problem = poly_core.Problem(X, s[None, :], **settings)
  solver = NEWTON_SOLVERS[name](tol=gap_tol)
  compile_s = _warm_up(solver, problem)
  traced = trace(solver, problem, max_steps=max_steps, target=target, gap_tol=gap_tol)
  final, timed = traced, [(solver, [e for e in (traced["target"], traced["gap"]) if e is not None])]
  compile_more_s = None
  if target is not None and traced["target"] is None and traced["steps"] < max_steps:
    more_solver = NEWTON_SOLVERS[name](tol=continue_tol)
    compile_more_s = _warm_up(more_solver, problem)
    final = trace(more_solver, problem, max_steps=max_steps, target=target, gap_tol=None)
    traced["target"] = final["target"]
    timed.append((more_solver, [final["target"]] if final["target"] else []))
  times = {id(event): [] for _, events in timed for event in events}
  for _ in range(repeats):
    for timed_solver, events in timed:
      if events:
        for event, seconds in zip(events, time_to(timed_solver, problem, events), strict=True):
          times[id(event)].append(seconds)

  result = {"compile_s": compile_s, "compile_continue_s": compile_more_s, "repeats": repeats,
            "gap_tol": gap_tol, "max_steps": max_steps}
  upper, lower = final["upper"], final["lower"]
  Z, Zp = final["iterate"]
  recheck, _, _ = evaluate(Z, Zp, X, s)
  result.update(final_steps=final["steps"], final_upper=upper, final_lower=lower,
                final_gap=upper - lower, final_rel_gap=(upper - lower) / abs(upper),
                final_objective_recheck=float(recheck),
                final_raw_objective=float(poly.objective(Z, Zp, X, s, **settings)),
                trajectory=traced["trajectory"])
  result["target"] = result["gap"] = None
  if (hit := traced["target"]) is not None:
    Z, Zp = hit["iterate"]
    recheck, _, _ = evaluate(Z, Zp, X, s)
    result["target"] = dict(
        time_s=statistics.median(times[id(hit)]), time_all_s=times[id(hit)], steps=hit["steps"],
        upper=hit["upper"], raw_objective=float(poly.objective(Z, Zp, X, s, **settings)),
        projected_objective=float(recheck))
  if (hit := traced["gap"]) is not None:
    result["gap"] = dict(time_s=statistics.median(times[id(hit)]), time_all_s=times[id(hit)],
                         steps=hit["steps"], upper=hit["upper"], lower=hit["lower"])
  return result


def bench_adam(X, y, *, r, beta, activation, lr, budget_s, steps, chunk, evaluate) -> dict:
  """Runs projected Adam for `budget_s` seconds of wall clock (or exactly `steps` steps).

  One `loop.run` of `projected.Solver(optimizer=optax.adam(lr))` with `chunk` steps per chunk;
  its callback logs the exact objective after every chunk and ends the run at the budget.
  Compilation is off the clock (`_warm_up`).

  Returns:
    A dict with the steps taken, the time used, the final and best exact objectives, the
    certified lower bound at the final iterate, and the objective after each chunk.
  """
  X, s = jnp.asarray(X), jnp.asarray(y)
  problem = poly_core.Problem(X, s[None, :], r=r, beta=beta, activation=activation)
  # Runs its whole budget: a certified gap of `tol` (its certificate is loose) never stops it.
  solver = projected.Solver(optimizer=optax.adam(lr), tol=float(np.finfo(np.float64).tiny))
  _warm_up(solver, problem)
  history = []

  def log(state, summary):
    now = time.perf_counter() - start
    if int(summary.steps) > 0:
      history.append((now, int(summary.steps), float(summary.objective)))
    return steps is None and now >= budget_s

  start = time.perf_counter()
  result = loop.run(solver, problem, max_steps=sys.maxsize if steps is None else steps,
                    chunk=chunk, callback=log)
  elapsed = time.perf_counter() - start
  upper, gap = float(result.summary.objective), float(result.summary.gap)
  final, _, _ = evaluate(result.params[0][0], result.params[1][0], X, s)
  return dict(lr=lr, chunk=chunk, budget_s=budget_s, steps=int(result.summary.steps),
              time_s=elapsed, final_objective=float(final),
              best_objective=min(h[2] for h in history), certified_lower=upper - gap,
              certificate_upper=upper, history=history)


def _fmt(value, spec: str, width: int) -> str:
  return f"{'—' if value is None else format(value, spec):>{width}}"


def print_table(rows: list[dict], gap_tol: float) -> None:
  """Prints one line per n with the headline numbers."""
  columns = [("n", 5), ("solver", 9), ("SCS s", 8), ("SCS exact obj", 15), ("SCS reported", 14),
             ("JAX s→SCS", 10), ("steps", 6), ("ratio", 7), (f"JAX s→{gap_tol:g}", 10),
             ("steps", 6), ("final rel gap", 14), ("JAX obj", 15), ("Adam obj", 15),
             ("compile s", 10)]
  print(" ".join(f"{name:>{width}}" for name, width in columns))
  for row, name in ((row, name) for row in rows for name in NEWTON_SOLVERS if name in row):
    scs, jx, adam = row["scs"], row[name], row.get("adam")
    target, gap = jx.get("target"), jx.get("gap")
    ratio = scs["wall_s"] / target["time_s"] if target and "error" not in scs else None
    print(" ".join([
        _fmt(row["n"], "d", 5),
        f"{name:>9}",
        _fmt(scs.get("wall_s"), ".1f", 8),
        _fmt(scs.get("exact_objective"), ".8g", 15),
        _fmt(scs.get("reported_value"), ".6g", 14),
        _fmt(target and target["time_s"], ".2f", 10),
        _fmt(target and target["steps"], "d", 6),
        _fmt(ratio, ".1f", 7),
        _fmt(gap and gap["time_s"], ".2f", 10),
        _fmt(gap and gap["steps"], "d", 6),
        _fmt(jx["final_rel_gap"], ".1e", 14),
        _fmt(jx["final_upper"], ".8g", 15),
        _fmt(adam and adam["final_objective"], ".8g", 15),
        _fmt(jx["compile_s"], ".1f", 10)]))
    if "error" in scs:
      print(f"      SCS failed: {scs['error']}")
    if target is None and "error" not in scs:
      print("      JAX never reached SCS's exact objective")


def _strip(value):
  """JSON-safe copy: drops solver states, turns numpy scalars into floats."""
  if isinstance(value, dict):
    return {k: _strip(v) for k, v in value.items() if k not in ("state", "iterate")}
  if isinstance(value, (list, tuple)):
    return [_strip(v) for v in value]
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  return value


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200],
                      help="training-set sizes n")
  parser.add_argument("--quick", action="store_true",
                      help="smoke test: n = 30, SCS eps 1e-3, 1 JAX run, 1 s of Adam")
  parser.add_argument("--seed", type=int, default=0, help="seed of the row permutation")
  parser.add_argument("--r", type=float, default=0.5, help="adversarial radius")
  parser.add_argument("--beta", type=float, default=1e-3, help="regularisation weight")
  parser.add_argument("--eps", type=float, default=1e-4, help="SCS eps_abs = eps_rel")
  parser.add_argument("--scs-repeats", type=int, default=1, help="SCS runs per n (median)")
  parser.add_argument("--solvers", nargs="+", default=list(NEWTON_SOLVERS),
                      choices=list(NEWTON_SOLVERS), help="the JAX solvers to time")
  parser.add_argument("--repeats", type=int, default=5, help="JAX runs per n and solver (median)")
  parser.add_argument("--gap-tol", type=float, default=1e-6,
                      help="certified relative gap that the JAX solvers are timed to")
  parser.add_argument("--continue-tol", type=float, default=1e-10,
                      help="JAX tolerance used if gap-tol is met before SCS's objective")
  parser.add_argument("--max-steps", type=int, default=300, help="JAX step limit")
  parser.add_argument("--adam-steps", type=int, default=None,
                      help="fixed Adam steps (default: run for SCS's wall clock)")
  parser.add_argument("--adam-seconds", type=float, default=None,
                      help="Adam wall-clock budget (default: SCS's wall clock)")
  parser.add_argument("--adam-lr", type=float, default=1e-2, help="Adam learning rate")
  parser.add_argument("--adam-chunk", type=int, default=100,
                      help="Adam steps per jitted call (objective logged after each)")
  parser.add_argument("--no-adam", action="store_true", help="skip the Adam baseline")
  parser.add_argument("--out", default=DEFAULT_OUT, help="JSON results file")
  args = parser.parse_args(argv)
  if args.quick:
    args.sizes, args.eps, args.repeats, args.adam_chunk = [30], 1e-3, 1, 10
    args.adam_seconds = 1.0 if args.adam_seconds is None else args.adam_seconds

  activation = DEFAULT_ACTIVATION
  evaluate = exact_objective_fn(args.r, args.beta, activation)
  meta = dict(argv=sys.argv[1:], args=vars(args), activation=list(activation),
              jax=jax.__version__, backend=jax.default_backend(),
              devices=[str(d) for d in jax.devices()], platform=platform.platform(),
              cpu_count=os.cpu_count(),
              openblas_threads=os.environ.get("OPENBLAS_NUM_THREADS"))
  rows = []
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  for n in args.sizes:
    X, y = load_problem(n, args.seed)
    load_before = os.getloadavg()
    problem = dict(r=args.r, beta=args.beta, activation=activation)
    print(f"n={n}: SCS (eps={args.eps:g}) ...", flush=True)
    scs = bench_scs(X, y, eps=args.eps, repeats=args.scs_repeats, evaluate=evaluate, **problem)
    if "error" in scs:
      print(f"  SCS failed after {scs['wall_s']:.1f} s: {scs['error']}", flush=True)
    else:
      print(f"  {scs['wall_s']:.1f} s wall ({scs['solver_s']:.1f} s in SCS, "
            f"{scs['iterations']} iterations), exact objective {scs['exact_objective']:.8g}, "
            f"reported {scs['reported_value']:.8g}", flush=True)
    target = scs.get("exact_objective")
    row = dict(n=n, d=X.shape[1], scs=scs, loadavg_before=load_before)
    for name in args.solvers:
      print(f"n={n}: {name} ({args.repeats} runs) ...", flush=True)
      jx = bench_newton(name, X, y, target=target, gap_tol=args.gap_tol,
                        continue_tol=args.continue_tol, max_steps=args.max_steps,
                        repeats=args.repeats, evaluate=evaluate, **problem)
      print(f"  compile {jx['compile_s']:.1f} s; to SCS objective: "
            f"{jx['target'] and round(jx['target']['time_s'], 3)} s; to gap {args.gap_tol:g}: "
            f"{jx['gap'] and round(jx['gap']['time_s'], 3)} s; final {jx['final_upper']:.10g} "
            f"(re-evaluated on K: {jx['final_objective_recheck']:.10g}), "
            f"rel gap {jx['final_rel_gap']:.2e}", flush=True)
      row[name] = jx
    if not args.no_adam:
      budget = args.adam_seconds if args.adam_seconds is not None else scs["wall_s"]
      print(f"n={n}: projected Adam ("
            f"{f'{args.adam_steps} steps' if args.adam_steps else f'{budget:.1f} s'}) ...",
            flush=True)
      adam = bench_adam(X, y, lr=args.adam_lr, budget_s=budget, steps=args.adam_steps,
                        chunk=args.adam_chunk, evaluate=evaluate, **problem)
      print(f"  {adam['steps']} steps in {adam['time_s']:.1f} s, final objective "
            f"{adam['final_objective']:.8g} (best {adam['best_objective']:.8g})", flush=True)
      row["adam"] = adam
    row["loadavg_after"] = os.getloadavg()  # other processes distort the timings
    rows.append(row)
    with open(args.out, "w") as f:  # rewritten after every n, so partial runs keep results
      json.dump(_strip(dict(meta=meta, results=rows)), f, indent=1)
  print()
  print_table(rows, args.gap_tol)
  print(f"\nwrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
