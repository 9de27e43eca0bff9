"""The penalty method with optax: the reference code's approach, kept as a baseline.

See docs/math.md §4.

Minimises objective(W) + ρ Σ (ε‖W[s, k, :, c]‖_q − (2D_ik − 1) x_iᵀW[s, k, :, c])₊ with any optax
optimiser on the (sub)gradient. It handles every loss and ball, but as a subgradient method it
only approaches the optimum (and feasibility) slowly; the ADMM solver is the exact one.
"""

import dataclasses
import functools
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cvxjax import streaming
from cvxjax.core import relu
from cvxjax.solvers import base, relu_certificate, relu_streaming


class State(NamedTuple):
  """Attributes: W (S, P, d, C) weights; opt_state: the optax state; step: steps taken."""

  W: jnp.ndarray
  opt_state: optax.OptState
  step: jnp.ndarray


def penalised_objective(W, X, D, targets, *, loss, eps, q, beta, rho):
  """objective(W) + ρ Σ (constraint violation)₊ (no constraints for gated heads)."""
  value = relu.objective(W, X, D, targets, loss=loss, eps=eps, q=q, beta=beta)
  if W.shape[0] == 1:
    return value
  need = eps * relu.dual_norm(W, q)[:, :, None, :]
  excess = jnp.maximum(need - relu.cone_slacks(W, X, D), 0.0)
  return value + rho * jnp.sum(jnp.where(relu.counted(targets)[:, None], excess, 0.0))


def init(W0, optimizer: optax.GradientTransformation) -> State:
  return State(W=W0, opt_state=optimizer.init(W0), step=jnp.asarray(0))


def apply_gradient(state: State, grad, optimizer: optax.GradientTransformation) -> State:
  """One optimiser step with `grad`, the gradient of the penalised objective at state.W (summed
  over the examples: a full pass, or its chunks added, `cvxjax.streaming`)."""
  updates, opt_state = optimizer.update(grad, state.opt_state, state.W)
  return State(W=optax.apply_updates(state.W, updates), opt_state=opt_state, step=state.step + 1)


def random_start(key, shape: tuple, dtype) -> jnp.ndarray:
  """Small random weights of `shape` (S, P, d, C): ‖·‖ is not differentiable at 0."""
  return 1e-3 * jax.random.normal(key, shape, dtype)


_ADAM = optax.adam(1e-2)


@dataclasses.dataclass(frozen=True)
class Solver(base.Solver):
  """The penalty method over a `cvxjax.core.relu.Instance`: every loss, ball and head.

  It has no test of its own; it stops at `max_steps` or a certified relative gap ≤ `tol`.

  Attributes:
    optimizer: the optax transformation (default optax.adam(1e-2)).
    rho: the penalty weight ρ.
    tol: the certified relative gap to stop at.
  """

  optimizer: optax.GradientTransformation = _ADAM
  rho: float = 10.0

  name: ClassVar[str] = "penalty"

  def __post_init__(self):
    if not (isinstance(self.rho, (int, float)) and self.rho > 0):
      raise ValueError(f"rho must be a number > 0, got {self.rho!r}")

  def init(self, problem: relu.Instance, start=None) -> State:
    dtype = problem.X.dtype
    W = (random_start(problem.key, problem.weight_shape, dtype) if start is None
         else jnp.asarray(start, dtype))
    return init(W, self.optimizer)

  def step(self, problem: relu.Instance, state: State) -> State:
    grad = jax.grad(penalised_objective)(state.W, problem.X, problem.D, problem.targets,
                                         rho=self.rho, **problem.measures)
    return apply_gradient(state, grad, self.optimizer)

  def solution(self, problem: relu.Instance, state: State):
    return relu_certificate.solution(state.W, None, None, problem, state.step)


@functools.partial(jax.jit, static_argnames=("loss", "eps", "q", "rho"))
def _chunk_gradient(W, X, D, labels, onehot, pairs, beta, *, loss, eps, q, rho):
  targets = relu.Targets(labels, onehot, pairs)
  return jax.grad(penalised_objective)(W, X, D, targets, loss=loss, eps=eps, q=q, beta=beta,
                                       rho=rho)


_apply_gradient = jax.jit(apply_gradient, static_argnames=("optimizer",))


@dataclasses.dataclass(frozen=True)
class Streamed(Solver):
  """The penalty method with the problem's examples on the host (X, D and the targets NumPy
  arrays or memory maps), streamed in chunks of `chunk_size` examples
  (`cvxjax.solvers.relu_streaming`): each step is a full pass that adds the chunks' gradients,
  so the iterates equal the in-memory ones up to the order of the additions. Its steps are host
  loops, so `loop.run` calls it without jit; its summary has the objective but no gap (the
  certificate needs the problem in memory), so it runs its `max_steps`.

  Attributes:
    chunk_size: examples per chunk on the device.
    optimizer, rho, tol: as for `Solver`.
  """

  chunk_size: int = 1024

  jittable: ClassVar[bool] = False

  def __post_init__(self):
    super().__post_init__()
    streaming.check_chunk_size(self.chunk_size)

  def init(self, problem: relu.Instance, start=None) -> State:
    dtype = jnp.result_type(float)
    W = (random_start(problem.key, problem.weight_shape, dtype) if start is None
         else jnp.asarray(start, dtype))
    return init(W, self.optimizer)

  def step(self, problem: relu.Instance, state: State) -> State:
    measures = dict(loss=problem.loss, eps=problem.eps, q=problem.q, rho=self.rho)
    W = state.W
    grad = relu_streaming.pass_sum(lambda first, *chunk: _chunk_gradient(
        W, *chunk, jnp.asarray(problem.beta if first else 0.0, W.dtype), **measures),  # β once
        problem, self.chunk_size)
    return _apply_gradient(state, grad, self.optimizer)

  def summary(self, problem: relu.Instance, state: State) -> base.Summary:
    return relu_streaming.iterate_summary(state.W, problem, self.chunk_size, state.step)

  def solution(self, problem: relu.Instance, state: State):
    return relu_streaming.solution(state.W, problem, self.chunk_size, state.step)
