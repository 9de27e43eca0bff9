"""Exact interior-point solver for polynomial heads, with a duality-gap certificate.

The adversarial hinge problem of docs/math.md §3 in epigraph form has the barrier

    Φ_t(Z, Z′, ξ) = t[Σ ξ_i + β(z₄ + z′₄)] − Σ log ξ_i − Σ log(ξ_i − 1 + m_i(Z − Z′))
                    − log det Z − log det Z′        on ⟨G, Z⟩ = ⟨G, Z′⟩ = 0.

Each ξ_i is minimised out in closed form, leaving a smooth convex function ψ_t(1 − m_i), a
smoothed hinge. The worst-case margins m_i come from the exact trust-region subproblem; their
gradient is Danskin's and their Hessian −J_iᵀM_iJ_i follows from differentiating the TRS
optimality conditions, so Newton's method runs on the exact problem: no cuts, no per-example
LMI variables, no penalties. The path parameter t grows geometrically once an iterate is near
the centre (long-step path following).

Every step also certifies: the dual point that the Newton step predicts (multipliers
α⁺ ∈ [0, 1], cut points at the linearised worst cases) gives the bound `poly.dual_bound`; the
state carries the exact objective (upper) and the best certified lower bound, and the solver
stops when (upper − lower) ≤ tol·upper. t stops growing at t_final, where the centre's gap is
a quarter of the target, and the last Newton steps centre to round-off.

Limitation: where a worst case sits in the TRS hard case (large r, D₁ indefinite), m_i has a
kink (two minimisers ±τq) and Newton's steps shrink to nothing there. The solver then moves on
along the path (which lowers the objective) but cannot centre, so the dual point stays
infeasible and the gap it reports, while valid, stays loose. Carrying both minimisers as
cuts, or the TRS multiplier λ_i as a variable, would remove the kink.

Cost per Newton step: one (d+1)² eigenproblem per head plus O(n d⁴ + d⁶); it suits d up to a
few dozen (the KKT system has (d+1)(d+2) unknowns). Precision: the certificate holds in any
dtype; relative gaps below ~1e-4 need float64 (barrier Hessians grow like t²).
"""

import abc
import dataclasses
import functools
from typing import ClassVar, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cvxjax.core import numerics, poly, poly_dual, psd
from cvxjax.core.activations import Quadratic
from cvxjax.solvers import base

# Grow t by this factor once half the Newton decrement λ² is below `_CENTERED`.
_T_FACTOR = 10.0
_CENTERED = 0.5
# An accepted step shorter than this marks a kink that blocks centring.
_KINK_STEP = 1e-3
_ARMIJO = 0.01
# Newton decrement (λ²) under which the full step is taken without Armijo's test.
_QUADRATIC = 0.1


class BarrierState(NamedTuple):
  """Solver state for one head (vmap adds a leading head axis).

  Attributes:
    Z, Zp: (d+1, d+1) strictly feasible iterates in the interior of K.
    t: () barrier weight.
    step: () Newton steps taken.
    upper: () exact objective at (Z, Zp), computed at the last step.
    lower: () best certified lower bound on the optimum so far.
    done: () whether the gap tolerance was met (or no further progress is possible).
  """

  Z: jnp.ndarray
  Zp: jnp.ndarray
  t: jnp.ndarray
  step: jnp.ndarray
  upper: jnp.ndarray
  lower: jnp.ndarray
  done: jnp.ndarray


class _Layout(NamedTuple):
  """Half-vectorisation of symmetric m×m matrices as an isometry (off-diagonals × √2)."""

  rows: np.ndarray
  cols: np.ndarray
  weight: np.ndarray  # 1 on the diagonal, √2 off it


def layout(m: int) -> _Layout:
  rows, cols = np.triu_indices(m)
  return _Layout(rows, cols, np.where(rows == cols, 1.0, np.sqrt(2.0)))


def svec(A, lay):
  return A[..., lay.rows, lay.cols] * lay.weight


def smat(z, lay, m):
  A = jnp.zeros((m, m), z.dtype).at[lay.rows, lay.cols].set(z / lay.weight)
  return A.at[lay.cols, lay.rows].set(z / lay.weight)


def _kronecker_form(MM, WW, lay, m, symmetric=False):
  """Σ_i M_i[p, q] w_i[r] w′_i[s] as a bilinear form on svec coordinates, (N, N).

  The form is (dA, dB) ↦ Σ_i (dA w_i)ᵀ M_i (dB w′_i); it arrives as the GEMM product
  T[(p,q), (r,s)] = MMᵀ WW and is symmetrised over the svec pairs by four gathers. When every
  M_i and w_i w′_iᵀ is symmetric, T is too in (p,q) and in (r,s), so only the upper triangles
  enter the GEMM: N² entries from n·N² products instead of m⁴ from n·m⁴ (about a quarter).

  Args:
    MM: (n, m·m) the matrices M_i, flattened.
    WW: (n, m·m) the outer products w_i w′_iᵀ, flattened.
    lay: the svec layout of m×m matrices.
    m: the matrix size.
    symmetric: whether every M_i is symmetric and w′_i = w_i.
  """
  i, j = lay.rows[:, None], lay.cols[:, None]
  k, l = lay.rows[None, :], lay.cols[None, :]
  if symmetric:
    triangle = lay.rows * m + lay.cols
    T = MM[:, triangle].T @ WW[:, triangle]
    index = np.zeros((m, m), int)  # the upper-triangle position of the pair {p, q}
    index[lay.rows, lay.cols] = index[lay.cols, lay.rows] = np.arange(len(lay.rows))
    at = lambda p, q, r, s: T[index[p, q], index[r, s]]
  else:
    T = MM.T @ WW
    at = lambda p, q, r, s: T[p * m + q, r * m + s]
  form = at(i, k, j, l) + at(i, l, j, k) + at(j, k, i, l) + at(j, l, i, k)
  scale = jnp.asarray(np.where(lay.rows == lay.cols, 0.5, 1.0 / np.sqrt(2.0)), T.dtype)
  return form * scale[:, None] * scale[None, :]


def lift_all(U, s, activation):
  """s_i Φ(u_i) for every row: (n, m, m). Only for the small d this solver targets."""
  return s[:, None, None] * jax.vmap(poly.lift, in_axes=(0, None))(U, activation)


def worst_case_curvature(wc: poly.WorstCase, s, r, activation):
  """M_i with ∇²m_i = −J_iᵀ M_i J_i, embedded in (m, m) with a zero last row and column.

  J_i dD = s_i [I 0] dD w_i is the derivative of the TRS gradient in D. Differentiating
  the optimality conditions 2(A_i + λI)δ + g_i = 0, ‖δ‖ = r gives M_i = H⁻¹ − H⁻¹δδᵀH⁻¹ /
  (δᵀH⁻¹δ) on the sphere and M_i = H⁻¹ inside it, with H = 2(A_i + λ_i I) (floored in the
  hard case, where m_i is not twice differentiable).

  Returns:
    (n, m, m) matrices M̃_i, each PSD.
  """
  a = activation.a
  nu = (s[:, None] * a) * wc.eigvals
  h = 2.0 * (nu + wc.lam[:, None])
  floor = jnp.finfo(h.dtype).eps ** 0.5 * (jnp.max(jnp.abs(h), axis=1, keepdims=True) + 1.0)
  inv_h = 1.0 / jnp.maximum(h, floor)
  on_sphere = (wc.lam > 0)[:, None, None]
  y = wc.delta_hat * inv_h
  denom = jnp.maximum(jnp.sum(wc.delta_hat * y, axis=1), jnp.finfo(h.dtype).tiny)
  M_hat = jax.vmap(jnp.diag)(inv_h) - jnp.where(
      on_sphere, y[:, :, None] * y[:, None, :] / denom[:, None, None], 0.0)
  Q = wc.eigvecs
  # J_i carries s_i but the forms that use M̃_i are written with w_i: M̃_i takes s_i² (1, or 0 on
  # a padding row).
  M = jnp.einsum("pk,ikl,ql->ipq", Q, M_hat, Q) * (s ** 2)[:, None, None]
  return jnp.pad(M, ((0, 0), (0, 1), (0, 1)))


def gradient_rows(U, activation):
  """w_i = (2a·u_i, b) for each worst-case point u_i: the TRS gradient's derivative in D is
  J_i dD = s_i [I 0] dD w_i. Shape (n, d+1)."""
  return jnp.concatenate([2 * activation.a * U, jnp.full((U.shape[0], 1), activation.b, U.dtype)],
                         axis=1)


def linearised_worst_cases(delta, M, U, s, activation, dD):
  """The worst cases δ_i − M̃_i J_i dD after a move dD of D, to first order: (n, d).

  Args:
    delta: (n, d) the worst cases at D; M: (n, m, m) their curvatures M̃_i; U: (n, d) the
    points x_i + δ_i; s: (n,) labels; activation: σ's coefficients; dD: (m, m) symmetric.
  """
  J_dD = s[:, None] * (gradient_rows(U, activation) @ dD)[:, :-1]
  return delta - jnp.einsum("ipq,iq->ip", M[:, :-1, :-1], J_dD)


def curvature_form(M, weight, U, activation, L, Lp, lay):
  """Σ_i weight_i J_iᵀM_iJ_i in scaled svec coordinates of (Z, Z′): a (2N, 2N) PSD matrix.

  The form Σ_i weight_i (dD w_i)ᵀ M̃_i (dD w_i) with dD = dZ − dZ′, seen through
  dZ = L dZ̃ Lᵀ and dZ′ = Lp dZ̃′ Lpᵀ on each side.

  Args:
    M: (n, m, m) worst-case curvatures M̃_i (`_worst_case_curvature`).
    weight: (n,) nonnegative weights.
    U: (n, d) the worst-case points x_i + δ_i.
    activation: the coefficients (a, b, c) of σ.
    L, Lp: (m, m) the scalings of Z and Z′.
    lay: the svec layout of m×m matrices.
  """
  n, m = U.shape[0], L.shape[0]
  w = gradient_rows(U, activation)
  Mw = M * weight[:, None, None]

  def block(La, Lb, symmetric=False):
    wa, wb = w @ La, w @ Lb
    MM = jnp.einsum("pa,ipq,qb->iab", La, Mw, Lb).reshape(n, m * m)
    return _kronecker_form(MM, (wa[:, :, None] * wb[:, None, :]).reshape(n, m * m), lay, m,
                           symmetric)

  cross = block(L, Lp)
  return jnp.block([[block(L, L, True), -cross], [-cross.T, block(Lp, Lp, True)]])


class _Local(NamedTuple):
  """One Newton step's model at (Z, Z′) in scaled coordinates, and the certificate there.

  Directions are written dZ = L dZ̃ Lᵀ with Z = LLᵀ (and likewise for Z′), which turns the
  log-det Hessians into the identity. The Hessian is `I + curvature + Vᵀ diag(weight) V`; the
  weights of examples at the hinge's kink grow like t², so the step solves the augmented
  system with diag(1/weight) instead of forming that sum (as interior-point LP solvers do).
  """

  grad: jnp.ndarray       # (2N,) gradient of Φ_t in scaled svec coordinates
  curvature: Optional[jnp.ndarray]  # (2N, 2N) worst-case curvature (None when r = 0)
  V: jnp.ndarray          # (n, 2N) scaled margin gradients ±svec(Lᵀ s_iΦ(u_i) L)
  weight: jnp.ndarray     # (n,) ψ″ of each example
  L: jnp.ndarray          # (m, m) Cholesky factor of Z
  Lp: jnp.ndarray         # (m, m) Cholesky factor of Z′
  upper: jnp.ndarray      # exact objective
  worst: poly.WorstCase   # the exact worst cases at (Z, Z′)
  alpha: jnp.ndarray      # (n,) the barrier's multipliers 1/q_i
  M: jnp.ndarray          # (n, m, m) worst-case curvatures M̃_i (zeros when r = 0)


def _local_model(Z, Zp, t, X, s, r, beta, activation, lay) -> _Local:
  m = Z.shape[-1]
  wc = poly.worst_case(Z - Zp, X, s, r, activation)
  U = X + wc.delta
  _, d1, d2, alpha = numerics.smoothed_hinge(1.0 - wc.margin, t)
  lifted = lift_all(U, s, activation)
  L, Lp = jnp.linalg.cholesky(Z), jnp.linalg.cholesky(Zp)
  V = jnp.concatenate([svec(jnp.einsum("pa,ipq,qb->iab", L, lifted, L), lay),
                       -svec(jnp.einsum("pa,ipq,qb->iab", Lp, lifted, Lp), lay)], axis=1)
  curvature = None
  M = jnp.zeros_like(lifted)
  if not (isinstance(r, (int, float)) and r == 0):
    M = worst_case_curvature(wc, s, r, activation)
    curvature = curvature_form(M, d1, U, activation, L, Lp, lay)
  grad_D = -jnp.einsum("i,ipq->pq", d1, lifted)
  E = jnp.zeros_like(Z).at[-1, -1].set(t * beta)
  eye = jnp.eye(m, dtype=Z.dtype)
  # In scaled coordinates ∇(−log det Z) = −LᵀZ⁻¹L = −I.
  grad = jnp.concatenate([svec(L.T @ (E + grad_D) @ L - eye, lay),
                          svec(Lp.T @ (E - grad_D) @ Lp - eye, lay)])
  upper = poly.hinge_sum(wc.margin, s) + beta * (Z[-1, -1] + Zp[-1, -1])
  return _Local(grad, curvature, V, d2, L, Lp, upper, wc, alpha, M)


def newton_system(curvature, V, weight, L, Lp, lay, m):
  """Factors the Newton system on ⟨G, Z⟩ = ⟨G, Z′⟩ = 0 without forming Vᵀ diag(w) V.

  The system is [[C, Vᵀ, Aᵀ], [V, −diag(1/w), 0], [A, 0, 0]] [Δ; y; ν] = [−g; h; −residual]
  where C = I + curvature (SPD) and A holds the rows svec(LᵀGL), svec(LpᵀGLp). Eliminating
  Δ = −C⁻¹(g + Vᵀy + Aᵀν) leaves an SPD system of size n + 2 in (y, ν); ψ″ of examples at the
  kink grows like t², and there 1/w → 0 is harmless, whereas the sum form would be
  ill-conditioned. The reduced matrix squares the conditioning of V, so two steps of iterative
  refinement on the full system restore the accuracy that the certificate needs.

  Args:
    curvature: (2N, 2N) or None (zero); V: (n, 2N) the rows of V; weight: (n,) w;
    L, Lp: (m, m) the scalings of Z and Z′; lay, m: the svec layout and matrix size.

  Returns:
    solve(g (2N,), residual (2,), h (n,) or None: zeros) → (Δ (2N,), y (n,), ν (2,)), which
    reuses the factorisations.
  """
  N = len(lay.rows)
  n = V.shape[0]
  G = psd.lorentz_form(m, L.dtype)
  zeros = jnp.zeros(N, G.dtype)
  A = jnp.stack([jnp.concatenate([svec(L.T @ G @ L, lay), zeros]),
                 jnp.concatenate([zeros, svec(Lp.T @ G @ Lp, lay)])])
  B = jnp.concatenate([V, A]).T  # (2N, n + 2)
  if curvature is None:
    apply_C, half_solve, back_solve = (lambda v: v), (lambda v: v), (lambda v: v)
  else:
    C = jnp.eye(2 * N, dtype=G.dtype) + curvature
    U = jax.scipy.linalg.cholesky(C)  # C = UᵀU
    apply_C = lambda v: C @ v
    half_solve = lambda v: jax.scipy.linalg.solve_triangular(U, v, trans="T")
    back_solve = lambda v: jax.scipy.linalg.solve_triangular(U, v)
  # BᵀC⁻¹B = (U⁻ᵀB)ᵀ(U⁻ᵀB): one triangular solve with n + 2 right-hand sides.
  half = half_solve(B)
  inv_w = 1.0 / jnp.maximum(weight, jnp.sqrt(jnp.finfo(G.dtype).tiny))
  gram = half.T @ half
  # A relative ridge keeps the factorisation alive when margin gradients are dependent.
  ridge = 4 * jnp.finfo(G.dtype).eps * jnp.diag(gram)
  K = jax.scipy.linalg.cho_factor(
      gram + jnp.diag(jnp.concatenate([inv_w, jnp.zeros(2, G.dtype)]) + ridge))

  def solve(top, middle):
    # [[C, B], [Bᵀ, −diag(1/w, 0)]] [Δ; z] = [top; middle] by the Schur complement.
    top_half = half_solve(top)
    z = jax.scipy.linalg.cho_solve(K, half.T @ top_half - middle)
    return back_solve(top_half - half @ z), z

  def apply(delta, z):
    return apply_C(delta) + B @ z, B.T @ delta - jnp.concatenate([inv_w * z[:n], zeros[:2]])

  def newton(grad, residual, middle=None):
    top = -grad
    middle = jnp.concatenate([jnp.zeros(n, G.dtype) if middle is None else middle, -residual])
    delta, z = solve(top, middle)
    for _ in range(2):
      r_top, r_middle = apply(delta, z)
      d_delta, d_z = solve(top - r_top, middle - r_middle)
      delta, z = delta + d_delta, z + d_z
    return delta, z[:n], z[n:]

  return newton


def _newton_dual_bound(local: _Local, y, mu, dD, X, s, r, beta, activation, t):
  """The certified bound at the dual point that the Newton step predicts.

  The barrier's own multipliers α_i = 1/q_i are hopeless at large t: for examples at the
  kink, α moves by t per unit of margin, so round-off in m_i alone makes S indefinite.
  The augmented system instead returns the change of ψ′ along the step, y_i = ψ″_i dm_i,
  accurately; with α⁺ = α − y/t and the cut points moved by the linearised TRS solution
  (dδ_i = −M_i J_i dD), the dual matrix equals L⁻ᵀ(I − dZ̃ − …)L⁻¹/t, PSD near the centre.
  Whatever the numbers, the bound stays valid: α⁺ is clipped into [0, 1] and the cut points
  into the ball. Far from the centre S is indefinite, and paying its negative eigenvalue at the
  trace bound 2·upper/β loses everything; α⁺ scaled into the dual's feasible set
  (`poly_dual.restored_bound`) does not, so the better of the two is taken.
  """
  wc = local.worst
  alpha = jnp.clip(local.alpha - y / t, 0.0, 1.0)
  delta = wc.delta
  if not (isinstance(r, (int, float)) and r == 0):
    delta = linearised_worst_cases(delta, local.M, X + wc.delta, s, activation, dD)
  alpha = jnp.where(poly.counted(s), alpha, 0.0)
  M = poly.weighted_lift_sum(poly.cut_points(X, delta, r), alpha * s, activation)
  return jnp.maximum(poly.lift_dual_bound(M, jnp.sum(alpha), beta, local.upper, mu),
                     poly_dual.restored_bound(M, jnp.sum(alpha), beta, local.upper))


def _barrier_value(Z, Zp, t, X, s, r, beta, activation):
  """Φ_t with ξ minimised out; +inf outside the interior of K."""
  m_i = poly.worst_case(Z - Zp, X, s, r, activation).margin
  psi, *_ = numerics.smoothed_hinge(1.0 - m_i, t)
  psi = jnp.where(poly.counted(s), psi, 0.0)
  sign, logdet = jnp.linalg.slogdet(Z)
  sign_p, logdet_p = jnp.linalg.slogdet(Zp)
  value = t * beta * (Z[-1, -1] + Zp[-1, -1]) + jnp.sum(psi) - logdet - logdet_p
  return jnp.where((sign > 0) & (sign_p > 0) & jnp.isfinite(value), value, jnp.inf)


def _max_step(dZ_scaled):
  """The largest α with I + α dZ̃ ⪰ 0 (inf if dZ̃ ⪰ 0), i.e. Z + α dZ ⪰ 0 in scaled form."""
  low = jnp.linalg.eigvalsh(dZ_scaled)[0]
  return jnp.where(low < 0, -1.0 / low, jnp.inf)


def init(X: jnp.ndarray, s: jnp.ndarray, *, r, beta,
         activation: Quadratic) -> BarrierState:
  """A strictly feasible start Z = Z′ = diag(I/d, 1) and t balancing the barrier terms.

  Args:
    X: (n, d) inputs.
    s: (n,) labels in {−1, +1} (0: a padding row, see `poly.counted`).
    r, beta, activation: the problem (see `poly.objective`).

  Returns:
    A `BarrierState` for one head.
  """
  n, d = jnp.sum(poly.counted(s)), X.shape[1]
  Z0 = jnp.diag(jnp.concatenate([jnp.full((d,), 1.0 / d, X.dtype), jnp.ones((1,), X.dtype)]))
  upper = poly.objective(Z0, Z0, X, s, r, beta, activation)
  # At the centre of Φ_t the duality gap is about (n + 2(d+1)) / t.
  t0 = (n + 2.0 * (d + 1)) / jnp.maximum(upper, jnp.finfo(X.dtype).eps)
  return BarrierState(Z=Z0, Zp=Z0, t=t0, step=jnp.asarray(0), upper=upper,
                      lower=jnp.asarray(-jnp.inf, X.dtype), done=jnp.asarray(False))


def step(state: BarrierState, X, s, *, r, beta, activation: Quadratic,
         tol) -> BarrierState:
  """One damped Newton step on Φ_t (and a t increase once centred), with a fresh certificate.

  A head whose certified relative gap is at most `tol` is marked done and no longer moves.

  Args:
    state: the current `BarrierState` of one head.
    X: (n, d) inputs.
    s: (n,) labels in {−1, +1} (0: a padding row).
    r, beta, activation: the problem.
    tol: relative gap tolerance.

  Returns:
    The next `BarrierState`.
  """
  m = X.shape[1] + 1
  lay = layout(m)
  N = len(lay.rows)
  local = _local_model(state.Z, state.Zp, state.t, X, s, r, beta, activation, lay)
  residual = jnp.stack([psd.trace_residual(state.Z), psd.trace_residual(state.Zp)])
  newton = newton_system(local.curvature, local.V, local.weight, local.L, local.Lp, lay, m)
  direction, y, nu = newton(local.grad, residual)
  decrement = -local.grad @ direction
  dZs, dZps = smat(direction[:N], lay, m), smat(direction[N:], lay, m)
  dZ, dZp = local.L @ dZs @ local.L.T, local.Lp @ dZps @ local.Lp.T
  # A NaN bound (a numerically singular iterate) certifies nothing.
  bound = _newton_dual_bound(local, y, -nu / state.t, dZ - dZp, X, s, r, beta, activation,
                             state.t)
  lower = jnp.maximum(state.lower, jnp.where(jnp.isnan(bound), -jnp.inf, bound))
  converged = local.upper - lower <= tol * jnp.abs(local.upper)
  alpha0 = jnp.minimum(1.0, 0.99 * jnp.minimum(_max_step(dZs), _max_step(dZps)))
  value = functools.partial(_barrier_value, t=state.t, X=X, s=s, r=r, beta=beta,
                            activation=activation)
  current = value(state.Z, state.Zp)

  # Near the centre the full Newton step converges quadratically, and Armijo's test cannot
  # see decreases below the round-off of Φ_t: accept it unless Φ_t rises beyond round-off.
  slack = jnp.where(decrement < _QUADRATIC, 64 * _tiny(X.dtype) * jnp.abs(current), 0.0)

  def sufficient(alpha, trial):
    return trial <= current - _ARMIJO * alpha * decrement + slack

  alpha, trial = numerics.backtrack(lambda a: value(state.Z + a * dZ, state.Zp + a * dZp),
                                    sufficient, alpha0)
  moved = sufficient(alpha, trial) & (decrement > 0)
  # t stops growing where the centre's nominal gap (n + 2m)/t is a fraction of the target, so
  # the last Newton steps centre precisely and the dual point becomes feasible.
  n = jnp.sum(poly.counted(s))
  t_final = (n + 2.0 * m) / (0.25 * tol * jnp.maximum(local.upper, _tiny(X.dtype)))
  # A tiny accepted step means a kink (a worst case in the TRS hard case) blocks centring:
  # move on along the path, which carries the iterate off the kink.
  centred = (decrement < 2 * _CENTERED) | (alpha < _KINK_STEP)
  # Nor may the centre's gap exceed the objective already reached: a centre that loose lies
  # far behind the iterate, and walking back to it wastes steps.
  t_floor = (n + 2.0 * m) / jnp.maximum(local.upper, _tiny(X.dtype))
  t = jnp.where(centred, _T_FACTOR * state.t, state.t)
  t = jnp.minimum(jnp.maximum(t, t_floor), t_final)
  # No descent is possible (round-off) and t can grow no more: report the gap reached.
  stuck = ~moved & ((decrement >= 2 * _CENTERED) | (state.t >= t_final))
  keep = converged | stuck | state.done
  return BarrierState(
      Z=jnp.where(keep | ~moved, state.Z, state.Z + alpha * dZ),
      Zp=jnp.where(keep | ~moved, state.Zp, state.Zp + alpha * dZp),
      t=jnp.where(keep, state.t, t),
      step=state.step + jnp.where(state.done, 0, 1),
      upper=jnp.where(state.done, state.upper, local.upper),
      lower=jnp.where(state.done, state.lower, lower),
      done=keep)


def _tiny(dtype):
  return jnp.finfo(dtype).eps


@dataclasses.dataclass(frozen=True)
class HeadwiseSolver(base.Solver):
  """A Newton method over a `cvxjax.core.poly.Problem`, one head after another (`lax.map`).

  A head whose certified relative gap reaches `tol` is done and no longer moves; the run stops
  when every head is. It takes no warm start: its iterates follow the central path from its own
  start, and a point near the optimum is far from the path's early centres. Subclasses give the
  per-head `init_head`, `step_head` and `primal` (the (Z, Z′) that `upper` is the objective of);
  their states carry `upper`, `lower`, `step` and `done`.

  Attributes:
    tol: the relative certified gap at which a head is done.
  """

  warm_start: ClassVar[bool] = False

  @abc.abstractmethod
  def init_head(self, X, s, **settings):
    """The state of one head with labels s."""

  @abc.abstractmethod
  def step_head(self, state, X, s, **settings):
    """One step of one head."""

  @abc.abstractmethod
  def primal(self, state):
    """(Z, Z′) of the state (any leading axes), whose exact objective `state.upper` is."""

  def init(self, problem: poly.Problem, start=None):
    return jax.vmap(lambda s: self.init_head(problem.X, s, **problem.settings))(problem.S)

  def step(self, problem: poly.Problem, state):
    def one(args):
      head, s = args
      # A done head is skipped, not recomputed: one-vs-all heads finish at different steps.
      return jax.lax.cond(head.done, lambda: head,
                          lambda: self.step_head(head, problem.X, s, **problem.settings))

    # Not vmap: jaxlib 0.10's batched LAPACK kernels wait on the CPU thread pool they run in,
    # and two of them at once (the heads' slogdets) deadlock a 2-core machine.
    return jax.lax.map(one, (state, problem.S))

  def terminate(self, problem: poly.Problem, state) -> jnp.ndarray:
    return jnp.all(state.done)

  def summary(self, problem: poly.Problem, state) -> base.Summary:
    return base.summed(state.upper, state.lower, state.step)

  def solution(self, problem: poly.Problem, state):
    """(Z, Z′) projected onto K, which removes the round-off drift of ⟨G, Z⟩, so the reported
    objective is that of a feasible point."""
    Z, Zp = (jax.vmap(psd.project_trace_psd)(A) for A in self.primal(state))
    upper = jax.vmap(lambda Z, Zp, s: poly.objective(Z, Zp, problem.X, s, **problem.settings))(
        Z, Zp, problem.S)
    return (Z, Zp), base.summed(upper, state.lower, state.step)


@dataclasses.dataclass(frozen=True)
class Solver(HeadwiseSolver):
  """The barrier method (`step`), head by head; see `HeadwiseSolver`."""

  name: ClassVar[str] = "barrier"

  def init_head(self, X, s, **settings) -> BarrierState:
    return init(X, s, **settings)

  def step_head(self, state, X, s, **settings) -> BarrierState:
    return step(state, X, s, tol=self.tol, **settings)

  def primal(self, state: BarrierState):
    return state.Z, state.Zp
