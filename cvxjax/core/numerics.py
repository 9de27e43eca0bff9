"""Numerics shared by the solvers: a backtracking line search, the smoothed hinges of the barrier
and low-rank methods and the proximal map of a norm (soft-thresholding).

Every function here is pure and jit-able.
"""

import jax
import jax.numpy as jnp

_BACKTRACKS = 40  # halvings of the step before a line search gives up


def backtrack(trial_value, sufficient, alpha0):
  """The first α of α0, α0/2, … (at most `_BACKTRACKS` halvings) with sufficient(α, trial_value(α)).

  Args:
    trial_value: α ↦ the merit function at the trial point (+inf outside the domain).
    sufficient: (α, value) ↦ whether the decrease is enough.
    alpha0: the first step tried.

  Returns:
    (α, trial_value(α)); the caller checks `sufficient` again to learn whether it held.
  """
  def not_sufficient(carry):
    alpha, trial, k = carry
    return ~sufficient(alpha, trial) & (k < _BACKTRACKS)

  def halve(carry):
    alpha, _, k = carry
    alpha = 0.5 * alpha
    return alpha, trial_value(alpha), k + 1

  alpha, trial, _ = jax.lax.while_loop(not_sufficient, halve, (alpha0, trial_value(alpha0), 0))
  return alpha, trial


def smoothed_hinge(v, t):
  """ψ_t(v) = min_ξ tξ − log ξ − log(ξ − v) (up to the constant 2 log t), and its pieces.

  With u = t v, p = tξ* = (u + 2 + √(u²+4))/2 and q = t(ξ* − v) = (2 − u + √(u²+4))/2,
  both computed without cancellation. Returns (ψ, ψ′, ψ″, α) with α = 1/q the dual multiplier.
  """
  u = t * v
  root = jnp.sqrt(u * u + 4.0)
  small = 4.0 / (root + jnp.abs(u))  # root − |u|, without cancellation
  p = 0.5 * (2.0 + jnp.where(u >= 0, u + root, small))
  q = 0.5 * (2.0 + jnp.where(u <= 0, root - u, small))
  root_minus_u = jnp.where(u <= 0, root - u, small)
  value = p - jnp.log(p) - jnp.log(q)
  d1 = t / q
  d2 = t * t * root_minus_u / (2.0 * root * q * q)
  return value, d1, d2, 1.0 / q


def smooth_plus(t, delta):
  """(t + √(t² + δ²))/2, a smooth upper bound on t₊ within δ/2 of it; elementwise.

  Computed as t₊ + δ²/(2(√(t² + δ²) + |t|)), without cancellation on either side of 0.
  """
  root = jnp.sqrt(t * t + delta * delta)
  return jax.nn.relu(t) + 0.5 * delta * delta / (root + jnp.abs(t))


def smooth_plus_derivative(t, delta):
  """d/dt of `smooth_plus`, (1 + t/√(t² + δ²))/2 ∈ (0, 1), without cancellation for t < 0."""
  root = jnp.sqrt(t * t + delta * delta)
  below = 0.5 * delta * delta / (root * (root + jnp.abs(t)))
  return jnp.where(t >= 0, 0.5 * (1.0 + t / root), below)


def shrink(V, tau, q: int, axis: int = -2):
  """prox of τ‖·‖_q along `axis`: soft-threshold (q = 1) or group soft-threshold (q = 2)."""
  if q == 1:
    return jnp.sign(V) * jnp.maximum(jnp.abs(V) - tau, 0.0)
  norm = jnp.linalg.norm(V, axis=axis, keepdims=True)
  return V * jnp.maximum(1.0 - tau / jnp.maximum(norm, jnp.finfo(V.dtype).tiny), 0.0)
