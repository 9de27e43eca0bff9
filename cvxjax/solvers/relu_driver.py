"""Runs the ReLU-head solvers on a validated problem: placement, streaming, the head's arrays."""

import functools
import warnings
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cvxjax import sharding
from cvxjax.core import relu, relu_dual
from cvxjax.solvers import admm, base, loop, penalty, proximal, relu_barrier

_DEFAULT_STEPS = {"admm": 20000, "apg": 20000, "al": 50000, "barrier": 600, "penalty": 5000}
SOLVERS = {"auto": admm.Solver, "admm": admm.Solver,
           "apg": functools.partial(proximal.Solver, augmented=False),
           "al": functools.partial(proximal.Solver, augmented=True),
           "barrier": relu_barrier.Solver, "penalty": penalty.Solver}
_VALUES = (admm.Solver, proximal.Solver, relu_barrier.Solver, penalty.Solver)
_ROBUST_BARRIER_SIZE = 4096  # N·d up to which "auto" takes the robust barrier (its matrix: 134 MB)
_PLAIN_BARRIER_ROWS = 2048  # n up to which "auto" takes the plain barrier (its n×n factor a step)
_PRUNE_LEVELS = 10.0 ** -np.arange(2, 13)  # neuron norms / the largest that a barrier fit may zero
# The streamed form of each solver that streams ("apg", "penalty").
_STREAMED = {proximal.Solver: proximal.Streamed, penalty.Solver: penalty.Streamed}


class ReluSolution(NamedTuple):
  """A solved ReLU problem, the arrays of a `cvxjax.relu.ReluHead`.

  Attributes:
    weights: (S, P, d, C) stacked weights.
    objective: the exact objective at `weights` (loss + β Σ‖·‖₂).
    violation: the largest violation of the (robust) cone constraints (0 for gated heads).
    steps: solver iterations taken.
    gap: a certified bound on objective − optimum (`cvxjax.core.relu_dual`); None when streamed.
  """

  weights: jnp.ndarray
  objective: jnp.ndarray
  violation: jnp.ndarray
  steps: jnp.ndarray
  gap: Optional[jnp.ndarray] = None


def resolve_solver(solver, problem: relu.Problem, *, plain_fit: bool = True) -> base.Solver:
  """A ReLU solver value from `solver` (a name or a value), refused outside its domain (with the
  reason). "auto" is the barrier where `barrier_fits`, else ADMM.

  Args:
    solver: a name of `SOLVERS` or a solver value.
    problem: the validated problem.
    plain_fit: False when the fit is warm-started, sharded or streamed (no barrier for "auto").
  """
  if solver == "auto" and plain_fit and barrier_fits(problem):
    return relu_barrier.Solver()  # its domain checked (`unsupported_reason`): no second LP pass
  if isinstance(solver, str) and solver in SOLVERS:
    solver = SOLVERS[solver]()
  elif not isinstance(solver, _VALUES):
    raise ValueError(f"solver must be one of {tuple(SOLVERS)} or a Solver value of "
                     f"cvxjax.solvers.admm, proximal, relu_barrier or penalty, got {solver!r}")
  name = solver.name
  if name == "barrier" and (reason := relu_barrier.unsupported_reason(problem)):
    raise ValueError(f"solver='barrier' {reason}; use solver='admm'")
  if name in ("apg", "al"):
    needs = "gated=True" if name == "apg" else "gated=False"
    if problem.loss != "squared" or problem.eps > 0 or problem.gated != (name == "apg"):
      raise ValueError(f"solver={name!r} solves the plain squared-loss problem with {needs} "
                       "(eps=0, loss='squared'); use solver='admm' for the others")
  return solver


def barrier_fits(problem: relu.Problem) -> bool:
  """Whether "auto" takes the barrier: a ReLU head in float64 that the barrier solves
  (`relu_barrier.unsupported_reason`) at a size where its Newton system is cheap. Robust (binary
  hinge): N·d ≤ `_ROBUST_BARRIER_SIZE`, its dense matrix; at N·d = 1440 it reaches the optimum
  in about Clarabel's time where ADMM stopped 6.5% above it (benchmarks/robust_relu_vs_cvxpy.py),
  and at 3960 (breast cancer, ε = 0.05) it certifies 1e-5 in 95 s where ADMM's 4000 steps ended
  2.9–4× above the optimum. Plain
  convex or gated (squared loss or binary hinge): n ≤ `_PLAIN_BARRIER_ROWS`, its n×n factor; on
  breast cancer (n = 343, P = 100) it certifies 1e-5 in 4 s where ADMM's 4000 steps end 1.3%
  above it."""
  if jax.dtypes.canonicalize_dtype(np.float64) != np.float64:
    return False
  (n, d), N = problem.X.shape, 2 * problem.D.shape[1]
  small = N * d <= _ROBUST_BARRIER_SIZE if problem.eps > 0 else n <= _PLAIN_BARRIER_ROWS
  return small and not relu_barrier.unsupported_reason(problem)


@functools.partial(jax.jit, static_argnames=("loss", "eps", "q", "beta"))
def _evaluate(W, X, D, targets, *, loss, eps, q, beta):
  return (relu.objective(W, X, D, targets, loss=loss, eps=eps, q=q, beta=beta),
          relu.constraint_violation(W, X, D, eps, q) if W.shape[0] == 2 else jnp.zeros(()))


def fit_relu(problem: relu.Problem, *, solver: base.Solver, max_steps: Optional[int], key,
             checkpoint_dir: Optional[str], checkpoint_every: int, progress: bool, mesh=None,
             chunk_size: Optional[int] = None, start=None) -> ReluSolution:
  """Runs a ReLU-head solver on a validated problem; see `cvxjax.relu.fit`.

  Args:
    problem: the validated problem, on the host.
    solver: a solver value from `resolve_solver`.
    max_steps: iteration budget (None: the solver's default).
    key: a jax.random key for the solvers' random starts and sketches.
    checkpoint_dir, checkpoint_every, progress: see `loop.run`.
    mesh: a `cvxjax.sharding` mesh, or None.
    chunk_size: stream X in chunks of this many examples ("apg", "penalty"), or None.
    start: (S, P, d, C) weights to warm-start from, or None.
  """
  max_steps = _DEFAULT_STEPS[solver.name] if max_steps is None else int(max_steps)
  settings = dict(max_steps=max_steps, checkpoint_dir=checkpoint_dir, progress=progress,
                  chunk=checkpoint_every, start=start)
  if chunk_size is not None:  # X, D and the targets stay on the host
    streamed = next(s for plain, s in _STREAMED.items() if isinstance(solver, plain))
    return _fit_streamed(problem, solver=streamed(**{**vars(solver), "chunk_size": chunk_size}),
                         key=key, **settings)
  X, D, targets = _on_device(problem)
  if rows := sharding.padding(X.shape[0], mesh):  # rows that count nowhere: see relu.counted
    X, D, targets = jax.tree.map(lambda a: jnp.asarray(sharding.pad(a, rows)), (X, D, targets))
  # Examples over the mesh's first axis, sign patterns over its second (states follow them).
  put = functools.partial(sharding.place, mesh=mesh, examples=X.shape[0], model=D.shape[1])
  dtype = X.dtype
  directions = _interior_directions(problem)
  instance = relu.Instance(
      X=put(X, model=None), D=put(D), targets=put(targets, model=None),
      gates=jnp.asarray(problem.gates, dtype),
      directions=None if directions is None else jnp.asarray(directions, dtype), key=key,
      gated=problem.gated, binary=problem.binary, loss=problem.loss, eps=problem.eps,
      q=problem.q, beta=problem.beta)
  if solver.name == "barrier" and dtype != jnp.float64:
    warnings.warn("the barrier solver is built for float64 (jax.config.update("
                  "'jax_enable_x64', True)); in float32 it stops at loose gaps", stacklevel=3)
  with loop.blas_limited():
    result = loop.run(solver, instance, place=put, **settings)
  summary = result.summary
  solution = _solution(problem, result.params, summary.steps)._replace(gap=summary.gap)
  if solver.name == "barrier":
    solution = _without_vanishing_neurons(problem, solution, solver.tol)
  detail = ("" if problem.gated or summary.violation is None else
            f"; its weights violated the cones by {float(summary.violation):.1e} before the "
            "feasibility step")
  loop.warn_above_tol(solver.name, summary._replace(objective=solution.objective,
                                                    gap=solution.gap), solver.tol, detail)
  return solution


def _without_vanishing_neurons(problem: relu.Problem, solution: ReluSolution,
                               tol: float) -> ReluSolution:
  """An interior point's weights with the neurons that vanish at the optimum set to 0.

  An interior point keeps every neuron slightly off 0, so `recover` would return all of them.
  Zeroing the neurons below a fraction of the largest norm keeps every cone constraint; the
  largest fraction of `_PRUNE_LEVELS` whose objective rises by at most a budget is taken, and the
  rise is added to the gap (which stays objective − the same lower bound). The budget is what
  `tol` leaves, tol·objective − gap, or the gap itself where that is above tol (the certificate
  then at most doubles).
  """
  objective, gap = float(solution.objective), float(solution.gap)
  budget = tol * abs(objective) - gap
  budget = gap if budget <= 0 else budget
  if not np.isfinite(budget):
    return solution
  W = np.asarray(solution.weights)
  norms = np.linalg.norm(W, axis=2, keepdims=True)
  X, D, targets = _on_device(problem)
  for level in _PRUNE_LEVELS:
    kept = norms > level * norms.max()
    if np.all(kept):
      return solution
    pruned = jnp.asarray(np.where(kept, W, 0.0), solution.weights.dtype)
    value, violation = _evaluate(pruned, X, D, targets, loss=problem.loss, eps=problem.eps,
                                 q=problem.q, beta=problem.beta)
    rise = float(value) - objective
    if rise <= budget:
      return solution._replace(weights=pruned, objective=value, violation=violation,
                               gap=solution.gap + rise)
  return solution


def _fit_streamed(problem: relu.Problem, *, solver: base.Solver, key, **settings) -> ReluSolution:
  """A streamed solver (`proximal.Streamed`, `penalty.Streamed`) run by `loop.run` on the host
  arrays of `problem`; the solution's objective and violation come from chunked passes, and it
  has no gap."""
  instance = relu.Instance(
      X=problem.X, D=problem.D, targets=problem.targets, gates=problem.gates,
      directions=_interior_directions(problem), key=key, gated=problem.gated, binary=problem.binary,
      loss=problem.loss, eps=problem.eps, q=problem.q, beta=problem.beta)
  with loop.blas_limited():
    result = loop.run(solver, instance, **settings)
  summary = result.summary
  return _solution(problem, result.params, summary.steps, objective=summary.objective,
                   violation=summary.violation)


def _interior_directions(problem: relu.Problem) -> Optional[np.ndarray]:
  """(P, d) directions inside each pattern's cone for a convex ReLU head's feasibility step;
  None for a gated head, which never uses them. A host computation, one pattern at a time, and
  the largest fixed cost of a fit at feature scale (docs/solvers.md)."""
  if problem.gated:
    return None
  return relu_dual.interior_directions(problem.X, problem.gates, problem.eps, problem.q)


def _on_device(problem: relu.Problem):
  """(X, D, targets) as arrays of the default float type (labels stay integers if multi-class)."""
  dtype = jnp.result_type(float)
  t = problem.targets
  labels = jnp.asarray(t.labels, dtype if problem.binary else jnp.int32)
  targets = relu.Targets(labels, jnp.asarray(t.onehot, dtype), jnp.asarray(t.pairs, dtype))
  return jnp.asarray(problem.X, dtype), jnp.asarray(problem.D, dtype), targets


def _solution(problem: relu.Problem, W, steps, *, objective=None, violation=None,
              gap=None) -> ReluSolution:
  """W with its exact objective and constraint violation (computed here on the device unless
  given)."""
  W = jnp.asarray(W, jnp.result_type(float))
  if objective is None:
    X, D, targets = _on_device(problem)
    objective, violation = _evaluate(W, X, D, targets, loss=problem.loss, eps=problem.eps,
                                     q=problem.q, beta=problem.beta)
  return ReluSolution(weights=W, objective=objective, violation=violation,
                      steps=jnp.asarray(steps), gap=gap)


def solution_from_weights(problem: relu.Problem, W: np.ndarray) -> ReluSolution:
  """Given weights (from the CVXPY oracle) with their exact objective."""
  return _solution(problem, W, 0)
