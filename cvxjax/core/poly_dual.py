"""Feasible dual points for polynomial heads: certified lower bounds without a trace bound.

The fixed-cut dual of docs/math.md §3 asks for α ∈ [0, 1]ⁿ and scalars μ, μ′ with

    βE − M − μG ⪰ 0   and   βE + M − μ′G ⪰ 0,      M = Σ_i α_i s_i Φ(u_i),

and then Σ α_i is a lower bound on the optimum (u_i = x_i + δ_i, any δ_i in the ball). The first
condition holds for some μ iff β ≥ ⟨M, Z⟩ for every Z ∈ K with z₄ = 1, i.e. iff β ≥ κ(M) with

    κ(M) = max_{Z∈K, z₄=1} ⟨M, Z⟩ = min_{σ > ν_max} m₄ + σ + Σ_k p_k² / (σ − ν_k)

(SDP duality; ν, V the eigenpairs of M₁, p = Vᵀm₂), and μ = −σ at the minimiser. κ is positively
homogeneous, so θ = min(1, β/κ(M), β/κ(−M)) makes (θα, −θσ, −θσ′) feasible: one `eigh` of the
d×d block turns any α into a valid bound θ Σ α_i, with no trace bound to pay.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from cvxjax.core import poly
from cvxjax.core.activations import Quadratic

# Bisection steps for σ: the bracket [0, ‖p‖] shrinks to 2⁻¹⁰⁰ of its width (round-off).
_SHIFT_ITERS = 100


class DualCone(NamedTuple):
  """κ(M) and the shift σ that attains it (an upper bound on κ, equal to it to round-off).

  Attributes:
    value: () m₄ + σ + Σ p_k²/(σ − ν_k) at the σ found, ≥ κ(M) for any σ > ν_max.
    shift: () σ; βE − θM + θσG ⪰ 0 whenever θ·value ≤ β.
  """

  value: jnp.ndarray
  shift: jnp.ndarray


def _cone_value(nu_top, gaps, p, m4):
  """κ's search for one sign: eigenvalues ν_max − gaps (gaps ≥ 0, exactly 0 at the top)."""
  p_sq = p**2
  # σ = ν_max + t; the terms p_k²/(t + gap_k) stay free of cancellation near the top.
  terms = lambda t: jnp.where(p_sq > 0, p_sq / jnp.where(p_sq > 0, t + gaps, 1.0), 0.0)
  slope = lambda t: 1.0 - jnp.sum(terms(t) / jnp.where(p_sq > 0, t + gaps, 1.0))

  def bisect(_, bracket):
    lo, hi = bracket
    mid = 0.5 * (lo + hi)
    up = slope(mid) >= 0
    return jnp.where(up, lo, mid), jnp.where(up, mid, hi)

  # slope(‖p‖) ≥ 0 (each (t + gap_k)² ≥ ‖p‖²), so the minimiser lies in [0, ‖p‖].
  hi = jnp.sqrt(jnp.sum(p_sq))
  _, t = jax.lax.fori_loop(0, _SHIFT_ITERS, bisect, (jnp.zeros_like(hi), hi))
  # slope(t) ≥ 0 at the upper end, so its value exceeds κ by at most the bracket's width.
  return DualCone(m4 + nu_top + t + jnp.sum(terms(t)), nu_top + t)


def dual_cone_margins(M: jnp.ndarray) -> tuple[DualCone, DualCone]:
  """κ(M) and κ(−M) with their shifts, from one `eigh` of M₁.

  Args:
    M: (d+1, d+1) symmetric matrix.

  Returns:
    (for M, for −M), each a `DualCone`.
  """
  nu, V = jnp.linalg.eigh(M[:-1, :-1])
  p = V.T @ M[:-1, -1]
  m4 = M[-1, -1]
  plus = _cone_value(nu[-1], nu[-1] - nu, p, m4)
  minus = _cone_value(-nu[0], nu - nu[0], -p, -m4)
  return plus, minus


def feasible_scale(M: jnp.ndarray, beta) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The largest θ ≤ 1 for which θM satisfies both dual LMIs, and their multipliers.

  Args:
    M: (d+1, d+1) the weighted lift sum Σ α_i s_i Φ(u_i).
    beta: β > 0.

  Returns:
    θ in [0, 1] and the (2,) multipliers (μ, μ′) for θM in `poly.lift_dual_bound`'s convention.
  """
  plus, minus = dual_cone_margins(M)
  limit = lambda k: jnp.where(k.value > 0, beta / jnp.where(k.value > 0, k.value, 1.0), 1.0)
  theta = jnp.minimum(1.0, jnp.minimum(limit(plus), limit(minus)))
  return theta, jnp.stack([-theta * plus.shift, -theta * minus.shift])


def restored_bound(M: jnp.ndarray, alpha_sum, beta, upper) -> jnp.ndarray:
  """A certified lower bound from any multipliers, scaled into the dual's feasible set.

  The point (θα, μ, μ′) of `feasible_scale` is feasible up to round-off; `poly.lift_dual_bound`
  evaluates it and charges what round-off leaves of the LMIs' negative eigenvalues at the trace
  bound 2·upper/β, so the result is valid whatever the accuracy of θ.

  Args:
    M: (d+1, d+1) Σ α_i s_i Φ(u_i) for multipliers α ∈ [0, 1]ⁿ and cut points u_i in the ball.
    alpha_sum: () Σ α_i.
    beta: β > 0.
    upper: () the objective of a feasible point (for the round-off charge).

  Returns:
    () lower bound on the optimum.
  """
  theta, mu = feasible_scale(M, beta)
  return poly.lift_dual_bound(theta * M, theta * alpha_sum, beta, upper, mu=mu)


def subgradient_multipliers(margin: jnp.ndarray, s: jnp.ndarray) -> jnp.ndarray:
  """The hinge's subgradient at the worst-case margins: 1 below 1, ½ at 1, 0 above; (n,)."""
  alpha = jnp.where(margin < 1.0, 1.0, jnp.where(margin > 1.0, 0.0, 0.5))
  return jnp.where(poly.counted(s), alpha, 0.0)


class Certificate(NamedTuple):
  """An iterate's objective and a certified lower bound on the optimum.

  Attributes:
    upper: () the exact objective of (Z, Z′).
    lower: () the bound from the restored multipliers.
    lift: (d+1, d+1) M = Σ α_i s_i Φ(u_i) before scaling, at the worst cases u_i of (Z, Z′).
  """

  upper: jnp.ndarray
  lower: jnp.ndarray
  lift: jnp.ndarray


def certificate(Z, Zp, X, s, alpha, *, r, beta, activation) -> Certificate:
  """The objective of one head at (Z, Z′) and a certified lower bound from multipliers α.

  The cuts are the exact worst cases at D = Z − Z′; α is restored into the dual's feasible set.

  Args:
    Z, Zp: (d+1, d+1) matrices of K.
    X: (n, d) inputs.
    s: (n,) labels in {−1, +1} (0: a padding row).
    alpha: (n,) multipliers in [0, 1], or None for the hinge's subgradient.
    r, beta, activation: the problem (see `poly.objective`).

  Returns:
    A `Certificate`.
  """
  wc = poly.worst_case(Z - Zp, X, s, r, activation)
  alpha = subgradient_multipliers(wc.margin, s) if alpha is None else alpha
  alpha = jnp.where(poly.counted(s), jnp.clip(alpha, 0.0, 1.0), 0.0)
  upper = poly.hinge_sum(wc.margin, s) + beta * (Z[-1, -1] + Zp[-1, -1])
  M = poly.weighted_lift_sum(poly.cut_points(X, wc.delta, r), alpha * s, activation)
  return Certificate(upper, restored_bound(M, jnp.sum(alpha), beta, upper), M)


def lift_products(P: jnp.ndarray, T: jnp.ndarray, U: jnp.ndarray, w: jnp.ndarray,
                  activation: Quadratic) -> jnp.ndarray:
  """w_i w_j tr(Φ(u_i) P Φ(u_j) T) for every pair, without forming the lifts.

  Φ(u) = B C Bᵀ with B = [[u, 0], [0, 1]] (d+1 by 2) and C = [[a, b/2], [b/2, c]], so each
  entry is tr(C (B_iᵀPB_j) C (B_jᵀTB_i)), 2×2 blocks read off UP₁Uᵀ, UP₁₂ and P₂₂ (and the
  same of T): two n×d×d products and O(n²) elementwise work. The matrix of an interior-point
  method's Schur complement in the multipliers (`cvxjax.solvers.dual_interior`).

  Args:
    P, T: (d+1, d+1) symmetric matrices.
    U: (n, d) points.
    w: (n,) weights.
    activation: the coefficients (a, b, c) of σ.

  Returns:
    (n, n) symmetric matrix.
  """
  a, b, c = activation
  h = b / 2
  K, L = U @ P[:-1, :-1] @ U.T, U @ T[:-1, :-1] @ U.T
  p, t = U @ P[:-1, -1], U @ T[:-1, -1]
  p_i, p_j, t_i, t_j = p[:, None], p[None, :], t[:, None], t[None, :]
  p4, t4 = P[-1, -1], T[-1, -1]
  products = ((a * K + h * p_j) * (a * L + h * t_i) + (a * p_i + h * p4) * (h * L + c * t_i)
              + (h * K + c * p_j) * (a * t_j + h * t4) + (h * p_i + c * p4) * (h * t_j + c * t4))
  products = products * w[:, None] * w[None, :]
  return 0.5 * (products + products.T)
