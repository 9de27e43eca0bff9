"""Primal–dual interior-point solver for polynomial heads, with a duality-gap certificate.

The adversarial hinge problem of docs/math.md §3 in epigraph form,

    min Σ ξ_i + β(z₄ + z′₄)  s.t.  q_i = ξ_i − 1 + m_i(Z − Z′) ≥ 0,  ξ ≥ 0,  Z, Z′ ∈ K,

with the exact worst-case margins m_i of the trust-region subproblem, is solved together with its
dual: the hinge multipliers α (of q ≥ 0), ζ (of ξ ≥ 0), the dual slacks S, S′ ⪰ 0 and the
multipliers ν of ⟨G, Z⟩ = ⟨G, Z′⟩ = 0. Each step is a Newton step on the perturbed conditions

    S = βE − Σ α_i ∇m_i + ν₀G,   S′ = βE + Σ α_i ∇m_i + ν₁G,   α + ζ = 1,
    q = ξ − 1 + m(Z − Z′),   ZS = Z′S′ = σμI,   α_i q_i = ζ_i ξ_i = σμ,

from iterates that need not satisfy the equations (their residuals fall with every step): the
Nesterov–Todd scaling W = RRᵀ of each PSD block, Mehrotra's predictor–corrector choice of σ and
its second-order terms, and separate primal and dual step lengths to 0.99 of the boundary.
In the scaled coordinates dZ = R dẐ Rᵀ the system is the barrier's
(`barrier.newton_system`): the identity plus the worst cases' curvature Σ α_i J_iᵀM_iJ_i,
the margins' gradients and the two trace rows. Unlike the barrier's multipliers, which follow
the primal point, α moves by its own Newton step, and the path parameter μ follows both; the
path is short (20–40 steps to 1e-6 on breast cancer and on the digits heads, docs/solvers.md).

Every step certifies: α clipped to [0, 1], with cut points at the exact worst cases, gives the
dual bound of `poly.lift_dual_bound` at ν and scaled into the dual's feasible set
(`poly_dual.restored_bound`); the better counts. The state keeps the best primal point seen
(its exact objective is `upper`) and the best bound (`lower`), and a head is done once
upper − lower ≤ tol·upper. Where a worst case sits in the TRS hard case (large r, D₁
indefinite) m_i has a kink, the Newton model misses it, and the path may wander: the best point
and the best bound stay valid, and the fit reports the gap they leave.

Cost per step: that of a barrier step, twice the eigendecompositions (the NT scaling), and a
second solve with the same factorisation (the corrector).
"""

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from cvxjax.core import poly, poly_dual, psd
from cvxjax.core.activations import Quadratic
from cvxjax.solvers import barrier

# Fraction of the step to the boundary of the cones that a step takes.
_TO_BOUNDARY = 0.99
# Least centring weight σ where the margins bend (r > 0): when μ falls faster than the curved
# margins let the dual residual follow, that residual stalls near 1e-6 (relative gaps ~1e-5).
_SIGMA_FLOOR = 0.1


class InteriorState(NamedTuple):
  """Solver state for one head (the solver maps heads over a leading axis).

  Attributes:
    Z, Zp: (m, m) primal iterates in the interior of the PSD cone, m = d + 1.
    S, Sp: (m, m) dual slacks in the interior of the PSD cone.
    xi: (n,) hinge epigraph variables ξ > 0.
    q: (n,) margin slacks q > 0.
    alpha: (n,) hinge multipliers α > 0 (of q ≥ 0).
    zeta: (n,) multipliers ζ > 0 of ξ ≥ 0.
    nu: (2,) multipliers of ⟨G, Z⟩ = 0 and ⟨G, Z′⟩ = 0.
    best_Z, best_Zp: (m, m) the iterate with the lowest exact objective so far.
    upper: () that objective.
    lower: () the best certified lower bound on the optimum so far.
    step: () steps taken.
    done: () whether the gap tolerance was met (or a step failed).
  """

  Z: jnp.ndarray
  Zp: jnp.ndarray
  S: jnp.ndarray
  Sp: jnp.ndarray
  xi: jnp.ndarray
  q: jnp.ndarray
  alpha: jnp.ndarray
  zeta: jnp.ndarray
  nu: jnp.ndarray
  best_Z: jnp.ndarray
  best_Zp: jnp.ndarray
  upper: jnp.ndarray
  lower: jnp.ndarray
  step: jnp.ndarray
  done: jnp.ndarray


def nt_scaling(Z: jnp.ndarray, S: jnp.ndarray):
  """The Nesterov–Todd scaling of a primal–dual pair Z, S ≻ 0.

  With Z = LLᵀ, S = KKᵀ and the SVD KᵀL = UΛVᵀ, R = LVΛ^{-1/2} gives W = RRᵀ with WSW = Z and
  R⁻¹ZR⁻ᵀ = RᵀSR = Λ (Todd, Toh & Tütüncü 1998).

  Args:
    Z, S: (m, m) symmetric positive definite.

  Returns:
    (R (m, m), λ (m,)): the scaling and the scaled point's eigenvalues.
  """
  L, K = jnp.linalg.cholesky(Z), jnp.linalg.cholesky(S)
  _, lam, Vt = jnp.linalg.svd(K.T @ L)
  return (L @ Vt.T) * jax.lax.rsqrt(lam)[None, :], lam


def complementarity_target(lam, target, correction):
  """C with Λ∘C = target·I − Λ² − correction: Λ = diag(λ) (any leading axes) an NT-scaled
  block, ∘ the symmetrised product, solved entrywise."""
  eye = jnp.eye(lam.shape[-1], dtype=lam.dtype)
  return (((target - lam**2)[..., :, None] * eye - correction) * 2.0
          / (lam[..., :, None] + lam[..., None, :]))


def _psd_step(lam, d_hat):
  """The largest a with diag(λ) + a·dX̂ ⪰ 0 (inf if dX̂ ⪰ 0)."""
  inv = jax.lax.rsqrt(lam)
  low = jnp.linalg.eigvalsh(inv[:, None] * d_hat * inv[None, :])[0]
  return jnp.where(low < 0, -1.0 / low, jnp.inf)


def _positive_step(v, dv, counted):
  """The largest a with v + a·dv ≥ 0 for positive v over the counted rows (inf if dv ≥ 0)."""
  falling = counted & (dv < 0)
  return jnp.min(jnp.where(falling, -v / jnp.where(falling, dv, -1.0), jnp.inf))


def _curvature_times(M, weight, U, activation, dD):
  """Σ_i weight_i J_iᵀM_iJ_i dD as an (m, m) matrix: the operator of `barrier.curvature_form`.

  Args:
    M: (n, m, m) worst-case curvatures M̃_i; weight: (n,); U: (n, d) worst-case points;
    activation: σ's coefficients; dD: (m, m) symmetric direction.
  """
  w = barrier.gradient_rows(U, activation)
  bent = jnp.einsum("ipq,iq->ip", M, w @ dD) * weight[:, None]  # M̃_i dD w_i, weighted
  return psd.symmetrize(bent.T @ w)


def _dual_bound(alpha, delta, nu, X, s, r, beta, activation, upper):
  """The certified bound at multipliers α (clipped to [0, 1]) and cut points x_i + δ_i (pulled
  into the ball): with ν, and scaled into the dual's feasible set; the better of the two."""
  alpha = jnp.where(poly.counted(s), jnp.clip(alpha, 0.0, 1.0), 0.0)
  cut_sum = poly.weighted_lift_sum(poly.cut_points(X, delta, r), alpha * s, activation)
  return jnp.maximum(poly.lift_dual_bound(cut_sum, jnp.sum(alpha), beta, upper, -nu),
                     poly_dual.restored_bound(cut_sum, jnp.sum(alpha), beta, upper))


def init(X: jnp.ndarray, s: jnp.ndarray, *, r, beta, activation: Quadratic) -> InteriorState:
  """Z = Z′ = diag(I/d, 1) (on K), S = S′ = I, α = ζ = ½, ξ = 2 and q = max(1 + m_i, 1).

  Args:
    X: (n, d) inputs.
    s: (n,) labels in {−1, +1} (0: a padding row, see `poly.counted`).
    r, beta, activation: the problem (see `poly.objective`).

  Returns:
    An `InteriorState` for one head.
  """
  n, d = X.shape
  Z0 = jnp.diag(jnp.concatenate([jnp.full((d,), 1.0 / d, X.dtype), jnp.ones((1,), X.dtype)]))
  margin = poly.worst_case(jnp.zeros_like(Z0), X, s, r, activation).margin
  half = jnp.full((n,), 0.5, X.dtype)
  eye = jnp.eye(d + 1, dtype=X.dtype)
  return InteriorState(
      Z=Z0, Zp=Z0, S=eye, Sp=eye, xi=jnp.full((n,), 2.0, X.dtype),
      q=jnp.maximum(1.0 + margin, 1.0), alpha=half, zeta=half, nu=jnp.zeros(2, X.dtype),
      best_Z=Z0, best_Zp=Z0, upper=poly.objective(Z0, Z0, X, s, r, beta, activation),
      lower=jnp.asarray(-jnp.inf, X.dtype), step=jnp.asarray(0), done=jnp.asarray(False))


class _Direction(NamedTuple):
  """A Newton direction: Ẑ-space steps of both blocks, and the rest in their own units."""

  dZ: tuple      # (dẐ, dẐ′), each (m, m), in NT-scaled coordinates
  dS: tuple      # (dŜ, dŜ′), each (m, m), in NT-scaled coordinates
  dZ_full: tuple  # (dZ, dZ′), each (m, m)
  dS_full: tuple  # (dS, dS′), each (m, m)
  xi: jnp.ndarray
  q: jnp.ndarray
  alpha: jnp.ndarray
  zeta: jnp.ndarray
  nu: jnp.ndarray


def step(state: InteriorState, X, s, *, r, beta, activation: Quadratic, tol) -> InteriorState:
  """One predictor–corrector step, with a fresh certificate.

  A head whose certified relative gap is at most `tol` is marked done and no longer moves.

  Args:
    state: the current `InteriorState` of one head.
    X: (n, d) inputs.
    s: (n,) labels in {−1, +1} (0: a padding row).
    r, beta, activation: the problem.
    tol: relative gap tolerance.

  Returns:
    The next `InteriorState`.
  """
  m = X.shape[1] + 1
  lay = barrier.layout(m)
  N = len(lay.rows)
  counted = poly.counted(s)
  G = psd.lorentz_form(m, X.dtype)
  E = jnp.zeros((m, m), X.dtype).at[-1, -1].set(beta)
  st = state

  wc = poly.worst_case(st.Z - st.Zp, X, s, r, activation)
  U = X + wc.delta
  lifted = barrier.lift_all(U, s, activation)
  M = poly.weighted_lift_sum(U, st.alpha * s, activation)
  dual_residual = (E - M + st.nu[0] * G - st.S, E + M + st.nu[1] * G - st.Sp)
  pair_residual = 1.0 - st.alpha - st.zeta
  slack_residual = st.q - st.xi + 1.0 - wc.margin
  trace = jnp.stack([psd.trace_residual(st.Z), psd.trace_residual(st.Zp)])
  pairs = jnp.where(counted, st.zeta * st.xi + st.alpha * st.q, 0.0)
  mu = (jnp.sum(st.Z * st.S) + jnp.sum(st.Zp * st.Sp) + jnp.sum(pairs)) / (
      2 * m + 2 * jnp.sum(counted))

  (R, lam), (Rp, lamp) = nt_scaling(st.Z, st.S), nt_scaling(st.Zp, st.Sp)
  V = jnp.concatenate([barrier.svec(jnp.einsum("pa,ipq,qb->iab", R, lifted, R), lay),
                       -barrier.svec(jnp.einsum("pa,ipq,qb->iab", Rp, lifted, Rp), lay)], axis=1)
  plain = isinstance(r, (int, float)) and r == 0
  curvature, M_curv = None, None
  if not plain:
    M_curv = barrier.worst_case_curvature(wc, s, r, activation)
    curvature = barrier.curvature_form(M_curv, st.alpha, U, activation, R, Rp, lay)
  # ξ eliminated: α_i dq_i + q_i dα_i with dq = dξ + dm − slack residual, dξ from ζ_i ξ_i.
  slack_weight = st.q + st.alpha * st.xi / st.zeta
  scaled_residual = (R.T @ dual_residual[0] @ R, Rp.T @ dual_residual[1] @ Rp)
  scales = (lam, lamp)

  newton = barrier.newton_system(curvature, V, st.alpha / slack_weight, R, Rp, lay, m)

  def direction(target, corrections, pair_correction, slack_correction) -> _Direction:
    # NT: Λ∘(dẐ + dŜ) = target·I − Λ² − correction, solved entrywise (Λ is diagonal).
    comp = [complementarity_target(scales[b], target, corrections[b]) for b in range(2)]
    rhs = jnp.concatenate([barrier.svec(comp[b] - scaled_residual[b], lay) for b in range(2)])
    pair_gap = st.zeta * st.xi - target + pair_correction
    slack_gap = st.alpha * st.q - target + slack_correction
    h = -slack_gap + st.alpha * (pair_gap + st.xi * pair_residual) / st.zeta
    h = h + st.alpha * slack_residual
    dZ, y, d_nu = newton(-rhs, trace, h / st.alpha)
    # A padding row (s_i = 0) touches nothing; its variables stay where they are.
    d_alpha = jnp.where(counted, -y, 0.0)
    d_xi = jnp.where(counted, (-pair_gap - st.xi * pair_residual + st.xi * d_alpha) / st.zeta, 0.0)
    dZ_hat = (barrier.smat(dZ[:N], lay, m), barrier.smat(dZ[N:], lay, m))
    dZ_full = (R @ dZ_hat[0] @ R.T, Rp @ dZ_hat[1] @ Rp.T)
    # dS from the linearised dual equations, not from the scaled complementarity: R⁻ᵀ dŜ R⁻¹
    # carries cond(R) times dŜ's round-off, which stalls the dual residual near 1e-6.
    d_lift = poly.weighted_lift_sum(U, d_alpha * s, activation)
    bend = 0.0 if plain else _curvature_times(M_curv, st.alpha, U, activation,
                                             dZ_full[0] - dZ_full[1])
    dS_full = (dual_residual[0] - d_lift + d_nu[0] * G + bend,
               dual_residual[1] + d_lift + d_nu[1] * G - bend)
    return _Direction(dZ=dZ_hat, dS=(R.T @ dS_full[0] @ R, Rp.T @ dS_full[1] @ Rp),
                      dZ_full=dZ_full, dS_full=dS_full, xi=d_xi,
                      q=jnp.where(counted, d_xi + V @ dZ - slack_residual, 0.0), alpha=d_alpha,
                      zeta=jnp.where(counted, pair_residual - d_alpha, 0.0), nu=d_nu)

  def lengths(dr: _Direction):
    primal = jnp.minimum(jnp.minimum(_psd_step(lam, dr.dZ[0]), _psd_step(lamp, dr.dZ[1])),
                         jnp.minimum(_positive_step(st.xi, dr.xi, counted),
                                     _positive_step(st.q, dr.q, counted)))
    dual = jnp.minimum(jnp.minimum(_psd_step(lam, dr.dS[0]), _psd_step(lamp, dr.dS[1])),
                       jnp.minimum(_positive_step(st.alpha, dr.alpha, counted),
                                   _positive_step(st.zeta, dr.zeta, counted)))
    return jnp.minimum(1.0, primal), jnp.minimum(1.0, dual)

  zero = jnp.zeros((m, m), X.dtype)
  affine = direction(0.0, (zero, zero), 0.0, 0.0)
  a_p, a_d = lengths(affine)
  # Mehrotra: σ = (μ_aff/μ)³, from the complementarity the affine step would leave.
  comp_aff = sum(jnp.sum((jnp.diag(scales[b]) + a_p * affine.dZ[b])
                         * (jnp.diag(scales[b]) + a_d * affine.dS[b])) for b in range(2))
  pairs_aff = ((st.zeta + a_d * affine.zeta) * (st.xi + a_p * affine.xi)
               + (st.alpha + a_d * affine.alpha) * (st.q + a_p * affine.q))
  mu_aff = (comp_aff + jnp.sum(jnp.where(counted, pairs_aff, 0.0))) / (
      2 * m + 2 * jnp.sum(counted))
  sigma = jnp.clip((mu_aff / mu)**3, 0.0 if plain else _SIGMA_FLOOR, 1.0)
  corrections = tuple(0.5 * (affine.dZ[b] @ affine.dS[b] + affine.dS[b] @ affine.dZ[b])
                      for b in range(2))
  dr = direction(sigma * mu, corrections, affine.zeta * affine.xi, affine.alpha * affine.q)
  a_p, a_d = lengths(dr)
  a_p, a_d = jnp.minimum(1.0, _TO_BOUNDARY * a_p), jnp.minimum(1.0, _TO_BOUNDARY * a_d)

  # The certificate at the current point, and the best point so far.
  upper = poly.hinge_sum(wc.margin, s) + beta * (st.Z[-1, -1] + st.Zp[-1, -1])
  better = upper < st.upper
  best_upper = jnp.where(better, upper, st.upper)
  bound = _dual_bound(st.alpha, wc.delta, st.nu, X, s, r, beta, activation, best_upper)
  if not plain:
    # The dual point after the step, its cut points moved by the linearised TRS solution:
    # the one S + a·dS stands for, which the worst cases at the next iterate are not quite.
    delta = barrier.linearised_worst_cases(wc.delta, M_curv, U, s, activation,
                                           a_p * (dr.dZ_full[0] - dr.dZ_full[1]))
    bound = jnp.maximum(bound, _dual_bound(st.alpha + a_d * dr.alpha, delta, st.nu + a_d * dr.nu,
                                           X, s, r, beta, activation, best_upper))
  moved = st._replace(
      Z=st.Z + a_p * dr.dZ_full[0], Zp=st.Zp + a_p * dr.dZ_full[1],
      S=st.S + a_d * dr.dS_full[0], Sp=st.Sp + a_d * dr.dS_full[1],
      xi=st.xi + a_p * dr.xi, q=st.q + a_p * dr.q, alpha=st.alpha + a_d * dr.alpha,
      zeta=st.zeta + a_d * dr.zeta, nu=st.nu + a_d * dr.nu)
  return conclude(st, moved, better, best_upper, bound, tol)


def conclude(state, moved, better, best_upper, bound, tol):
  """The next state of a primal–dual head from the moved iterates: the best point and bound
  so far, done once their relative gap is at most `tol`, and halted on a non-finite step.

  Args:
    state: the state the step started from; moved: that state with the iterates stepped.
      Both have fields Z, Zp, best_Z, best_Zp, upper, lower, step and done.
    better: () whether `state`'s own point has the lowest objective so far, `best_upper`.
    bound: () the certified bound this step found (NaN: none).
    tol: relative gap tolerance.
  """
  lower = jnp.maximum(state.lower, jnp.where(jnp.isnan(bound), -jnp.inf, bound))
  converged = best_upper - lower <= tol * jnp.abs(best_upper)
  moved = moved._replace(
      best_Z=jnp.where(better, state.Z, state.best_Z),
      best_Zp=jnp.where(better, state.Zp, state.best_Zp),
      upper=best_upper, lower=lower, step=state.step + 1, done=converged)
  # Past round-off a step can fail (a factorisation of a singular matrix): stop with the best.
  failed = ~jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(moved)]))
  halted = state._replace(best_Z=moved.best_Z, best_Zp=moved.best_Zp, upper=best_upper,
                          lower=lower, step=moved.step, done=jnp.asarray(True))
  pick = lambda old, halt, new: jnp.where(state.done, old,
                                          jnp.where(converged | failed, halt, new))
  return jax.tree.map(pick, state, halted, moved)


@dataclasses.dataclass(frozen=True)
class Solver(barrier.HeadwiseSolver):
  """The primal–dual method (`step`), head by head; see `barrier.HeadwiseSolver`. It returns
  the best iterate of each head."""

  name: ClassVar[str] = "interior"

  def init_head(self, X, s, **settings) -> InteriorState:
    return init(X, s, **settings)

  def step_head(self, state, X, s, **settings) -> InteriorState:
    return step(state, X, s, tol=self.tol, **settings)

  def primal(self, state: InteriorState):
    return state.best_Z, state.best_Zp
