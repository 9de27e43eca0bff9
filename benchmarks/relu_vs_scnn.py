"""Benchmark: cvxjax's convex ReLU and gated-ReLU solvers against scnn (pyscnn).

Both libraries solve the same two convex programs on standardised breast-cancer data (all 569
rows, d = 30, labels ±1) with the same P Gaussian gates (`--patterns`, default 250; the
columns of `np.random.default_rng(--seed).standard_normal((30, P))`):

  gated:  min_u  ‖Σ_k D_k X u_k − y‖² / (2n) + λ Σ_k ‖u_k‖₂
  relu:   min_{v,w}  ‖Σ_k D_k X (v_k − w_k) − y‖² / (2n) + λ Σ_k (‖v_k‖₂ + ‖w_k‖₂)
          s.t. (2D_k − I) X v_k ≥ 0, (2D_k − I) X w_k ≥ 0,

with D_k = diag(1[X g_k ≥ 0]) and λ = `--lam` (default 1e-3). scnn minimises exactly this
(`NeuronGL1(λ)`); cvxjax minimises n times it (`loss="squared"`, β = n·λ). Every solution, from
either library, is mapped to cvxjax's weight layout and scored with one formula:
`relu.objective(...) / n` and, for ReLU, `relu.constraint_violation` (a ReLU solution counts as
feasible when its violation is ≤ `--feas_tol`, default 1e-6).

The solvers:

  scnn:    `optimize_model` with `AL` (relu) and `RFISTA` (gated) at their default tolerances,
           timed end to end, `--repeats` runs (median).
  cvxjax:  `relu.fit` with solver "barrier", "admm" and "al" (relu), "barrier", "admm" and
           "apg" (gated), and the penalty baseline (solver "penalty", relu) for a fixed
           `--penalty_steps`.

Each cvxjax solver runs from scratch with increasing `max_steps` budgets (250, 500, ..., 32000;
the barrier's Newton steps: 30, 40, ..., 300).
Each run is timed end to end (validation, patterns, factorisations, iterations, the final
evaluation); XLA compilation is excluded by one untimed warm-up call with max_steps=1 per solver.
A solver's budget ladder stops when it reaches the target, when it converges (its `tol` stops it
before the budget), or when the next budget is predicted to take longer than `--time_cap`
seconds. The target is best·(1 + `--rel_tol`, default 1e-4), where best is the smallest
objective over every (feasible, for relu) solution of both libraries except W = 0 (feasible for
relu, objective ½·mean(y²), which an ADMM run cut short can return); a ladder stopped early
against a provisional best is resumed if a better solution turns up later. Time to target = the
time of the smallest budget that reaches it (scnn's: its whole run, if its solution reaches the
target). The ratio is scnn's time to target over cvxjax's. The relative gap to the best at every
budget, and its ratio from one budget to the next, show how fast each solver converges.
ADMM is also followed along one run (`--admm_trace`, default 8000 steps; 0 turns it off):
`relu.fit` continued from its own checkpoints every `--trace_every` (250) steps, printing the
gap and the violation at each point, so its convergence rate is read off a single run.
`--oracle` adds CVXPY + Clarabel (`relu.exact_fit`) as a reference optimum, reported beside the
gaps but not counted in the best objective.

Run from the repository root:

    python benchmarks/relu_vs_scnn.py            # P = 250: about 15 minutes (scnn's AL ~5)
    python benchmarks/relu_vs_scnn.py --quick    # P = 50 smoke test (about a minute or two)

See benchmarks/README.md for how to read the output and the JSON file.
"""

import os

# XLA's thread pool and OpenBLAS's threads contend on small CPUs (see cvxjax/solvers/loop.py);
# this must happen before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# XLA's concurrency-optimised CPU scheduler deadlocks on programs that run batched LAPACK calls
# side by side, as the ReLU barrier's Newton step does; set before jax starts its backend.
if "xla_cpu_enable_concurrency_optimized_scheduler" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_enable_concurrency_optimized_scheduler=false").strip()

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import NamedTuple  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from provenance import git_state  # noqa: E402  (beside this script)
from sklearn import datasets  # noqa: E402

from cvxjax import relu  # noqa: E402
from cvxjax.solvers import penalty  # noqa: E402

DEFAULT_OUT = os.path.join("benchmarks", "results", "relu_vs_scnn.json")
BUDGETS = (250, 500, 1000, 2000, 4000, 8000, 16000, 32000)
QUICK_BUDGETS = (250, 500, 1000, 2000, 4000)
MAPPING_TOL = 1e-8  # scnn's predictions vs. cvxjax's scores of the mapped weights
PENALTY_OPTIMIZER = optax.adam(1e-2)  # one object: a new one would recompile every run

# (problem, cvxjax solver) pairs, in the order they run; scnn's solver for each problem.
BARRIER_BUDGETS = (30, 40, 45, 50, 55, 60, 70, 300)  # Newton steps: it converges in about 65
CVXJAX_SOLVERS = {"gated": ("barrier", "admm", "apg"), "relu": ("barrier", "admm", "al", "penalty")}
SCNN_SOLVER = {"gated": "RFISTA", "relu": "AL"}


def load_problem(seed: int, num_patterns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Breast cancer (all rows), standardised, labels ±1, and the Gaussian gates.

  Args:
    seed: seed of the gates.
    num_patterns: number of gates P.

  Returns:
    (X, y, G): (n, 30) float64 inputs with zero-mean, unit-std columns, (n,) labels in
    {−1, +1}, and (30, P) gates `np.random.default_rng(seed).standard_normal((30, P))`.
  """
  data = datasets.load_breast_cancer()
  X = data.data.astype(np.float64)
  X = (X - X.mean(axis=0)) / X.std(axis=0)
  y = 2.0 * data.target.astype(np.float64) - 1.0
  G = np.random.default_rng(seed).standard_normal((X.shape[1], num_patterns))
  return X, y, G


class Scorer:
  """The shared objective and constraint violation of weights in cvxjax's layout (S, P, d, 1)."""

  def __init__(self, X: np.ndarray, y: np.ndarray, G: np.ndarray, lam: float):
    self.n = X.shape[0]
    self.beta = self.n * lam
    # The validation `relu.fit` runs: the same patterns D = 1[XG ≥ 0] and encoded targets.
    problem = relu.check_problem(X, y, eps=0.0, p=2, beta=self.beta, num_patterns=None,
                                 gates=G, gated=False, loss="squared", key=None)
    self.X = jnp.asarray(problem.X)
    self.D = jnp.asarray(problem.D)
    self.targets = relu.Targets(*(jnp.asarray(t) for t in problem.targets))
    n, beta, X_, D, targets = self.n, self.beta, self.X, self.D, self.targets

    def evaluate(W):
      value = relu.objective(W, X_, D, targets, loss="squared", eps=0.0, q=2, beta=beta) / n
      return value, relu.constraint_violation(W, X_, D, 0.0, 1)

    self._evaluate = jax.jit(evaluate)

  def __call__(self, W) -> tuple[float, float]:
    """(objective / n, constraint violation) of W; the violation matters only for ReLU."""
    value, violation = self._evaluate(jnp.asarray(W, jnp.float64))
    return float(value), float(violation)

  def squared_violation(self, W) -> float:
    """Σ (−(2D_ik − 1) x_iᵀW[s, k])₊²: scnn's AL measure of infeasibility (it stops at ≤ 1e-6)."""
    slacks = relu.cone_slacks(jnp.asarray(W, jnp.float64), self.X, self.D)
    return float(jnp.sum(jnp.maximum(-slacks, 0.0) ** 2))

  def scores(self, W) -> np.ndarray:
    """cvxjax's convex model Σ_s σ_s Σ_k D_k X W[s, k] on the training set: (n, 1)."""
    return np.asarray(relu.scores(jnp.asarray(W, jnp.float64), self.X, self.D))


def scnn_to_cvxjax(model, G: np.ndarray, gated: bool) -> tuple[np.ndarray, int]:
  """Maps a convex scnn model's weights onto cvxjax's layout W (S, P, d, 1).

  scnn drops duplicate and all-zero patterns and sorts the rest (`np.unique` on the pattern
  columns), so its returned `model.G` holds a reordered subset of the gates given to it and
  `model.parameters` has one (c, p′, d) array per block: [U] for `ConvexGatedReLU`, [U, V] for
  `ConvexReLU`, which predicts Σ_k D_k X (U_k − V_k). Each of its gates is matched exactly to a
  column of G; gates it dropped get zero weights. U ↦ W[0] (σ = +1) and V ↦ W[1] (σ = −1).

  Args:
    model: the convex model returned by `optimize_model(..., return_convex=True)`.
    G: (d, P) the gates given to scnn.
    gated: whether the model is a `ConvexGatedReLU`.

  Returns:
    (W, dropped): the (S, P, d, 1) weights and the number of gates scnn dropped.
  """
  params = [np.asarray(p, np.float64) for p in model.parameters]
  if len(params) != (1 if gated else 2):
    raise RuntimeError(f"unexpected scnn parameters: {[p.shape for p in params]}")
  column = {G[:, k].tobytes(): k for k in range(G.shape[1])}
  scnn_G = np.asarray(model.G, np.float64)
  try:
    index = np.array([column[scnn_G[:, j].tobytes()] for j in range(scnn_G.shape[1])], int)
  except KeyError as err:
    raise RuntimeError("a gate returned by scnn is not a column of the given gates") from err
  d, P = G.shape
  W = np.zeros((len(params), P, d, 1))
  for s, block in enumerate(params):
    if block.shape != (1, len(index), d):
      raise RuntimeError(f"unexpected scnn block shape {block.shape}")
    W[s, index, :, 0] = block[0]
  return W, P - len(index)


def run_scnn(X, y, G, *, gated: bool, lam: float, repeats: int, scorer: Scorer) -> dict:
  """Times scnn's `optimize_model` and scores its solution with the shared formula.

  Also checks the weight mapping: scnn's own predictions `model(X)` must equal cvxjax's scores
  of the mapped weights to `MAPPING_TOL`.

  Returns:
    A dict with the timings, the shared objective and violation, scnn's own reported objective,
    the mapping error and the mapped weights (under "W", dropped from the JSON file).
  """
  from scnn.metrics import Metrics
  from scnn.models import ConvexGatedReLU, ConvexReLU
  from scnn.optimize import optimize_model
  from scnn.regularizers import NeuronGL1
  from scnn.solvers import AL, RFISTA

  walls = []
  for _ in range(repeats):
    model = ConvexGatedReLU(G) if gated else ConvexReLU(G)
    solver = RFISTA(model) if gated else AL(model)
    metrics = Metrics()
    start = time.perf_counter()
    model, metrics = optimize_model(model, solver, metrics, X, y, regularizer=NeuronGL1(lam),
                                    return_convex=True, unitize_data=False, dtype="float64")
    walls.append(time.perf_counter() - start)
  W, dropped = scnn_to_cvxjax(model, G, gated)
  predictions = np.asarray(model(X), np.float64).reshape(-1, 1)
  mapping_error = float(np.max(np.abs(predictions - scorer.scores(W))))
  if not mapping_error <= MAPPING_TOL:
    raise RuntimeError(f"scnn's predictions and the mapped weights' scores differ by "
                       f"{mapping_error:.2e} > {MAPPING_TOL:g}: the weight mapping is wrong")
  objective, violation = scorer(W)
  logged = np.asarray(getattr(metrics, "objective", []), np.float64).ravel()
  return dict(solver=SCNN_SOLVER["gated" if gated else "relu"], wall_s=statistics.median(walls),
              wall_all_s=walls, objective=objective,
              violation=None if gated else violation,
              squared_violation=None if gated else scorer.squared_violation(W),
              reported_objective=float(logged[-1]) if logged.size else None,
              zero=not bool(np.any(W)), mapping_error=mapping_error,
              gates_kept=G.shape[1] - dropped,
              gates_dropped=dropped, W=W)


class Ladder:
  """One cvxjax solver's runs over increasing step budgets (each run from scratch).

  Attributes:
    problem: "gated" or "relu".
    solver: the `relu.fit` solver.
    budgets: the step budgets, in increasing order.
    runs: one dict per budget run: steps (budget), steps_taken, time_s, time_all_s, objective,
      violation, fit_objective (cvxjax's own objective / n), zero (all weights zero) and W
      (dropped from the JSON).
    stop: why the ladder stopped ("reached", "converged", "time cap", "budgets exhausted").
  """

  def __init__(self, problem: str, solver: str, budgets):
    self.problem, self.solver, self.budgets = problem, solver, tuple(budgets)
    self.runs: list[dict] = []
    self.stop = None
    self.warmup_s = None

  def fit(self, X, y, G, *, lam: float, tol: float, max_steps: int) -> relu.ReluHead:
    """`relu.fit` with this ladder's solver, β = n·λ and the given gates, from scratch."""
    solver = (penalty.Solver(optimizer=PENALTY_OPTIMIZER) if self.solver == "penalty"
              else self.solver)
    return relu.fit(X, y, gates=G, beta=X.shape[0] * lam, gated=self.problem == "gated",
                    loss="squared", solver=solver, tol=tol, max_steps=max_steps)

  def warm_up(self, X, y, G, *, lam: float, tol: float):
    """One untimed call with max_steps=1: compiles everything the timed runs use."""
    start = time.perf_counter()
    head = self.fit(X, y, G, lam=lam, tol=tol, max_steps=1)
    jax.block_until_ready(head.weights)
    self.warmup_s = time.perf_counter() - start

  def advance(self, X, y, G, *, lam: float, tol: float, time_cap: float, repeats: int,
              scorer: Scorer, reached, log=print):
    """Runs the remaining budgets until `reached(run)`, convergence or the time cap."""
    self.stop = None
    while len(self.runs) < len(self.budgets):
      budget = self.budgets[len(self.runs)]
      if self.runs:
        last = self.runs[-1]
        predicted = last["time_s"] * budget / last["steps"]
        if predicted > time_cap:
          self.stop = "time cap"
          log(f"  {self.solver}: next budget {budget} predicted {predicted:.0f} s > "
              f"{time_cap:g} s, stopping")
          return
      walls = []
      for _ in range(repeats):
        start = time.perf_counter()
        head = self.fit(X, y, G, lam=lam, tol=tol, max_steps=budget)
        jax.block_until_ready(head.weights)
        walls.append(time.perf_counter() - start)
      objective, violation = scorer(head.weights)
      run = dict(steps=budget, steps_taken=int(head.steps), time_s=statistics.median(walls),
                 time_all_s=walls, objective=objective,
                 violation=None if self.problem == "gated" else violation,
                 fit_objective=float(head.objective) / X.shape[0],
                 zero=not bool(np.any(np.asarray(head.weights))), W=np.asarray(head.weights))
      self.runs.append(run)
      log(f"  {self.solver}: {budget:6d} steps ({run['steps_taken']} taken) "
          f"{run['time_s']:8.2f} s  objective {objective:.10g}"
          + ("" if self.problem == "gated" else f"  violation {violation:.1e}"), flush=True)
      if reached(run):
        self.stop = "reached"
        return
      if run["steps_taken"] < budget:  # tol stopped it: larger budgets give the same result
        self.stop = "converged"
        return
    self.stop = "budgets exhausted"


class Criteria(NamedTuple):
  """When a solution is feasible and when it reaches the target.

  Attributes:
    rel_tol: a solution reaches the target when its objective is ≤ best · (1 + rel_tol).
    feas_tol: a ReLU solution is feasible when its constraint violation is ≤ feas_tol.
  """

  rel_tol: float
  feas_tol: float

  def feasible(self, problem: str, violation) -> bool:
    """Gated solutions always; ReLU ones when their violation is ≤ feas_tol."""
    return problem == "gated" or (violation is not None and violation <= self.feas_tol)

  def counts(self, problem: str, solution: dict) -> bool:
    """Feasible and not the trivial W = 0 (feasible for ReLU, objective ½·mean(y²))."""
    return self.feasible(problem, solution["violation"]) and not solution["zero"]

  def best(self, problem: str, scnn: dict, ladders: list[Ladder]):
    """The smallest objective over every counted solution (scnn's and every cvxjax run)."""
    candidates = [scnn] + [r for lad in ladders for r in lad.runs]
    values = [c["objective"] for c in candidates if self.counts(problem, c)]
    return min(values) if values else None

  def reaches(self, problem: str, run: dict, best) -> bool:
    """Whether a counted solution is within rel_tol of `best` (never when best is None)."""
    return (best is not None and self.counts(problem, run)
            and run["objective"] <= best + self.rel_tol * abs(best))


def run_oracle(X, y, G, *, gated: bool, lam: float, scorer: Scorer) -> dict:
  """CVXPY + Clarabel (`relu.exact_fit`): a reference optimum, reported but not in `best`."""
  start = time.perf_counter()
  try:
    head = relu.exact_fit(X, y, gates=G, beta=X.shape[0] * lam, gated=gated, loss="squared")
  except Exception as err:  # noqa: BLE001 - the oracle is optional: report, don't stop
    return dict(error=f"{type(err).__name__}: {err}", wall_s=time.perf_counter() - start)
  wall = time.perf_counter() - start
  objective, violation = scorer(head.weights)
  return dict(wall_s=wall, objective=objective, violation=None if gated else violation)


def admm_trace(X, y, G, *, gated: bool, lam: float, tol: float, steps: int, every: int,
               scorer: Scorer) -> list[dict]:
  """ADMM's objective and violation every `every` iterations of one run, up to `steps`.

  The run is `relu.fit(solver="admm")` continued from its own checkpoints: each call raises
  max_steps by `every` and resumes where the last one stopped, so the points are the iterates
  of a single run (no restarts). Stops early when ADMM's own `tol` stops it.

  Returns:
    One dict per point: steps, objective (the shared formula) and violation (None if gated).
  """
  points = []
  with tempfile.TemporaryDirectory() as workdir:
    for budget in range(every, steps + 1, every):
      head = relu.fit(X, y, gates=G, beta=X.shape[0] * lam, gated=gated, loss="squared",
                      solver="admm", tol=tol, max_steps=budget, checkpoint_dir=workdir,
                      checkpoint_every=every)
      objective, violation = scorer(head.weights)
      points.append(dict(steps=int(head.steps), objective=objective,
                         violation=None if gated else violation))
      if head.steps < budget:
        break
  return points


def bench_problem(problem: str, X, y, G, args, log=print) -> dict:
  """scnn, then every cvxjax solver of one problem; returns the JSON-ready results."""
  gated = problem == "gated"
  crit = Criteria(args.rel_tol, args.feas_tol)
  scorer = Scorer(X, y, G, args.lam)
  oracle = None
  if args.oracle:
    log(f"{problem}: CVXPY + Clarabel oracle ...", flush=True)
    oracle = run_oracle(X, y, G, gated=gated, lam=args.lam, scorer=scorer)
    if "error" in oracle:
      log(f"  failed after {oracle['wall_s']:.1f} s: {oracle['error']}", flush=True)
    else:
      log(f"  {oracle['wall_s']:.1f} s, objective {oracle['objective']:.10g}"
          + ("" if gated else f", violation {oracle['violation']:.1e}"), flush=True)
  log(f"{problem}: scnn {SCNN_SOLVER[problem]} ({args.repeats} run(s)) ...", flush=True)
  scnn = run_scnn(X, y, G, gated=gated, lam=args.lam, repeats=args.repeats, scorer=scorer)
  log(f"  {scnn['wall_s']:.2f} s, objective "
      f"{scnn['objective']:.10g}" + ("" if gated else f", violation {scnn['violation']:.1e}")
      + f"; scnn's last logged objective {_fmt(scnn['reported_objective'], '.10g', 0)}"
      + ("" if gated else " (augmented Lagrangian: includes its penalty term)")
      + f"; mapping error {scnn['mapping_error']:.1e}, {scnn['gates_dropped']} gate(s) dropped "
      "by scnn", flush=True)
  if not crit.feasible(problem, scnn["violation"]):
    log(f"  NOTE: scnn's ReLU solution violates the cone constraints by {scnn['violation']:.1e} "
        f"> {args.feas_tol:g}; it does not count as feasible. (scnn's AL stops when the sum of "
        f"squared violations, here {scnn['squared_violation']:.1e}, is ≤ its constraint_tol = "
        "1e-6 and the gradient is small, or after max_primal_iters = 10000 inner iterations "
        "in all.)", flush=True)

  ladders = []
  for solver in CVXJAX_SOLVERS[problem]:
    budgets = {"penalty": (args.penalty_steps,), "barrier": BARRIER_BUDGETS}.get(solver,
                                                                            args.budgets)
    ladders.append(Ladder(problem, solver, budgets))

  def advance(ladder):
    best = crit.best(problem, scnn, ladders)
    ladder.advance(X, y, G, lam=args.lam, tol=args.tol, time_cap=args.time_cap,
                   repeats=args.repeats, scorer=scorer, log=log,
                   reached=lambda run: crit.reaches(problem, run, best))

  for ladder in ladders:
    ladder.warm_up(X, y, G, lam=args.lam, tol=args.tol)
    log(f"{problem}: cvxjax {ladder.solver} (warm-up/compile {ladder.warmup_s:.1f} s, "
        "not timed) ...", flush=True)
    advance(ladder)
  while True:  # a better solution found later lowers the target: resume ladders that stopped
    best = crit.best(problem, scnn, ladders)
    behind = [lad for lad in ladders if lad.stop == "reached"
              and not any(crit.reaches(problem, r, best) for r in lad.runs)]
    if not behind:
      break
    for ladder in behind:
      log(f"{problem}: resuming cvxjax {ladder.solver} (best is now {best:.10g})", flush=True)
      advance(ladder)

  trace = []
  if args.admm_trace:
    log(f"{problem}: ADMM trace, one run to {args.admm_trace} steps ...", flush=True)
    trace = admm_trace(X, y, G, gated=gated, lam=args.lam, tol=args.tol,
                       steps=args.admm_trace, every=args.trace_every, scorer=scorer)

  best = crit.best(problem, scnn, ladders)
  reference = oracle["objective"] if oracle and "error" not in oracle else None

  def gaps(entry):
    entry["rel_gap"] = None if best is None else (entry["objective"] - best) / abs(best)
    entry["rel_gap_oracle"] = (None if reference is None
                               else (entry["objective"] - reference) / abs(reference))

  gaps(scnn)
  for point in trace:
    gaps(point)
  scnn["reached"] = crit.reaches(problem, scnn, best)
  scnn["time_to_target_s"] = scnn["wall_s"] if scnn["reached"] else None
  solvers = {}
  for ladder in ladders:
    hit = next((r for r in ladder.runs if crit.reaches(problem, r, best)), None)
    for run in ladder.runs:
      gaps(run)
    solvers[ladder.solver] = dict(
        budgets=list(ladder.budgets), stop=ladder.stop, warmup_s=ladder.warmup_s,
        time_to_target_s=hit and hit["time_s"], steps_to_target=hit and hit["steps"],
        final=ladder.runs[-1] if ladder.runs else None, runs=ladder.runs)
  # The best is only a target if it is the optimum: the oracle can tell.
  best_above_oracle = (None if best is None or reference is None
                       else (best - reference) / abs(reference))
  return dict(problem=problem, n=X.shape[0], d=X.shape[1], patterns=G.shape[1],
              lam=args.lam, beta=scorer.beta, rel_tol=args.rel_tol, feas_tol=args.feas_tol,
              best_objective=best, best_above_oracle=best_above_oracle,
              target=None if best is None else best + args.rel_tol * abs(best),
              oracle=oracle, scnn=scnn, cvxjax=solvers, admm_trace=trace)


def _fmt(value, spec: str, width: int) -> str:
  return f"{'—' if value is None else format(value, spec):>{width}}"


def print_gaps(result: dict) -> None:
  """Prints each cvxjax solver's relative gap to the best objective at every budget."""
  best, oracle = result["best_objective"], result["oracle"]
  reference = oracle["objective"] if oracle and "error" not in oracle else None
  print(f"\n{result['problem']}: relative gap (objective − best) / best by budget, best = "
        f"{_fmt(best, '.10g', 0)}" + ("" if reference is None else
                                      f"; oracle (CVXPY + Clarabel) = {reference:.10g}"))
  print(f"  {'solver':>8} {'steps':>6} {'taken':>6} {'seconds':>9} {'objective':>16} "
        f"{'rel gap':>10} {'gap ratio':>10} {'violation':>10} {'viol ratio':>10}"
        + ("" if reference is None else f" {'vs oracle':>10}"))
  for solver, res in result["cvxjax"].items():
    previous = None
    for run in res["runs"]:
      ratios = [None, None]
      if previous is not None:
        for i, key in enumerate(("rel_gap", "violation")):
          if run[key] is not None and previous[key]:
            ratios[i] = run[key] / previous[key]
      print(f"  {solver:>8} {run['steps']:6d} {run['steps_taken']:6d} {run['time_s']:9.2f} "
            f"{run['objective']:16.10g} {_fmt(run['rel_gap'], '.2e', 10)} "
            f"{_fmt(ratios[0], '.3f', 10)} {_fmt(run['violation'], '.1e', 10)} "
            f"{_fmt(ratios[1], '.3f', 10)}"
            + ("" if reference is None else f" {_fmt(run['rel_gap_oracle'], '.2e', 10)}"))
      previous = run
  print("  (ratios: this run's value over the previous budget's. The budgets double, so a "
        "constant ratio r is a sublinear O(k^−log2(1/r)) rate (r = 1/2: O(1/k), r = 1/4: "
        "O(1/k²)); linear convergence shows as ratios that shrink towards 0)")


def print_trace(result: dict) -> None:
  """Prints ADMM's relative gap and violation along its one traced run, with their ratios."""
  trace = result.get("admm_trace") or []
  if not trace:
    return
  print(f"\n{result['problem']}: ADMM along one run (gap = (objective − best) / best; ratio = "
        "this point's |value| over the previous point's: constant below 1 for linear "
        "convergence, rising towards 1 for sublinear)")
  print(f"  {'steps':>6} {'rel gap':>10} {'gap ratio':>10} {'violation':>10} {'viol ratio':>10}")
  previous = None
  for point in trace:
    ratios = [None, None]
    if previous is not None:
      for i, key in enumerate(("rel_gap", "violation")):
        if point[key] is not None and previous[key]:
          ratios[i] = abs(point[key] / previous[key])
    print(f"  {point['steps']:6d} {_fmt(point['rel_gap'], '.2e', 10)} {_fmt(ratios[0], '.3f', 10)} "
          f"{_fmt(point['violation'], '.1e', 10)} {_fmt(ratios[1], '.3f', 10)}")
    previous = point


def convergence_fits(result: dict, solver: str = "admm") -> dict:
  """Fits of a solver's |gap to best|, |gap to the oracle| and violation against its budgets.

  Uses the runs that used their whole budget and did not return W = 0. For each quantity q > 0
  it gives `log10_per_1000_steps` (the slope of log10 q against steps / 1000: constant for
  linear convergence) and `power` (the slope of log10 q against log10 steps: constant, −α, for
  an O(k^−α) rate).

  Returns:
    {quantity: {"log10_per_1000_steps", "power", "points"}} for the quantities with ≥ 3 points.
  """
  runs = [r for r in result["cvxjax"].get(solver, {}).get("runs", [])
          if r["steps_taken"] == r["steps"] and not r["zero"]]
  fits = {}
  for key in ("rel_gap", "rel_gap_oracle", "violation"):
    points = [(r["steps"], abs(r[key])) for r in runs if r[key] is not None and r[key] != 0]
    if len(points) < 3:
      continue
    steps, values = np.array(points, float).T
    fits[key] = dict(log10_per_1000_steps=float(np.polyfit(steps / 1000, np.log10(values), 1)[0]),
                     power=float(np.polyfit(np.log10(steps), np.log10(values), 1)[0]),
                     points=len(points))
  return fits


def print_table(results: list[dict]) -> None:
  """One line per solver: time to target, scnn's, their ratio, final objective and violation."""
  columns = [("problem", 7), ("method", 14), ("s→target", 11), ("steps", 6), ("peer", 11),
             ("peer s", 8), ("peer s→tgt", 11), ("ratio", 7), ("final obj", 16),
             ("rel gap", 9), ("violation", 9), ("stop", 17)]
  print(" ".join(f"{name:>{width}}" for name, width in columns))
  for result in results:
    scnn, problem = result["scnn"], result["problem"]
    peer, peer_time = f"scnn {scnn['solver']}", scnn["time_to_target_s"]
    reach = lambda t: "not reached" if t is None else format(t, ".2f")
    rows = [(peer, peer_time, None, "—", None, "—", "—", scnn,
             "reached" if scnn["reached"] else "not reached")]
    for solver, res in result["cvxjax"].items():
      mine = res["time_to_target_s"]
      if mine is None:
        ratio = "—"
      elif peer_time is not None:
        ratio = f"{peer_time / mine:.1f}"
      else:  # scnn never reached the target: its time to it exceeds its whole run
        ratio = f">{scnn['wall_s'] / mine:.1f}"
      rows.append((f"cvxjax {solver}", mine, res["steps_to_target"], peer, scnn["wall_s"],
                   reach(peer_time), ratio, res["final"] or {}, res["stop"] or "—"))
    for method, mine, steps, peer_name, peer_s, peer_tgt, ratio, final, stop in rows:
      print(" ".join([
          f"{problem:>7}", f"{method:>14}",
          f"{reach(mine):>11}", _fmt(steps, "d", 6), f"{peer_name:>11}", _fmt(peer_s, ".1f", 8),
          f"{peer_tgt:>11}",
          f"{ratio:>7}", _fmt(final.get("objective"), ".10g", 16),
          _fmt(final.get("rel_gap"), ".1e", 9), _fmt(final.get("violation"), ".1e", 9),
          f"{stop:>17}"]))
    if result["best_objective"] is None:
      print(f"        no {problem} solution (other than W = 0) is feasible to "
            f"{result['feas_tol']:g}: no target")
    above = result["best_above_oracle"]
    if above is not None and above > result["rel_tol"]:
      print(f"        the best is {above:.1e} (relative) above the oracle's optimum: the target "
            "is looser than the optimum")
    elif not scnn["reached"]:
      print(f"        scnn's solution ({scnn['wall_s']:.2f} s) is not within the target"
            + ("" if problem == "gated" or scnn["violation"] <= result["feas_tol"] else
               f" (infeasible: violation {scnn['violation']:.1e} > {result['feas_tol']:g})"))
  print("\n's→target': this method's time to best·(1 + rel_tol), feasible; 'peer s': scnn's "
        "whole run; 'ratio' = peer s→tgt / s→target ('>' when scnn never reached the target: its "
        "whole run time is used). 'final obj', 'rel gap' and 'violation' of a cvxjax solver are "
        "those of its largest budget run. cvxjax times exclude XLA compilation (one untimed "
        "max_steps=1 warm-up per solver).")


def _strip(value):
  """JSON-safe copy: drops weight arrays, turns numpy scalars into floats."""
  if isinstance(value, dict):
    return {k: _strip(v) for k, v in value.items() if k != "W"}
  if isinstance(value, (list, tuple)):
    return [_strip(v) for v in value]
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--patterns", type=int, default=250, help="number of gates P")
  parser.add_argument("--lam", type=float, default=1e-3,
                      help="scnn's λ (cvxjax's β = n·λ)")
  parser.add_argument("--repeats", type=int, default=1,
                      help="timed runs of every scnn solve and cvxjax budget (median)")
  parser.add_argument("--time_cap", "--time-cap", type=float, default=300.0,
                      help="skip a cvxjax budget predicted to take longer than this (s)")
  parser.add_argument("--seed", type=int, default=0, help="seed of the gates")
  parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS),
                      help="cvxjax max_steps budgets, increasing")
  parser.add_argument("--penalty_steps", "--penalty-steps", type=int, default=5000,
                      help="fixed step budget of the penalty baseline")
  parser.add_argument("--tol", type=float, default=1e-6, help="tol of relu.fit")
  parser.add_argument("--rel_tol", "--rel-tol", type=float, default=1e-4,
                      help="target = best · (1 + rel_tol)")
  parser.add_argument("--feas_tol", "--feas-tol", type=float, default=1e-6,
                      help="a ReLU solution is feasible when its constraint violation is ≤ this")
  parser.add_argument("--oracle", action="store_true",
                      help="also solve with CVXPY + Clarabel (relu.exact_fit) as a reference "
                           "(reported, not part of the best objective; minutes at P = 250)")
  parser.add_argument("--problems", nargs="+", choices=("gated", "relu"),
                      default=["gated", "relu"], help="which problems to run")
  parser.add_argument("--quick", action="store_true",
                      help="smoke test: P = 50, budgets up to 4000, time cap 10 s, "
                           "500 penalty steps")
  parser.add_argument("--admm_trace", "--admm-trace", type=int, default=8000,
                      help="follow one ADMM run this many steps, printing its gap and violation "
                           "every --trace_every steps (0: off)")
  parser.add_argument("--trace_every", "--trace-every", type=int, default=250,
                      help="steps between the ADMM trace's points")
  parser.add_argument("--out", default=DEFAULT_OUT, help="JSON results file")
  args = parser.parse_args(argv)
  if args.quick:
    args.patterns, args.budgets, args.time_cap = 50, list(QUICK_BUDGETS), 10.0
    args.penalty_steps, args.admm_trace = 500, 1000
  if sorted(args.budgets) != args.budgets or args.budgets[0] < 1:
    parser.error("--budgets must be positive and increasing")
  if args.trace_every < 1 or args.admm_trace < 0:
    parser.error("--trace_every must be ≥ 1 and --admm_trace ≥ 0")

  X, y, G = load_problem(args.seed, args.patterns)
  meta = dict(argv=sys.argv[1:], args=vars(args), jax=jax.__version__,
              pyscnn=importlib.metadata.version("pyscnn"), backend=jax.default_backend(),
              devices=[str(d) for d in jax.devices()], platform=platform.platform(),
              cpu_count=os.cpu_count(), openblas_threads=os.environ.get("OPENBLAS_NUM_THREADS"),
              git=git_state(),
              ties_XG_zero=int(np.sum(X @ G == 0)),
              distinct_patterns=int(np.unique(X @ G >= 0, axis=1).shape[1]),
              timing_note="cvxjax times are relu.fit end to end, compilation excluded by an "
                          "untimed max_steps=1 warm-up; scnn times are optimize_model end to end")
  print(f"breast cancer n={X.shape[0]}, d={X.shape[1]}, P={args.patterns} gates "
        f"({meta['distinct_patterns']} distinct patterns), λ={args.lam:g} "
        f"(β={X.shape[0] * args.lam:g})"
        f"; {meta['ties_XG_zero']} entries of XG are exactly 0 (scnn's D uses > 0, cvxjax's ≥ 0)")
  print("cvxjax timings exclude XLA compilation (one untimed max_steps=1 warm-up per solver); "
        "each budget runs relu.fit from scratch.", flush=True)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  results = []
  for problem in args.problems:
    load_before = os.getloadavg()
    result = bench_problem(problem, X, y, G, args)
    result.update(loadavg_before=load_before, loadavg_after=os.getloadavg())
    result["admm_fits"] = convergence_fits(result)
    results.append(result)
    with open(args.out, "w") as f:  # rewritten after every problem: partial runs keep results
      json.dump(_strip(dict(meta=meta, results=results)), f, indent=1)
  for result in results:
    print_gaps(result)
    print_trace(result)
    names = dict(rel_gap="|gap to best|", rel_gap_oracle="|gap to oracle|",
                 violation="violation")
    for key, fit in result["admm_fits"].items():
      print(f"  {result['problem']} ADMM {names[key]}: log10 changes by "
            f"{fit['log10_per_1000_steps']:+.3f} per 1000 steps; ∝ steps^{fit['power']:+.2f} "
            f"(least-squares fits over {fit['points']} budgets)")
  print()
  print_table(results)
  print(f"\nwrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
