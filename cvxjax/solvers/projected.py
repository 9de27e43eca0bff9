"""Projected first-order baseline for polynomial heads: any optax optimiser, then Π_K.

Each step differentiates the exact adversarial objective (Danskin gradient at the exact TRS
attack), applies an optax update and projects Z and Z′ back onto K. It needs no d⁴ memory,
so it runs where the barrier solver cannot (d in the hundreds), but it is a baseline: with a
fixed step it stalls well above the optimum (MATH.md §3, "Solver design notes"), and the gap
it reports (`certificate`) is valid but loose.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from cvxjax.core import poly, psd
from cvxjax.core.activations import Quadratic


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


def init(X: jnp.ndarray, optimizer: optax.GradientTransformation) -> ProjectedState:
  """Starts from Z = Z′ = 0 (in K; the prediction is zero).

  Args:
    X: (n, d) inputs (only the shape and dtype are used).
    optimizer: the optax transformation.

  Returns:
    A `ProjectedState` for one head.
  """
  m = X.shape[1] + 1
  Z0 = jnp.zeros((m, m), X.dtype)
  return ProjectedState(Z0, Z0, optimizer.init((Z0, Z0)), jnp.asarray(0), jnp.zeros(2, X.dtype))


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


def run(state: ProjectedState, X, s, *, r, beta, activation: Quadratic,
        optimizer: optax.GradientTransformation, num_steps, head_batch_size=None) -> ProjectedState:
  """`num_steps` steps of every head (leading axis of `state` and `s`).

  Heads run `head_batch_size` at a time (`lax.map`), which bounds memory at large n·d.

  Args:
    state: batched `ProjectedState`, leading axis = heads.
    X: (n, d) inputs shared by the heads.
    s: (C, n) labels in {−1, +1} per head.
    r, beta, activation, optimizer: the problem and the optimiser.
    num_steps: steps to take in this call.
    head_batch_size: heads processed together (None: all).

  Returns:
    The batched state after the steps.
  """
  one = functools.partial(step, X=X, r=r, beta=beta, activation=activation, optimizer=optimizer)

  def head(args):
    st, sg = args
    return jax.lax.fori_loop(0, num_steps, lambda _, c: one(c, s=sg), st)

  return jax.lax.map(head, (state, s), batch_size=head_batch_size)


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
  alpha = jnp.where(wc.margin < 1.0, 1.0, jnp.where(wc.margin > 1.0, 0.0, 0.5))
  alpha = jnp.where(poly.counted(s), alpha, 0.0)
  return CertificateSums(poly.hinge_sum(wc.margin, s),
                         poly.weighted_lift_sum(X + wc.delta, alpha * s, activation),
                         jnp.sum(alpha))


def certificate_of_sums(Z, Zp, sums: CertificateSums, *, beta):
  """(objective, certified lower bound) of one head from its sums over all the examples.

  The bound is valid for any iterate; it is tight only at an optimum.
  """
  upper = sums.hinge + beta * (Z[-1, -1] + Zp[-1, -1])
  return upper, poly.lift_dual_bound(sums.lift, sums.alpha, beta, upper)


def certificate(Z, Zp, X, s, *, r, beta, activation: Quadratic):
  """(objective, certified lower bound) of one head; see `certificate_sums`."""
  sums = certificate_sums(Z, Zp, X, s, r=r, activation=activation)
  return certificate_of_sums(Z, Zp, sums, beta=beta)
