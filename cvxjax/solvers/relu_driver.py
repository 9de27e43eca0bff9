"""Runs the ReLU-head solvers on a validated problem: jitted chunks, checkpoints, progress."""

import functools
import warnings
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cvxjax import sharding, streaming
from cvxjax.core import relu, relu_dual
from cvxjax.solvers import admm, penalty, proximal, relu_barrier
from cvxjax.solvers import loop
from cvxjax.solvers.loop import blas_limited


def run_chunks(state, advance, *, steps_of, finished, describe, **kw):
  report = lambda st: loop.Progress(steps_of(st), finished(st), describe(st))
  return loop.run_chunks(state, advance, report, **kw)[0]

SOLVERS = ("auto", "admm", "apg", "al", "barrier", "penalty")
_DEFAULT_STEPS = {"admm": 20000, "apg": 20000, "al": 50000, "barrier": 300, "penalty": 5000}
_AL_DELTA = 1e3  # augmented-Lagrangian penalty on the summed loss (measured best of 1e1–1e3)


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


def check_solver(solver: str, problem: relu.Problem) -> str:
  """Resolves "auto" and rejects a solver outside its domain (with the reason)."""
  if solver not in SOLVERS:
    raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
  if solver == "auto":
    return "admm"
  if solver == "barrier" and (reason := relu_barrier.unsupported_reason(problem)):
    raise ValueError(f"solver='barrier' {reason}; use solver='admm'")
  if solver in ("apg", "al"):
    needs = "gated=True" if solver == "apg" else "gated=False"
    if problem.loss != "squared" or problem.eps > 0 or problem.gated != (solver == "apg"):
      raise ValueError(f"solver={solver!r} solves the plain squared-loss problem with {needs} "
                       "(eps=0, loss='squared'); use solver='admm' for the others")
  return solver


@functools.partial(jax.jit, static_argnames=("gated", "robust", "linear_solver", "nystrom_rank"))
def _admm_setup(X, D, targets, key, *, gated, robust, linear_solver, nystrom_rank):
  return admm.build_setup(X, D, targets, gated=gated, robust=robust,
                          linear_solver=linear_solver, nystrom_rank=nystrom_rank, key=key)


_ADMM_STATIC = ("gated", "loss", "eps", "q", "beta", "linear_solver", "cg_tol", "tol")


@functools.partial(jax.jit, static_argnames=_ADMM_STATIC)
def _admm_run(state, setup, num_steps, **problem):
  return admm.run(state, setup, num_steps=num_steps, **problem)


_PROX_STATIC = ("beta", "delta", "tol", "constraint_tol")


@functools.partial(jax.jit, static_argnames=_PROX_STATIC)
def _prox_run(state, X, D, targets, L, num_steps, **problem):
  return proximal.run(state, X, D, targets, num_steps=num_steps, L=L, **problem)


@functools.partial(jax.jit, static_argnames=("num_blocks", "C", "delta"))
def _lipschitz(X, D, key, *, num_blocks, C, delta):
  return proximal.lipschitz(X, D, num_blocks, C, key, delta=delta)


@functools.partial(jax.jit, static_argnames=("loss", "beta"))
def _barrier_init(setup, Y, *, loss, beta):
  return jax.vmap(lambda y: relu_barrier.init(setup, y, loss=loss, beta=beta))(Y)


@functools.partial(jax.jit, static_argnames=("loss", "beta", "tol"))
def _barrier_run(state, setup, Y, num_steps, *, loss, beta, tol):
  return relu_barrier.run(state, setup, Y, loss=loss, beta=beta, tol=tol, num_steps=num_steps)


_PENALTY_STATIC = ("loss", "eps", "q", "beta", "rho", "optimizer")


@functools.partial(jax.jit, static_argnames=_PENALTY_STATIC)
def _penalty_run(state, X, D, targets, num_steps, **problem):
  return penalty.run(state, X, D, targets, num_steps=num_steps, **problem)


@functools.partial(jax.jit, static_argnames=("loss", "eps", "q", "beta"))
def _evaluate(W, X, D, targets, *, loss, eps, q, beta):
  return (relu.objective(W, X, D, targets, loss=loss, eps=eps, q=q, beta=beta),
          relu.constraint_violation(W, X, D, eps, q) if W.shape[0] == 2 else jnp.zeros(()))


_REFINE_STEPS = 50  # projected-gradient steps on the cone multipliers per certificate


@functools.partial(jax.jit, static_argnames=("loss", "eps", "q", "beta"))
def _certificate(W, nu, lam, X, D, targets, directions, *, loss, eps, q, beta):
  """(feasible weights, their objective, a lower bound on the optimum): see `relu_dual`.

  nu: the loss map's multipliers, or None for the loss's gradient at W. lam: the cone
  multipliers, or None (gated heads; for ReLU heads, refined from zero).
  """
  if nu is None:
    nu = relu_dual.loss_gradient(W, X, D, targets, loss=loss, eps=eps, q=q)
  if W.shape[0] == 2:
    W = relu_dual.restore_feasibility(W, X, D, directions, relu.counted(targets), eps, q)
    lam = jnp.zeros(W.shape[:2] + D.shape[:1] + W.shape[3:], W.dtype) if lam is None else lam
  bound = relu_dual.lower_bound(nu, lam, X, D, targets, loss=loss, eps=eps, q=q, beta=beta,
                                num_blocks=W.shape[0],
                                refine_steps=0 if lam is None else _REFINE_STEPS)
  return W, relu.objective(W, X, D, targets, loss=loss, eps=eps, q=q, beta=beta), bound


def _relative_gap(objective, bound) -> float:
  return float(objective - bound) / max(abs(float(objective)), float(np.finfo(np.float64).tiny))


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


def _fit_streamed(problem: relu.Problem, *, solver: str, tol: float, max_steps: Optional[int],
                  key, optimizer, penalty_rho: float, checkpoint_dir: Optional[str],
                  checkpoint_every: int, progress: bool, chunk_size: int) -> ReluSolution:
  """APG or the penalty method with the features on the host, streamed in chunks of
  `chunk_size` examples."""
  streamed = _Streamed(problem, chunk_size)
  P, C = problem.D.shape[1], problem.targets.onehot.shape[1]
  dtype = jnp.result_type(float)
  chunk = dict(max_steps=_DEFAULT_STEPS[solver] if max_steps is None else int(max_steps),
               chunk=checkpoint_every, checkpoint_dir=checkpoint_dir, progress=progress,
               steps_of=lambda st: int(st.step))
  objective = lambda st: {"objective": f"{float(streamed.objective(st.W)):.8g}"}
  with blas_limited():
    if solver == "apg":
      L = streamed.lipschitz(key, 1, C)
      shapes = jnp.zeros((1, problem.X.shape[1]), dtype), jnp.zeros((1, P), dtype)
      state = proximal.init(*shapes, relu.Targets(*(jnp.zeros((1, C)),) * 3), num_blocks=1,
                            augmented=False)
      state = run_chunks(state, lambda st, k: streamed.run(st, L, k, tol=tol),
                         finished=lambda st: bool(st.residual <= tol),
                         describe=lambda st: {**objective(st),
                                              "residual": f"{float(st.residual):.2e}"}, **chunk)
    else:
      optimizer = _penalty_optimizer(optimizer)
      state = penalty.init(_penalty_start(problem, key, dtype), optimizer)
      state = run_chunks(
          state, lambda st, k: streamed.penalty_run(st, k, optimizer=optimizer, rho=penalty_rho),
          finished=lambda st: False, describe=objective, **chunk)
  W = state.W
  if not problem.gated:
    W = streamed.feasible(W, jnp.asarray(relu_dual.interior_directions(
        problem.X, problem.gates, problem.eps, problem.q), dtype))
  return _solution(problem, W, state.step, objective=streamed.objective(W),
                   violation=streamed.violation(W))


def _penalty_optimizer(optimizer):
  return optax.adam(1e-2) if optimizer is None else optimizer


def _penalty_start(problem: relu.Problem, key, dtype):
  """Small random weights (S, P, d, C): ‖·‖ is not differentiable at 0."""
  S = 1 if problem.gated else 2
  shape = (S, problem.D.shape[1], problem.X.shape[1], problem.targets.onehot.shape[1])
  return 1e-3 * jax.random.normal(key, shape, dtype)


def fit_relu(problem: relu.Problem, *, solver: str, tol: float, max_steps: Optional[int],
             linear_solver: str, nystrom_rank: int, optimizer, penalty_rho: float, key,
             checkpoint_dir: Optional[str], checkpoint_every: int,
             progress: bool, mesh=None, chunk_size: Optional[int] = None) -> ReluSolution:
  """Runs a ReLU-head solver on a validated problem; see `cvxjax.relu.fit`."""
  if chunk_size is not None:
    return _fit_streamed(problem, solver=solver, tol=tol, max_steps=max_steps, key=key,
                         optimizer=optimizer, penalty_rho=penalty_rho,
                         checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                         progress=progress, chunk_size=chunk_size)
  X, D, targets = _on_device(problem)
  if rows := sharding.padding(X.shape[0], mesh):  # rows that count nowhere: see relu.counted
    X, D, targets = jax.tree.map(lambda a: jnp.asarray(sharding.pad(a, rows)), (X, D, targets))
  # Examples over the mesh's first axis, sign patterns over its second (states follow them).
  put = functools.partial(sharding.place, mesh=mesh, examples=X.shape[0], model=D.shape[1])
  X, targets, D = put(X, model=None), put(targets, model=None), put(D)
  dtype = X.dtype
  S = 1 if problem.gated else 2
  P, C = D.shape[1], targets.onehot.shape[1]
  measures = dict(loss=problem.loss, eps=problem.eps, q=problem.q, beta=problem.beta)
  objective_of = lambda W: float(_evaluate(W, X, D, targets, **measures)[0])
  directions = jnp.asarray(relu_dual.interior_directions(problem.X, problem.gates, problem.eps,
                                                         problem.q), dtype)
  # (W, ν, λ) of a state → (feasible W, objective, lower bound); the gap's relative size.
  certify = lambda W, nu=None, lam=None: _certificate(W, nu, lam, X, D, targets, directions,
                                                      **measures)
  gap_of = lambda W, nu=None, lam=None: _relative_gap(*certify(W, nu, lam)[1:])
  max_steps = _DEFAULT_STEPS[solver] if max_steps is None else int(max_steps)
  chunk = dict(max_steps=max_steps, chunk=checkpoint_every, checkpoint_dir=checkpoint_dir,
               progress=progress, steps_of=lambda st: int(st.step))
  with blas_limited():
    if solver == "admm":
      robust = problem.eps > 0
      setup = put(_admm_setup(X, D, targets, key, gated=problem.gated, robust=robust,
                              linear_solver=linear_solver, nystrom_rank=nystrom_rank))
      state = put(admm.init(setup, num_blocks=S, num_patterns=P, gated=problem.gated,
                            robust=robust))
      settings = dict(gated=problem.gated, loss=problem.loss, eps=problem.eps, q=problem.q,
                      beta=problem.beta, linear_solver=linear_solver, cg_tol=tol * 1e-2, tol=tol)
      # The multipliers of F W = M (ρU_M) and of the cone slacks (−ρU_T ≥ 0) are dual points.
      duals = lambda st: (st.Z, st.rho * st.U_M, None if st.T is None else -st.rho * st.U_T)
      state = run_chunks(
          state, lambda st, k: _admm_run(st, setup, k, **settings),
          finished=lambda st: bool((st.primal <= tol) & (st.dual <= tol))
          or gap_of(*duals(st)) <= tol,
          describe=lambda st: {"objective": f"{objective_of(st.Z):.8g}",
                               "primal": f"{float(st.primal):.2e}",
                               "dual": f"{float(st.dual):.2e}"}, **chunk)
      certificate = certify(*duals(state))
      stopped = f"primal and dual residuals {float(state.primal):.1e}, {float(state.dual):.1e}"
    elif solver == "barrier":
      if dtype != jnp.float64:
        warnings.warn("the barrier solver is built for float64 (jax.config.update("
                      "'jax_enable_x64', True)); in float32 it stops at loose gaps", stacklevel=3)
      setup = relu_barrier.build_setup(X, D, jnp.asarray(problem.gates, dtype))
      Y = relu_barrier.class_targets(targets, problem.loss)
      state = _barrier_init(setup, Y, loss=problem.loss, beta=problem.beta)
      settings = dict(loss=problem.loss, beta=problem.beta, tol=tol)
      state = run_chunks(
          state, lambda st, k: _barrier_run(st, setup, Y, k, **settings),
          max_steps=max_steps, chunk=checkpoint_every, checkpoint_dir=checkpoint_dir,
          progress=progress, steps_of=lambda st: int(jnp.max(st.step)),
          finished=lambda st: bool(jnp.all(st.done)),
          describe=lambda st: {"objective": f"{float(jnp.sum(st.upper)):.8g}",
                               "gap": f"{float(jnp.sum(st.upper - st.lower)):.2e}"})
      W = relu_barrier.weights(state, P)
      gap = float(jnp.sum(state.upper - state.lower))
      if gap > tol * float(jnp.sum(state.upper)):
        warnings.warn(f"barrier solver stopped after {int(jnp.max(state.step))} steps at "
                      f"relative gap {gap / float(jnp.sum(state.upper)):.2e} > tol={tol:g}",
                      stacklevel=3)
      return _solution(problem, W, jnp.max(state.step), gap=jnp.sum(state.upper - state.lower))
    elif solver in ("apg", "al"):
      delta = _AL_DELTA if solver == "al" else 0.0
      L = _lipschitz(X, D, key, num_blocks=S, C=C, delta=delta)
      state = put(proximal.init(X, D, targets, num_blocks=S, augmented=solver == "al"))
      settings = dict(beta=problem.beta, delta=delta, tol=tol, constraint_tol=tol)
      # The loss's gradient, and AL's multipliers (λ − δ G W)₊ of G W ≥ 0 (`proximal`).
      duals = lambda st: (st.W, None, None if st.lam is None else jnp.maximum(
          st.lam - delta * relu.cone_slacks(st.W, X, D), 0.0))
      state = run_chunks(
          state, lambda st, k: _prox_run(st, X, D, targets, L, k, **settings),
          finished=lambda st: bool((st.residual <= tol) & (st.violation <= tol)),
          describe=lambda st: {"objective": f"{objective_of(st.W):.8g}",
                               "residual": f"{float(st.residual):.2e}"}, **chunk)
      certificate = certify(*duals(state))
      stopped = f"relative prox-gradient {float(state.residual):.1e}"
    else:
      optimizer = _penalty_optimizer(optimizer)
      state = put(penalty.init(_penalty_start(problem, key, dtype), optimizer))
      settings = dict(optimizer=optimizer, rho=penalty_rho, **measures)
      state = run_chunks(
          state, lambda st, k: _penalty_run(st, X, D, targets, k, **settings),
          finished=lambda st: False,
          describe=lambda st: {"objective": f"{objective_of(st.W):.8g}"}, **chunk)
      certificate = certify(state.W)
      stopped = "a subgradient method's steps"
  W, _, bound = certificate
  violation = float(_evaluate(state.Z if solver == "admm" else state.W, X, D, targets,
                              **measures)[1])
  solution = _solution(problem, W, state.step)
  gap = float(jnp.maximum(solution.objective - bound, 0.0))
  if gap > tol * abs(float(solution.objective)):
    warnings.warn(f"solver={solver!r} stopped after {int(state.step)} steps ({stopped}) at "
                  f"relative gap {gap / abs(float(solution.objective)):.2e} > tol={tol:g}"
                  + ("" if problem.gated else f"; its weights violated the cones by "
                     f"{violation:.1e} before the feasibility step"), stacklevel=3)
  return solution._replace(gap=jnp.asarray(gap, W.dtype))


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
