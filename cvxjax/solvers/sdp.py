"""Primal–dual interior-point solver for the S-lemma SDP of adversarial polynomial heads.

For r > 0 the S-lemma (docs/math.md §3) turns the worst-case margin into one linear matrix
inequality per example: with B_i(D) = s_i T_iᵀ D̃ T_i (T_i = [[I, x_i], [0, 1]], D̃ the
activation-scaled D), J = diag(I, −r²) and F = e eᵀ,

    min Σ ξ_i + β(z₄ + z′₄)  s.t.  P_i = B_i(D) + λ_i J − (1 − ξ_i) F ⪰ 0,  ξ, λ ≥ 0,  Z, Z′ ∈ K.

Its dual carries a PSD matrix Y_i per example whose corner is the hinge multiplier α_i and
whose top block, with tr Y_i,₁ ≤ r² α_i, is a mixture of worst cases: where an example's worst
case has two minimisers (the trust-region hard case, a kink of m_i), the optimal Y_i mixes them
and no single cut point can. The problem is linear in every variable, so the kinks that stop
the Newton methods on the exact margins (`barrier`, `interior`) are not there: the path is
that of a linear SDP, followed by Nesterov–Todd scaling of every PSD block, Mehrotra's
predictor–corrector and separate primal and dual step lengths (as `interior` does).

The Newton system: per example the (ξ_i, λ_i) pair is eliminated by a 2×2 solve, and the
examples' blocks add Σ_i B_i*(W_i⁻¹ B_i(·) W_i⁻¹), a sum of congruences, to the system in D
(one GEMM of (n, m²) by (n, m²) per step), which is equilibrated, factored and solved with the
two trace rows. Near the optimum its condition number passes 1/eps and the dual step length
collapses: the run then stops where round-off stops it, at relative gaps of 1e-6 to 1e-3
(docs/solvers.md), with the best point and bound it found.

Every step certifies: Y_i is pulled into the dual's set (corner in [0, 1], tr Y_i,₁ ≤ r² α_i
by a congruence), and M = Σ_i B_i*(Y_i) gives the bound of `poly.lift_dual_bound` at ν and
scaled into the dual's feasible set (`poly_dual.restored_bound`). Both are valid for any such
Y_i: ⟨B_i(D), Y_i⟩ ≥ α_i m_i(D) for every D, by the S-lemma multiplier of m_i.

Cost per step: O(n m⁴) for the sum of congruences, O(N³) for the factorisation (N = m(m+1)/2),
O(n m³) for the n block scalings; memory O(n m² + m⁴). It suits d up to a few dozen.
"""

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cvxjax.core import poly, poly_dual, psd
from cvxjax.core.activations import Quadratic
from cvxjax.solvers import barrier, interior

# Fraction of the step to the boundary of the cones that a step takes.
_TO_BOUNDARY = 0.99
# Ridge on the equilibrated Newton matrix (unit diagonal): near the optimum its condition
# number passes 1/eps and Cholesky would fail on round-off.
_RIDGE = 1e-12


class SdpState(NamedTuple):
  """Solver state for one head (the solver maps heads over a leading axis).

  Attributes:
    Z, Zp: (m, m) primal iterates in the interior of the PSD cone, m = d + 1.
    S, Sp: (m, m) their dual slacks.
    P: (n, m, m) the examples' LMI slacks, positive definite.
    Y: (n, m, m) their multipliers, positive definite; α_i = Y_i[m−1, m−1].
    xi, zeta: (n,) hinge epigraph variables ξ > 0 and their multipliers ζ > 0.
    lam, eta: (n,) S-lemma multipliers λ > 0 and their multipliers η > 0.
    nu: (2,) multipliers of ⟨G, Z⟩ = 0 and ⟨G, Z′⟩ = 0.
    best_Z, best_Zp, upper, lower, step, done: the best point, its objective, the best bound
      and the progress, as in `interior.InteriorState`.
  """

  Z: jnp.ndarray
  Zp: jnp.ndarray
  S: jnp.ndarray
  Sp: jnp.ndarray
  P: jnp.ndarray
  Y: jnp.ndarray
  xi: jnp.ndarray
  zeta: jnp.ndarray
  lam: jnp.ndarray
  eta: jnp.ndarray
  nu: jnp.ndarray
  best_Z: jnp.ndarray
  best_Zp: jnp.ndarray
  upper: jnp.ndarray
  lower: jnp.ndarray
  step: jnp.ndarray
  done: jnp.ndarray


def activation_scale(m: int, activation: Quadratic, dtype) -> jnp.ndarray:
  """The (m, m) weights with D̃ = scale ∘ D = [[a D₁, (b/2) d₂], [(b/2) d₂ᵀ, c d₄]]."""
  a, b, c = activation
  scale = np.full((m, m), 0.5 * b)
  scale[:-1, :-1] = a
  scale[-1, -1] = c
  return jnp.asarray(scale, dtype)


def shifts(X: jnp.ndarray) -> jnp.ndarray:
  """T_i = [[I, x_i], [0, 1]], which maps (δ, 1) to (x_i + δ, 1); shape (n, m, m)."""
  n, d = X.shape
  eye = jnp.broadcast_to(jnp.eye(d + 1, dtype=X.dtype), (n, d + 1, d + 1))
  return eye.at[:, :-1, -1].set(X)


def lmi_map(D: jnp.ndarray, T: jnp.ndarray, s: jnp.ndarray, scale: jnp.ndarray) -> jnp.ndarray:
  """B_i(D) = s_i T_iᵀ (scale ∘ D) T_i for every example: (n, m, m), so that
  [δ; 1]ᵀ B_i(D) [δ; 1] = s_i f_D(x_i + δ)."""
  return s[:, None, None] * jnp.einsum("ipa,pq,iqb->iab", T, scale * D, T)


def lmi_adjoint_sum(Y: jnp.ndarray, T: jnp.ndarray, s: jnp.ndarray,
                    scale: jnp.ndarray) -> jnp.ndarray:
  """Σ_i B_i*(Y_i) = scale ∘ Σ_i s_i T_i Y_i T_iᵀ: (m, m). With Y_i = α_i [δ_i; 1][δ_i; 1]ᵀ it is
  Σ_i α_i s_i Φ(x_i + δ_i), the lift sum of the cut dual."""
  return scale * jnp.einsum("i,ipa,iab,iqb->pq", s, T, Y, T)


def lmi_adjoint_each(Y: jnp.ndarray, T: jnp.ndarray, s: jnp.ndarray,
                     scale: jnp.ndarray) -> jnp.ndarray:
  """B_i*(Y_i) = s_i scale ∘ (T_i Y_i T_iᵀ) for every example: (n, m, m)."""
  return scale * jnp.einsum("i,ipa,iab,iqb->ipq", s, T, Y, T)


def congruence_form(V: jnp.ndarray, lay, m: int) -> jnp.ndarray:
  """Σ_i V_i ⊗ₛ V_i in svec coordinates: the (N, N) matrix of dA ↦ svec(Σ_i V_i dA V_i).

  With T = AᵀA for the rows vec(V_i) of A, T[(i,k), (l,j)] = Σ V_ik V_lj, and the entry for
  the svec basis pair ((i,j), (k,l)) is w_ij h_kl (T[ik, lj] + T[il, kj]) with the svec weights
  w (1 on the diagonal, √2 off it) and h = 1/(2w) on the diagonal, 1/√2 off it.

  Args:
    V: (n, m, m) symmetric matrices.
    lay: the svec layout of m×m matrices (`barrier.layout`).
    m: the matrix size.
  """
  A = V.reshape(V.shape[0], m * m)
  T = A.T @ A
  i, j = jnp.asarray(lay.rows)[:, None], jnp.asarray(lay.cols)[:, None]
  k, l = jnp.asarray(lay.rows)[None, :], jnp.asarray(lay.cols)[None, :]
  form = T[i * m + k, l * m + j] + T[i * m + l, k * m + j]
  w = jnp.asarray(lay.weight, V.dtype)
  h = jnp.asarray(np.where(lay.rows == lay.cols, 0.5, 1.0 / np.sqrt(2.0)), V.dtype)
  return form * w[:, None] * h[None, :]


def congruence_matrix(R: jnp.ndarray, lay, m: int) -> jnp.ndarray:
  """The (N, N) matrix of svec(Â) ↦ svec(R Â Rᵀ)."""
  N = len(lay.rows)
  columns = jax.vmap(lambda e: barrier.svec(R @ barrier.smat(e, lay, m) @ R.T, lay))(
      jnp.eye(N, dtype=R.dtype))
  return columns.T


def _certified_multipliers(Y: jnp.ndarray, r, counted: jnp.ndarray) -> jnp.ndarray:
  """Y_i pulled into the dual's set: corner α_i ≤ 1 (by scaling) and tr Y_i,₁ ≤ r² α_i (by the
  congruence diag(c I, 1), which keeps Y_i ⪰ 0); padding rows set to zero."""
  Y = psd.symmetrize(Y)
  corner = Y[:, -1, -1]
  Y = Y / jnp.maximum(corner, 1.0)[:, None, None]
  top = jnp.trace(Y[:, :-1, :-1], axis1=-2, axis2=-1)
  c = jnp.sqrt(jnp.minimum(1.0, r**2 * Y[:, -1, -1] / jnp.maximum(top, jnp.finfo(Y.dtype).tiny)))
  weights = jnp.concatenate([jnp.broadcast_to(c[:, None], top.shape + (Y.shape[-1] - 1,)),
                             jnp.ones_like(c)[:, None]], axis=1)
  Y = weights[:, :, None] * Y * weights[:, None, :]
  return jnp.where(counted[:, None, None], Y, 0.0)


def dual_bound(Y, nu, T, s, r, beta, scale, upper):
  """The certified bound at the block multipliers Y (pulled into the dual's set): with ν, and
  scaled into the dual's feasible set; the better of the two."""
  Y = _certified_multipliers(Y, r, poly.counted(s))
  M = lmi_adjoint_sum(Y, T, s, scale)
  alpha_sum = jnp.sum(Y[:, -1, -1])
  return jnp.maximum(poly.lift_dual_bound(M, alpha_sum, beta, upper, -nu),
                     poly_dual.restored_bound(M, alpha_sum, beta, upper))


def init(X: jnp.ndarray, s: jnp.ndarray, *, r, beta, activation: Quadratic) -> SdpState:
  """Z = Z′ = diag(I/d, 1) (on K), S = S′ = I, P_i = I, Y_i = diag(r²/(2d) I, ½) (on the
  dual's set), ξ = λ = η = 1, ζ = ½.

  Args:
    X: (n, d) inputs.
    s: (n,) labels in {−1, +1} (0: a padding row, see `poly.counted`).
    r, beta, activation: the problem (see `poly.objective`), r > 0.

  Returns:
    An `SdpState` for one head.
  """
  n, d = X.shape
  m = d + 1
  Z0 = jnp.diag(jnp.concatenate([jnp.full((d,), 1.0 / d, X.dtype), jnp.ones((1,), X.dtype)]))
  Y0 = jnp.diag(jnp.concatenate([jnp.full((d,), r**2 / (2 * d), X.dtype),
                                 jnp.full((1,), 0.5, X.dtype)]))
  eye = jnp.eye(m, dtype=X.dtype)
  ones = jnp.ones((n,), X.dtype)
  return SdpState(
      Z=Z0, Zp=Z0, S=eye, Sp=eye, P=jnp.broadcast_to(eye, (n, m, m)),
      Y=jnp.broadcast_to(Y0, (n, m, m)), xi=ones, zeta=0.5 * ones, lam=ones, eta=ones,
      nu=jnp.zeros(2, X.dtype), best_Z=Z0, best_Zp=Z0,
      upper=poly.objective(Z0, Z0, X, s, r, beta, activation),
      lower=jnp.asarray(-jnp.inf, X.dtype), step=jnp.asarray(0), done=jnp.asarray(False))


class _Direction(NamedTuple):
  """A Newton direction; the PSD blocks' steps in their own units and NT-scaled."""

  Z: tuple        # (dZ, dZ′)
  S: tuple        # (dS, dS′)
  Z_hat: tuple    # (dẐ, dẐ′)
  S_hat: tuple    # (dŜ, dŜ′)
  P: jnp.ndarray  # (n, m, m)
  Y: jnp.ndarray
  P_hat: jnp.ndarray
  Y_hat: jnp.ndarray
  xi: jnp.ndarray
  zeta: jnp.ndarray
  lam: jnp.ndarray
  eta: jnp.ndarray
  nu: jnp.ndarray


def _block_scaling(P, Y):
  """The NT scaling (R, λ) of one LMI block and R⁻¹."""
  R, lam = interior.nt_scaling(P, Y)
  return R, lam, jnp.linalg.inv(R)


def _trace_rows(R, Rp, lay, m):
  """The rows of ⟨G, R dẐ Rᵀ⟩ and ⟨G, Rp dẐ′ Rpᵀ⟩ on svec(dẐ, dẐ′): (2, 2N)."""
  G = psd.lorentz_form(m, R.dtype)
  zeros = jnp.zeros(len(lay.rows), R.dtype)
  return jnp.stack([jnp.concatenate([barrier.svec(R.T @ G @ R, lay), zeros]),
                    jnp.concatenate([zeros, barrier.svec(Rp.T @ G @ Rp, lay)])])


def _trace_constrained_system(C, A):
  """Factors [[C, Aᵀ], [A, 0]] for an SPD C whose entries span many orders of magnitude.

  C is equilibrated by its diagonal before Cholesky (the scaled blocks of large and small
  eigenvalues of Z, and of near-singular LMIs, sit on different svec coordinates), the two
  rows A are eliminated by their 2×2 Schur complement, and two steps of iterative refinement
  on the unscaled system follow.

  Returns:
    solve(top (2N,), residual (2,)) → (Δ, ν) with CΔ + Aᵀν = top and AΔ = −residual.
  """
  d = jax.lax.rsqrt(jnp.diag(C))
  ridge = _RIDGE * jnp.eye(C.shape[0], dtype=C.dtype)
  factor = jax.scipy.linalg.cho_factor(d[:, None] * C * d[None, :] + ridge)
  solve_C = lambda v: d * jax.scipy.linalg.cho_solve(factor, d * v)
  CA = (d[:, None] * jax.scipy.linalg.cho_solve(factor, d[:, None] * A.T)).T  # rows C⁻¹aᵢ
  schur = jnp.linalg.inv(A @ CA.T)

  def once(top, residual):
    Ct = solve_C(top)
    nu = schur @ (A @ Ct + residual)
    return Ct - CA.T @ nu, nu

  def solve(top, residual):
    delta, nu = once(top, residual)
    for _ in range(2):
      d_delta, d_nu = once(top - C @ delta - A.T @ nu, residual + A @ delta)
      delta, nu = delta + d_delta, nu + d_nu
    return delta, nu

  return solve


def step(state: SdpState, X, s, *, r, beta, activation: Quadratic, tol) -> SdpState:
  """One predictor–corrector step with a fresh certificate; the arguments and the stopping rule
  are those of `interior.step` (here r > 0)."""
  n, d = X.shape
  m = d + 1
  lay = barrier.layout(m)
  N = len(lay.rows)
  counted = poly.counted(s)
  G = psd.lorentz_form(m, X.dtype)
  E = jnp.zeros((m, m), X.dtype).at[-1, -1].set(beta)
  F = jnp.zeros((m, m), X.dtype).at[-1, -1].set(1.0)
  J = jnp.diag(jnp.ones(m, X.dtype).at[-1].set(-r**2))
  scale = activation_scale(m, activation, X.dtype)
  T = shifts(X)
  st = state
  D = st.Z - st.Zp

  # Residuals of the dual equations, the LMIs and the trace rows.
  M = lmi_adjoint_sum(st.Y, T, s, scale)
  alpha = st.Y[:, -1, -1]
  dual_residual = (E - M + st.nu[0] * G - st.S, E + M + st.nu[1] * G - st.Sp)
  zeta_residual = jnp.where(counted, 1.0 - alpha - st.zeta, 0.0)
  eta_residual = jnp.where(counted, -jnp.einsum("iab,ab->i", st.Y, J) - st.eta, 0.0)
  lmi_residual = (lmi_map(D, T, s, scale) + st.lam[:, None, None] * J
                  + (st.xi - 1.0)[:, None, None] * F - st.P)
  lmi_residual = jnp.where(counted[:, None, None], lmi_residual, 0.0)
  trace = jnp.stack([psd.trace_residual(st.Z), psd.trace_residual(st.Zp)])
  block_pairs = jnp.where(counted, jnp.sum(st.P * st.Y, axis=(1, 2)), 0.0)
  scalar_pairs = jnp.where(counted, st.xi * st.zeta + st.lam * st.eta, 0.0)
  count = jnp.sum(counted)
  mu = (jnp.sum(st.Z * st.S) + jnp.sum(st.Zp * st.Sp) + jnp.sum(block_pairs)
        + jnp.sum(scalar_pairs)) / (2 * m + count * (m + 2))

  (R, lam_Z), (Rp, lam_Zp) = interior.nt_scaling(st.Z, st.S), interior.nt_scaling(st.Zp, st.Sp)
  # One block at a time: XLA's CPU runtime can deadlock on batched LAPACK calls (see
  # `barrier.HeadwiseSolver`).
  Rb, lam_b, Rb_inv = jax.lax.map(lambda pair: _block_scaling(*pair), (st.P, st.Y))
  W_inv = jnp.einsum("iba,ibc->iac", Rb_inv, Rb_inv)  # R⁻ᵀR⁻¹
  W_inv = jnp.where(counted[:, None, None], psd.symmetrize(W_inv), 0.0)

  # The examples' blocks in the D system, and the 2×2 (ξ_i, λ_i) couplings.
  TWT = jnp.einsum("ipa,iab,iqb->ipq", T, W_inv, T)
  svec_scale = barrier.svec(scale, lay) / jnp.asarray(lay.weight, X.dtype)
  H = congruence_form(TWT, lay, m) * svec_scale[:, None] * svec_scale[None, :]
  w_last = W_inv[:, :, -1]
  WJW = jnp.einsum("iab,bc,icd->iad", W_inv, J, W_inv)
  b_F = barrier.svec(lmi_adjoint_each(w_last[:, :, None] * w_last[:, None, :], T, s, scale), lay)
  b_J = barrier.svec(lmi_adjoint_each(WJW, T, s, scale), lay)
  # Q_i = KᵢᵀKᵢ + diag(ζ/ξ, η/λ) with Kᵢ = [R⁻¹FR⁻ᵀ, R⁻¹JR⁻ᵀ]: near the optimum W⁻¹ is
  # nearly rank one, KᵢᵀKᵢ nearly singular, and its determinant is formed from the component
  # of the second column orthogonal to the first rather than by a cancelling difference.
  k_F = Rb_inv[:, :, -1]
  k_J = jnp.einsum("iab,b,icb->iac", Rb_inv, jnp.diag(J), Rb_inv)
  a_FF = jnp.sum(k_F**2, axis=1)**2
  a_FJ = jnp.einsum("ia,iab,ib->i", k_F, k_J, k_F)
  a_JJ = jnp.sum(k_J**2, axis=(1, 2))
  k_J_orth = k_J - (a_FJ / a_FF)[:, None, None] * k_F[:, :, None] * k_F[:, None, :]
  ones = jnp.ones_like(st.xi)
  d_xi_w = jnp.where(counted, st.zeta / st.xi, ones)
  d_lam_w = jnp.where(counted, st.eta / st.lam, ones)
  q11, q22 = a_FF + d_xi_w, a_JJ + d_lam_w
  det = (a_FF * jnp.sum(k_J_orth**2, axis=(1, 2)) + d_xi_w * a_JJ + d_lam_w * a_FF
         + d_xi_w * d_lam_w)
  Q_inv = jnp.stack([jnp.stack([q22, -a_FJ], -1), jnp.stack([-a_FJ, q11], -1)], -2)
  Q_inv = Q_inv / det[:, None, None]
  coupling = jnp.stack([b_F, b_J], axis=1)  # (n, 2, N)
  coupled = jnp.einsum("ikl,ilq->ikq", Q_inv, coupling).reshape(2 * n, N)
  H = H - coupling.reshape(2 * n, N).T @ coupled
  C_R, C_Rp = congruence_matrix(R, lay, m), congruence_matrix(Rp, lay, m)
  Tmap = jnp.concatenate([C_R, -C_Rp], axis=1)  # svec(dẐ, dẐ′) ↦ svec(dD)
  curvature = Tmap.T @ H @ Tmap
  rows = _trace_rows(R, Rp, lay, m)
  newton = _trace_constrained_system(jnp.eye(2 * N, dtype=X.dtype) + curvature, rows)
  scaled_residual = (R.T @ dual_residual[0] @ R, Rp.T @ dual_residual[1] @ Rp)
  lmi_residual_w = jnp.einsum("iab,ibc,icd->iad", W_inv, lmi_residual, W_inv)

  def direction(target, corrections, block_correction, xi_correction, lam_correction):
    C_Z = [interior.complementarity_target(sc, target, corr) for sc, corr in
           zip((lam_Z, lam_Zp), corrections, strict=True)]
    C_b = interior.complementarity_target(lam_b, target, block_correction)
    g_xi = target - st.xi * st.zeta - xi_correction
    g_lam = target - st.lam * st.eta - lam_correction
    # dY_i = Y0_i − W_i⁻¹(B_i(dD) + dλ_i J + dξ_i F)W_i⁻¹.
    Y0 = jnp.einsum("iba,ibc,icd->iad", Rb_inv, C_b, Rb_inv) - lmi_residual_w
    Y0 = jnp.where(counted[:, None, None], Y0, 0.0)
    M0 = lmi_adjoint_sum(Y0, T, s, scale)
    rhs_Z = C_Z[0] - scaled_residual[0] + R.T @ M0 @ R
    rhs_Zp = C_Z[1] - scaled_residual[1] - Rp.T @ M0 @ Rp
    rhs_pair = jnp.stack([Y0[:, -1, -1] - zeta_residual + g_xi / st.xi,
                          jnp.einsum("iab,ab->i", Y0, J) - eta_residual + g_lam / st.lam], -1)
    rhs_pair = jnp.where(counted[:, None], rhs_pair, 0.0)
    pair_solve = jnp.einsum("ikl,il->ik", Q_inv, rhs_pair)
    rhs_x = jnp.concatenate([barrier.svec(rhs_Z, lay), barrier.svec(rhs_Zp, lay)])
    rhs_x = rhs_x - Tmap.T @ jnp.einsum("ikp,ik->p", coupling, pair_solve)
    dx, d_nu = newton(rhs_x, trace)
    dD_svec = Tmap @ dx
    d_pair = jnp.where(counted[:, None], jnp.einsum(
        "ikl,il->ik", Q_inv, rhs_pair - jnp.einsum("ikp,p->ik", coupling, dD_svec)), 0.0)
    d_xi, d_lam = d_pair[:, 0], d_pair[:, 1]
    dZ_hat = (barrier.smat(dx[:N], lay, m), barrier.smat(dx[N:], lay, m))
    dZ = (R @ dZ_hat[0] @ R.T, Rp @ dZ_hat[1] @ Rp.T)
    moved = (lmi_map(dZ[0] - dZ[1], T, s, scale) + d_lam[:, None, None] * J
             + d_xi[:, None, None] * F)
    mask = counted[:, None, None]
    dP = jnp.where(mask, lmi_residual + moved, 0.0)
    dY = jnp.where(mask, Y0 - jnp.einsum("iab,ibc,icd->iad", W_inv, moved, W_inv), 0.0)
    dM = lmi_adjoint_sum(dY, T, s, scale)
    dS = (dual_residual[0] - dM + d_nu[0] * G, dual_residual[1] + dM + d_nu[1] * G)
    dS_hat = (R.T @ dS[0] @ R, Rp.T @ dS[1] @ Rp)
    return _Direction(
        Z=dZ, S=dS, Z_hat=dZ_hat, S_hat=dS_hat, P=dP, Y=dY,
        P_hat=jnp.einsum("iab,ibc,idc->iad", Rb_inv, dP, Rb_inv),
        Y_hat=jnp.einsum("iba,ibc,icd->iad", Rb, dY, Rb), xi=d_xi,
        zeta=jnp.where(counted, zeta_residual - dY[:, -1, -1], 0.0), lam=d_lam,
        eta=jnp.where(counted, eta_residual - jnp.einsum("iab,ab->i", dY, J), 0.0),
        nu=d_nu)

  def block_steps(lam, d_hat):
    # The largest a with diag(λ_i) + a·dX̂_i ⪰ 0 for every block (interior._psd_step, batched).
    inv = jax.lax.rsqrt(lam)
    low = psd.min_eigenvalues(inv[:, :, None] * d_hat * inv[:, None, :])
    steps = jnp.where(low < 0, -1.0 / low, jnp.inf)
    return jnp.min(jnp.where(counted, steps, jnp.inf))

  def lengths(dr: _Direction):
    primal = jnp.min(jnp.stack([
        interior._psd_step(lam_Z, dr.Z_hat[0]), interior._psd_step(lam_Zp, dr.Z_hat[1]),
        block_steps(lam_b, dr.P_hat), interior._positive_step(st.xi, dr.xi, counted),
        interior._positive_step(st.lam, dr.lam, counted)]))
    dual = jnp.min(jnp.stack([
        interior._psd_step(lam_Z, dr.S_hat[0]), interior._psd_step(lam_Zp, dr.S_hat[1]),
        block_steps(lam_b, dr.Y_hat), interior._positive_step(st.zeta, dr.zeta, counted),
        interior._positive_step(st.eta, dr.eta, counted)]))
    return jnp.minimum(1.0, primal), jnp.minimum(1.0, dual)

  zero = jnp.zeros((m, m), X.dtype)
  affine = direction(0.0, (zero, zero), jnp.zeros_like(st.P), 0.0, 0.0)
  a_p, a_d = lengths(affine)
  # Mehrotra: σ = (μ_aff/μ)³, from the complementarity the affine step would leave.
  diag = lambda v: jnp.einsum("...a,ab->...ab", v, jnp.eye(m, dtype=X.dtype))
  comp_aff = sum(jnp.sum((diag(sc) + a_p * dz) * (diag(sc) + a_d * ds)) for sc, dz, ds in
                 zip((lam_Z, lam_Zp), affine.Z_hat, affine.S_hat, strict=True))
  block_aff = jnp.sum((diag(lam_b) + a_p * affine.P_hat) * (diag(lam_b) + a_d * affine.Y_hat),
                      axis=(1, 2))
  scalar_aff = ((st.xi + a_p * affine.xi) * (st.zeta + a_d * affine.zeta)
                + (st.lam + a_p * affine.lam) * (st.eta + a_d * affine.eta))
  mu_aff = (comp_aff + jnp.sum(jnp.where(counted, block_aff + scalar_aff, 0.0))) / (
      2 * m + count * (m + 2))
  sigma = jnp.clip((mu_aff / mu)**3, 0.0, 1.0)
  sym = lambda a, b: 0.5 * (a @ b + b @ a)
  corrections = tuple(sym(dz, ds) for dz, ds in zip(affine.Z_hat, affine.S_hat, strict=True))
  dr = direction(sigma * mu, corrections, sym(affine.P_hat, affine.Y_hat),
                 affine.xi * affine.zeta, affine.lam * affine.eta)
  a_p, a_d = lengths(dr)
  a_p, a_d = jnp.minimum(1.0, _TO_BOUNDARY * a_p), jnp.minimum(1.0, _TO_BOUNDARY * a_d)

  # The certificate at the current point, and the best point so far.
  upper = poly.objective(st.Z, st.Zp, X, s, r, beta, activation)
  better = upper < st.upper
  best_upper = jnp.where(better, upper, st.upper)
  bound = dual_bound(st.Y, st.nu, T, s, r, beta, scale, best_upper)
  moved = st._replace(
      Z=st.Z + a_p * dr.Z[0], Zp=st.Zp + a_p * dr.Z[1], S=st.S + a_d * dr.S[0],
      Sp=st.Sp + a_d * dr.S[1], P=st.P + a_p * dr.P, Y=st.Y + a_d * dr.Y,
      xi=st.xi + a_p * dr.xi, zeta=st.zeta + a_d * dr.zeta, lam=st.lam + a_p * dr.lam,
      eta=st.eta + a_d * dr.eta, nu=st.nu + a_d * dr.nu)
  return interior.conclude(st, moved, better, best_upper, bound, tol)


@dataclasses.dataclass(frozen=True)
class Solver(interior.Solver):
  """The S-lemma SDP's primal–dual method (`step`), head by head; see
  `barrier.HeadwiseSolver`. It returns the best iterate of each head; r must be > 0."""

  name: ClassVar[str] = "sdp"

  def init_head(self, X, s, **settings) -> SdpState:
    return init(X, s, **settings)

  def step_head(self, state, X, s, **settings) -> SdpState:
    return step(state, X, s, tol=self.tol, **settings)
