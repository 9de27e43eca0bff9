"""Exact robustness certificates of polynomial heads over the ℓ₂ ball (MATH.md §3).

For a binary head the worst-case margin m(x, r) = min_{‖δ‖≤r} y f(x + δ) is a trust-region
subproblem (TRS), solved exactly by `poly.worst_case`. For a one-vs-all head with C ≥ 2 outputs
the worst-case multi-class margin is

    min_{‖δ‖≤r} min_{c≠y} (f_y − f_c)(x + δ) = min_{c≠y} min_{‖δ‖≤r} (f_y − f_c)(x + δ),

a minimum of pairwise TRSs with D = D_y − D_c (MATH.md §3, multi-class (b)); one `eigh` per
ordered class pair serves every example. The certified radius is the r at which the worst-case
margin reaches zero: exact, not a bound. All computations are jitted and vectorised; use float64
(`jax_enable_x64`) for the stated accuracy.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cvxjax.core import poly, psd
from cvxjax.core.activations import DEFAULT_ACTIVATION, Quadratic

# Doublings of the radius bracket: past 2^40 times the lower bound the radius is called infinite.
_MAX_DOUBLINGS = 40
# Safeguarded Newton iterations on the radius; bisection alone would need ~55 in float64.
_MAX_NEWTON = 100


def _check_inputs(Z, Zp, X, y, binary: bool, activation) -> tuple:
  """Validated (Z, Zp, X, y, activation): arrays in the default float dtype, y as signs/ints."""
  dtype = jnp.result_type(float)
  Z, Zp, X = np.asarray(Z), np.asarray(Zp), np.asarray(X)
  for name, M in (("Z", Z), ("Zp", Zp)):
    if M.ndim != 3 or M.shape[1] != M.shape[2] or M.shape[1] < 2:
      raise ValueError(f"{name} must have shape (C, d+1, d+1) with d >= 1, got shape {M.shape}")
    if not (np.issubdtype(M.dtype, np.number) and np.all(np.isfinite(M))):
      raise ValueError(f"{name} must hold finite numbers")
  if Zp.shape != Z.shape:
    raise ValueError(f"Zp must have the shape of Z {Z.shape}, got shape {Zp.shape}")
  heads, d = Z.shape[0], Z.shape[1] - 1
  if binary and heads != 1:
    raise ValueError(f"binary heads have C = 1, but Z has C = {heads}")
  if not binary and heads < 2:
    raise ValueError(f"one-vs-all heads have C >= 2, but Z has C = {heads}")
  if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] != d:
    raise ValueError(f"X must be a non-empty 2-D array (n, {d}) to match Z, got shape {X.shape}")
  if not (np.issubdtype(X.dtype, np.number) and np.all(np.isfinite(X))):
    raise ValueError("X must hold finite numbers")
  y = np.asarray(y)
  if y.ndim != 1 or y.shape[0] != X.shape[0]:
    raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got shape {y.shape}")
  if not (np.issubdtype(y.dtype, np.number) and np.all(np.isfinite(y))):
    raise ValueError("y must hold finite numbers")
  if binary and not np.all(np.isin(y, (-1, 1))):
    raise ValueError(f"y must hold labels in {{-1, +1}} for a binary head, got {np.unique(y)}")
  if not binary and not (np.all(y == np.round(y)) and y.min() >= 0 and y.max() < heads):
    raise ValueError(f"y must hold integer labels in 0..{heads - 1}, got {np.unique(y)}")
  if len(activation) != 3 or not all(np.isfinite(float(v)) for v in activation):
    raise ValueError(f"activation must be a triple (a, b, c) of finite numbers, got {activation}")
  y = jnp.asarray(y, dtype) if binary else jnp.asarray(y, jnp.int32)
  activation = Quadratic(*(float(v) for v in activation))
  return jnp.asarray(Z, dtype), jnp.asarray(Zp, dtype), jnp.asarray(X, dtype), y, activation


def _check_radius(r) -> float:
  if not (np.ndim(r) == 0 and np.isfinite(r) and r >= 0):
    raise ValueError(f"r must be a finite number >= 0, got {r!r}")
  return float(r)


def _class_pairs(heads: int) -> np.ndarray:
  """(C(C−1), 2) int array of the ordered pairs (k, c), k ≠ c."""
  return np.array([(k, c) for k in range(heads) for c in range(heads) if k != c], np.int32)


def _select_pairs(values: jnp.ndarray, pairs: np.ndarray, y: jnp.ndarray,
                  heads: int) -> jnp.ndarray:
  """min_{c≠y_i} values[(y_i, c), i]: (P, n) per-pair values → (n,)."""
  n = values.shape[-1]
  table = jnp.full((heads, heads, n), jnp.inf, values.dtype)
  table = table.at[pairs[:, 0], pairs[:, 1]].set(values)
  return jnp.min(table[y, :, jnp.arange(n)], axis=-1)


@functools.partial(jax.jit, static_argnames=("activation", "binary"))
def _worst_case_margin(Z, Zp, X, y, r, activation: Quadratic, binary: bool) -> jnp.ndarray:
  D = Z - Zp
  if binary:
    return poly.worst_case(D[0], X, y, r, activation).margin
  pairs = _class_pairs(D.shape[0])
  ones = jnp.ones(X.shape[0], X.dtype)
  # lax.map keeps one pair's (n, d) work in memory at a time.
  values = jax.lax.map(
      lambda kc: poly.worst_case(D[kc[0]] - D[kc[1]], X, ones, r, activation).margin,
      jnp.asarray(pairs))
  return _select_pairs(values, pairs, y, D.shape[0])


def poly_worst_case_margin(Z, Zp, X, y, r, activation: Quadratic = DEFAULT_ACTIVATION,
                           binary: bool = True) -> jnp.ndarray:
  """Exact worst-case margins over the ℓ₂ ball of radius r.

  Binary (C = 1, y ∈ ±1): m_i = min_{‖δ‖≤r} y_i f(x_i + δ) with f = f_{Z₀−Z′₀}.
  One-vs-all (C ≥ 2, y ∈ 0..C−1): m_i = min_{‖δ‖≤r} min_{c≠y_i} (f_{y_i} − f_c)(x_i + δ), the
  minimum over c of pairwise TRSs with D = D_{y_i} − D_c; every ordered pair is solved for every
  example (C(C−1) eigendecompositions, C² n scalars of memory) and row y_i is selected.
  Exact to round-off.

  Args:
    Z, Zp: (C, d+1, d+1) a head's matrices (any symmetric matrices; K is not required).
    X: (n, d) inputs, finite.
    y: (n,) labels: ±1 if binary, else integers in 0..C−1.
    r: radius ≥ 0.
    activation: the coefficients (a, b, c) of σ.
    binary: whether the head is binary (C = 1).

  Returns:
    (n,) margins in the default float dtype; > 0 iff x_i is correctly classified by a margin
    that survives every perturbation of norm ≤ r.

  Raises:
    ValueError: if an argument is malformed (named in the message).
  """
  Z, Zp, X, y, activation = _check_inputs(Z, Zp, X, y, binary, activation)
  r = _check_radius(r)
  return _worst_case_margin(Z, Zp, X, y, jnp.asarray(r, X.dtype), activation, binary)


def _radius(nu: jnp.ndarray, g_hat: jnp.ndarray, m0: jnp.ndarray) -> jnp.ndarray:
  """The r ≥ 0 where m(r) = m0 + min_{‖δ‖≤r} Σ_k ν_k δ_k² + ĝ_k δ_k reaches 0; one example.

  m is non-increasing and convex in t = r² with dm/dt = −λ*(r) (the TRS multiplier), so
  Newton steps in t approach the root from below; they are safeguarded by a bracket found by
  doubling from the lower bound where m0 − ‖ĝ‖r − max|ν| r² = 0. λ* = 0 with m > 0 means the
  global minimum of the quadratic is inside the ball and positive: the radius is infinite, as
  it is when the bracket passes 2^40 times the lower bound.

  Args:
    nu: (d,) eigenvalues of A.
    g_hat: (d,) linear term in A's eigenbasis.
    m0: () margin at r = 0.

  Returns:
    () radius: 0 if m0 ≤ 0, inf if m stays positive, else the root to ~1e-12 relative in
    float64 (Newton stops at steps below 64 eps relative).
  """
  dtype = g_hat.dtype
  tol = 64 * jnp.finfo(dtype).eps

  def margin(r):
    sol = psd.trust_region(nu, g_hat, r)
    return m0 + sol.value, sol.lam

  gnorm, anorm = jnp.linalg.norm(g_hat), jnp.max(jnp.abs(nu))
  positive = m0 > 0
  m_pos = jnp.where(positive, m0, 1.0)
  denom = gnorm + jnp.sqrt(gnorm**2 + 4 * anorm * m_pos)
  # A constant margin (no linear or quadratic term) never reaches zero.
  flat = denom <= 0
  r_low = jnp.where(flat, 1.0, 2 * m_pos / jnp.where(flat, 1.0, denom))

  def grow(carry):
    _, r, _, _, k = carry
    r_next = 2 * r
    m_next, lam_next = margin(r_next)
    return r, r_next, m_next, lam_next, k + 1

  def growing(carry):
    _, _, m, lam, k = carry
    return positive & ~flat & (m > 0) & (lam > 0) & (k < _MAX_DOUBLINGS)

  m_low, lam_low = margin(r_low)
  zero = jnp.zeros((), dtype)
  lo, hi, m_hi, lam_hi, _ = jax.lax.while_loop(
      growing, grow, (zero, r_low, m_low, lam_low, jnp.asarray(0)))
  infinite = flat | (m_hi > 0)

  def newton(carry):
    lo, hi, r, m, lam, _, k = carry
    lo, hi = jnp.where(m > 0, r, lo), jnp.where(m > 0, hi, r)
    # dm/dt = −λ with t = r²; a step outside (lo, hi) or a vanishing λ falls back to bisection.
    t = r**2 + m / jnp.where(lam > 0, lam, 1.0)
    trial = jnp.sqrt(jnp.maximum(t, 0.0))
    ok = (lam > 0) & (trial >= lo) & (trial <= hi)
    r_next = jnp.where(ok, trial, 0.5 * (lo + hi))
    done = (m == 0) | (ok & (jnp.abs(trial - r) <= tol * r)) | (hi - lo <= tol * hi)
    r_next = jnp.where(m == 0, r, r_next)
    m_next, lam_next = margin(r_next)
    return lo, hi, r_next, m_next, lam_next, done, k + 1

  def refining(carry):
    *_, done, k = carry
    return positive & ~infinite & ~done & (k < _MAX_NEWTON)

  _, _, root, *_ = jax.lax.while_loop(
      refining, newton, (lo, hi, hi, m_hi, lam_hi, jnp.asarray(False), jnp.asarray(0)))
  return jnp.where(positive, jnp.where(infinite, jnp.inf, root), 0.0)


@functools.partial(jax.jit, static_argnames=("activation", "binary"))
def _certified_radius(Z, Zp, X, y, activation: Quadratic, binary: bool) -> jnp.ndarray:
  D = Z - Zp
  radii = lambda D, s: jax.vmap(_radius)(*poly.trust_region_data(D, X, s, activation)[:3])
  if binary:
    return radii(D[0], y)
  pairs = _class_pairs(D.shape[0])
  ones = jnp.ones(X.shape[0], X.dtype)
  values = jax.lax.map(lambda kc: radii(D[kc[0]] - D[kc[1]], ones), jnp.asarray(pairs))
  return _select_pairs(values, pairs, y, D.shape[0])


def poly_certified_radius(Z, Zp, X, y, activation: Quadratic = DEFAULT_ACTIVATION,
                          binary: bool = True) -> jnp.ndarray:
  """The exact ℓ₂ distance from each example to the head's decision boundary (MATH.md §3).

  For a correctly classified x_i the radius is the r where the worst-case margin of
  `poly_worst_case_margin` reaches 0 (multi-class: the minimum over c ≠ y_i of the pairwise
  radii); every perturbation of norm < radius leaves the prediction correct and some
  perturbation of norm radius reaches the boundary. Found per example by bracketing and
  safeguarded Newton on r² (one eigh per class pair shared by all examples), to ~1e-12
  relative in float64 (the round-off of the margin limits it where the margin is flat).

  Args:
    Z, Zp: (C, d+1, d+1) a head's matrices.
    X: (n, d) inputs, finite.
    y: (n,) labels: ±1 if binary, else integers in 0..C−1.
    activation: the coefficients (a, b, c) of σ.
    binary: whether the head is binary (C = 1).

  Returns:
    (n,) radii: 0 where the margin at r = 0 is ≤ 0 (misclassified or on the boundary), +inf
    where the worst-case margin stays positive for every r.

  Raises:
    ValueError: if an argument is malformed (named in the message).
  """
  Z, Zp, X, y, activation = _check_inputs(Z, Zp, X, y, binary, activation)
  return _certified_radius(Z, Zp, X, y, activation, binary)


def certified_accuracy(radii, thresholds: Sequence[float], correct=None) -> np.ndarray:
  """Fraction of examples certified at each radius ρ: those with radius > ρ.

  The comparison is strict because at r = radius the worst-case margin is 0 (a tie on the
  boundary, not a certificate); misclassified examples have radius 0 and never count.

  Args:
    radii: (n,) certified radii (from `poly_certified_radius`), ≥ 0, possibly inf.
    thresholds: (T,) radii ρ ≥ 0.
    correct: optional (n,) booleans, ANDed in (for radii of a certifier that does not already
      give misclassified examples radius 0).

  Returns:
    (T,) float64 fractions in [0, 1].

  Raises:
    ValueError: if radii is not 1-D non-empty, or correct's shape differs.
  """
  radii = np.asarray(radii, dtype=np.float64)
  thresholds = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
  if radii.ndim != 1 or radii.size == 0 or np.any(np.isnan(radii)):
    raise ValueError(f"radii must be a non-empty 1-D array without NaN, got shape {radii.shape}")
  certified = radii[None, :] > thresholds[:, None]
  if correct is not None:
    correct = np.asarray(correct, dtype=bool)
    if correct.shape != radii.shape:
      raise ValueError(f"correct must have shape {radii.shape}, got shape {correct.shape}")
    certified &= correct[None, :]
  return certified.mean(axis=1)


def _pairwise_radius(f: jnp.ndarray, W_out: jnp.ndarray, y, lipschitz) -> jnp.ndarray:
  """min_{t≠y} (f_y − f_t) / (L ‖w_y − w_t‖₂), clipped at 0, for f = h W_out + b with h L-Lipschitz.

  Args:
    f: (n,) binary scores (labels ±1) or (n, C) logits.
    W_out: (H,) or (H, C) the output layer's weights.
    y: (n,) labels ±1 or 0..C−1.
    lipschitz: () the Lipschitz constant of the map from the input to h.

  Returns:
    (n,) radii, 0 where the example is misclassified.
  """
  if W_out.ndim == 1:
    margin = jnp.asarray(y) * f
    scale = jnp.maximum(lipschitz * jnp.linalg.norm(W_out), jnp.finfo(margin.dtype).tiny)
    return jnp.maximum(margin, 0.0) / scale
  y = jnp.asarray(y, jnp.int32)
  diff = W_out[:, y].T[:, :, None] - W_out[None, :, :]  # (n, H, C): w_y − w_t
  margins = jnp.take_along_axis(f, y[:, None], axis=1) - f
  radii = margins / (lipschitz * jnp.maximum(jnp.linalg.norm(diff, axis=1),
                                             jnp.finfo(f.dtype).tiny))
  radii = jnp.where(jax.nn.one_hot(y, f.shape[1]) > 0, jnp.inf, radii)
  return jnp.maximum(jnp.min(radii, axis=1), 0.0)


def _check_lipschitz(backbone_lipschitz) -> None:
  if not backbone_lipschitz > 0:
    raise ValueError(f"backbone_lipschitz must be > 0, got {backbone_lipschitz!r}")


def lipschitz_certified_radius(W1, w2, X, y, *, b1=None, b2=None,
                               backbone_lipschitz: float = 1.0) -> jnp.ndarray:
  """ℓ₂ radii certified for a two-layer ReLU network by its Lipschitz margin bound (MATH.md §7).

  For f(x) = w₂ᵀ relu(W₁ᵀ g(x) + b₁) + b₂ with g L_g-Lipschitz, f_y − f_t is Lipschitz with
  constant at most L_g ‖W₁‖₂ ‖w₂,y − w₂,t‖₂ (ReLU is 1-Lipschitz), so no perturbation shorter
  than min_{t≠y} (f_y − f_t) / (L_g ‖W₁‖₂ ‖w₂,y − w₂,t‖₂) changes the label. A sound lower bound
  on the true radius (the polynomial heads' radius is exact instead).

  Args:
    W1: (d, H) first-layer weights. w2: (H,) (binary, labels ±1) or (H, C) output weights.
    X: (n, d) features g(x). y: (n,) labels ±1 or 0..C−1.
    b1: None or (H,) hidden biases. b2: None, () or (C,) output biases.
    backbone_lipschitz: L_g of the map from the input to X (1 when X is the input).

  Returns:
    (n,) radii, 0 where the example is misclassified.
  """
  W1, w2, X = jnp.asarray(W1), jnp.asarray(w2), jnp.asarray(X)
  _check_lipschitz(backbone_lipschitz)
  if W1.shape[1] == 0:  # no neurons: f ≡ 0 classifies nothing
    return jnp.zeros(X.shape[0], X.dtype)
  hidden = jax.nn.relu(X @ W1 + (0.0 if b1 is None else b1))
  f = hidden @ w2 + (0.0 if b2 is None else b2)
  return _pairwise_radius(f, w2, y, jnp.linalg.norm(W1, ord=2) * backbone_lipschitz)


def linear_certified_radius(W, b, X, y, *, backbone_lipschitz: float = 1.0) -> jnp.ndarray:
  """ℓ₂ radii certified for a linear last layer f = g(x) W + b on an L_g-Lipschitz backbone g.

  min_{t≠y} (f_y − f_t) / (L_g ‖w_y − w_t‖₂): exact for the linear layer itself, and the
  margin/(√2 L_g) of 1-Lipschitz networks when W's columns are orthonormal (MATH.md §7).

  Args:
    W: (d, C) weights. b: None or (C,) biases.
    X: (n, d) features g(x). y: (n,) labels 0..C−1.
    backbone_lipschitz: L_g.

  Returns:
    (n,) radii, 0 where the example is misclassified.
  """
  W, X = jnp.asarray(W), jnp.asarray(X)
  _check_lipschitz(backbone_lipschitz)
  f = X @ W + (0.0 if b is None else b)
  return _pairwise_radius(f, W, y, jnp.asarray(backbone_lipschitz, f.dtype))


# Bisection steps on the gated radius: 2^-64 of the bracket is below float64's resolution.
_GATED_BISECTIONS = 64


def _gated_margin_bound(A: jnp.ndarray, pre: jnp.ndarray, gate_dist: jnp.ndarray,
                        r) -> jnp.ndarray:
  """Lower bound on min_{‖δ‖≤r} Σ_k 1[(x+δ)ᵀh_k ≥ 0] (x+δ)ᵀa_k for one example and pair.

  Gates at distance > r from x keep their state: the on ones add xᵀa_F − r‖Σ_F a_k‖; a gate
  that may flip adds at worst min(0, xᵀa_k − r‖a_k‖).

  Args:
    A: (P, d) the neurons' weight differences a_k.
    pre: (P,) xᵀa_k.
    gate_dist: (P,) signed distances xᵀh_k / ‖h_k‖ of x to each gate's hyperplane.
    r: radius ≥ 0.
  """
  on, unsure = gate_dist > r, jnp.abs(gate_dist) <= r
  fixed = jnp.sum(jnp.where(on, pre, 0.0)) - r * jnp.linalg.norm(jnp.where(on[:, None], A, 0.0)
                                                                  .sum(0))
  flips = jnp.minimum(0.0, pre - r * jnp.linalg.norm(A, axis=1))
  return fixed + jnp.sum(jnp.where(unsure, flips, 0.0))


def gated_certified_radius(U, gates, X, y, *, backbone_lipschitz: float = 1.0) -> jnp.ndarray:
  """ℓ₂ radii certified for a gated-ReLU head f_c(x) = Σ_k 1[xᵀh_k ≥ 0] xᵀu_{k,c}.

  The gates make f discontinuous, so no Lipschitz bound applies; instead, for each rival class t
  `_gated_margin_bound` bounds the worst-case margin f_y − f_t over the ball of radius r from
  below, a bound that falls with r; the radius is where it reaches 0, found by bisection on
  [0, the largest gate distance] (past it every gate may flip and the bound is ≤ 0). Sound,
  not exact: every perturbation shorter than the radius keeps the label.

  Args:
    U: (P, d, C) gated weights u_k (`ReluHead.u`); C = 1 for a binary head.
    gates: (d, P) gates h_k.
    X: (n, d) features. y: (n,) labels ±1 (C = 1) or 0..C−1.
    backbone_lipschitz: L_g of the map from the input to X (the radii are divided by it).

  Returns:
    (n,) radii, 0 where the example is misclassified.
  """
  U, gates, X = jnp.asarray(U), jnp.asarray(gates), jnp.asarray(X)
  if U.ndim != 3 or gates.shape != (U.shape[1], U.shape[0]) or X.shape[1:] != (U.shape[1],):
    raise ValueError(f"U (P, d, C), gates (d, P) and X (n, d) must agree, got shapes "
                     f"{U.shape}, {gates.shape}, {X.shape}")
  _check_lipschitz(backbone_lipschitz)
  return _gated_radius(U, gates, X, jnp.asarray(y)) / backbone_lipschitz


@jax.jit
def _gated_radius(U, gates, X, y):
  binary = U.shape[2] == 1
  norms = jnp.linalg.norm(gates, axis=0)
  gate_dist = (X @ gates) / jnp.where(norms > 0, norms, 1.0)  # (n, P)
  if binary:
    A = y.astype(U.dtype)[:, None, None, None] * U[None]  # (n, P, d, 1): a_k = y u_k
  else:
    y = y.astype(jnp.int32)
    A = U[:, :, y].transpose(2, 0, 1)[..., None] - U[None]  # (n, P, d, C): u_{k,y} − u_{k,t}
  pre = jnp.einsum("nd,npdc->npc", X, A)
  top = jnp.max(jnp.abs(gate_dist), axis=1)  # (n,)

  def radius(A, pre, dist, top):  # one example and rival class
    bound = lambda r: _gated_margin_bound(A, pre, dist, r)

    def bisect(_, bracket):
      lo, hi = bracket
      mid = 0.5 * (lo + hi)
      ok = bound(mid) > 0
      return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    lo, _ = jax.lax.fori_loop(0, _GATED_BISECTIONS, bisect, (jnp.zeros_like(top), top))
    return jnp.where(bound(0.0) > 0, lo, 0.0)

  per_class = jax.vmap(jax.vmap(radius, in_axes=(2, 1, None, None)), in_axes=(0, 0, 0, 0))
  radii = per_class(A, pre, gate_dist, top)  # (n, C)
  if not binary:
    radii = jnp.where(jax.nn.one_hot(y, U.shape[2]) > 0, jnp.inf, radii)
  return jnp.min(radii, axis=1)
