"""Projected first-order baseline for polynomial heads: any optax optimiser, then Π_K.

Each step differentiates the exact adversarial objective (Danskin gradient at the exact TRS
attack), applies an optax update and projects Z and Z′ back onto K. It needs no d⁴ memory,
so it runs where the barrier solver cannot (d in the hundreds), but it is a baseline: with a
fixed step it stalls well above the optimum (docs/math.md §3, "Solver design notes"), and the gap
it reports (`certificate`) is valid but loose.
"""

import dataclasses
import functools
from typing import ClassVar, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from cvxjax import streaming
from cvxjax.core import poly, poly_dual, psd
from cvxjax.core.activations import Quadratic
from cvxjax.solvers import base


class ProjectedState(NamedTuple):
  """Solver state for one head (vmap or lax.map adds a leading head axis).

  Attributes:
    Z, Zp: (d+1, d+1) iterates in K.
    opt_state: the optax state of the pair (Z, Z′).
    step: () steps taken.
    multipliers: (2,) the multipliers of the last projections of Z and Z′ onto K: each next
      projection starts its search there (mostly 2 or 3 `eigh` calls instead of 4 to 7).
  """

  Z: jnp.ndarray
  Zp: jnp.ndarray
  opt_state: optax.OptState
  step: jnp.ndarray
  multipliers: jnp.ndarray


def init(X: jnp.ndarray, optimizer: optax.GradientTransformation,
         start: Optional[tuple] = None) -> ProjectedState:
  """Starts from Z = Z′ = 0 (in K; the prediction is zero), or from a warm start.

  Args:
    X: (n, d) inputs (only the shape and dtype are used).
    optimizer: the optax transformation.
    start: (Z, Z′), each (d+1, d+1) in K, or None.

  Returns:
    A `ProjectedState` for one head.
  """
  m = X.shape[1] + 1
  Z0 = jnp.zeros((m, m), X.dtype)
  Z, Zp = (Z0, Z0) if start is None else (jnp.asarray(v, X.dtype) for v in start)
  return ProjectedState(Z, Zp, optimizer.init((Z, Zp)), jnp.asarray(0), jnp.zeros(2, X.dtype))


def gradient(Z, Zp, X, s, *, r, beta, activation: Quadratic):
  """∇ of the objective over (Z, Z′): a sum over examples, so chunks of X add up to it when
  β is counted in one of them (the streaming path)."""
  objective = functools.partial(poly.objective, X=X, s=s, r=r, beta=beta, activation=activation)
  return jax.grad(lambda p: objective(*p))((Z, Zp))


def update(state: ProjectedState, grads, *, optimizer: optax.GradientTransformation
           ) -> ProjectedState:
  """One optax update with the gradient `grads` of (Z, Z′), then Π_K on Z and Z′."""
  updates, opt_state = optimizer.update(grads, state.opt_state, (state.Z, state.Zp))
  Z, Zp = optax.apply_updates((state.Z, state.Zp), updates)
  Z, Zp = (psd.trace_psd_projection(Y, mu) for Y, mu in zip((Z, Zp), state.multipliers,
                                                               strict=True))
  return ProjectedState(Z.point, Zp.point, opt_state, state.step + 1,
                        jnp.stack([Z.multiplier, Zp.multiplier]))


def step(state: ProjectedState, X, s, *, r, beta, activation: Quadratic,
         optimizer: optax.GradientTransformation) -> ProjectedState:
  """One optax update of the exact objective, then Π_K on Z and Z′."""
  grads = gradient(state.Z, state.Zp, X, s, r=r, beta=beta, activation=activation)
  return update(state, grads, optimizer=optimizer)


class CertificateSums(NamedTuple):
  """The sums over examples that the certificate needs (chunks of examples add).

  Attributes:
    hinge: () Σ_i (1 − m_i)₊.
    lift: (d+1, d+1) Σ_i α_i s_i Φ(x_i + δ*_i).
    alpha: () Σ_i α_i.
  """

  hinge: jnp.ndarray
  lift: jnp.ndarray
  alpha: jnp.ndarray


def certificate_sums(Z, Zp, X, s, *, r, activation: Quadratic) -> CertificateSums:
  """The certificate's sums over these examples, with subgradient multipliers.

  α_i = 1 where the worst-case margin is below 1, ½ at 1 and 0 above: the hinge's subgradient.
  """
  wc = poly.worst_case(Z - Zp, X, s, r, activation)
  alpha = poly_dual.subgradient_multipliers(wc.margin, s)
  return CertificateSums(poly.hinge_sum(wc.margin, s),
                         poly.weighted_lift_sum(poly.cut_points(X, wc.delta, r), alpha * s,
                                                activation),
                         jnp.sum(alpha))


def certificate_of_sums(Z, Zp, sums: CertificateSums, *, beta):
  """(objective, certified lower bound) of one head from its sums over all the examples.

  The subgradient multipliers are scaled into the dual's feasible set
  (`cvxjax.core.poly_dual.restored_bound`). The bound is valid for any iterate; it is tight only at
  an optimum.
  """
  upper = sums.hinge + beta * (Z[-1, -1] + Zp[-1, -1])
  return upper, poly_dual.restored_bound(sums.lift, sums.alpha, beta, upper)


def certificate(Z, Zp, X, s, *, r, beta, activation: Quadratic):
  """(objective, certified lower bound) of one head; see `certificate_sums`."""
  sums = certificate_sums(Z, Zp, X, s, r=r, activation=activation)
  return certificate_of_sums(Z, Zp, sums, beta=beta)


_ADAM = optax.adam(1e-2)


@dataclasses.dataclass(frozen=True)
class Solver(base.Solver):
  """The projected baseline over a `cvxjax.core.poly.Problem`.

  Heads run `head_batch_size` at a time (`lax.map`), which bounds memory at large n·d; with
  the heads vmapped, their batched eighs inside while loops left XLA's CPU runtime deadlocked
  (idle in a futex). The run stops once the certified relative gap of the sum over the heads
  is at most `tol` (checked between chunks).

  Attributes:
    optimizer: the optax transformation (default optax.adam(1e-2)).
    head_batch_size: heads processed together (None: all).
    tol: the relative certified gap to stop at.
  """

  optimizer: optax.GradientTransformation = _ADAM
  head_batch_size: Optional[int] = None

  name: ClassVar[str] = "projected"

  def __post_init__(self):
    if self.head_batch_size is not None and not (
        isinstance(self.head_batch_size, int) and self.head_batch_size >= 1):
      raise ValueError(f"head_batch_size must be None or an integer >= 1, got "
                       f"{self.head_batch_size!r}")

  def init(self, problem: poly.Problem, start=None) -> ProjectedState:
    if start is None:
      return jax.vmap(lambda _: init(problem.X, self.optimizer))(problem.S)
    return jax.vmap(lambda Z, Zp: init(problem.X, self.optimizer, (Z, Zp)))(*start)

  def step(self, problem: poly.Problem, state: ProjectedState) -> ProjectedState:
    one = lambda a: step(a[0], problem.X, a[1], optimizer=self.optimizer, **problem.settings)
    return jax.lax.map(one, (state, problem.S), batch_size=self.head_batch_size)

  def solution(self, problem: poly.Problem, state: ProjectedState):
    upper, lower = jax.vmap(lambda Z, Zp, s: certificate(Z, Zp, problem.X, s, **problem.settings)
                            )(state.Z, state.Zp, problem.S)
    return (state.Z, state.Zp), base.summed(upper, lower, state.step)



# Heads one after another (lax.map), as `Solver` runs them.
@functools.partial(jax.jit, static_argnames=("r", "activation"))
def _gradients(Z, Zp, X, S, beta, *, r, activation):
  return jax.lax.map(lambda a: gradient(a[0], a[1], X, a[2], r=r, beta=beta,
                                        activation=activation), (Z, Zp, S))


@functools.partial(jax.jit, static_argnames=("optimizer",))
def _updates(state, grads, optimizer):
  return jax.lax.map(lambda a: update(a[0], a[1], optimizer=optimizer), (state, grads))


@functools.partial(jax.jit, static_argnames=("r", "activation"))
def _certificate_sums(Z, Zp, X, S, *, r, activation):
  return jax.lax.map(lambda a: certificate_sums(a[0], a[1], X, a[2], r=r, activation=activation),
                     (Z, Zp, S))


@functools.partial(jax.jit, static_argnames=("beta",))
def _certificates_of_sums(Z, Zp, sums, *, beta):
  return jax.lax.map(lambda a: certificate_of_sums(a[0], a[1], a[2], beta=beta), (Z, Zp, sums))


@dataclasses.dataclass(frozen=True)
class Streamed(Solver):
  """`Solver` with the problem's X and S on the host (NumPy arrays or memory maps), streamed in
  chunks of `chunk_size` examples (`cvxjax.streaming`): each step is a full pass that adds the
  chunks' gradients, so the iterates equal the in-memory ones up to the order of the additions.
  Its steps are host loops, so `loop.run` calls it without jit.

  Attributes:
    chunk_size: examples per chunk on the device.
    optimizer, head_batch_size, tol: as for `Solver` (heads run one after another).
  """

  chunk_size: int = 1024

  jittable: ClassVar[bool] = False

  def _dtypes(self, state):
    return (state.Z.dtype,) * 2

  def init(self, problem: poly.Problem, start=None) -> ProjectedState:
    dtype = jnp.result_type(float)
    shapes = poly.Problem(jnp.zeros((1, problem.X.shape[1]), dtype),
                          jnp.zeros((problem.S.shape[0], 1), dtype), **problem.settings)
    return super().init(shapes, start)  # eagerly: a few (d+1)² arrays

  def step(self, problem: poly.Problem, state: ProjectedState) -> ProjectedState:
    settings = dict(r=problem.r, activation=problem.activation)

    def chunk_gradient(first, X, St):
      beta = jnp.asarray(problem.beta if first else 0.0, X.dtype)  # β counts once per pass
      return _gradients(state.Z, state.Zp, X, St.T, beta, **settings)

    grads = streaming.pass_sum(chunk_gradient, (problem.X, problem.S.T), self.chunk_size,
                               self._dtypes(state))
    return _updates(state, grads, self.optimizer)

  def solution(self, problem: poly.Problem, state: ProjectedState):
    """The certificate from one chunked pass: its sums over examples add over the chunks."""
    sums = streaming.pass_sum(
        lambda _, X, St: _certificate_sums(state.Z, state.Zp, X, St.T, r=problem.r,
                                           activation=problem.activation),
        (problem.X, problem.S.T), self.chunk_size, self._dtypes(state))
    upper, lower = _certificates_of_sums(state.Z, state.Zp, sums, beta=problem.beta)
    return (state.Z, state.Zp), base.summed(upper, lower, state.step)
