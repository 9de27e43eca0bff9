"""Convex ReLU and gated-ReLU networks over sampled sign patterns, plain and robust (MATH.md §4).

Gates h_k (columns of a (d, P) matrix) fix the sign patterns D_k = diag(1[X h_k ≥ 0]). The
weights of a head are stacked as W of shape (S, P, d, C): S = 2 blocks [v; w] for convex ReLU
(signs σ = (+1, −1)), S = 1 block [u] for gated ReLU (σ = (+1,)); C = 1 output for a binary
head (labels ±1), C ≥ 2 for a multi-class head with shared patterns. The convex model is

    f_ic = Σ_s σ_s Σ_k D_ik x_iᵀ W[s, k, :, c],        θ_i = Σ_s σ_s Σ_k D_ik W[s, k]  (d, C),

so f_i = x_iᵀθ_i. Robust training against ‖δ‖_p ≤ ε adds ε‖·‖_q (q the dual norm: p = ∞ → q = 1,
p = 2 → q = 2) to every hinge margin, and for ReLU the robust cone constraints
(2D_ik − 1) x_iᵀW[s, k, :, c] ≥ ε‖W[s, k, :, c]‖_q keep each neuron's pattern fixed on the ball.
"""

from typing import NamedTuple, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from cvxjax import certify, sharding, streaming
from cvxjax.poly import check_array, check_labels

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
  import scipy.optimize  # host-side preprocessing
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
  """Frank–Wolfe on min_{λ∈Δ} ‖Aᵀλ‖₂², stopped once the answer relative to ε is certain.

  Returns the norm of the best hull point (an upper bound), or +inf once the Wolfe gap certifies
  that the minimum exceeds ε.
  """
  point = A[np.argmin(np.linalg.norm(A, axis=1))].copy()
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
  """The training loss (MATH.md §4), summed over examples.

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


@flax.struct.dataclass
class ReluHead:
  """A trained convex ReLU or gated-ReLU head.

  A binary head (labels ±1) has C = 1 and predicts sign f; a multi-class head predicts argmax_c f_c.
  On new inputs a ReLU head is the network Σ_k (xᵀv_k)₊ − (xᵀw_k)₊ (equal to the convex model on
  the training set when the cone constraints hold); a gated head is Σ_k 1[xᵀh_k ≥ 0] xᵀu_k.

  Attributes:
    gates: (d, P) gates h_k; pass them to `fit` to reuse the exact patterns.
    weights: (S, P, d, C) stacked weights: [v, w] (S = 2) or [u] (S = 1, gated).
    objective: the training objective at `weights` (loss + β Σ‖·‖₂).
    violation: the largest violation of the (robust) cone constraints (0 for gated heads).
    steps: solver iterations taken.
    gap: a certified bound on objective − optimum (`cvxjax.relu_dual`: a scaled dual point from
      the solver's multipliers or the loss's gradient); None for a streamed fit.
    eps, p: the ball the head was trained against (eps = 0: plain).
    loss: "squared" or "hinge".
    binary: whether the head is binary (C = 1, labels ±1).
  """

  gates: jnp.ndarray
  weights: jnp.ndarray
  objective: jnp.ndarray
  violation: jnp.ndarray
  steps: jnp.ndarray
  gap: Optional[jnp.ndarray] = None
  eps: float = flax.struct.field(pytree_node=False, default=0.0)
  p: object = flax.struct.field(pytree_node=False, default="inf")
  loss: str = flax.struct.field(pytree_node=False, default="hinge")
  binary: bool = flax.struct.field(pytree_node=False, default=True)

  @property
  def gated(self) -> bool:
    return self.weights.shape[0] == 1

  @property
  def v(self) -> jnp.ndarray:
    """(P, d, C) positive ReLU weights (convex ReLU heads)."""
    return self.weights[0]

  @property
  def w(self) -> jnp.ndarray:
    """(P, d, C) negative ReLU weights (convex ReLU heads)."""
    if self.gated:
      raise AttributeError("a gated head has weights u, not v and w")
    return self.weights[1]

  @property
  def u(self) -> jnp.ndarray:
    """(P, d, C) gated-ReLU weights (gated heads)."""
    if not self.gated:
      raise AttributeError("a convex ReLU head has weights v and w, not u")
    return self.weights[0]

  def scores(self, X: jnp.ndarray) -> jnp.ndarray:
    """f(x) for every row of X: (n,) for a binary head, (n, C) otherwise."""
    X = jnp.asarray(X, self.weights.dtype)
    if self.gated:
      f = scores(self.weights, X, sign_patterns(X, self.gates))
    else:
      f = jnp.einsum("spnc,s->nc", jax.nn.relu(jnp.einsum("nd,spdc->spnc", X, self.weights)),
                     neuron_signs(False))
    return f[:, 0] if self.binary else f

  def predict(self, X: jnp.ndarray) -> jnp.ndarray:
    """Labels: ±1 for a binary head, argmax_c f_c (in 0..C−1) otherwise; shape (n,)."""
    f = self.scores(X)
    return jnp.where(f >= 0, 1, -1) if self.binary else jnp.argmax(f, axis=-1)


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


def recover(head: ReluHead, *, prune: float = 1e-10):
  """The two-layer network of a head (MATH.md §4): u = v_k/√‖v_k‖, α = ±√‖v_k‖ per neuron.

  Neurons with ‖·‖₂ ≤ prune · max‖·‖₂ are dropped. For a gated head the network is gated:
  evaluate it with `network_scores(W1, w2, X, gates=G)`, G being `head.gates` repeated per
  neuron, which `recover` returns as a third element only for gated heads.

  Returns:
    (W1 (d, H), w2 (H,) or (H, C)) for a ReLU head; (W1, w2, G (d, H)) for a gated head.
  """
  W = np.asarray(head.weights)
  S, P, d, C = W.shape
  norms = np.linalg.norm(W, axis=2)  # (S, P, C)
  keep = np.argwhere(norms > prune * max(norms.max(), np.finfo(W.dtype).tiny))
  s, k, c = keep.T
  scale = np.sqrt(norms[s, k, c])
  W1 = W[s, k, :, c].T / scale
  sigma = np.asarray(neuron_signs(S == 1))[s]
  w2 = np.zeros((len(keep), C))
  w2[np.arange(len(keep)), c] = sigma * scale
  w2 = w2[:, 0] if head.binary else w2
  if S == 1:
    return W1, w2, np.asarray(head.gates)[:, k]
  return W1, w2


def certified_radius(head: ReluHead, X, y, *, backbone_lipschitz: float = 1.0) -> jnp.ndarray:
  """ℓ₂ radii certified for the head's network, shape (n,), 0 where x_i is misclassified.

  A ReLU head's recovered network has the Lipschitz margin bound (MATH.md §7,
  `certify.lipschitz_certified_radius`); a gated head, discontinuous at its gates, has the
  gate-aware bound `certify.gated_certified_radius`. Both are sound lower bounds on the distance
  to the decision boundary; `backbone_lipschitz` divides them (radii in the backbone's input).
  """
  if head.gated:
    return certify.gated_certified_radius(head.u, head.gates, X, y,
                                          backbone_lipschitz=backbone_lipschitz)
  W1, w2 = recover(head)
  return certify.lipschitz_certified_radius(W1, w2, X, y, backbone_lipschitz=backbone_lipschitz)


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


def check_problem(X, y, *, eps, p, beta, num_patterns, gates, gated, loss, key,
                  drop_empty_cones=True) -> Problem:
  """Validates the arguments of `fit` / `exact_fit`, samples the gates and, for robust ReLU,
  drops the patterns whose robust cone has no interior (see `robust_cone_has_interior`)."""
  X = check_array(X, "X").astype(np.float64)
  targets, binary = encode_targets(y, X.shape[0])
  if p not in NORMS:
    raise ValueError(f"p must be 2 or 'inf' (the ball's norm), got {p!r}")
  if not (np.isscalar(eps) and np.isfinite(eps) and eps >= 0):
    raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
  if not (np.isscalar(beta) and np.isfinite(beta) and beta > 0):
    raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
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
    gates = unique_gates(X, np.asarray(sample_gates(key, d, int(num_patterns)), np.float64))
  else:
    gates = np.asarray(gates, np.float64)
    if gates.ndim != 2 or gates.shape[0] != d or gates.shape[1] < 1:
      raise ValueError(f"gates must have shape (d, P) = ({d}, P ≥ 1) to match X, "
                       f"got shape {gates.shape}")
    if not np.all(np.isfinite(gates)):
      raise ValueError("gates must be finite; they hold NaN or inf")
  if eps > 0 and not gated and drop_empty_cones:
    keep = robust_cone_has_interior(X, gates, float(eps), p)
    gates = gates[:, keep | (np.arange(keep.size) == 0) if not keep.any() else keep]
  D = (X @ gates >= 0).astype(np.float64)
  return Problem(X, D, gates, targets, binary, bool(gated), loss, float(eps), NORMS[p],
                 float(beta))


def fit(X, y, *, eps: float = 0.0, p="inf", beta: float = 1e-3, num_patterns: int = 100,
        gates=None, gated: bool = False, loss: str = "hinge", solver: str = "auto",
        key: Optional[jax.Array] = None, tol: float = 1e-6, max_steps: Optional[int] = None,
        linear_solver: str = "cholesky", nystrom_rank: int = 0, optimizer=None,
        penalty_rho: float = 10.0, drop_empty_cones: bool = True,
        checkpoint_dir: Optional[str] = None, checkpoint_every: int = 500,
        progress: bool = False, mesh=None, chunk_size: Optional[int] = None) -> ReluHead:
  """Trains a convex ReLU or gated-ReLU head to global optimality (MATH.md §4).

  Solves min_W loss(W) + β Σ‖W[s, k, :, c]‖₂ over the sign patterns of `gates` (sampled from
  `key` and deduplicated when not given), subject for ReLU to the cone constraints, robust
  against ‖δ‖_p ≤ eps when eps > 0 (Bai, Gautam & Sojoudi; exact worst case of the model with
  its patterns held fixed on the ball).

  Every in-memory fit returns a certified `gap` (objective − optimum ≤ gap, `cvxjax.relu_dual`)
  and, for convex ReLU, weights that satisfy the (robust) cone constraints up to round-off: a
  final step moves each neuron into its cone along an interior direction (or zeroes it), and the
  objective and gap are those of the moved weights. A fit whose relative gap ends above `tol`
  warns with the gap and the cone violation it reached.

  Solvers:
    "admm" (= "auto"): the exact ADMM of `cvxjax.solvers.admm`, for every loss, ball and head;
      stops when both relative residuals are below `tol` or the relative gap is (checked every
      `checkpoint_every` steps).
    "apg": FISTA with restarts (gated ReLU, plain, squared loss).
    "al": augmented Lagrangian with an inner FISTA (convex ReLU, plain, squared loss).
    "barrier": the interior-point method of `cvxjax.solvers.relu_barrier` (convex ReLU, plain,
      squared loss or binary hinge; float64): strictly feasible weights and a certified gap
      (`head.gap`), stopping when the gap is below `tol` relative to the objective.
    "penalty": `optimizer` (default optax.adam(1e-2)) on objective + penalty_rho·(violation)₊
      for `max_steps` steps: the reference code's baseline, approximate.

  Args:
    X: (n, d) inputs, finite.
    y: (n,) labels in {−1, +1} (binary) or integers 0..C−1 (multi-class, shared patterns).
    eps: radius of the adversary's ball, ≥ 0 (requires loss="hinge" when > 0).
    p: the ball's norm, 2 or "inf" (the weights then pay the dual norm: ℓ₂ or ℓ₁).
    beta: regularisation weight β > 0.
    num_patterns: gates to sample (before duplicate patterns are dropped), ≥ 1.
    gates: (d, P) gates to reuse exactly, instead of sampling.
    gated: train a gated-ReLU head (no constraints) instead of a convex ReLU one. Plain only:
      with fixed gates ε‖θ‖ is no bound on a gated head's worst case (a gate within ε of x
      flips inside the ball), so eps > 0 with gated=True is refused.
    loss: "hinge" (binary, or Σ_{c≠y} multi-class hinge) or "squared" (targets ±1 / one-hot).
    solver: "auto", "admm", "apg", "al", "barrier" or "penalty".
    key: jax.random key for the gates (and the penalty method's start, Nyström's sketch).
    tol: the relative certified gap asked for (and the relative residual at which "admm",
      "apg" and "al" stop).
    max_steps: iteration limit (defaults per solver).
    linear_solver: ADMM's linear solves without eps: "cholesky" (an n×n factor, cached) or
      "cg" (matrix-free, for n too large to factor).
    nystrom_rank: rank of CG's Nyström preconditioner (0: none).
    optimizer: optax transformation for "penalty".
    penalty_rho: the penalty weight of "penalty".
    drop_empty_cones: for robust ReLU, drop the patterns whose robust cone has no interior
      (their neurons are zero at the optimum; see `robust_cone_has_interior`).
    checkpoint_dir: if given, the solver state is saved there every `checkpoint_every` steps
      and a run resumes from the latest checkpoint, ending where an uninterrupted run does.
    checkpoint_every: steps between checkpoints (and progress reports).
    progress: show a progress bar with the objective.
    mesh: a `cvxjax.sharding.make_mesh` mesh: examples split over its "examples" axis (padded
      to a multiple of it by rows that count nowhere, except for "barrier", whose cones need
      every row), sign patterns over its "model" axis. None: one device.
    chunk_size: stream X from the host (a NumPy array or memory map) in chunks of this many
      examples, one chunk on the device at a time (`cvxjax.streaming`); solvers "apg" and
      "penalty" (every loss and ball: the robust head larger than device memory).

  Returns:
    A `ReluHead` with its gates, weights, exact objective, constraint violation and gap.

  Raises:
    ValueError: if an argument is malformed, or the solver does not handle the problem.
  """
  problem = check_problem(X, y, eps=eps, p=p, beta=beta, num_patterns=num_patterns, gates=gates,
                          gated=gated, loss=loss, key=key, drop_empty_cones=drop_empty_cones)
  from cvxjax.solvers import relu_driver  # the solvers import this module
  solver = relu_driver.check_solver(solver, problem)
  if not (np.isscalar(tol) and tol > 0):
    raise ValueError(f"tol must be a number > 0, got {tol!r}")
  if linear_solver not in ("cholesky", "cg"):
    raise ValueError(f"linear_solver must be 'cholesky' or 'cg', got {linear_solver!r}")
  if not (isinstance(nystrom_rank, (int, np.integer)) and 0 <= nystrom_rank <= X.shape[0]):
    raise ValueError(f"nystrom_rank must be an integer in [0, n], got {nystrom_rank!r}")
  if checkpoint_every < 1:
    raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
  sharding.check_mesh(mesh)
  if solver == "barrier" and (rows := sharding.padding(problem.X.shape[0], mesh)):
    raise ValueError(f"solver='barrier' needs n divisible by the mesh's example devices (a "
                     f"padding row would close its cones); X has n = {problem.X.shape[0]}, "
                     f"{rows} short of a multiple of {mesh.shape[sharding.EXAMPLES]}")
  streaming.check_chunk_size(chunk_size, problem.X.shape[0])
  if chunk_size is not None and (solver not in ("apg", "penalty") or mesh is not None):
    raise ValueError("chunk_size streams solver='apg' or solver='penalty' on one device; got "
                     f"solver={solver!r}, mesh={mesh!r}")
  key = jax.random.key(0) if key is None else key
  return relu_driver.fit_relu(problem, solver=solver, tol=float(tol), max_steps=max_steps,
                              linear_solver=linear_solver, nystrom_rank=int(nystrom_rank),
                              optimizer=optimizer, penalty_rho=float(penalty_rho), key=key,
                              checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                              progress=progress, mesh=mesh, chunk_size=chunk_size)


def exact_fit(X, y, *, eps: float = 0.0, p="inf", beta: float = 1e-3, num_patterns: int = 100,
              gates=None, gated: bool = False, loss: str = "hinge", key=None,
              drop_empty_cones: bool = True, solver: str = "CLARABEL",
              verbose: bool = False) -> ReluHead:
  """The same problem as `fit`, solved with CVXPY: an oracle for small problems.

  Args:
    X, y, eps, p, beta, num_patterns, gates, gated, loss, key, drop_empty_cones: as for `fit`.
    solver: a CVXPY conic solver ("CLARABEL" or "SCS").
    verbose: print the solver's log.

  Returns:
    A `ReluHead` whose objective and violation are evaluated exactly at the solver's weights.
  """
  problem = check_problem(X, y, eps=eps, p=p, beta=beta, num_patterns=num_patterns, gates=gates,
                          gated=gated, loss=loss, key=key, drop_empty_cones=drop_empty_cones)
  from cvxjax import exact  # cvxpy is an optional extra
  from cvxjax.solvers import relu_driver
  W = exact.solve_relu(problem, solver=solver, verbose=verbose)
  return relu_driver.head_from_weights(problem, W)
