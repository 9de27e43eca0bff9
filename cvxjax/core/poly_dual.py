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


def polished_multipliers(Z, Zp, X, s, *, r, activation, beta, margin_tol=1e-6) -> jnp.ndarray:
  """Multipliers from complementary slackness at a (near-)optimal primal point.

  At an optimum, α_i = 1 where m_i < 1, 0 where m_i > 1, and the α_i of the examples on the
  margin (|m_i − 1| ≤ margin_tol) together with μ, μ′ make the dual slacks annihilate the primal:
  (βE − M − μG)L = 0 and (βE + M − μ′G)L′ = 0 with Z = LLᵀ, Z′ = L′L′ᵀ. Those equations are
  linear in (α_margin, μ, μ′) and solved by least squares; the result is clipped into [0, 1]
  (pass it to `certificate`, which restores feasibility). Forms the margin examples' (d+1)²
  lifts, gathered (so it runs eagerly, not under jit): for d up to a few dozen.

  Args:
    Z, Zp: (d+1, d+1) matrices of K.
    X: (n, d) inputs.
    s: (n,) labels in {−1, +1} (0: a padding row).
    r, activation, beta: the problem.
    margin_tol: how close to 1 a worst-case margin counts as on the margin.

  Returns:
    (n,) multipliers in [0, 1].
  """
  wc = poly.worst_case(Z - Zp, X, s, r, activation)
  counted = poly.counted(s)
  free = counted & (jnp.abs(wc.margin - 1.0) <= margin_tol)
  fixed = jnp.where(counted & ~free & (wc.margin < 1.0), 1.0, 0.0)
  U = poly.cut_points(X, wc.delta, r)
  m = Z.shape[-1]
  G = jnp.diag(jnp.ones(m, Z.dtype).at[-1].set(-1.0))
  E = jnp.zeros_like(Z).at[-1, -1].set(beta)
  M_fixed = poly.weighted_lift_sum(U, fixed * s, activation)
  # Only the margin examples' columns: jaxlib's SVD returns NaN on the full system, whose other
  # columns are zero (seen at n = 1259, d = 32 with 15 margin examples).
  on_margin = jnp.flatnonzero(free)
  lifts = jax.vmap(poly.lift, in_axes=(0, None))(U[on_margin], activation)
  lifts = lifts * s[on_margin, None, None]

  def factor(W):
    w, V = jnp.linalg.eigh(W)
    return V * jnp.sqrt(jnp.maximum(w, 0.0))

  L, Lp = factor(Z), factor(Zp)
  # Unknowns (α_free, μ, μ′): columns vec(s_iΦ_i L), vec(G L) for the first system, and their
  # counterparts with −M for the second.
  top = jnp.concatenate([jnp.einsum("ipq,qk->ipk", lifts, L).reshape(len(on_margin), -1).T,
                         (G @ L).reshape(-1, 1), jnp.zeros((m * m, 1), Z.dtype)], axis=1)
  bottom = jnp.concatenate([-jnp.einsum("ipq,qk->ipk", lifts, Lp).reshape(len(on_margin), -1).T,
                            jnp.zeros((m * m, 1), Z.dtype), (G @ Lp).reshape(-1, 1)], axis=1)
  A = jnp.concatenate([top, bottom])
  b = jnp.concatenate([((E - M_fixed) @ L).reshape(-1), ((E + M_fixed) @ Lp).reshape(-1)])
  solution = jnp.linalg.lstsq(A, b)[0]
  return fixed.at[on_margin].set(jnp.clip(solution[:-2], 0.0, 1.0))
