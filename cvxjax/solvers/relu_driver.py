"""Runs the ReLU-head solvers on a validated problem: placement, streaming, the head's arrays."""

import functools
import warnings
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cvxjax import sharding, streaming
from cvxjax.core import relu, relu_dual
from cvxjax.solvers import admm, base, loop, penalty, proximal, relu_barrier

_DEFAULT_STEPS = {"admm": 20000, "apg": 20000, "al": 50000, "barrier": 300, "penalty": 5000}
SOLVERS = {"auto": admm.Solver, "admm": admm.Solver,
           "apg": functools.partial(proximal.Solver, augmented=False),
           "al": functools.partial(proximal.Solver, augmented=True),
           "barrier": relu_barrier.Solver, "penalty": penalty.Solver}
_VALUES = (admm.Solver, proximal.Solver, relu_barrier.Solver, penalty.Solver)


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


def resolve_solver(solver, problem: relu.Problem) -> base.Solver:
  """A ReLU solver value from `solver` (a name or a value), refused outside its domain (with the
  reason)."""
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


@functools.partial(jax.jit, static_argnames=("loss", "eps", "q", "beta"))
def _evaluate(W, X, D, targets, *, loss, eps, q, beta):
  return (relu.objective(W, X, D, targets, loss=loss, eps=eps, q=q, beta=beta),
          relu.constraint_violation(W, X, D, eps, q) if W.shape[0] == 2 else jnp.zeros(()))


@functools.partial(jax.jit, static_argnames=("num_blocks",))
def _gram(V, X, D, *, num_blocks):
  return relu.scores_adjoint(relu.scores(V, X, D), X, D, num_blocks)


_loss_gradient = jax.jit(proximal.loss_gradient)


def _chunk_loss_gradient(Y, first, X, D, labels, onehot, pairs):
  return _loss_gradient(Y, X, D, onehot)


@functools.partial(jax.jit, static_argnames=("beta", "tol"))
def _apply_gradient(state, grad, L, *, beta, tol):
  return proximal.apply_gradient(state, grad, beta=beta, L=L, delta=0.0, tol=tol)


@functools.partial(jax.jit, static_argnames=("loss", "eps", "q"))
def _chunk_objective(W, X, D, labels, onehot, pairs, beta, *, loss, eps, q):
  targets = relu.Targets(labels, onehot, pairs)
  return relu.objective(W, X, D, targets, loss=loss, eps=eps, q=q, beta=beta)


@functools.partial(jax.jit, static_argnames=("loss", "eps", "q", "rho"))
def _chunk_penalty_gradient(W, X, D, labels, onehot, pairs, beta, *, loss, eps, q, rho):
  targets = relu.Targets(labels, onehot, pairs)
  return jax.grad(penalty.penalised_objective)(W, X, D, targets, loss=loss, eps=eps, q=q,
                                               beta=beta, rho=rho)


_apply_penalty_gradient = jax.jit(penalty.apply_gradient, static_argnames=("optimizer",))


@functools.partial(jax.jit, static_argnames=("eps", "q"))
def _chunk_violation(W, X, D, *, eps, q):
  return relu.constraint_violation(W, X, D, eps, q)


_chunk_shift = jax.jit(relu_dual.feasibility_shift, static_argnames=("eps", "q"))


class _Streamed:
  """Full passes over a problem's host arrays in chunks (APG and the penalty method)."""

  def __init__(self, problem: relu.Problem, chunk_size: int):
    self.problem, self.chunk_size = problem, chunk_size
    t = problem.targets
    dtype = jnp.result_type(float)
    self.arrays = (problem.X, problem.D, t.labels, t.onehot, t.pairs)
    self.dtypes = (dtype, dtype, dtype if problem.binary else jnp.int32, dtype, dtype)

  def sum(self, fn):
    """Σ over chunks of fn(first, X, D, labels, onehot, pairs)."""
    return streaming.pass_sum(fn, self.arrays, self.chunk_size, self.dtypes)

  def lipschitz(self, key, num_blocks: int, C: int):
    """`proximal.lipschitz` (δ = 0), every product a chunked pass."""
    X, D = self.problem.X, self.problem.D
    gram = lambda V: self.sum(lambda _, X, D, *__: _gram(V, X, D, num_blocks=num_blocks))
    V = proximal.power_start(key, X.shape[1], D.shape[1], num_blocks, C, jnp.result_type(float))
    for _ in range(proximal.POWER_ITERS):
      V = proximal.normalized(gram(V))
    return proximal.LIPSCHITZ_MARGIN * jnp.vdot(V, gram(V))

  def run(self, state, L, num_steps: int, *, tol: float):
    """Up to `num_steps` APG steps; stops at prox-gradient ≤ tol, as `proximal.run` does."""
    for _ in range(num_steps):
      if float(state.residual) <= tol:
        break
      grad = self.sum(functools.partial(_chunk_loss_gradient, state.Y))
      state = _apply_gradient(state, grad, L, beta=self.problem.beta, tol=tol)
    return state

  def penalty_run(self, state, num_steps: int, *, optimizer, rho: float):
    """`num_steps` steps of the penalty method, each on the gradient of a full pass."""
    p = self.problem
    measures = dict(loss=p.loss, eps=p.eps, q=p.q, rho=rho)
    for _ in range(num_steps):
      grad = self.sum(lambda first, *chunk, W=state.W: _chunk_penalty_gradient(
          W, *chunk, jnp.asarray(p.beta if first else 0.0, W.dtype), **measures))
      state = _apply_penalty_gradient(state, grad, optimizer)
    return state

  def objective(self, W):
    p = self.problem
    measures = dict(loss=p.loss, eps=p.eps, q=p.q)
    return self.sum(lambda first, *chunk: _chunk_objective(
        W, *chunk, jnp.asarray(p.beta if first else 0.0, W.dtype), **measures))

  def feasible(self, W, directions):
    """`relu_dual.restore_feasibility` with the shifts' max over the chunks (ReLU heads)."""
    p = self.problem
    t = blocked = None
    for X, D, labels, onehot, pairs in streaming.chunks(self.arrays, self.chunk_size,
                                                        self.dtypes):
      counted = relu.counted(relu.Targets(labels, onehot, pairs))
      t_c, blocked_c = _chunk_shift(W, X, D, directions, counted, eps=p.eps, q=p.q)
      t = t_c if t is None else jnp.maximum(t, t_c)
      blocked = blocked_c if blocked is None else blocked | blocked_c
    return relu_dual.shifted(W, t, blocked, directions)

  def violation(self, W):
    """`relu.constraint_violation`, the largest over the chunks (0 for a gated head)."""
    if W.shape[0] == 1:
      return jnp.zeros((), W.dtype)
    return max((_chunk_violation(W, X, D, eps=self.problem.eps, q=self.problem.q)
                for X, D, *_ in streaming.chunks(self.arrays, self.chunk_size, self.dtypes)),
               key=float)


def _fit_streamed(problem: relu.Problem, *, solver: base.Solver, max_steps: int, key,
                  checkpoint_dir: Optional[str], checkpoint_every: int, progress: bool,
                  chunk_size: int, start) -> ReluSolution:
  """APG or the penalty method with the features on the host, streamed in chunks of
  `chunk_size` examples: each step a full pass, run by `loop.run_chunks` as `loop.run` runs
  in-memory solvers."""
  streamed = _Streamed(problem, chunk_size)
  P, C = problem.D.shape[1], problem.targets.onehot.shape[1]
  dtype = jnp.result_type(float)
  tol = solver.tol
  chunk = dict(max_steps=max_steps, chunk=checkpoint_every, checkpoint_dir=checkpoint_dir,
               progress=progress)
  objective = lambda st: {"objective": f"{float(streamed.objective(st.W)):.8g}"}
  with loop.blas_limited():
    if solver.name == "apg":
      L = streamed.lipschitz(key, 1, C)
      shapes = jnp.zeros((1, problem.X.shape[1]), dtype), jnp.zeros((1, P), dtype)
      state = proximal.init(*shapes, relu.Targets(*(jnp.zeros((1, C)),) * 3), num_blocks=1,
                            augmented=False, start=start)
      report = lambda st: loop.Progress(int(st.step), bool(st.residual <= tol), {
          **objective(st), "residual": f"{float(st.residual):.2e}"})
      state, _ = loop.run_chunks(state, lambda st, k: streamed.run(st, L, k, tol=tol), report,
                                 **chunk)
    else:
      W0 = (penalty.random_start(key, problem.weight_shape, dtype) if start is None
            else jnp.asarray(start, dtype))
      state = penalty.init(W0, solver.optimizer)
      report = lambda st: loop.Progress(int(st.step), False, objective(st))
      state, _ = loop.run_chunks(
          state, lambda st, k: streamed.penalty_run(st, k, optimizer=solver.optimizer,
                                                    rho=solver.rho), report, **chunk)
  W = state.W
  if not problem.gated:
    W = streamed.feasible(W, jnp.asarray(relu_dual.interior_directions(
        problem.X, problem.gates, problem.eps, problem.q), dtype))
  return _solution(problem, W, state.step, objective=streamed.objective(W),
                   violation=streamed.violation(W))


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
  settings = dict(max_steps=max_steps, checkpoint_dir=checkpoint_dir, progress=progress)
  if chunk_size is not None:
    return _fit_streamed(problem, solver=solver, key=key, checkpoint_every=checkpoint_every,
                         chunk_size=chunk_size, start=start, **settings)
  X, D, targets = _on_device(problem)
  if rows := sharding.padding(X.shape[0], mesh):  # rows that count nowhere: see relu.counted
    X, D, targets = jax.tree.map(lambda a: jnp.asarray(sharding.pad(a, rows)), (X, D, targets))
  # Examples over the mesh's first axis, sign patterns over its second (states follow them).
  put = functools.partial(sharding.place, mesh=mesh, examples=X.shape[0], model=D.shape[1])
  dtype = X.dtype
  directions = relu_dual.interior_directions(problem.X, problem.gates, problem.eps, problem.q)
  instance = relu.Instance(
      X=put(X, model=None), D=put(D), targets=put(targets, model=None),
      gates=jnp.asarray(problem.gates, dtype), directions=jnp.asarray(directions, dtype), key=key,
      gated=problem.gated, binary=problem.binary, loss=problem.loss, eps=problem.eps,
      q=problem.q, beta=problem.beta)
  if solver.name == "barrier" and dtype != jnp.float64:
    warnings.warn("the barrier solver is built for float64 (jax.config.update("
                  "'jax_enable_x64', True)); in float32 it stops at loose gaps", stacklevel=3)
  with loop.blas_limited():
    result = loop.run(solver, instance, chunk=checkpoint_every, start=start, place=put,
                      **settings)
  summary = result.summary
  detail = ("" if problem.gated or summary.violation is None else
            f"; its weights violated the cones by {float(summary.violation):.1e} before the "
            "feasibility step")
  loop.warn_above_tol(solver.name, summary, solver.tol, detail)
  return _solution(problem, result.params, summary.steps)._replace(gap=summary.gap)


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
