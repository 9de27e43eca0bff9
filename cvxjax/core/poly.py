"""The mathematics of polynomial-activation heads: the lift, the exact worst case over the ℓ₂
ball, the objective and its certified dual bound (docs/math.md §2–§3).

A head holds a pair (Z, Z′) of (d+1)×(d+1) matrices in K = {Z ⪰ 0 : tr Z₁ = z₄} per output;
with D = Z − Z′ it predicts f_D(x) = a xᵀD₁x + b xᵀd₂ + c d₄ = ⟨D, Φ(x)⟩.
The functions below take one head's matrices; `jax.vmap` batches them over heads.
"""

import dataclasses
import functools
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from cvxjax.core import psd
from cvxjax.core.activations import DEFAULT_ACTIVATION, Quadratic


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Problem:
  """A polynomial-head problem as the solvers take it: C heads sharing the inputs.

  Attributes:
    X: (n, d) inputs.
    S: (C, n) labels in {−1, +1} per head (0: a padding row that counts nowhere).
    r: radius of the adversary's ℓ₂ ball (static).
    beta: regularisation weight (static).
    activation: the coefficients (a, b, c) of σ (static).
  """

  X: jnp.ndarray
  S: jnp.ndarray
  r: float = dataclasses.field(metadata=dict(static=True))
  beta: float = dataclasses.field(metadata=dict(static=True))
  activation: Quadratic = dataclasses.field(metadata=dict(static=True))

  @property
  def settings(self) -> dict:
    """The keyword arguments (r, beta, activation) of the one-head functions."""
    return dict(r=self.r, beta=self.beta, activation=self.activation)


def lift(x: jnp.ndarray, activation: Quadratic = DEFAULT_ACTIVATION) -> jnp.ndarray:
  """Φ(x) = [[a xxᵀ, (b/2)x], [(b/2)xᵀ, c]], so that f_D(x) = ⟨D, Φ(x)⟩.

  Args:
    x: (d,) input.
    activation: the coefficients (a, b, c) of σ.

  Returns:
    (d+1, d+1) symmetric matrix.
  """
  a, b, c = activation
  border = (b / 2) * x
  return jnp.block([[a * jnp.outer(x, x), border[:, None]],
                    [border[None, :], jnp.full((1, 1), c, x.dtype)]])


def lifted_predict(D: jnp.ndarray, X: jnp.ndarray,
                   activation: Quadratic = DEFAULT_ACTIVATION) -> jnp.ndarray:
  """f_D(x_i) = a x_iᵀD₁x_i + b x_iᵀd₂ + c d₄ for every row of X.

  Args:
    D: (d+1, d+1) symmetric matrix, D = Z − Z′.
    X: (n, d) inputs.
    activation: the coefficients (a, b, c) of σ.

  Returns:
    (n,) predictions.
  """
  a, b, c = activation
  D1, d2, d4 = D[:-1, :-1], D[:-1, -1], D[-1, -1]
  return a * jnp.sum((X @ D1) * X, axis=-1) + b * (X @ d2) + c * d4


class WorstCase(NamedTuple):
  """The exact worst case of each example's margin over the ℓ₂ ball (docs/math.md §3).

  Attributes:
    margin: (n,) m_i = min_{‖δ‖≤r} s_i f_D(x_i + δ).
    delta: (n, d) the minimisers δ*_i.
    lam: (n,) the trust-region multipliers λ*_i.
    delta_hat: (n, d) δ*_i in the eigenbasis of D₁.
    point_hat: (n, d) the attack x_i + δ*_i in the eigenbasis of D₁, Qᵀx_i + δ̂_i.
    eigvals: (d,) eigenvalues μ of D₁.
    eigvecs: (d, d) eigenvectors Q of D₁ (columns).
  """

  margin: jnp.ndarray
  delta: jnp.ndarray
  lam: jnp.ndarray
  delta_hat: jnp.ndarray
  point_hat: jnp.ndarray
  eigvals: jnp.ndarray
  eigvecs: jnp.ndarray


# Bytes of one (rows, d) block of the TRS's temporaries, which then stay in cache (measured
# on 2 CPU cores: 1–4 MiB equally fast, 3–4× faster than one batch at n = 50000, d = 512).
_BLOCK_BYTES = 2**21


def default_block_rows(X: jnp.ndarray) -> Optional[int]:
  """Rows per block of the worst case on a single CPU device, None (one batch) elsewhere.

  The TRS makes about ten element-wise passes over (n, d) arrays. On a CPU they run at memory
  speed unless a block of rows fits in cache; an accelerator or a mesh wants the whole batch.
  """
  if jax.default_backend() != "cpu" or jax.device_count() > 1:
    return None
  return max(8, _BLOCK_BYTES // (X.shape[-1] * X.dtype.itemsize))


def worst_case(D: jnp.ndarray, X: jnp.ndarray, s: jnp.ndarray, r,
               activation: Quadratic = DEFAULT_ACTIVATION,
               block_rows: Union[int, None, str] = "auto") -> WorstCase:
  """Exact worst-case margins min_{‖δ‖₂≤r} s_i f_D(x_i + δ) by the trust-region subproblem.

  With A_i = s_i a D₁ and g_i = s_i (2a D₁x_i + b d₂), the inner problem is
  min δᵀA_iδ + g_iᵀδ; one `eigh` of D₁ serves every example. Exact to round-off.

  Args:
    D: (d+1, d+1) symmetric matrix.
    X: (n, d) inputs.
    s: (n,) signs (labels in {−1, +1}, or any real weights).
    r: scalar radius ≥ 0.
    activation: the coefficients (a, b, c) of σ.
    block_rows: solve the examples in blocks of this many rows (None: all at once; "auto":
      `default_block_rows`). The result does not depend on it.

  Returns:
    A `WorstCase`.
  """
  D = psd.symmetrize(D)
  mu, Q = jnp.linalg.eigh(D[:-1, :-1])
  r = jnp.asarray(r, X.dtype)

  def solve(X, s):
    nu, g_hat, m0, XQ = trust_region_terms(D[:-1, -1], D[-1, -1], mu, Q, X, s, activation)
    sol = jax.vmap(psd.trust_region, in_axes=(0, 0, None))(nu, g_hat, r)
    return m0 + sol.value, sol.lam, sol.delta, XQ + sol.delta

  rows = default_block_rows(X) if block_rows == "auto" else block_rows
  margin, lam, delta_hat, point_hat = _map_row_blocks(solve, rows, X, s)
  return WorstCase(margin, delta_hat @ Q.T, lam, delta_hat, point_hat, mu, Q)


def _map_row_blocks(fn, rows: Optional[int], *arrays):
  """fn(*arrays) computed on consecutive blocks of `rows` rows (a sequential map), the rest after.

  fn maps arrays with a leading axis of size b to a tuple of arrays with leading axis b.
  """
  n = arrays[0].shape[0]
  if rows is None or rows >= n:
    return fn(*arrays)
  full = n - n % rows
  blocks = tuple(a[:full].reshape(full // rows, rows, *a.shape[1:]) for a in arrays)
  out = tuple(o.reshape(full, *o.shape[2:]) for o in jax.lax.map(lambda b: fn(*b), blocks))
  if full == n:
    return out
  rest = fn(*(a[full:] for a in arrays))
  return tuple(jnp.concatenate([o, t]) for o, t in zip(out, rest, strict=True))


def trust_region_data(D: jnp.ndarray, X: jnp.ndarray, s: jnp.ndarray,
                      activation: Quadratic = DEFAULT_ACTIVATION):
  """The TRS of each margin s_i f_D(x_i + δ) = m0_i + δᵀA_iδ + g_iᵀδ, in D₁'s eigenbasis.

  Args:
    D: (d+1, d+1) symmetric matrix.
    X: (n, d) inputs.
    s: (n,) signs.
    activation: the coefficients (a, b, c) of σ.

  Returns:
    nu: (n, d) eigenvalues of A_i = s_i a D₁; g_hat: (n, d) the g_i in the eigenbasis;
    m0: (n,) the margins at δ = 0; mu: (d,) and Q: (d, d) the eigenpairs of D₁.
  """
  D = psd.symmetrize(D)
  mu, Q = jnp.linalg.eigh(D[:-1, :-1])
  nu, g_hat, m0, _ = trust_region_terms(D[:-1, -1], D[-1, -1], mu, Q, X, s, activation)
  return nu, g_hat, m0, mu, Q


def trust_region_terms(d2, d4, mu, Q, X, s, activation):
  """nu, g_hat and m0 of `trust_region_data`, and XQ, given D₁ = Q diag(μ) Qᵀ, d₂ and d₄.

  Q may be thin, (d, m) with m < d: the eigenvectors of D₁'s nonzero eigenvalues, when d₂ lies
  in their span. Every TRS then lives in those m coordinates (the others have no curvature and
  no gradient) and the results have m columns.
  """
  a, b, c = activation
  # X D₁ Q = (XQ) diag(μ): one n×d×d product serves the linear terms and the margins at δ = 0.
  XQ = X @ Q
  g_hat = s[:, None] * (2 * a * XQ * mu[None, :] + b * (d2 @ Q)[None, :])
  nu = (s[:, None] * a) * mu[None, :]
  m0 = s * (a * jnp.sum(mu[None, :] * XQ * XQ, axis=-1) + b * (X @ d2) + c * d4)
  return nu, g_hat, m0, XQ


def margins(D: jnp.ndarray, X: jnp.ndarray, s: jnp.ndarray, r,
            activation: Quadratic = DEFAULT_ACTIVATION) -> jnp.ndarray:
  """Worst-case margins m_i(D) whose gradient is Danskin's: ∇m_i = s_i Φ(x_i + δ*_i).

  The attack is computed exactly and held fixed (`stop_gradient`); the value is the TRS's, and
  the derivative is that of s_i f_D at the attack. For r = 0 (a Python number) no attack is
  computed.

  Args:
    D: (d+1, d+1) symmetric matrix.
    X: (n, d) inputs.
    s: (n,) signs.
    r: scalar radius ≥ 0.
    activation: the coefficients (a, b, c) of σ.

  Returns:
    (n,) margins.
  """
  if isinstance(r, (int, float)) and r == 0:
    return s * lifted_predict(D, X, activation)
  wc = jax.lax.stop_gradient(worst_case(D, X, s, r, activation))
  return _margins_at(D, X, s, wc.point_hat, wc.eigvecs, wc.margin, activation)


@functools.partial(jax.custom_jvp, nondiff_argnums=(6,))
def _margins_at(D, X, s, U_hat, Q, margin, activation):
  """`margin`, the TRS's value of s_i f_D(u_i) at the attack u_i = Q û_i, differentiated as that
  function at the fixed u_i (Danskin). Re-evaluating it would cost an n×d×d product."""
  del D, X, s, U_hat, Q
  return margin


@functools.partial(_margins_at.defjvp, symbolic_zeros=True)
def _margins_at_jvp(activation, primals, tangents):
  D, X, s, U_hat, Q, margin = primals
  dD, dX, ds = tangents[:3]  # û, Q and the margin are held fixed
  zero = jax.custom_derivatives.SymbolicZero
  tangent = jnp.zeros_like(margin)
  if type(dD) is not zero:
    # In D₁'s eigenbasis, where the attack needs no n×d×d product (û_i = Qᵀx_i + δ̂_i is the TRS's).
    a, b, c = activation
    dD1_hat, dd2_hat = Q.T @ dD[:-1, :-1] @ Q, Q.T @ dD[:-1, -1]
    tangent = tangent + s * (a * jnp.sum((U_hat @ dD1_hat) * U_hat, axis=-1) + b * (U_hat @ dd2_hat)
                             + c * dD[-1, -1])
  if type(dX) is not zero or type(ds) is not zero:
    U = U_hat @ Q.T
    f = lambda u: lifted_predict(D, u, activation)
    if type(dX) is not zero:
      tangent = tangent + s * jax.jvp(f, (U,), (dX,))[1]
    if type(ds) is not zero:
      tangent = tangent + ds * f(U)
  return margin, tangent


def counted(s: jnp.ndarray) -> jnp.ndarray:
  """(n,) True for an example, False for a padding row (`cvxjax.sharding.padding`).

  A padding row has label 0 (and a zero input): its margin s_i f(x_i + δ) is 0 for every model,
  so it would add the constant (1 − 0)₊ = 1 to the hinge; the objective and the certificates
  leave it out instead.
  """
  return s != 0


def objective(Z: jnp.ndarray, Zp: jnp.ndarray, X: jnp.ndarray, s: jnp.ndarray, r, beta,
              activation: Quadratic = DEFAULT_ACTIVATION) -> jnp.ndarray:
  """Σ_i (1 − m_i(Z − Z′))₊ + β (z₄ + z′₄), the adversarial hinge problem of docs/math.md §3.

  Args:
    Z, Zp: (d+1, d+1) matrices of K.
    X: (n, d) inputs.
    s: (n,) labels in {−1, +1}; 0 marks a padding row, which counts nowhere (`counted`).
    r: scalar radius ≥ 0 (0: the plain hinge problem).
    beta: regularisation weight β > 0.
    activation: the coefficients (a, b, c) of σ.

  Returns:
    Scalar objective, exact (the margins come from the exact TRS).
  """
  m = margins(Z - Zp, X, s, r, activation)
  return hinge_sum(m, s) + beta * (Z[-1, -1] + Zp[-1, -1])


def hinge_sum(m: jnp.ndarray, s: jnp.ndarray) -> jnp.ndarray:
  """Σ_i (1 − m_i)₊ over the counted examples: m, s (n,) → scalar."""
  return jnp.sum(jnp.where(counted(s), jax.nn.relu(1.0 - m), 0.0))


def weighted_lift_sum(U: jnp.ndarray, w: jnp.ndarray,
                      activation: Quadratic = DEFAULT_ACTIVATION) -> jnp.ndarray:
  """Σ_i w_i Φ(u_i) without forming the n lifted matrices.

  Args:
    U: (n, d) points.
    w: (n,) weights.
    activation: the coefficients (a, b, c) of σ.

  Returns:
    (d+1, d+1) symmetric matrix.
  """
  a, b, c = activation
  top = a * (U.T * w) @ U
  border = (b / 2) * (w @ U)
  return jnp.block([[top, border[:, None]], [border[None, :], c * jnp.sum(w)[None, None]]])


# Golden-section iterations: the bracket shrinks by 0.618 each, to round-off after 80.
_GOLDEN_ITERS = 80


def max_min_eigenvalue(S: jnp.ndarray) -> jnp.ndarray:
  """max_μ λ_min(S − μG): the distance-like margin of S from K's dual cone S₊ + span{G}.

  λ_min(S − μG) is concave in μ and its maximiser lies in [−2‖S‖_F, 2‖S‖_F] (compare
  the diagonal blocks), so golden-section search finds it.

  Args:
    S: (m, m) symmetric matrix.

  Returns:
    Scalar; ≥ 0 iff S lies in K* (up to round-off).
  """
  G = psd.lorentz_form(S.shape[-1], S.dtype)
  f = lambda mu: jnp.linalg.eigvalsh(S - mu * G)[0]
  bound = 2.0 * jnp.linalg.norm(S) + 1.0
  ratio = (np.sqrt(5.0) - 1.0) / 2.0

  def shrink(_, carry):
    lo, hi = carry
    m1, m2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    left = f(m1) >= f(m2)
    return jnp.where(left, lo, m1), jnp.where(left, m2, hi)

  lo, hi = jax.lax.fori_loop(0, _GOLDEN_ITERS, shrink, (-bound, bound))
  return f(0.5 * (lo + hi))


def cut_points(X: jnp.ndarray, delta: jnp.ndarray, r) -> jnp.ndarray:
  """The cut points x_i + δ_i for `dual_bound`, each δ_i pulled into the ball ‖δ‖₂ ≤ r.

  A worst case on the sphere can land a few ulps outside it once rotated (δ = Qδ̂) or moved;
  the bound holds only for cut points in the ball, so δ_i is scaled by min(1, (1 − 4ε) r/‖δ_i‖).

  Args:
    X: (n, d) inputs.
    delta: (n, d) perturbations.
    r: scalar radius ≥ 0.

  Returns:
    (n, d) cut points.
  """
  norm = jnp.linalg.norm(delta, axis=-1, keepdims=True)
  inside = (1 - 4 * jnp.finfo(delta.dtype).eps) * r / jnp.maximum(norm, jnp.finfo(delta.dtype).tiny)
  return X + delta * jnp.minimum(1.0, inside)


def dual_bound(U: jnp.ndarray, s: jnp.ndarray, alpha: jnp.ndarray, beta, upper,
               activation: Quadratic = DEFAULT_ACTIVATION, mu=None) -> jnp.ndarray:
  """A certified lower bound on the optimum of the adversarial problem (docs/math.md §3).

  For cuts at u_i = x_i + δ_i (any δ_i in the ball, see `cut_points`) and multipliers
  α ∈ [0, 1]^n, with S = βE − Σ α_i s_i Φ(u_i) and S′ = βE + Σ α_i s_i Φ(u_i), weak duality gives

      optimum ≥ Σ_i α_i + R · min(0, max_μ λ_min(S − μG), max_μ′ λ_min(S′ − μ′G)),

  where R = 2·upper/β bounds tr Z + tr Z′ at an optimum (β(z₄ + z′₄) ≤ optimum ≤ upper and
  tr Z = 2 z₄ on K). The bound is valid for any such (δ, α); it is tight when α and δ are
  the optimal multipliers and worst cases.

  Args:
    U: (n, d) cut points x_i + δ_i.
    s: (n,) labels in {−1, +1} (0: a padding row, left out).
    alpha: (n,) multipliers in [0, 1].
    beta: β > 0.
    upper: an upper bound on the optimum (the objective of any feasible point).
    activation: the coefficients (a, b, c) of σ.
    mu: optional (2,) multipliers (μ, μ′) to use instead of maximising over them (one
      eigenvalue problem each instead of a search); any value gives a valid bound.

  Returns:
    Scalar lower bound.
  """
  alpha = jnp.where(counted(s), alpha, 0.0)
  return lift_dual_bound(weighted_lift_sum(U, alpha * s, activation), jnp.sum(alpha), beta, upper,
                         mu)


def lift_dual_bound(M: jnp.ndarray, alpha_sum, beta, upper, mu=None) -> jnp.ndarray:
  """`dual_bound` from its sums over examples: M = Σ α_i s_i Φ(u_i) and Σ α_i.

  Args:
    M: (d+1, d+1) the weighted lift sum.
    alpha_sum: scalar Σ_i α_i.
    beta, upper, mu: as for `dual_bound`.

  Returns:
    Scalar lower bound.
  """
  E = jnp.zeros_like(M).at[-1, -1].set(beta)
  if mu is None:
    worst = jnp.minimum(max_min_eigenvalue(E - M), max_min_eigenvalue(E + M))
  else:
    G = psd.lorentz_form(M.shape[-1], M.dtype)
    worst = jnp.minimum(jnp.linalg.eigvalsh(E - M - mu[0] * G)[0],
                        jnp.linalg.eigvalsh(E + M - mu[1] * G)[0])
  return alpha_sum + (2.0 * upper / beta) * jnp.minimum(0.0, worst)
