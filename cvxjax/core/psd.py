"""Projections onto the PSD cone and onto K, and the exact trust-region subproblem (MATH.md §3).

Every function here is pure and jit-able; batch over heads or examples with `jax.vmap`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

# Regula falsi steps for the secular equation at most (Illinois: 4 on the benchmark problems).
_SECULAR_ITERS = 60
# Iterations of the safeguarded Newton search for the multiplier of Π_K, at most.
_PROJECTION_ITERS = 60


def symmetrize(Y: jnp.ndarray) -> jnp.ndarray:
  """(Y + Yᵀ)/2 over the last two axes."""
  return 0.5 * (Y + jnp.swapaxes(Y, -1, -2))


def lorentz_form(m: int, dtype=jnp.float32) -> jnp.ndarray:
  """G = diag(I_{m-1}, -1), the matrix with ⟨G, Z⟩ = tr Z₁ − z₄; shape (m, m)."""
  return jnp.diag(jnp.ones(m, dtype).at[-1].set(-1.0))


def trace_residual(Z: jnp.ndarray) -> jnp.ndarray:
  """⟨G, Z⟩ = tr Z₁ − z₄ for Z of shape (..., m, m); zero exactly on K's linear part."""
  diag = jnp.diagonal(Z, axis1=-2, axis2=-1)
  return jnp.sum(diag[..., :-1], axis=-1) - diag[..., -1]


def project_psd(Y: jnp.ndarray) -> jnp.ndarray:
  """Π_PSD: the nearest (Frobenius) PSD matrix to the symmetric part of Y.

  Args:
    Y: (m, m) matrix.

  Returns:
    (m, m) symmetric PSD matrix: the negative eigenvalues of sym(Y) clipped to zero.
  """
  w, V = jnp.linalg.eigh(symmetrize(Y))
  return (V * jnp.maximum(w, 0.0)) @ V.T


def project_trace_psd(Y: jnp.ndarray) -> jnp.ndarray:
  """Π_K: the nearest point to Y of K = {Z ⪰ 0 : tr Z₁ = z₄}.

  Args:
    Y: (m, m) matrix, m = d + 1.

  Returns:
    (m, m) matrix in K; `trace_psd_projection` with no guess of the multiplier.
  """
  return trace_psd_projection(Y).point


class TracePsdProjection(NamedTuple):
  """Π_K(Y) = Π_PSD(Y − μG) and its multiplier μ.

  Attributes:
    point: (m, m) the projection, in K.
    multiplier: () μ, a warm start for the projection of a nearby Y.
    eighs: () the `eigh` calls it took.
  """

  point: jnp.ndarray
  multiplier: jnp.ndarray
  eighs: jnp.ndarray


def trace_psd_projection(Y: jnp.ndarray, guess=0.0) -> TracePsdProjection:
  """Π_K(Y), K = {Z ⪰ 0 : tr Z₁ = z₄}, searching its multiplier from `guess`.

  Π_K(Y) = Π_PSD(Y − μG) with μ the root of the non-increasing scalar function
  h(μ) = ⟨G, Π_PSD(Y − μG)⟩, found by Newton's method safeguarded by bisection (one `eigh`
  per step gives h and its slope, `_trace_residual_and_slope`), starting at μ = `guess`; and the
  last step's `eigh` gives the projection. From 0 it takes 3 to 7 steps (regula falsi took 20 to
  40); from the multiplier of a solver's previous iterate, mostly 2 or 3. The trace residual of
  the result is zero to about 1e-12 relative in float64 and 1e-6 in float32.

  Args:
    Y: (m, m) matrix, m = d + 1.
    guess: () starting multiplier (any real; the result does not depend on it).

  Returns:
    A `TracePsdProjection`.
  """
  Y = symmetrize(Y)
  G = lorentz_form(Y.shape[-1], Y.dtype)
  scale = jnp.linalg.norm(Y) + jnp.asarray(1.0, Y.dtype)
  tol = 4 * jnp.finfo(Y.dtype).eps * scale

  def newton(carry):
    lo, hi, mu, h_mu, slope, _, it, _ = carry
    # Newton from μ where it stays inside the bracket, else bisection (rtsafe). The bracket
    # starts unbounded and closes as h's sign is seen (h ≥ 0 left of the root): a Newton step
    # never leaves through the open side, and a flat h steps outward past μ.
    trial = mu - h_mu / jnp.where(slope < 0, slope, -1.0)
    inside = (slope < 0) & (trial > lo) & (trial < hi)
    bounded = jnp.isfinite(lo) & jnp.isfinite(hi)
    outward = mu + jnp.where(h_mu > 0, 1.0, -1.0) * (jnp.abs(mu) + scale)
    trial = jnp.where(inside, trial, jnp.where(bounded, 0.5 * (lo + hi), outward))
    h_trial, slope_trial, eig = _trace_residual_and_slope(Y - trial * G)
    lo, hi = jnp.where(h_trial > 0, trial, lo), jnp.where(h_trial > 0, hi, trial)
    done = (jnp.abs(trial - mu) <= tol) | at_round_off(h_trial, eig) | (hi - lo <= tol)
    return lo, hi, trial, h_trial, slope_trial, done, it + 1, eig

  # h at its round-off (a few ulps of Σ|θ|) is a root: one confirming `eigh` fewer.
  at_round_off = lambda h, eig: jnp.abs(h) <= 4 * jnp.finfo(Y.dtype).eps * jnp.sum(jnp.abs(eig[0]))
  mu0 = jnp.asarray(guess, Y.dtype)
  h0, slope0, eig0 = _trace_residual_and_slope(Y - mu0 * G)
  inf = jnp.asarray(jnp.inf, Y.dtype)
  lo0, hi0 = jnp.where(h0 > 0, mu0, -inf), jnp.where(h0 > 0, inf, mu0)
  _, _, mu, _, _, _, steps, (theta, V) = jax.lax.while_loop(
      lambda c: ~c[5] & (c[6] < _PROJECTION_ITERS), newton,
      (lo0, hi0, mu0, h0, slope0, at_round_off(h0, eig0), jnp.asarray(0), eig0))
  # Π_PSD(Y − μG) from the eigenpairs the last step computed: no further `eigh`.
  return TracePsdProjection((V * jnp.maximum(theta, 0.0)) @ V.T, mu, steps + 1)


def _trace_residual_and_slope(M: jnp.ndarray):
  """h = ⟨G, Π_PSD(M)⟩, dh/dμ along M − μG and (θ, V), from one `eigh` of M = V diag(θ) Vᵀ.

  h = Σ_j θ_j⁺ (1 − 2 q_j²) with q = the last row of V; the slope is −⟨G, DΠ_PSD(M)[G]⟩ =
  −Σ_ij Γ_ij (VᵀGV)_ij², Γ the divided differences of t ↦ t⁺ at θ and VᵀGV = I − 2qqᵀ.
  """
  theta, V = jnp.linalg.eigh(M)
  q = V[-1, :]
  plus = jnp.maximum(theta, 0.0)
  gap = theta[:, None] - theta[None, :]
  tied = jnp.abs(gap) <= jnp.finfo(M.dtype).eps * (jnp.abs(theta[:, None]) + 1.0)
  gamma = jnp.where(tied, (theta[:, None] + theta[None, :] > 0).astype(M.dtype),
                    (plus[:, None] - plus[None, :]) / jnp.where(tied, 1.0, gap))
  form = jnp.eye(M.shape[-1], dtype=M.dtype) - 2.0 * q[:, None] * q[None, :]
  return jnp.sum(plus * (1.0 - 2.0 * q**2)), -jnp.sum(gamma * form**2), (theta, V)


class TrustRegionSolution(NamedTuple):
  """Solution of min_{‖δ‖₂ ≤ r} δᵀAδ + gᵀδ in the eigenbasis of A.

  Attributes:
    value: the optimal value, shape ().
    delta: the minimiser δ*, in the eigenbasis (δ = Q @ delta), shape (d,).
    lam: the multiplier λ* ≥ max(0, −μ_min) of the ball constraint, shape ().
  """

  value: jnp.ndarray
  delta: jnp.ndarray
  lam: jnp.ndarray


def trust_region(mu: jnp.ndarray, g_hat: jnp.ndarray, r: jnp.ndarray) -> TrustRegionSolution:
  """Exact trust-region subproblem min_{‖δ‖₂ ≤ r} δᵀAδ + gᵀδ, given A = Q diag(mu) Qᵀ.

  Solves the secular equation Σ_k ĝ_k² / (4(μ_k + λ)²) = r² for λ > max(0, −μ_min) as the root
  of φ(λ) = 1/‖δ(λ)‖ − 1/r, nearly linear in λ (Moré–Sorensen), by regula falsi with the Illinois
  rule on a bracket that always holds it, and handles the interior case (λ = 0, A ≻ 0,
  ‖A⁻¹g‖/2 ≤ r) and the hard case (ĝ without weight on the bottom eigenvector: λ = −μ_min and a
  step along that eigenvector to reach the sphere). Exact to round-off in float64; vmap over
  examples (and heads).

  Args:
    mu: (d,) eigenvalues of A, in any order.
    g_hat: (d,) the linear term in the eigenbasis, ĝ = Qᵀg.
    r: () radius, r ≥ 0.

  Returns:
    A `TrustRegionSolution`.
  """
  dtype = g_hat.dtype
  eps = jnp.finfo(dtype).eps
  g_norm = jnp.linalg.norm(g_hat)
  scale = jnp.max(jnp.abs(mu)) + g_norm / jnp.maximum(r, eps) + eps
  # min, not argmin: XLA:CPU runs a vmapped argmin as a scalar loop (a third of the TRS's time).
  lo = jnp.maximum(0.0, -jnp.min(mu))
  # Entries whose shifted eigenvalue vanishes at λ = lo (the bottom eigenspace in the hard case).
  bottom = mu + lo <= 8 * eps * scale
  g_bottom_sq = jnp.sum(jnp.where(bottom, g_hat**2, 0.0))
  norm_sq_lo = jnp.sum(jnp.where(bottom, 0.0, g_hat / (2.0 * jnp.where(bottom, 1.0, mu + lo)))**2)
  # The boundary root exists iff ‖δ(λ)‖ → ∞ as λ ↓ lo or ‖δ(lo)‖ > r.
  infinite_at_lo = g_bottom_sq > (eps * scale * r) ** 2
  has_root = infinite_at_lo | (norm_sq_lo > r**2)
  # ‖δ(hi)‖ ≤ ‖ĝ‖ / (2(hi − lo)) ≤ r, so φ(hi) ≥ 0 ≥ φ(lo).
  hi = lo + g_norm / (2.0 * jnp.maximum(r, eps)) + eps * scale

  def phi(lam):
    # One reduction per evaluation: XLA:CPU fuses it with the element-wise pass (two do not).
    return 2.0 * jax.lax.rsqrt(jnp.sum(jnp.square(g_hat / (mu + lam)))) - 1.0 / r

  def falsi(carry):
    a, fa, b, fb, side, k, _, _ = carry
    trial = b - fb * (b - a) / (fb - fa)
    c = jnp.where((trial > a) & (trial < b), trial, 0.5 * (a + b))
    fc = phi(c)
    below = fc < 0
    # Illinois: an end kept twice in a row has its φ halved, so the next point moves it.
    fa_next = jnp.where(below, fc, jnp.where(side > 0, 0.5 * fa, fa))
    fb_next = jnp.where(below, jnp.where(side < 0, 0.5 * fb, fb), fc)
    a, b = jnp.where(below, c, a), jnp.where(below, b, c)
    # λ is the root once φ is at its own round-off (a few ulps of 1/r), or the bracket at λ's.
    done = (jnp.abs(fc) <= 2 * eps / r) | (b - a <= eps * (jnp.abs(c) + eps * scale))
    return a, fa_next, b, fb_next, jnp.where(below, -1, 1).astype(side.dtype), k + 1, done, c

  # A while loop: under vmap it runs until the slowest example converges.
  f_lo = jnp.where(infinite_at_lo, -1.0 / r, jax.lax.rsqrt(norm_sq_lo) - 1.0 / r)
  f_hi = phi(hi)
  settled = ~has_root | (r <= 0) | (f_hi <= 2 * eps / r)
  start = (lo, f_lo, hi, f_hi, jnp.int32(0), jnp.int32(0), settled, hi)
  lam_root = jax.lax.while_loop(lambda c: (c[5] < _SECULAR_ITERS) & ~c[6], falsi, start)[-1]
  lam = jnp.where(has_root, lam_root, lo)
  shifted = jnp.where(bottom & ~has_root, 1.0, mu + lam)
  delta = jnp.where(bottom & ~has_root, 0.0, -g_hat / (2.0 * shifted))
  # Hard case: move to the sphere along a unit vector of the bottom eigenspace, where δ is 0.
  slack = jnp.sqrt(jnp.maximum(r**2 - jnp.sum(delta**2), 0.0))
  hard = ~has_root & (lo > 0)
  along = jnp.where(bottom, jax.lax.rsqrt(jnp.maximum(jnp.sum(bottom.astype(dtype)), 1.0)), 0.0)
  delta = delta + jnp.where(hard, slack, 0.0) * along
  value = jnp.sum(delta * (mu * delta + g_hat))
  # r = 0: the ball is the centre alone.
  zero = r <= 0
  return TrustRegionSolution(value=jnp.where(zero, 0.0, value),
                             delta=jnp.where(zero, 0.0, delta), lam=jnp.where(zero, 0.0, lam))
