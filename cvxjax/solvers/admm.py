"""ADMM for convex ReLU and gated-ReLU heads, plain and robust.

See docs/math.md §4; Bai et al. Alg. 3.1.

The head's weights W (S, P, d, C) are copied into blocks that each carry one simple term:

    Z = γW           (β/γ) Σ‖·‖₂                group soft-threshold
    T = G W          cone constraints T ≥ 0      (ReLU; G W = (2D_k − I) X W[s, k])
    (T, R = γW)      robust cones T ≥ (ε/γ)‖R‖_q      projection by a scalar root per neuron
    M = F W          loss of the scores          (plain: squared / hinge / multi-class hinge)
    Ξ = E Θ W        robust hinge per pair       (ε > 0: Θ W = θ_i, E = the pair differences)

Every block shares one penalty ρ, so the W-update solves H W = rhs with H = Σ LᵀL independent of
ρ: ρ adapts (OSQP's √(primal/dual) rule, at steps 2^k ≥ 32) without refactoring. H is cheap:
(2D − I)² = I gives GᵀG = I ⊗ XᵀX, so H = I ⊗ B + FᵀF (plain; FᵀF has rank n: Woodbury with an
n×n capacitance matrix, Cholesky-factored once or solved by CG, optionally Nyström-preconditioned)
or H = I ⊗ B + K ⊗ I_d (robust binary; a Kronecker sum, solved in the eigenbases of B and K), with
B = c I + XᵀX (c = γ², or 2γ² with R; gated: no XᵀX) and K_{(s,k),(s′,l)} = σ_sσ_s′ (DᵀD)_kl.
The robust multi-class H mixes the classes through the labels and is solved by warm-started CG
preconditioned with that Kronecker sum.
"""

import dataclasses
from typing import ClassVar, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cvxjax.core import numerics, relu
from cvxjax.solvers import base, relu_certificate

_BISECTIONS = 60  # halvings for the scalar roots of the proximal maps: past float64 resolution
_RELAX = 1.6  # over-relaxation, the usual choice for ADMM
_FIRST_ADAPTATION = 32  # the first step at which ρ adapts (then at every power of two)
_MAX_FACTOR = 2.0  # the most ρ changes at once
_LOPSIDED = 10.0  # √(primal/dual) beyond which ρ also changes between powers of two
_LOPSIDED_EVERY = 512  # steps between those changes


class Setup(NamedTuple):
  """The problem's data and the cached factorisation of H (rebuilt, not checkpointed).

  Attributes:
    X: (n, d) inputs. D: (n, P) patterns. targets: encoded labels.
    gamma: the scale of the copies Z = γW and (robust ReLU) R = γW.
    B_inv: (d, d) inverse of the per-block matrix B.
    cap_chol: (n, n) Cholesky factor of the Woodbury capacitance matrix (plain, "cholesky").
    nystrom: (U (n, r), scale (r,)) of the Nyström preconditioner (plain, "cg", or None).
    eig_K, Q_K, eig_B, Q_B: eigen-decompositions of K (SP×SP) and B (robust).
  """

  X: jnp.ndarray
  D: jnp.ndarray
  targets: relu.Targets
  gamma: jnp.ndarray
  B_inv: jnp.ndarray
  cap_chol: Optional[jnp.ndarray]
  nystrom: Optional[tuple]
  eig_K: Optional[jnp.ndarray]
  Q_K: Optional[jnp.ndarray]
  eig_B: Optional[jnp.ndarray]
  Q_B: Optional[jnp.ndarray]


class State(NamedTuple):
  """ADMM iterate: W, each copy with its scaled dual (None where a block is absent).

  Attributes:
    W: (S, P, d, C) primal. Z, U_Z: its group-lasso copy and dual.
    T, U_T: (S, P, n, C) cone slacks (ReLU). R, U_R: (S, P, d, C) cone copy (robust ReLU).
    M, U_M: loss copy: (n, C) scores (plain) or (n, d, K) pair weights (robust).
    rho: the penalty. step: iterations. primal, dual: the last residual norms (relative).
  """

  W: jnp.ndarray
  Z: jnp.ndarray
  U_Z: jnp.ndarray
  T: Optional[jnp.ndarray]
  U_T: Optional[jnp.ndarray]
  R: Optional[jnp.ndarray]
  U_R: Optional[jnp.ndarray]
  M: jnp.ndarray
  U_M: jnp.ndarray
  rho: jnp.ndarray
  step: jnp.ndarray
  primal: jnp.ndarray
  dual: jnp.ndarray


# ----------------------------------------------------------------------------- linear maps


def _loss_map(W, setup: Setup, robust: bool):
  """F W (n, C) scores, or the robust pair weights E Θ W (n, d, K)."""
  if robust:
    return relu.pair_margins(relu.example_weights(W, setup.D), setup.targets)
  return relu.scores(W, setup.X, setup.D)


def _loss_map_adjoint(M, setup: Setup, robust: bool, num_blocks: int):
  if not robust:
    return relu.scores_adjoint(M, setup.X, setup.D, num_blocks)
  M = M * setup.targets.pairs[:, None, :]
  if M.shape[-1] == 1 and not jnp.issubdtype(setup.targets.labels.dtype, jnp.integer):
    theta = M * setup.targets.labels[:, None, None]
  else:  # (E θ)_c = θ_y − θ_c, so Eᵀ puts Σ_c m_c on column y and −m_c on column c
    C = M.shape[-1]
    onehot = jax.nn.one_hot(setup.targets.labels, C, dtype=M.dtype)
    theta = onehot[:, None, :] * jnp.sum(M, axis=-1, keepdims=True) - M
  sigma = relu.neuron_signs(num_blocks == 1)
  return jnp.einsum("np,ndc,s->spdc", setup.D, theta, sigma, optimize=True)


def _block_solve(R, B_inv):
  """(I ⊗ B)⁻¹ R for R (S, P, d, C)."""
  return jnp.einsum("de,spec->spdc", B_inv, R)


def _capacitance_matvec(m, setup: Setup, num_blocks: int):
  """(I + F (I ⊗ B)⁻¹ Fᵀ) m for m (n, C), without forming the n×n matrix."""
  Ft = relu.scores_adjoint(m, setup.X, setup.D, num_blocks)
  return m + relu.scores(_block_solve(Ft, setup.B_inv), setup.X, setup.D)


def _nystrom_apply(m, nystrom):
  """The Nyström preconditioner of I + A (A ≈ U diag(λ) Uᵀ): U diag(scale) Uᵀm + (m − UUᵀm)."""
  U, scale = nystrom
  coef = jnp.einsum("nr,nc->rc", U, m)
  return m + U @ ((scale - 1.0)[:, None] * coef)


def _kron_solve(R, setup: Setup):
  """(I ⊗ B + K ⊗ I_d)⁻¹ R in the eigenbases of K and B; R (S, P, d, C)."""
  S, P, d, C = R.shape
  R = R.reshape(S * P, d, C)
  Rt = jnp.einsum("ka,kdc,de->aec", setup.Q_K, R, setup.Q_B)
  Rt = Rt / (setup.eig_K[:, None, None] + setup.eig_B[None, :, None])
  return jnp.einsum("ka,aec,de->kdc", setup.Q_K, Rt, setup.Q_B).reshape(S, P, d, C)


def _solve(rhs, W0, setup: Setup, *, gated: bool, robust: bool, linear_solver: str,
           cg_tol: float):
  """Solves H W = rhs (see the module docstring); W0 warm-starts the iterative paths."""
  S = rhs.shape[0]
  if not robust:
    Binv_r = _block_solve(rhs, setup.B_inv)
    Fb = relu.scores(Binv_r, setup.X, setup.D)
    if linear_solver == "cholesky":
      m = jax.scipy.linalg.cho_solve((setup.cap_chol, True), Fb)
    else:
      precond = None if setup.nystrom is None else (lambda v: _nystrom_apply(v, setup.nystrom))
      m0 = Fb - relu.scores(W0, setup.X, setup.D)  # exact when W0 already solves the system
      m, _ = jax.scipy.sparse.linalg.cg(lambda v: _capacitance_matvec(v, setup, S), Fb, x0=m0,
                                        tol=cg_tol, maxiter=500, M=precond)
    return Binv_r - _block_solve(relu.scores_adjoint(m, setup.X, setup.D, S), setup.B_inv)
  if setup.targets.pairs.shape[-1] == 1:
    return _kron_solve(rhs, setup)
  H = lambda V: _apply_H(V, setup, gated=gated, robust=robust)
  W, _ = jax.scipy.sparse.linalg.cg(H, rhs, x0=W0, tol=cg_tol, maxiter=500,
                                    M=lambda V: _kron_solve(V, setup))
  return W


def _apply_H(W, setup: Setup, *, gated: bool, robust: bool):
  """H W = Σ_blocks LᵀL W."""
  S = W.shape[0]
  out = W * setup.gamma ** 2 * (2.0 if (robust and not gated) else 1.0)
  if not gated:
    out = out + jnp.einsum("de,spec->spdc", setup.X.T @ setup.X, W)
  return out + _loss_map_adjoint(_loss_map(W, setup, robust), setup, robust, S)


def build_setup(X, D, targets: relu.Targets, *, gated: bool, robust: bool, linear_solver: str,
                nystrom_rank: int, key) -> Setup:
  """Factors H once per problem (see the module docstring)."""
  d = X.shape[1]
  S = 1 if gated else 2
  # The copies Z = γW and R = γW with γ² ~ the scale of XᵀX (and of FᵀF) balance the blocks:
  # with Z = W, H's condition reached ~P·λ_max(XXᵀ) and float32 ADMM diverged at feature scale.
  gamma = jnp.linalg.norm(X) / jnp.sqrt(d)
  gamma = jnp.where(gamma > 0, gamma, 1.0)
  c = gamma ** 2 * (2.0 if (robust and not gated) else 1.0)
  B = c * jnp.eye(d, dtype=X.dtype) + (0.0 if gated else X.T @ X)
  B_inv = jnp.linalg.inv(B)
  none = dict(cap_chol=None, nystrom=None, eig_K=None, Q_K=None, eig_B=None, Q_B=None)
  setup = Setup(X, D, targets, gamma, B_inv, **none)
  if not robust:
    if linear_solver == "cholesky":
      cap = jnp.eye(X.shape[0], dtype=X.dtype) + S * (D @ D.T) * (X @ B_inv @ X.T)
      return setup._replace(cap_chol=jnp.linalg.cholesky(cap))
    if nystrom_rank > 0:
      return setup._replace(nystrom=_nystrom(setup, S, nystrom_rank, key))
    return setup
  sigma = relu.neuron_signs(gated)
  K = jnp.kron(jnp.outer(sigma, sigma), D.T @ D)
  eig_K, Q_K = jnp.linalg.eigh(K)
  eig_B, Q_B = jnp.linalg.eigh(B)
  return setup._replace(eig_K=jnp.maximum(eig_K, 0.0), Q_K=Q_K, eig_B=eig_B, Q_B=Q_B)


def _nystrom(setup: Setup, S: int, rank: int, key):
  """Randomised Nyström approximation of A = F (I ⊗ B)⁻¹ Fᵀ (Frangella, Tropp & Udell 2023).

  Returns (U (n, r), scale (r,)) such that the preconditioner of I + A is
  U diag(scale) Uᵀ + (I − UUᵀ), with scale = (λ_r + 1)/(λ + 1).
  """
  n = setup.X.shape[0]
  Omega, _ = jnp.linalg.qr(jax.random.normal(key, (n, rank), setup.X.dtype))
  Y = jax.vmap(lambda w: _capacitance_matvec(w[:, None], setup, S)[:, 0] - w, 1, 1)(Omega)
  shift = jnp.finfo(Y.dtype).eps * jnp.linalg.norm(Y)
  Y = Y + shift * Omega
  L = jnp.linalg.cholesky(Omega.T @ Y)
  Bm = jax.scipy.linalg.solve_triangular(L, Y.T, lower=True).T
  U, sv, _ = jnp.linalg.svd(Bm, full_matrices=False)
  lam = jnp.maximum(sv ** 2 - shift, 0.0)
  return U, (lam[-1] + 1.0) / (lam + 1.0)


# ----------------------------------------------------------------------------- proximal maps


def _bisect(decreasing, lo, hi):
  """The root of a nonincreasing function on [lo, hi] (elementwise), by bisection."""
  def body(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    pos = decreasing(mid) > 0
    return jnp.where(pos, mid, lo), jnp.where(pos, hi, mid)
  lo, hi = jax.lax.fori_loop(0, _BISECTIONS, body, (lo, hi))
  return 0.5 * (lo + hi)


def project_robust_cone(A, Bv, eps, q: int, counted=None):
  """Projects (t, r) onto {t_i ≥ ε‖r‖_q for every counted i}, per neuron.

  The KKT conditions give t = max(a, ε‖r‖_q), r = shrink_q(b, λ) with λ the root of the
  decreasing φ(λ) = ε Σ_i (ε‖shrink_q(b, λ)‖_q − a_i)₊ − λ: in closed form on the sorted
  slacks for q = 2, by bisection for q = 1.

  Args:
    A: (S, P, n, C) the slacks a. Bv: (S, P, d, C) the weights b.
    eps: the radius ε > 0. q: the dual norm.
    counted: (n,) bool, False for padding rows, whose t_i are left free (default: all True).

  Returns:
    (T (S, P, n, C), R (S, P, d, C)).
  """
  counted = jnp.ones(A.shape[2], bool) if counted is None else counted
  free = ~counted[:, None]
  # Σ_i (τ − a_i)₊ = m τ − (sum of the m smallest a), m = #{a_i < τ}: sorted once, then each
  # bisection step costs O(d + log n) per neuron instead of O(n + d). A free row sorts as +∞.
  a_sorted = jnp.sort(jnp.moveaxis(jnp.where(free, jnp.inf, A), 2, -1), axis=-1)  # (S, P, C, n)
  prefix = jnp.concatenate([jnp.zeros_like(a_sorted[..., :1]), jnp.cumsum(a_sorted, -1)], -1)
  count = jnp.vectorize(jnp.searchsorted, signature="(n),()->()")

  def excess(tau):
    m = count(a_sorted, tau)
    return m * tau - jnp.take_along_axis(prefix, m[..., None], axis=-1)[..., 0]

  if q == 2:
    # ‖r‖₂ = (‖b‖ − λ)₊, so τ = ε‖r‖ solves τ = ε‖b‖ − ε² Σ_i (τ − a_i)₊ (clipped at 0): on the
    # segment where m slacks lie below τ, τ = (ε‖b‖ + ε² S_m)/(1 + ε² m); one segment holds it.
    nu = jnp.linalg.norm(Bv, axis=2)[..., None]  # (S, P, C, 1)
    m = jnp.arange(a_sorted.shape[-1] + 1)
    tau = (eps * nu + eps ** 2 * prefix) / (1.0 + eps ** 2 * m)
    inf = jnp.full_like(a_sorted[..., :1], jnp.inf)
    valid = ((jnp.concatenate([-inf, a_sorted], -1) <= tau)
             & (tau <= jnp.concatenate([a_sorted, inf], -1)))
    tau = jnp.maximum(jnp.take_along_axis(tau, jnp.argmax(valid, -1)[..., None], -1), 0.0)
    R = Bv * jnp.moveaxis(jnp.minimum(tau / jnp.maximum(eps * nu, jnp.finfo(Bv.dtype).tiny),
                                      1.0), -1, 2)
  else:
    def phi(lam):
      return eps * excess(eps * relu.dual_norm(numerics.shrink(Bv, lam[:, :, None, :], q), q)) - lam
    hi = eps * excess(eps * relu.dual_norm(Bv, q))
    lam = _bisect(phi, jnp.zeros_like(hi), hi)
    R = numerics.shrink(Bv, lam[:, :, None, :], q)
  return jnp.where(free, A, jnp.maximum(A, eps * relu.dual_norm(R, q)[:, :, None, :])), R


def prox_robust_hinge(Zp, X, pairs, eps, q: int, step):
  """prox of step · (1 − x_iᵀξ + ε‖ξ‖_q)₊ for every pair (i, c) with pairs_ic = 1.

  With g(ξ) = 1 − xᵀξ + ε‖ξ‖_q and ξ(s) = prox_{s g}(z) = shrink_q(z + s x, s ε): z if g(z) ≤ 0,
  ξ(step) if g(ξ(step)) ≥ 0, else ξ(s) with g(ξ(s)) = 0 (g(ξ(s)) decreases with s).

  Args:
    Zp: (n, d, K) points z. X: (n, d) inputs. pairs: (n, K) 0/1 pair weights.
    eps, q: the ball. step: the prox step 1/ρ.
  """
  x = X[:, :, None]
  xi = lambda s: numerics.shrink(Zp + s[:, None, :] * x, s[:, None, :] * eps, q, axis=1)
  g = lambda V: 1.0 - jnp.sum(x * V, axis=1) + eps * relu.dual_norm(V, q, axis=1)
  full = jnp.full(pairs.shape, step, Zp.dtype)
  s = _bisect(lambda s: g(xi(s)), jnp.zeros_like(full), full)
  s = jnp.where(g(xi(full)) >= 0, full, s)
  s = jnp.where((g(Zp) <= 0) | (pairs == 0), 0.0, s)
  return xi(s)


def prox_loss_scores(A, targets: relu.Targets, loss: str, step):
  """prox of step · loss in score space, per example: A (n, C) → (n, C).

  squared: (a + step·y)/(1 + step). binary hinge: the clipped shift of y a toward 1. Multi-class
  hinge Σ_{c≠y}(1 − m_y + m_c)₊: with t = m_y fixed every m_c has a closed form, and t is the
  root of ρ(t − a_y) − Σ_{c≠y} clip(ρ(a_c − t + 1), 0, 1), found by bisection.
  """
  if loss == "squared":
    return (A + step * targets.onehot) / (1.0 + step)
  if targets.pairs.shape[-1] == 1:
    y = targets.labels[:, None]
    z = y * A
    return y * jnp.clip(1.0, z, z + step)  # z ≥ 1: z; z ≤ 1 − step: z + step; else 1
  onehot = jax.nn.one_hot(targets.labels, A.shape[-1], dtype=A.dtype)
  a_y = jnp.sum(onehot * A, axis=-1)
  others = 1.0 - onehot
  rho = 1.0 / step
  grad = lambda t: rho * (t - a_y) - jnp.sum(
      others * jnp.clip(rho * (A - t[:, None] + 1.0), 0.0, 1.0), axis=-1)
  t = _bisect(lambda t: -grad(t), a_y, a_y + step * (A.shape[-1] - 1))
  u = A - (t[:, None] - 1.0)
  m = jnp.where(u <= 0, A, jnp.where(u <= step, t[:, None] - 1.0, A - step))
  # A padding row has no pairs (no loss): its prox is the identity.
  return jnp.where(relu.counted(targets)[:, None], jnp.where(onehot > 0, t[:, None], m), A)


# ----------------------------------------------------------------------------- iterations


def init(setup: Setup, *, num_blocks: int, num_patterns: int, gated: bool, robust: bool,
         rho: float = 1.0, start: Optional[jnp.ndarray] = None) -> State:
  """The zero iterate, or the warm start W = `start` (S, P, d, C): all copies consistent with W,
  duals zero."""
  X, targets = setup.X, setup.targets
  d = X.shape[1]
  C = targets.onehot.shape[1]
  W = (jnp.zeros((num_blocks, num_patterns, d, C), X.dtype) if start is None
       else jnp.asarray(start, X.dtype))
  GW, M = _forward(W, setup, gated=gated, robust=robust)
  R = setup.gamma * W if (robust and not gated) else None
  zeros = lambda A: None if A is None else jnp.zeros_like(A)
  scalar = jnp.asarray(0.0, X.dtype)
  return State(W=W, Z=setup.gamma * W, U_Z=zeros(W), T=GW, U_T=zeros(GW), R=R, U_R=zeros(R), M=M,
               U_M=zeros(M), rho=jnp.asarray(rho, X.dtype), step=jnp.asarray(0),
               primal=scalar + jnp.inf, dual=scalar + jnp.inf)


def _sq(x):
  return 0.0 if x is None else jnp.sum(x ** 2)


def _forward(W, setup: Setup, *, gated: bool, robust: bool):
  """(G W or None, loss map of W), sharing the one product X W between them."""
  sigma = relu.neuron_signs(gated)
  XW = jnp.einsum("nd,spdc->spnc", setup.X, W)
  GW = None if gated else (2.0 * setup.D.T - 1.0)[None, :, :, None] * XW
  if robust:
    return GW, _loss_map(W, setup, robust)
  return GW, jnp.einsum("spnc,np,s->nc", XW, setup.D, sigma)


def _adjoint(T, M, setup: Setup, *, gated: bool, robust: bool, num_blocks: int):
  """Gᵀ T + (loss map)ᵀ M, with one product by Xᵀ for both in the plain case."""
  per_example = 0.0 if gated else (2.0 * setup.D.T - 1.0)[None, :, :, None] * T
  if robust:
    out = _loss_map_adjoint(M, setup, robust, num_blocks)
    return out if gated else out + jnp.einsum("nd,spnc->spdc", setup.X, per_example)
  sigma = relu.neuron_signs(gated)
  per_example = per_example + jnp.einsum("np,nc,s->spnc", setup.D, M, sigma)
  return jnp.einsum("nd,spnc->spdc", setup.X, per_example)


def step(state: State, setup: Setup, *, gated: bool, loss: str, eps: float, q: int, beta: float,
         linear_solver: str, cg_tol: float) -> State:
  """One over-relaxed ADMM iteration (ρ adapts at steps 32, 64, 128, …)."""
  robust = eps > 0
  S = state.W.shape[0]
  shape = dict(gated=gated, robust=robust)
  rhs = setup.gamma * (state.Z - state.U_Z) + _adjoint(None if gated else state.T - state.U_T,
                                       state.M - state.U_M, setup, num_blocks=S, **shape)
  if robust and not gated:
    rhs = rhs + setup.gamma * (state.R - state.U_R)
  W = _solve(rhs, state.W, setup, linear_solver=linear_solver, cg_tol=cg_tol, **shape)
  relax = lambda LW, copy: _RELAX * LW + (1.0 - _RELAX) * copy
  step_size = 1.0 / state.rho

  GW, LW = _forward(W, setup, **shape)
  W_hat, LW_hat = relax(setup.gamma * W, state.Z), relax(LW, state.M)
  Z = numerics.shrink(W_hat + state.U_Z, beta * step_size / setup.gamma, 2)
  if robust:
    M = prox_robust_hinge(LW_hat + state.U_M, setup.X, setup.targets.pairs, eps, q, step_size)
  else:
    M = prox_loss_scores(LW_hat + state.U_M, setup.targets, loss, step_size)
  U_Z = state.U_Z + W_hat - Z
  U_M = state.U_M + LW_hat - M
  T = U_T = R = U_R = None
  if not gated:
    GW_hat = relax(GW, state.T)
    if robust:
      R_hat = relax(setup.gamma * W, state.R)
      T, R = project_robust_cone(GW_hat + state.U_T, R_hat + state.U_R, eps / setup.gamma, q,
                                  relu.counted(setup.targets))
      U_R = state.U_R + R_hat - R
    else:
      T = jnp.maximum(GW_hat + state.U_T, 0.0)
    U_T = state.U_T + GW_hat - T

  # Residuals (Boyd et al. 2011, §3.3) block by block, relative to the iterates and duals.
  tiny = jnp.finfo(W.dtype).tiny
  RW = None if R is None else setup.gamma * W
  ZW = setup.gamma * W
  primal = jnp.sqrt((_sq(ZW - Z) + _sq(LW - M) + _sq(_diff(GW, T)) + _sq(_diff(RW, R)))
                    / jnp.maximum(jnp.maximum(_sq(ZW) + _sq(LW) + _sq(GW) + _sq(RW),
                                              _sq(Z) + _sq(M) + _sq(T) + _sq(R)), tiny))
  moved = setup.gamma * (Z - state.Z) + _adjoint(_diff(T, state.T), M - state.M, setup,
                                                 num_blocks=S, **shape)
  if R is not None:
    moved = moved + setup.gamma * (R - state.R)
  dual = jnp.sqrt(_sq(moved) / jnp.maximum(_sq(U_Z) + _sq(U_M) + _sq(U_T) + _sq(U_R), tiny))

  # ρ ← ρ·√(primal/dual) (OSQP's rule, at most 2× a time) at steps 32, 64, 128, …: changes at
  # every step drove ρ to 1e-4 and wrecked converging runs, and ever rarer changes keep ADMM's
  # convergence theory. Between them, ρ also changes at every `_LOPSIDED_EVERY`th step where the
  # residuals are more than 100× apart (docs/solvers.md: the multi-class hinge heads). The
  # scaled duals u = y/ρ rescale with ρ.
  k = state.step + 1
  ratio = jnp.sqrt(primal / jnp.maximum(dual, tiny))
  lopsided = (k % _LOPSIDED_EVERY == 0) & ((ratio > _LOPSIDED) | (ratio < 1 / _LOPSIDED))
  factor = jnp.clip(ratio, 1 / _MAX_FACTOR, _MAX_FACTOR)
  factor = jnp.where((((k & (k - 1)) == 0) | lopsided) & (k >= _FIRST_ADAPTATION), factor, 1.0)
  scale = lambda U: None if U is None else U / factor
  return State(W=W, Z=Z, U_Z=scale(U_Z), T=T, U_T=scale(U_T), R=R, U_R=scale(U_R), M=M,
               U_M=scale(U_M), rho=state.rho * factor, step=state.step + 1, primal=primal,
               dual=dual)


def _diff(a, b):
  return None if a is None else a - b


@dataclasses.dataclass(frozen=True)
class Solver(base.Solver):
  """ADMM over a `cvxjax.core.relu.Instance`: every loss, ball and head.

  Stops when both relative residuals are below `tol` (checked every step) or the certified
  relative gap is (checked between chunks). A warm start sets every copy of W.

  Attributes:
    linear_solver: the W-update's solves without eps: "cholesky" (an n×n factor, cached) or
      "cg" (matrix-free, for n too large to factor).
    nystrom_rank: rank of CG's Nyström preconditioner (0: none; at most n).
    tol: the relative residuals and certified gap to stop at.
  """

  linear_solver: str = "cholesky"
  nystrom_rank: int = 0

  name: ClassVar[str] = "admm"

  def __post_init__(self):
    if self.linear_solver not in ("cholesky", "cg"):
      raise ValueError(f"linear_solver must be 'cholesky' or 'cg', got {self.linear_solver!r}")
    if not (isinstance(self.nystrom_rank, (int, np.integer)) and self.nystrom_rank >= 0):
      raise ValueError(f"nystrom_rank must be an integer >= 0, got {self.nystrom_rank!r}")

  def prepare(self, problem: relu.Instance) -> tuple:
    """(problem, the factored `Setup`)."""
    setup = build_setup(problem.X, problem.D, problem.targets, gated=problem.gated,
                        robust=problem.eps > 0, linear_solver=self.linear_solver,
                        nystrom_rank=self.nystrom_rank, key=problem.key)
    return problem, setup

  def init(self, prepared: tuple, start=None) -> State:
    problem, setup = prepared
    return init(setup, num_blocks=problem.num_blocks, num_patterns=problem.D.shape[1],
                gated=problem.gated, robust=problem.eps > 0, start=start)

  def step(self, prepared: tuple, state: State) -> State:
    problem, setup = prepared
    return step(state, setup, gated=problem.gated, linear_solver=self.linear_solver,
                cg_tol=self.tol * 1e-2, **problem.measures)

  def terminate(self, prepared: tuple, state: State) -> jnp.ndarray:
    return (state.primal <= self.tol) & (state.dual <= self.tol)

  def solution(self, prepared: tuple, state: State):
    """The certificate at W = Z/γ: the multipliers of F W = M (ρU_M) and of the cone slacks
    (−ρU_T ≥ 0) are dual points."""
    problem, setup = prepared
    lam = None if state.T is None else -state.rho * state.U_T
    return relu_certificate.solution(state.Z / setup.gamma, state.rho * state.U_M, lam, problem,
                                     state.step)
