"""The mathematics of convex ReLU and gated-ReLU heads over sampled sign patterns, plain and
robust (docs/math.md §4): patterns, scores and their adjoints, cones, losses and dual norms.

Gates h_k (columns of a (d, P) matrix) fix the sign patterns D_k = diag(1[X h_k ≥ 0]). The
weights of a head are stacked as W of shape (S, P, d, C): S = 2 blocks [v; w] for convex ReLU
(signs σ = (+1, −1)), S = 1 block [u] for gated ReLU (σ = (+1,)); C = 1 output for a binary
head (labels ±1), C ≥ 2 for a multi-class head with shared patterns. The convex model is

    f_ic = Σ_s σ_s Σ_k D_ik x_iᵀ W[s, k, :, c],        θ_i = Σ_s σ_s Σ_k D_ik W[s, k]  (d, C),

so f_i = x_iᵀθ_i. Robust training against ‖δ‖_p ≤ ε adds ε‖·‖_q (q the dual norm: p = ∞ → q = 1,
p = 2 → q = 2) to every hinge margin, and for ReLU the robust cone constraints
(2D_ik − 1) x_iᵀW[s, k, :, c] ≥ ε‖W[s, k, :, c]‖_q keep each neuron's pattern fixed on the ball.
"""

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from cvxjax.core.checks import check_array, check_labels, check_nonnegative, check_positive

LOSSES = ("squared", "hinge")
NORMS = {"inf": 1, 2: 2}  # ball norm p → dual norm q of the weights


def sample_gates(key: jax.Array, d: int, num_patterns: int) -> jnp.ndarray:
  """Gaussian gates h_k ~ N(0, I_d); returns a (d, num_patterns) matrix."""
  return jax.random.normal(key, (d, num_patterns))


def sign_patterns(X: jnp.ndarray, gates: jnp.ndarray) -> jnp.ndarray:
  """D_ik = 1[x_iᵀh_k ≥ 0] as floats: X (n, d), gates (d, P) → (n, P)."""
  return (X @ gates >= 0).astype(X.dtype)


def unique_gates(X: np.ndarray, gates: np.ndarray) -> np.ndarray:
  """Keeps the first gate of every distinct non-empty pattern on X, in their original order.

  Host-side (the number of distinct patterns is data-dependent): X (n, d), gates (d, P) →
  (d, P′) with P′ ≤ P.
  """
  D = np.asarray(X) @ np.asarray(gates) >= 0
  _, first = np.unique(D, axis=1, return_index=True)
  keep = np.sort(first)
  return np.asarray(gates)[:, keep[D[:, keep].any(axis=0)]]


def robust_cone_has_interior(X: np.ndarray, gates: np.ndarray, eps: float, p) -> np.ndarray:
  """Which patterns' robust cones {v : (2D_ik − 1) x_iᵀv ≥ ε‖v‖_q ∀i} have an interior; (P,) bool.

  By minimax, max_{‖v‖_q ≤ 1} min_i a_iᵀv = min_{λ∈Δ} ‖Σ_i λ_i a_i‖_p with a_i = (2D_ik − 1) x_i:
  the cone has an interior exactly when the convex hull of the a_i lies farther than ε from the
  origin in ℓ_p. Otherwise the cone is {0} (or, in a measure-zero case, lower-dimensional): its
  neurons vanish at the optimum, and it has no Slater point, so ADMM's multipliers would diverge.
  Host-side: an exact LP per pattern for p = ∞; for p = 2 Frank–Wolfe with its certified gap,
  keeping any pattern it cannot certify as lying within ε.

  Args:
    X: (n, d) inputs. gates: (d, P). eps: the radius ε > 0. p: 2 or "inf".
  """
  D = X @ gates >= 0
  n, d = X.shape
  keep = np.empty(gates.shape[1], bool)
  for k in range(gates.shape[1]):
    A = np.where(D[:, k:k + 1], X, -X)  # rows a_i
    if p == "inf":
      # min t  s.t. −t ≤ Aᵀλ ≤ t, Σλ = 1, λ ≥ 0.
      A_ub = np.block([[A.T, -np.ones((d, 1))], [-A.T, -np.ones((d, 1))]])
      res = scipy.optimize.linprog(np.r_[np.zeros(n), 1.0], A_ub=A_ub, b_ub=np.zeros(2 * d),
                                   A_eq=np.r_[np.ones(n), 0.0][None], b_eq=[1.0],
                                   bounds=(0, None), method="highs")
      keep[k] = res.fun > eps
    else:
      keep[k] = _hull_norm_upper(A, eps) > eps
  return keep


def _hull_norm_upper(A: np.ndarray, eps: float, iters: int = 5000) -> float:
  """An upper bound on min_{λ∈Δ} ‖Aᵀλ‖₂, or +inf once a Wolfe gap certifies it exceeds ε.

  Starts from `min_norm_hull_point` (a hull point, so its norm bounds the minimum from above)
  and runs Frank–Wolfe from there, whose gap gives the lower bound.
  """
  point = min_norm_hull_point(A)
  for _ in range(iters):
    sq = point @ point
    if sq <= eps ** 2:
      break
    scores = A @ point
    j = int(np.argmin(scores))
    if 2 * scores[j] - sq > eps ** 2:  # f* ≥ f(x) − ⟨∇f(x), x − s⟩ = 2 sᵀx − ‖x‖²
      return np.inf
    direction = A[j] - point
    step = np.clip(-(point @ direction) / max(direction @ direction, 1e-300), 0.0, 1.0)
    point = point + step * direction
  return float(np.linalg.norm(point))


def min_norm_hull_point(A: np.ndarray, start: Optional[np.ndarray] = None,
                        max_rounds: int = 30) -> np.ndarray:
  """The minimum-norm point p of the hull of A's rows (n, d), by row generation; (d,).

  p is optimal exactly when a_iᵀp ≥ ‖p‖² for every row. Each round solves the problem on a
  working set of rows as nonnegative least squares, min ‖A_Wᵀλ‖² + M²(Σλ − 1)² with M large
  (Lawson–Hanson's exact active-set method), then adds the 2d rows that violate the condition
  most. The optimum needs at most d + 1 rows, so the working set stays small when n ≫ d (at
  n = 45,000, d = 512 one NNLS over every row took 170 s). Every round's p is a hull point.

  Args:
    A: (n, d) the rows a_i.
    start: (d,) a direction of large min_i a_iᵀv (`margin_directions`): the first working set
      is the 2d rows least along it, near the optimum's support (default: the rows' mean).
    max_rounds: the most rounds.
  """
  n, d = A.shape
  batch = min(n, 2 * d)
  working = np.argsort(A @ (A.mean(axis=0) if start is None else start))[:batch]
  for _ in range(max_rounds):
    rows = A[working]
    weight = 1e3 * max(np.abs(rows).max(), 1.0)
    system = np.vstack([rows.T, np.full((1, len(working)), weight)])
    lam, _ = scipy.optimize.nnls(system, np.r_[np.zeros(d), weight], maxiter=50 * rows.size)
    point = rows.T @ (lam / max(lam.sum(), np.finfo(A.dtype).tiny))
    scores = A @ point
    outside = np.setdiff1d(np.argsort(scores)[:batch], working)
    if not outside.size or scores[outside].min() >= (point @ point) * (1 - 1e-9):
      break
    working = np.union1d(working[lam > 0], outside)
  return point


def margin_directions(X: np.ndarray, gates: np.ndarray, iterations: int = 300) -> np.ndarray:
  """(P, d) unit directions v_k of large margin min_i a_iᵀv_k, a_i = (2D_ik − 1)x_i, all at once.

  Gradient ascent from the unit gates on the soft minimum −τ log Σ_i exp(−a_iᵀv/τ) over the
  sphere, τ falling from 1 to 1e-3, steps 4τ/max‖x_i‖² (four times the inverse of the gradient's
  Lipschitz constant): a start for `min_norm_hull_point`, whose rounds it cuts (Gaussian mixture,
  n = 4096, d = 256: 15–18 → 7).

  Args:
    X: (n, d) inputs. gates: (d, P). iterations: ascent steps.
  """
  signs = np.where(X @ gates >= 0, 1.0, -1.0)
  V = gates / np.linalg.norm(gates, axis=0, keepdims=True)
  lipschitz = np.max(np.sum(X * X, axis=1))
  for it in range(iterations):
    tau = 10.0 ** (-3.0 * it / iterations)
    S = signs * (X @ V)
    weight = np.exp(-(S - S.min(axis=0)) / tau)  # the soft minimum's gradient weights
    V = V + (4.0 * tau / lipschitz) * (X.T @ (signs * weight / weight.sum(axis=0)))
    V = V / np.linalg.norm(V, axis=0, keepdims=True)
  return V.T


def neuron_signs(gated: bool) -> jnp.ndarray:
  """σ: (1,) for gated ReLU (u), (2,) = (+1, −1) for convex ReLU (v, w)."""
  return jnp.array([1.0]) if gated else jnp.array([1.0, -1.0])


def scores(W: jnp.ndarray, X: jnp.ndarray, D: jnp.ndarray) -> jnp.ndarray:
  """The convex model f = Σ_s σ_s Σ_k D_k X W[s, k]: W (S, P, d, C), X (n, d), D (n, P) → (n, C)."""
  sigma = neuron_signs(W.shape[0] == 1)
  return jnp.einsum("np,nd,spdc,s->nc", D, X, W, sigma, optimize=True)


def scores_adjoint(R: jnp.ndarray, X: jnp.ndarray, D: jnp.ndarray, num_blocks: int) -> jnp.ndarray:
  """The adjoint of `scores`: R (n, C) → (S, P, d, C) with S = `num_blocks`."""
  sigma = neuron_signs(num_blocks == 1)
  return jnp.einsum("np,nd,nc,s->spdc", D, X, R, sigma, optimize=True)


def example_weights(W: jnp.ndarray, D: jnp.ndarray) -> jnp.ndarray:
  """θ_i = Σ_s σ_s Σ_k D_ik W[s, k]: W (S, P, d, C), D (n, P) → (n, d, C)."""
  sigma = neuron_signs(W.shape[0] == 1)
  return jnp.einsum("np,spdc,s->ndc", D, W, sigma, optimize=True)


def cone_slacks(W: jnp.ndarray, X: jnp.ndarray, D: jnp.ndarray) -> jnp.ndarray:
  """(2D_ik − 1) x_iᵀW[s, k, :, c]: W (S, P, d, C) → (S, P, n, C); ≥ 0 on the plain cone."""
  return jnp.einsum("np,nd,spdc->spnc", 2.0 * D - 1.0, X, W, optimize=True)


def cone_slacks_adjoint(T: jnp.ndarray, X: jnp.ndarray, D: jnp.ndarray) -> jnp.ndarray:
  """The adjoint of `cone_slacks`: T (S, P, n, C) → (S, P, d, C)."""
  return jnp.einsum("np,nd,spnc->spdc", 2.0 * D - 1.0, X, T, optimize=True)


def dual_norm(V: jnp.ndarray, q: int, axis: int = -2) -> jnp.ndarray:
  """‖·‖_q along `axis` (the feature axis d of the weight layouts above)."""
  return jnp.sum(jnp.abs(V), axis=axis) if q == 1 else l2_norm(V, axis)


def l2_norm(V: jnp.ndarray, axis: int) -> jnp.ndarray:
  """‖·‖₂ along `axis`, differentiated with the subgradient 0 where the vector is 0.

  jnp.linalg.norm's derivative there is NaN (0·∞), and zeros are common: a zero neuron, and
  the pair (y_i, y_i) of the multi-class robust hinge, whose weight difference is 0 by design.
  """
  square = jnp.sum(V * V, axis=axis)
  positive = square > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, square, 1.0)), 0.0)


def group_norms(W: jnp.ndarray) -> jnp.ndarray:
  """‖W[s, k, :, c]‖₂ for every neuron: (S, P, d, C) → (S, P, C)."""
  return l2_norm(W, axis=2)


def constraint_violation(W: jnp.ndarray, X: jnp.ndarray, D: jnp.ndarray, eps, q: int):
  """max over (s, k, i, c) of (ε‖W[s, k, :, c]‖_q − (2D_ik − 1) x_iᵀW[s, k, :, c])₊; a scalar."""
  need = eps * dual_norm(W, q)[:, :, None, :]
  return jnp.max(jnp.maximum(need - cone_slacks(W, X, D), 0.0))


class Targets(NamedTuple):
  """Encoded labels.

  Attributes:
    labels: (n,) ±1 (binary) or class indices 0..C−1.
    onehot: (n, C) regression targets of the squared loss: y itself (binary) or one-hot.
    pairs: (n, K) 0/1 weights of the hinge pairs: K = 1, all ones (binary); K = C with
      1[c ≠ y_i] (multi-class: the pair (y_i, c) compares class y_i with class c).
  """

  labels: jnp.ndarray
  onehot: jnp.ndarray
  pairs: jnp.ndarray


def counted(targets: Targets) -> jnp.ndarray:
  """(n,) True for an example, False for a padding row (`cvxjax.sharding.padding`).

  Every example has a hinge pair (K = 1 binary, C − 1 multi-class); a padding row has none, a
  zero input and zero patterns, so its scores, loss and plain cone slacks vanish. Only the robust
  cones ε‖w‖ ≤ (2D_ik − 1)x_iᵀw would still bind on it; the solvers drop them there.
  """
  return jnp.any(targets.pairs > 0, axis=-1)


def pair_margins(F: jnp.ndarray, targets: Targets) -> jnp.ndarray:
  """Margins of the hinge pairs: y_i f_i (binary) or f_{i,y_i} − f_ic (multi-class); (n, K).

  Also maps θ (n, d, C) → (n, d, K) when given θ: the pairs act on the last axis.
  """
  if targets.pairs.shape[-1] == 1 and F.shape[-1] == 1:
    return F * targets.labels.reshape((-1,) + (1,) * (F.ndim - 1))
  true = jnp.take_along_axis(F, targets.labels.reshape((-1,) + (1,) * (F.ndim - 1)), axis=-1)
  return true - F


def loss_value(F: jnp.ndarray, theta: Optional[jnp.ndarray], targets: Targets, loss: str,
               eps, q: int) -> jnp.ndarray:
  """The training loss (docs/math.md §4), summed over examples.

  squared: ½ Σ_ic (f_ic − onehot_ic)². hinge: Σ_i Σ_pairs (1 − margin + ε‖θ-margin‖_q)₊, where the
  θ-margin is y_iθ_i (binary) or θ_{i,y} − θ_{i,c} (multi-class); pairs with c = y_i count zero.

  Args:
    F: (n, C) scores.
    theta: (n, d, C) example weights, or None when eps = 0.
    targets: encoded labels.
    loss: "squared" or "hinge".
    eps: the radius of the ball (0 for plain training).
    q: the dual norm (1 or 2).
  """
  if loss == "squared":
    return 0.5 * jnp.sum((F - targets.onehot) ** 2)
  slack = 1.0 - pair_margins(F, targets)
  if theta is not None:
    slack = slack + eps * dual_norm(pair_margins(theta, targets), q, axis=1)
  return jnp.sum(targets.pairs * jnp.maximum(slack, 0.0))


def objective(W: jnp.ndarray, X: jnp.ndarray, D: jnp.ndarray, targets: Targets, *, loss: str,
              eps, q: int, beta) -> jnp.ndarray:
  """loss(W) + β Σ_{s,k,c} ‖W[s, k, :, c]‖₂ (constraints not included); a scalar."""
  theta = example_weights(W, D) if eps > 0 else None
  return (loss_value(scores(W, X, D), theta, targets, loss, eps, q)
          + beta * jnp.sum(group_norms(W)))


def ray_terms(W: jnp.ndarray, X: jnp.ndarray, D: jnp.ndarray, targets: Targets, *, loss: str,
              eps, q: int) -> jnp.ndarray:
  """The loss along the ray s ↦ s W, as `best_scale_on_ray` takes it (docs/math.md §4).

  Hinge: (n, K) each pair's slope c (its margin less ε‖·‖_q of its weight difference; norms are
  homogeneous), 0 off the pairs, so the pair's loss is (1 − s c)₊; rows of examples concatenate.
  Squared: (2,) = (⟨F, Y⟩, ‖F‖²) of the scores F; examples add up.

  Args:
    W: (S, P, d, C) weights. X: (n, d). D: (n, P). targets: encoded labels. loss, eps, q: the
      problem.
  """
  F = scores(W, X, D)
  if loss == "squared":
    return jnp.stack([jnp.vdot(F, targets.onehot), jnp.vdot(F, F)])
  c = pair_margins(F, targets)
  if eps > 0:
    c = c - eps * dual_norm(pair_margins(example_weights(W, D), targets), q, axis=1)
  return jnp.where(targets.pairs > 0, c, 0.0)


def best_scale_on_ray(terms: jnp.ndarray, penalty, loss: str) -> jnp.ndarray:
  """The s ≥ 0 that minimises loss(s W) + s·penalty exactly, from `ray_terms`; a scalar.

  Squared: a quadratic in s. Hinge: convex and piecewise linear, its slope
  penalty + Σ_{c≤0}|c| − Σ_{c>0, sc<1} c rising at each breakpoint 1/c; s is the first
  breakpoint past which the slope is ≥ 0, or 0, or 1 on a flat ray (W = 0).
  """
  tiny = jnp.finfo(terms.dtype).tiny
  if loss == "squared":
    return jnp.maximum((terms[0] - penalty) / jnp.maximum(terms[1], tiny), 0.0)
  positive = jnp.sort(jnp.maximum(terms, 0.0).ravel())[::-1]  # breakpoints 1/c, increasing
  base = penalty + jnp.sum(jnp.maximum(-terms, 0.0)) - jnp.sum(positive)  # the slope at s = 0⁺
  slopes = base + jnp.cumsum(positive)  # the slope past each breakpoint
  s = jnp.where(base >= 0, 0.0, 1.0 / jnp.maximum(positive[jnp.argmax(slopes >= 0)], tiny))
  return jnp.where(slopes[-1] > 0, s, 1.0)


def best_scale(W: jnp.ndarray, X: jnp.ndarray, D: jnp.ndarray, targets: Targets, *, loss: str,
               eps, q: int, beta) -> jnp.ndarray:
  """The s ≥ 0 that minimises objective(s W) exactly; a scalar (docs/math.md §4).

  Along the ray the penalty is sβR (R = Σ‖W_g‖₂) and the loss a function of s alone once the
  scores are formed (`ray_terms`, `best_scale_on_ray`). Cones are cones, so s W keeps every
  constraint W satisfies.

  Args:
    W: (S, P, d, C) weights. X: (n, d). D: (n, P). targets: encoded labels.
    loss, eps, q, beta: the problem.
  """
  terms = ray_terms(W, X, D, targets, loss=loss, eps=eps, q=q)
  return best_scale_on_ray(terms, beta * jnp.sum(group_norms(W)), loss)


def network_scores(W1: jnp.ndarray, w2: jnp.ndarray, X: jnp.ndarray,
                   gates: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """A two-layer network: Σ_j act_j(x) α_j with act_j = (xᵀu_j)₊, or 1[xᵀg_j ≥ 0] xᵀu_j if gated.

  Args:
    W1: (d, H) first-layer weights u_j.
    w2: (H,) or (H, C) output weights α_j.
    X: (n, d) inputs.
    gates: (d, H) gates g_j of a gated network, or None for ReLU.

  Returns:
    (n,) or (n, C) scores.
  """
  pre = X @ W1
  act = jax.nn.relu(pre) if gates is None else pre * (X @ gates >= 0)
  return act @ w2


def encode_targets(y, n: int) -> tuple[Targets, bool]:
  """Validates labels: ±1 → binary (C = 1); integers 0..C−1 → multi-class (C ≥ 2)."""
  labels, binary = check_labels(y, n)
  if binary:
    return Targets(labels, labels[:, None], np.ones((n, 1))), True
  C = int(labels.max()) + 1
  if C < 2:
    raise ValueError(f"y must hold at least two classes 0..C-1 (multi-class); got {np.unique(y)}")
  onehot = (np.arange(C)[None, :] == labels[:, None]).astype(np.float64)
  return Targets(labels, onehot, 1.0 - onehot), False


class Problem(NamedTuple):
  """A validated problem: everything a solver needs, on the host."""

  X: np.ndarray
  D: np.ndarray
  gates: np.ndarray
  targets: Targets
  binary: bool
  gated: bool
  loss: str
  eps: float
  q: int
  beta: float

  @property
  def weight_shape(self) -> tuple:
    """(S, P, d, C), the shape of the weights (S = 1 for a gated head, 2 otherwise)."""
    return (1 if self.gated else 2, self.D.shape[1], self.X.shape[1],
            self.targets.onehot.shape[1])


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Instance:
  """A validated problem on the device, as the solvers take it: arrays are leaves, settings
  static.

  Attributes:
    X: (n, d) inputs.
    D: (n, P) sign patterns.
    targets: the encoded labels (`Targets`).
    gates: (d, P) the gates h_k.
    directions: (P, d) unit directions strictly inside each pattern's (robust) cone
      (`cvxjax.core.relu_dual.interior_directions`), for a convex ReLU head's feasibility step;
      None for a gated head, which has no cones.
    key: a jax.random key for the solvers' random starts and sketches.
    gated, binary, loss, eps, q, beta: as in `Problem` (static).
  """

  X: jnp.ndarray
  D: jnp.ndarray
  targets: Targets
  gates: jnp.ndarray
  directions: Optional[jnp.ndarray]
  key: jax.Array
  gated: bool = dataclasses.field(metadata=dict(static=True))
  binary: bool = dataclasses.field(metadata=dict(static=True))
  loss: str = dataclasses.field(metadata=dict(static=True))
  eps: float = dataclasses.field(metadata=dict(static=True))
  q: int = dataclasses.field(metadata=dict(static=True))
  beta: float = dataclasses.field(metadata=dict(static=True))

  @property
  def measures(self) -> dict:
    """The keyword arguments (loss, eps, q, beta) of `objective`."""
    return dict(loss=self.loss, eps=self.eps, q=self.q, beta=self.beta)

  @property
  def num_blocks(self) -> int:
    """S: 1 for a gated head, 2 for a convex ReLU head."""
    return 1 if self.gated else 2

  @property
  def weight_shape(self) -> tuple:
    """(S, P, d, C), the shape of the weights."""
    return (self.num_blocks, self.D.shape[1], self.X.shape[1], self.targets.onehot.shape[1])


def with_intercept(X):
  """X (n, d) with a constant feature 1 appended, (n, d + 1): the inputs of a head with biases."""
  xp = np if isinstance(X, np.ndarray) else jnp  # host arrays stay host arrays (and float64)
  return xp.concatenate([X, xp.ones(X.shape[:-1] + (1,), X.dtype)], axis=-1)


def check_problem(X, y, *, eps, p, beta, num_patterns, gates, gated, loss, key,
                  drop_empty_cones=True, bias=False) -> Problem:
  """Validates the arguments of `fit` / `exact_fit`, samples the gates and, for robust ReLU,
  drops the patterns whose robust cone has no interior (see `robust_cone_has_interior`).

  With `bias`, the problem's X is `with_intercept(X)` (so gates and weights have d + 1 rows)
  and the sampled gates include the all-active gate e_{d+1}, whose pattern is linear."""
  X = check_array(X, "X").astype(np.float64)
  if bias:
    X = np.asarray(with_intercept(X))
  targets, binary = encode_targets(y, X.shape[0])
  if p not in NORMS:
    raise ValueError(f"p must be 2 or 'inf' (the ball's norm), got {p!r}")
  check_nonnegative(eps, "eps")
  check_positive(beta, "beta")
  if loss not in LOSSES:
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
  if eps > 0 and loss != "hinge":
    raise ValueError(f"robust training (eps > 0) is formulated for loss='hinge', got {loss!r}")
  if eps > 0 and gated:
    # With fixed gates a gate within ε of x flips inside the ball and the prediction jumps:
    # ε‖θ‖_q is then no bound on the worst case (see certify.gated_certified_radius).
    raise ValueError("gated=True with eps > 0 is refused: a gated head's robust hinge "
                     "ε‖θ‖ ignores gates that flip inside the ball, so it bounds nothing; "
                     "train a robust convex ReLU head (gated=False) instead")
  d = X.shape[1]
  if gates is None:
    if not (isinstance(num_patterns, (int, np.integer)) and num_patterns >= 1):
      raise ValueError(f"num_patterns must be an integer >= 1, got {num_patterns!r}")
    if key is None:
      raise ValueError("key must be a jax.random key when gates are not given")
    gates = np.asarray(sample_gates(key, d, int(num_patterns)), np.float64)
    if bias:
      gates = np.concatenate([np.eye(d)[:, -1:], gates], axis=1)  # kept first by unique_gates
    gates = unique_gates(X, gates)
  else:
    gates = np.asarray(gates, np.float64)
    if gates.ndim != 2 or gates.shape[0] != d or gates.shape[1] < 1:
      raise ValueError(f"gates must have shape (d, P) = ({d}, P ≥ 1) to match X (with bias, "
                       f"one row more than X's columns), "
                       f"got shape {gates.shape}")
    if not np.all(np.isfinite(gates)):
      raise ValueError("gates must be finite; they hold NaN or inf")
  if eps > 0 and not gated and drop_empty_cones:
    keep = robust_cone_has_interior(X, gates, float(eps), p)
    gates = gates[:, keep | (np.arange(keep.size) == 0) if not keep.any() else keep]
  D = (X @ gates >= 0).astype(np.float64)
  return Problem(X, D, gates, targets, binary, bool(gated), loss, float(eps), NORMS[p],
                 float(beta))
