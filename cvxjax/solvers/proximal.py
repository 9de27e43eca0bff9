"""Accelerated proximal gradient for gated ReLU, and the augmented Lagrangian for convex ReLU.

Both minimise a smooth part plus β Σ‖W[s, k, :, c]‖₂ by FISTA with adaptive restarts (O'Donoghue &
Candès 2015): the prox is the group soft-threshold, the step 1/L comes from a power iteration.

  - APG (gated ReLU, squared loss): smooth part ½‖F W − Y‖².
  - AL (convex ReLU, squared loss, cone constraints G W ≥ 0): smooth part
    ½‖F W − Y‖² + (δ/2)‖(λ/δ − G W)₊‖²; when the inner FISTA's prox-gradient is small the
    multipliers take the step λ ← (λ − δ G W)₊ (the method of scnn's AL solver, docs/math.md §4).
"""

import dataclasses
import functools
from typing import ClassVar, NamedTuple, Optional

import jax
import jax.numpy as jnp

from cvxjax import streaming
from cvxjax.core import numerics, relu
from cvxjax.solvers import base, relu_certificate, relu_streaming

POWER_ITERS = 50
LIPSCHITZ_MARGIN = 1.05  # power iteration underestimates ‖·‖²; the step stays below 1/L
_FIRST_INNER_TOL = 1e-2


class State(NamedTuple):
  """FISTA iterate, with the multipliers of the augmented Lagrangian (None for APG).

  Attributes:
    W: (S, P, d, C) the iterate. Y: the extrapolated point. t: the momentum counter.
    lam: (S, P, n, C) multipliers of G W ≥ 0, or None.
    step: iterations. outer: multiplier updates. residual: the last relative prox-gradient.
    inner_tol: the prox-gradient at which AL's inner problem counts as solved (it tightens
      tenfold per multiplier update, down to the final tolerance).
    violation: the largest cone violation at W (0 for APG).
  """

  W: jnp.ndarray
  Y: jnp.ndarray
  t: jnp.ndarray
  lam: Optional[jnp.ndarray]
  step: jnp.ndarray
  outer: jnp.ndarray
  residual: jnp.ndarray
  inner_tol: jnp.ndarray
  violation: jnp.ndarray


def lipschitz(X, D, num_blocks: int, C: int, key, *, delta: float = 0.0):
  """An upper estimate of the smooth part's curvature ‖F‖² (+ δ‖G‖² for AL), by power iteration."""
  def gram(V):
    out = relu.scores_adjoint(relu.scores(V, X, D), X, D, num_blocks)
    if delta > 0:
      out = out + delta * relu.cone_slacks_adjoint(relu.cone_slacks(V, X, D), X, D)
    return out
  V = jax.lax.fori_loop(0, POWER_ITERS, lambda _, V: normalized(gram(V)),
                        power_start(key, X.shape[1], D.shape[1], num_blocks, C, X.dtype))
  return LIPSCHITZ_MARGIN * jnp.vdot(V, gram(V))


def power_start(key, d: int, P: int, num_blocks: int, C: int, dtype):
  """The power iteration's random unit start, (S, P, d, C)."""
  return normalized(jax.random.normal(key, (num_blocks, P, d, C), dtype))


def normalized(V):
  return V / jnp.linalg.norm(V)


def loss_gradient(W, X, D, onehot):
  """∇ of ½‖F W − Y‖² at W, (S, P, d, C): a sum over examples (chunks of them add)."""
  return relu.scores_adjoint(relu.scores(W, X, D) - onehot, X, D, W.shape[0])


def _smooth_grad(W, lam, X, D, onehot, delta):
  grad = loss_gradient(W, X, D, onehot)
  if lam is not None:
    grad = grad - delta * relu.cone_slacks_adjoint(
        jnp.maximum(lam / delta - relu.cone_slacks(W, X, D), 0.0), X, D)
  return grad


def init(X, D, targets: relu.Targets, *, num_blocks: int, augmented: bool,
         start: Optional[jnp.ndarray] = None) -> State:
  """W = 0, or the warm start `start` (S, P, d, C); AL's multipliers start at zero."""
  n, d = X.shape
  C = targets.onehot.shape[1]
  W = (jnp.zeros((num_blocks, D.shape[1], d, C), X.dtype) if start is None
       else jnp.asarray(start, X.dtype))
  lam = jnp.zeros((num_blocks, D.shape[1], n, C), X.dtype) if augmented else None
  zero = jnp.asarray(0.0, X.dtype)
  return State(W=W, Y=W, t=jnp.asarray(1.0, X.dtype), lam=lam, step=jnp.asarray(0),
               outer=jnp.asarray(0), residual=zero + jnp.inf, inner_tol=zero + _FIRST_INNER_TOL,
               violation=zero)


def step(state: State, X, D, targets: relu.Targets, *, beta: float, L, delta: float,
         tol: float) -> State:
  """One FISTA step with gradient-based restart; for AL, a multiplier step once the inner
  problem is solved to `state.inner_tol` (relative prox-gradient)."""
  grad = _smooth_grad(state.Y, state.lam, X, D, targets.onehot, delta)
  return apply_gradient(state, grad, beta=beta, L=L, delta=delta, tol=tol,
                        cone_slacks=lambda W: relu.cone_slacks(W, X, D))


def apply_gradient(state: State, grad, *, beta: float, L, delta: float, tol: float,
                   cone_slacks=None) -> State:
  """The FISTA step from the smooth part's gradient `grad` at state.Y.

  Args:
    state: the current state.
    grad: (S, P, d, C) the gradient at state.Y.
    beta, L, delta, tol: the problem and the solver's settings.
    cone_slacks: W -> the slacks G W (AL only; APG needs no pass over the examples here).

  Returns:
    The next state.
  """
  W = numerics.shrink(state.Y - grad / L, beta / L, 2)
  t = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * state.t ** 2))
  restart = jnp.vdot(state.Y - W, W - state.W) > 0
  t = jnp.where(restart, 1.0, t)
  Y = jnp.where(restart, W, W + ((state.t - 1.0) / t) * (W - state.W))
  residual = L * jnp.linalg.norm(W - state.Y) / jnp.maximum(
      jnp.linalg.norm(grad), jnp.finfo(W.dtype).tiny)
  lam, outer, inner_tol = state.lam, state.outer, state.inner_tol
  violation = jnp.zeros_like(state.violation)
  if lam is not None:
    slack = cone_slacks(W)
    violation = jnp.max(jnp.maximum(-slack, 0.0))
    inner_done = residual <= inner_tol
    inner_tol = jnp.where(inner_done, jnp.maximum(0.1 * inner_tol, tol), inner_tol)
    lam = jnp.where(inner_done, jnp.maximum(lam - delta * slack, 0.0), lam)
    outer = outer + inner_done
    Y = jnp.where(inner_done, W, Y)
    t = jnp.where(inner_done, 1.0, t)
  return State(W=W, Y=Y, t=t, lam=lam, step=state.step + 1, outer=outer, residual=residual,
               inner_tol=inner_tol, violation=violation)


_AL_DELTA = 1e3  # augmented-Lagrangian penalty on the summed loss (measured best of 1e1–1e3)


@dataclasses.dataclass(frozen=True)
class Solver(base.Solver):
  """APG (gated ReLU) or, with `augmented`, the augmented Lagrangian (convex ReLU), over a
  plain squared-loss `cvxjax.core.relu.Instance`.

  Stops at relative prox-gradient ≤ `tol` and cone violation ≤ `tol` (checked every step), or
  at a certified relative gap ≤ `tol` (between chunks).

  Attributes:
    augmented: the augmented Lagrangian ("al") instead of APG ("apg").
    delta: AL's penalty weight δ.
    tol: see above.
  """

  augmented: bool = False
  delta: float = _AL_DELTA

  @property
  def name(self) -> str:
    return "al" if self.augmented else "apg"

  def prepare(self, problem: relu.Instance) -> tuple:
    """(problem, L): the step's Lipschitz constant, by power iteration."""
    return problem, lipschitz(problem.X, problem.D, problem.num_blocks,
                              problem.targets.onehot.shape[1], problem.key, delta=self._delta)

  @property
  def _delta(self) -> float:
    return self.delta if self.augmented else 0.0

  def init(self, prepared: tuple, start=None) -> State:
    problem, _ = prepared
    return init(problem.X, problem.D, problem.targets, num_blocks=problem.num_blocks,
                augmented=self.augmented, start=start)

  def step(self, prepared: tuple, state: State) -> State:
    problem, L = prepared
    return step(state, problem.X, problem.D, problem.targets, beta=problem.beta, L=L,
                delta=self._delta, tol=self.tol)

  def terminate(self, prepared: tuple, state: State) -> jnp.ndarray:
    return (state.residual <= self.tol) & (state.violation <= self.tol)

  def solution(self, prepared: tuple, state: State):
    """The certificate with the loss's gradient and AL's multipliers (λ − δ G W)₊ of G W ≥ 0."""
    problem, _ = prepared
    lam = None if state.lam is None else jnp.maximum(
        state.lam - self._delta * relu.cone_slacks(state.W, problem.X, problem.D), 0.0)
    return relu_certificate.solution(state.W, None, lam, problem, state.step)


@functools.partial(jax.jit, static_argnames=("num_blocks",))
def _gram(V, X, D, *, num_blocks):
  return relu.scores_adjoint(relu.scores(V, X, D), X, D, num_blocks)


_loss_gradient = jax.jit(loss_gradient)


@functools.partial(jax.jit, static_argnames=("beta", "tol"))
def _apply_gradient(state, grad, L, *, beta, tol):
  return apply_gradient(state, grad, beta=beta, L=L, delta=0.0, tol=tol)


@dataclasses.dataclass(frozen=True)
class Streamed(Solver):
  """APG with the problem's examples on the host (X, D and the targets NumPy arrays or memory
  maps), streamed in chunks of `chunk_size` examples (`cvxjax.solvers.relu_streaming`): each
  step is a full pass that adds the chunks' gradients, so the iterates equal the in-memory ones
  up to the order of the additions. Its steps are host loops, so `loop.run` calls it without
  jit; its summary has the objective but no gap (the certificate needs the problem in memory).

  Attributes:
    chunk_size: examples per chunk on the device.
    tol: the relative prox-gradient at which it stops.
  """

  chunk_size: int = 1024

  jittable: ClassVar[bool] = False

  def __post_init__(self):
    if self.augmented:
      raise ValueError("augmented: the streamed solver runs APG (augmented=False) only, got True")
    streaming.check_chunk_size(self.chunk_size)

  def _sum(self, fn, problem: relu.Instance):
    return relu_streaming.pass_sum(fn, problem, self.chunk_size)

  def prepare(self, problem: relu.Instance) -> tuple:
    """(problem, L): `lipschitz` (δ = 0), every product a chunked pass."""
    gram = lambda V: self._sum(lambda _, X, D, *__: _gram(V, X, D, num_blocks=1), problem)
    V = power_start(problem.key, problem.X.shape[1], problem.D.shape[1], 1,
                    problem.targets.onehot.shape[1], jnp.result_type(float))
    for _ in range(POWER_ITERS):
      V = normalized(gram(V))
    return problem, LIPSCHITZ_MARGIN * jnp.vdot(V, gram(V))

  def init(self, prepared: tuple, start=None) -> State:
    problem, _ = prepared
    dtype, C = jnp.result_type(float), problem.targets.onehot.shape[1]
    shapes = jnp.zeros((1, problem.X.shape[1]), dtype), jnp.zeros((1, problem.D.shape[1]), dtype)
    return init(*shapes, relu.Targets(*(jnp.zeros((1, C), dtype),) * 3), num_blocks=1,
                augmented=False, start=start)  # eagerly: only the shapes count

  def step(self, prepared: tuple, state: State) -> State:
    problem, L = prepared
    grad = self._sum(lambda _, X, D, labels, onehot, pairs: _loss_gradient(state.Y, X, D, onehot),
                     problem)
    return _apply_gradient(state, grad, L, beta=problem.beta, tol=self.tol)

  def summary(self, prepared: tuple, state: State) -> base.Summary:
    return relu_streaming.iterate_summary(state.W, prepared[0], self.chunk_size, state.step)

  def solution(self, prepared: tuple, state: State):
    return relu_streaming.solution(state.W, prepared[0], self.chunk_size, state.step)
