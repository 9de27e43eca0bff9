"""Two-layer polynomial-activation networks as convex programs over K (MATH.md §2–§3).

A head holds a pair (Z, Z′) of (d+1)×(d+1) matrices in K = {Z ⪰ 0 : tr Z₁ = z₄} per output;
with D = Z − Z′ it predicts f_D(x) = a xᵀD₁x + b xᵀd₂ + c d₄ = ⟨D, Φ(x)⟩.
The functions below take one head's matrices; `jax.vmap` batches them over heads.
"""

import functools
from typing import NamedTuple, Optional, Union

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from cvxjax import decomposition, psd, sharding, streaming
from cvxjax.activations import DEFAULT_ACTIVATION, Quadratic


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
  """The exact worst case of each example's margin over the ℓ₂ ball (MATH.md §3).

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
    nu, g_hat, m0, XQ = _trust_region_terms(D, mu, Q, X, s, activation)
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
  nu, g_hat, m0, _ = _trust_region_terms(D, mu, Q, X, s, activation)
  return nu, g_hat, m0, mu, Q


def _trust_region_terms(D, mu, Q, X, s, activation):
  """nu, g_hat and m0 of `trust_region_data` given D₁ = Q diag(μ) Qᵀ, and XQ: (n, d)."""
  a, b, c = activation
  d2, d4 = D[:-1, -1], D[-1, -1]
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
  """Σ_i (1 − m_i(Z − Z′))₊ + β (z₄ + z′₄), the adversarial hinge problem of MATH.md §3.

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


def dual_bound(U: jnp.ndarray, s: jnp.ndarray, alpha: jnp.ndarray, beta, upper,
               activation: Quadratic = DEFAULT_ACTIVATION, mu=None) -> jnp.ndarray:
  """A certified lower bound on the optimum of the adversarial problem (MATH.md §3).

  For cuts at u_i = x_i + δ_i (any δ_i in the ball) and multipliers α ∈ [0, 1]^n, with
  S = βE − Σ α_i s_i Φ(u_i) and S′ = βE + Σ α_i s_i Φ(u_i), weak duality gives

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


@flax.struct.dataclass
class PolyHead:
  """A trained polynomial head: C pairs (Z_c, Z′_c) of K, one per output.

  A binary head (labels ±1) has C = 1 and predicts sign f; a one-vs-all head has C ≥ 2
  and predicts argmax_c f_c (MATH.md §3, multi-class option a).

  Attributes:
    Z, Zp: (C, d+1, d+1) matrices of K.
    objective: the training objective Σ_c [Σ_i (1 − m_ci)₊ + β(z₄ + z′₄)], exact.
    gap: a certified upper bound on objective − global optimum (inf if none was computed).
    steps: solver steps taken.
    activation: the coefficients (a, b, c) of σ.
    binary: whether the head is binary (C = 1, labels ±1).
  """

  Z: jnp.ndarray
  Zp: jnp.ndarray
  objective: jnp.ndarray
  gap: jnp.ndarray
  steps: jnp.ndarray
  activation: Quadratic = flax.struct.field(pytree_node=False, default=DEFAULT_ACTIVATION)
  binary: bool = flax.struct.field(pytree_node=False, default=True)

  def scores(self, X: jnp.ndarray) -> jnp.ndarray:
    """f_c(x) for every row of X: (n,) for a binary head, (n, C) otherwise."""
    f = jax.vmap(lifted_predict, in_axes=(0, None, None))(self.Z - self.Zp, X, self.activation)
    return f[0] if self.binary else f.T

  def predict(self, X: jnp.ndarray) -> jnp.ndarray:
    """Labels: ±1 for a binary head, argmax_c f_c (in 0..C−1) otherwise; shape (n,)."""
    f = self.scores(X)
    return jnp.where(f >= 0, 1, -1) if self.binary else jnp.argmax(f, axis=-1)

  def certified_radius(self, X, y, *, backbone_lipschitz: float = 1.0) -> jnp.ndarray:
    """(n,) exact ℓ₂ radii: `certified_radius` (the module's function) of this head."""
    return certified_radius(self, X, y, backbone_lipschitz=backbone_lipschitz)

  def summary(self) -> dict:
    """{"objective", "gap" (None where no gap was computed: `exact_fit`), "violation" (None:
    Z, Z′ are kept in K), "steps", "width" (neurons of `decompose` with |α| ≥ 1e-6·max|α|)}."""
    gap = float(self.gap)
    return dict(objective=float(self.objective), gap=gap if np.isfinite(gap) else None,
                violation=None, steps=int(self.steps),
                width=decomposition.network_width(decompose(self)[1]))


def check_array(X, name: str) -> np.ndarray:
  """Validates a 2-D finite numeric array without copying it (a memory map stays one)."""
  X = np.asarray(X)
  if X.ndim != 2 or 0 in X.shape:
    raise ValueError(f"{name} must be a non-empty 2-D array (n, d), got shape {X.shape}")
  if not np.issubdtype(X.dtype, np.number):
    raise ValueError(f"{name} must be numeric, got dtype {X.dtype}")
  rows = max(1, 2**24 // X.shape[1])  # blocks of 16M entries bound the check's memory
  if not all(np.isfinite(X[i:i + rows]).all() for i in range(0, X.shape[0], rows)):
    raise ValueError(f"{name} must be finite; it holds NaN or inf")
  return X


def check_labels(y, n: int) -> tuple[np.ndarray, bool]:
  """Validates labels: ±1 → (float ±1, binary=True); integers ≥ 0 → (int class indices, False)."""
  y = np.asarray(y)
  if y.ndim != 1 or y.shape[0] != n:
    raise ValueError(f"y must have shape ({n},) to match X, got shape {y.shape}")
  if not (np.issubdtype(y.dtype, np.number) and np.all(np.isfinite(y))):
    raise ValueError("y must hold finite numbers")
  values = np.unique(y)
  if np.all(np.isin(values, (-1, 1))):
    return y.astype(np.float64), True
  if np.all(values == np.round(values)) and values.min() >= 0:
    return y.astype(np.int64), False
  raise ValueError(
      f"y must hold labels in {{-1, +1}} (binary) or integers 0..C-1 (multi-class); got {values}")


def _encode_labels(y, n: int) -> tuple[np.ndarray, bool]:
  """Labels → (C, n) signs: ±1 labels give one binary head, integers 0..C−1 give C heads."""
  labels, binary = check_labels(y, n)
  if binary:
    return labels[None, :], True
  classes = int(labels.max()) + 1
  return np.where(np.arange(classes)[:, None] == labels[None, :], 1.0, -1.0), False


def _check_problem(X, y, r, beta) -> tuple[np.ndarray, np.ndarray, bool]:
  X = check_array(X, "X")
  S, binary = _encode_labels(y, X.shape[0])
  if not (np.isscalar(r) and np.isfinite(r) and r >= 0):
    raise ValueError(f"r must be a finite number >= 0, got {r!r}")
  if not (np.isscalar(beta) and np.isfinite(beta) and beta > 0):
    raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
  return X, S, binary


# Largest svec size for which the barrier solver is the default (its KKT system is 2N).
_BARRIER_MAX_SVEC = 1300
_SOLVERS = ("auto", "barrier", "projected")


def fit(X, y, *, r: float = 0.0, beta: float = 1e-3,
        activation: Quadratic = DEFAULT_ACTIVATION, solver: str = "auto", tol: float = 1e-6,
        max_steps: Optional[int] = None, optimizer=None, head_batch_size: Optional[int] = None,
        checkpoint_dir: Optional[str] = None, checkpoint_every: int = 20,
        progress: bool = False, mesh=None, chunk_size: Optional[int] = None) -> PolyHead:
  """Trains a polynomial head to global optimality (MATH.md §3).

  Solves min_{Z,Z′∈K} Σ_i (1 − m_i)₊ + β(z₄ + z′₄) with m_i the exact worst-case margin over
  the ℓ₂ ball of radius r (r = 0: the plain hinge problem), per head.

  Solvers:
    "barrier": the exact interior-point method of `cvxjax.solvers.barrier`; stops when the
      certified relative gap is below `tol`. Memory and time grow like d⁴ and d⁶.
    "projected": `optimizer` (default optax.adam(1e-2)) on the exact objective with Π_K after
      every step, for `max_steps` steps; a baseline that scales to large d but stalls above
      the optimum (its gap is reported honestly).
    "auto": "barrier" when d ≤ 49, else "projected" (always "projected" with `chunk_size`).

  Precision: the barrier solver is built for float64 (`jax_enable_x64`); in float32 it stops
  where round-off stops it (gaps of 1e-4 to 1e-1) and reports the gap it certified.

  Args:
    X: (n, d) inputs, finite.
    y: (n,) labels in {−1, +1} (one binary head) or integers 0..C−1 (C one-vs-all heads).
    r: radius of the ℓ₂ ball of the adversary, ≥ 0.
    beta: regularisation weight β > 0.
    activation: the coefficients (a, b, c) of σ.
    solver: "auto", "barrier" or "projected".
    tol: relative gap at which the barrier solver stops.
    max_steps: step limit (default 300 for "barrier", 1000 for "projected").
    optimizer: optax transformation for "projected".
    head_batch_size: heads solved together by "projected" (bounds memory).
    checkpoint_dir: if given, the solver state is saved there every `checkpoint_every` steps
      and a run finds and resumes the latest checkpoint, ending where an uninterrupted run does.
    checkpoint_every: steps between checkpoints (and progress reports).
    progress: print step, objective and gap as the run goes.
    mesh: a `cvxjax.sharding.make_mesh` mesh: examples split over its "examples" axis (padded
      to a multiple of it by rows that count nowhere), heads over its "model" axis. None: one
      device.
    chunk_size: stream X from the host (a NumPy array or memory map) in chunks of this many
      examples, one chunk on the device at a time (`cvxjax.streaming`); projected solver only.

  Returns:
    A `PolyHead` whose Z, Z′ lie in K, with its objective and certified gap.

  Raises:
    ValueError: if an argument is malformed (named in the message).
  """
  X, S, binary = _check_problem(X, y, r, beta)
  if solver not in _SOLVERS:
    raise ValueError(f"solver must be one of {_SOLVERS}, got {solver!r}")
  if not (np.isscalar(tol) and tol > 0):
    raise ValueError(f"tol must be a number > 0, got {tol!r}")
  if checkpoint_every < 1:
    raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
  sharding.check_mesh(mesh)
  streaming.check_chunk_size(chunk_size, X.shape[0])
  if chunk_size is not None and (solver == "barrier" or mesh is not None):
    raise ValueError("chunk_size streams the projected solver on one device; it takes neither "
                     f"solver='barrier' nor a mesh (got solver={solver!r}, mesh={mesh!r})")
  activation = Quadratic(*(float(v) for v in activation))
  d = X.shape[1]
  if solver == "auto":
    small = (d + 1) * (d + 2) // 2 <= _BARRIER_MAX_SVEC and chunk_size is None
    solver = "barrier" if small else "projected"
  from cvxjax.solvers import driver  # the solvers import this module
  return driver.fit_poly(X, S, binary=binary, r=float(r), beta=float(beta),
                         activation=activation, solver=solver, tol=float(tol),
                         max_steps=max_steps, optimizer=optimizer,
                         head_batch_size=head_batch_size, checkpoint_dir=checkpoint_dir,
                         checkpoint_every=checkpoint_every, progress=progress, mesh=mesh,
                         chunk_size=chunk_size)


def exact_fit(X, y, *, r: float = 0.0, beta: float = 1e-3,
              activation: Quadratic = DEFAULT_ACTIVATION, solver: str = "CLARABEL",
              eps: float = 1e-9, verbose: bool = False) -> PolyHead:
  """The same problem as `fit`, solved as the S-lemma SDP of MATH.md §3 with CVXPY.

  An oracle for small problems (n LMIs of size d+1; needs the `exact` extra). The solver's
  matrices are projected onto K (a round-off-sized move) and the returned objective is then
  evaluated exactly with the TRS, so it is comparable with `fit`'s; `gap` is inf, since the
  solver's own accuracy is not certified here.

  Args:
    X, y, r, beta, activation: as for `fit`.
    solver: "CLARABEL" or "SCS".
    eps: the solver's tolerance.
    verbose: print the solver's log.

  Returns:
    A `PolyHead`.
  """
  X, S, binary = _check_problem(X, y, r, beta)
  from cvxjax import exact  # cvxpy is an optional extra
  activation = Quadratic(*(float(v) for v in activation))
  pairs = [exact.solve_poly_sdp(X, s, r=float(r), beta=float(beta), activation=activation,
                                solver=solver, eps=eps, verbose=verbose)[:2] for s in S]
  dtype = jnp.result_type(float)
  project = jax.jit(jax.vmap(psd.project_trace_psd))
  Z = project(jnp.asarray(np.stack([p[0] for p in pairs]), dtype))
  Zp = project(jnp.asarray(np.stack([p[1] for p in pairs]), dtype))
  Xj, Sj = jnp.asarray(X, dtype), jnp.asarray(S, dtype)
  values = jax.vmap(objective, in_axes=(0, 0, None, 0, None, None, None))(
      Z, Zp, Xj, Sj, float(r), float(beta), activation)
  return PolyHead(Z=Z, Zp=Zp, objective=jnp.sum(values), gap=jnp.asarray(jnp.inf, dtype),
                  steps=jnp.asarray(0), activation=activation, binary=binary)


def decompose(head: PolyHead, *, prune: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
  """The two-layer network (U, α) of MATH.md §2 with f(x) = Σ_j α_j σ(u_jᵀx) = f_Z(x).

  Neural decomposition of every Z_c (α > 0) and Z′_c (α < 0); the output equals the head's
  on any input to round-off (float64), up to neurons with |α| ≤ prune·max|α|.

  Args:
    head: a `PolyHead`.
    prune: relative size under which neurons are dropped.

  Returns:
    U of shape (M, d) with unit rows, and α of shape (M,) (binary) or (M, C) (one column per
    head, one nonzero per row); evaluate with `cvxjax.decomposition.network_predict`.
  """
  from cvxjax import decomposition
  return decomposition.decompose(np.asarray(head.Z, np.float64), np.asarray(head.Zp, np.float64),
                                 binary=head.binary, prune=prune)


def worst_case_margin(head: PolyHead, X, y, r) -> jnp.ndarray:
  """Exact worst-case margins over the ℓ₂ ball of radius r (MATH.md §3), shape (n,).

  Binary: min_{‖δ‖≤r} y f(x + δ). One-vs-all: min_{‖δ‖≤r} min_{c≠y} (f_y − f_c)(x + δ), one
  TRS per class pair. Negative means some perturbation in the ball misclassifies x.
  """
  from cvxjax import certify
  return certify.poly_worst_case_margin(head.Z, head.Zp, X, y, r, head.activation, head.binary)


def certified_radius(head: PolyHead, X, y, *, backbone_lipschitz: float = 1.0) -> jnp.ndarray:
  """The exact ℓ₂ distance of each example to the decision boundary, shape (n,).

  0 for misclassified examples, +inf where no perturbation flips the prediction. With X the
  features of an L-Lipschitz backbone, `backbone_lipschitz` = L gives radii in its input space
  (divided by L; certified, no longer exact: MATH.md §7).
  """
  from cvxjax import certify
  if not backbone_lipschitz > 0:
    raise ValueError(f"backbone_lipschitz must be > 0, got {backbone_lipschitz!r}")
  radii = certify.poly_certified_radius(head.Z, head.Zp, X, y, head.activation, head.binary)
  return radii / backbone_lipschitz
