"""Projections onto the PSD cone and onto K, and the exact trust-region subproblem.

See docs/math.md §3.

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


def min_eigenvalues(A: jnp.ndarray) -> jnp.ndarray:
  """The smallest eigenvalue of each symmetric matrix of a batch, without eigenvectors.

  Each matrix is reduced to tridiagonal form (LAPACK's sytrd, one matrix at a time: batched
  LAPACK calls can deadlock XLA's CPU thread pool), then bisection on all the tridiagonals at
  once; on (1259, 33, 33) this is 2.7× faster than `eigvalsh`, which forms the eigenvectors.

  Args:
    A: (n, m, m) symmetric matrices.

  Returns:
    (n,) their smallest eigenvalues.
  """
  diagonals, off_diagonals = jax.lax.map(lambda a: jax.lax.linalg.tridiagonal(a)[1:3], A)
  lowest = lambda d, e: jax.scipy.linalg.eigh_tridiagonal(
      d, e, eigvals_only=True, select="i", select_range=(0, 0))[0]
  return jax.vmap(lowest)(diagonals, off_diagonals)


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

  With λ_lo = max(0, −μ_min) and the shifted eigenvalues ν_k = μ_k + λ_lo ≥ 0 (the bottom ones
  exactly 0 when A is indefinite), solves the secular equation Σ_k ĝ_k² / (4(ν_k + σ)²) = r² for
  the shifted multiplier σ = λ − λ_lo > 0 (docs/math.md §3): no sum ν_k + σ cancels, so near
  the hard case (ĝ with a tiny weight on the bottom eigenvector, σ* of the order of that weight)
  δ, the value and ‖δ‖ = r stay exact to round-off. The root of φ(σ) = 1/‖δ(σ)‖ − 1/r, nearly linear
  (Moré–Sorensen), is found by regula falsi with the Illinois rule on a bracket that always
  holds it, `_secular_bracket`, narrow near the hard case. Handles the interior case (λ = 0,
  A ≻ 0, ‖A⁻¹g‖/2 ≤ r) and the hard case (no weight on the bottom eigenspace: λ = λ_lo and a step
  along that eigenspace to reach the sphere). Value, δ and λ are exact to ~1e-12 relative in
  float64 in every case; vmap over examples (and heads).

  Args:
    mu: (d,) eigenvalues of A, in any order.
    g_hat: (d,) the linear term in the eigenbasis, ĝ = Qᵀg.
    r: () radius, r ≥ 0.

  Returns:
    A `TrustRegionSolution`.
  """
  dtype = g_hat.dtype
  eps = jnp.finfo(dtype).eps
  # min, not argmin: XLA:CPU runs a vmapped argmin as a scalar loop (a third of the TRS's time).
  lo = jnp.maximum(0.0, -jnp.min(mu))
  # ν = μ − μ_min (μ where A ⪰ 0). A product that XLA fuses into this sum (an FMA) can leave
  # the bottom a few ulps of λ_lo off 0: those entries are the bottom, set to exactly 0.
  nu = mu + lo
  bottom = nu <= 8 * eps * lo
  nu = jnp.where(bottom, 0.0, nu)
  half_g = 0.5 * g_hat
  r_safe = jnp.where(r > 0, r, 1.0)

  def phi(sigma):
    # One reduction per evaluation: XLA:CPU fuses it with the element-wise pass (two do not).
    return jax.lax.rsqrt(jnp.sum(jnp.square(half_g / (nu + sigma)))) - 1.0 / r_safe

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
    # σ is the root once φ is at its own round-off (a few ulps of 1/r), or the bracket at σ's.
    done = (jnp.abs(fc) <= 2 * eps / r_safe) | (b - a <= eps * c)
    return a, fa_next, b, fb_next, jnp.where(below, -1, 1).astype(side.dtype), k + 1, done, c

  # A while loop: under vmap it runs until the slowest example converges.
  f_zero, b, has_root = _secular_bracket(nu, half_g, bottom, r_safe)
  fb = phi(b)
  settled = ~has_root | (r <= 0) | (fb <= 2 * eps / r_safe)
  start = (jnp.zeros_like(b), f_zero, b, fb, jnp.int32(0), jnp.int32(0), settled, b)
  sigma = jax.lax.while_loop(lambda c: (c[5] < _SECULAR_ITERS) & ~c[6], falsi, start)[-1]
  sigma = jnp.where(has_root, sigma, 0.0)
  flat = bottom & ~has_root
  delta = jnp.where(flat, 0.0, -half_g / jnp.where(flat, 1.0, nu + sigma))
  # Hard case: move to the sphere in the bottom eigenspace, where δ is 0, downhill of ĝ's
  # negligible weight there.
  slack = jnp.sqrt(jnp.maximum(r**2 - jnp.sum(delta**2), 0.0))
  hard = ~has_root & (lo > 0)
  along = jnp.where(bottom, jax.lax.rsqrt(jnp.maximum(jnp.sum(bottom.astype(dtype)), 1.0)), 0.0)
  along = jnp.where(g_hat > 0, -along, along)
  delta = delta + jnp.where(hard, slack, 0.0) * along
  value = jnp.sum(delta * (mu * delta + g_hat))
  # r = 0: the ball is the centre alone.
  zero = r <= 0
  return TrustRegionSolution(value=jnp.where(zero, 0.0, value), delta=jnp.where(zero, 0.0, delta),
                             lam=jnp.where(zero, 0.0, lo + sigma))


def _secular_bracket(nu, half_g, bottom, r):
  """φ(0), an upper end b of a bracket [0, b] of the root σ* > 0, and whether a root exists.

  With B² = Σ_bottom ĝ_k²/4 and S(σ) = Σ_rest ĝ_k²/(4(ν_k + σ)²), non-increasing in σ,
  ‖δ(σ)‖² = B²/σ² + S(σ) ≤ ‖ĝ‖²/(4σ²); hence σ* ≤ ‖ĝ‖/(2r), and σ* ≤ B/√(r² − S(0)) when
  S(0) < r², an end of the order of B near the hard case. Without a root the solution is in the
  interior or in the hard case, with σ* = 0.

  Args:
    nu: (d,) shifted eigenvalues ν_k ≥ 0.
    half_g: (d,) ĝ/2.
    bottom: (d,) whether ν_k = 0.
    r: () radius > 0.

  Returns:
    (φ(0), b, has_root), each of shape ().
  """
  finfo = jnp.finfo(half_g.dtype)
  b_sq = jnp.sum(jnp.where(bottom, half_g**2, 0.0))
  s0 = jnp.sum(jnp.square(jnp.where(bottom, 0.0, half_g / jnp.where(bottom, 1.0, nu))))
  # A bottom weight whose square nears underflow moves the value by less than its round-off.
  b_sq = jnp.where(b_sq > finfo.tiny / finfo.eps, b_sq, 0.0)
  has_root = (b_sq > 0) | (s0 > r**2)
  near_hard = s0 < r**2
  upper = jnp.sqrt(jnp.sum(half_g**2)) / r
  upper = jnp.where(near_hard, jnp.minimum(upper, jnp.sqrt(b_sq / jnp.where(near_hard, r**2 - s0,
                                                                            1.0))), upper)
  f_zero = jnp.where(b_sq > 0, -1.0 / r, jax.lax.rsqrt(s0) - 1.0 / r)
  # Without a root any b > 0 does (and keeps φ(b) finite).
  return f_zero, jnp.where(has_root, upper, 1.0), has_root
