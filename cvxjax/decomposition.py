"""Neural decomposition: the two-layer network behind a point of the convex lift (MATH.md §2).

A matrix Z of K = {Z ⪰ 0 : ⟨G, Z⟩ = 0}, G = diag(I_d, −1), is a sum of rank-one points
s²[u; 1][u; 1]ᵀ with ‖u‖ = 1, i.e. of neurons α σ(uᵀx) with α = s². `neural_decomposition`
finds them by pairwise rotations of a factorisation of Z; `decompose` turns a head's matrices
(Z_c, Z′_c) into first-layer weights U and second-layer weights α, and `network_predict`
evaluates the recovered network f(x) = Σ_j α_j σ(u_jᵀx).

The decomposition runs on the host in numpy float64: it is a small sequential loop (at most
rank − 1 rotations per matrix) done once after training.
"""

import jax.numpy as jnp
import numpy as np

from cvxjax.core.activations import DEFAULT_ACTIVATION, Quadratic, polynomial


def _check_square(Z, name: str) -> np.ndarray:
  """Z as a finite float64 (m, m) array with m ≥ 2, or ValueError naming it."""
  Z = np.asarray(Z, dtype=np.float64)
  if Z.ndim != 2 or Z.shape[0] != Z.shape[1] or Z.shape[0] < 2:
    raise ValueError(f"{name} must be a square (d+1, d+1) array with d >= 1, got shape {Z.shape}")
  if not np.all(np.isfinite(Z)):
    raise ValueError(f"{name} must be finite; it holds NaN or inf")
  return Z


def neural_decomposition(Z: np.ndarray, tol: float = 1e-12) -> np.ndarray:
  """Rows p_k with Σ_k p_k p_kᵀ = Z and p_kᵀ G p_k = 0, by the rotations of MATH.md §2.

  Z is factored as Σ_k λ_k q_k q_kᵀ (eigh). Eigenvalues ≤ (d+1)·eps·λ_max are dropped: they are
  round-off (an exact zero computed), and their rows would be pure noise; a Z with round-off
  negative eigenvalues gives its PSD part. Then, while some g_k = p_kᵀGp_k is positive and some
  negative, the largest positive g_i and the most negative g_j are paired and rotated:
  (p_i + t p_j)/√(1+t²) and (p_j − t p_i)/√(1+t²), with t the root of smaller |t| of
  g_i + 2t p_iᵀGp_j + t² g_j = 0. The first has g = 0, the pair's Σ ppᵀ is unchanged, and the
  loop ends after at most rank − 1 rotations.

  A Z slightly off K (κ = ⟨G, Z⟩ / tr Z ≠ 0, e.g. 1e-15 after a projection) cannot have every
  g = 0; the rotations then use G − κI, whose inner product with Z is zero, so the residual is
  spread evenly: every row ends with pᵀGp = κ‖p‖² instead of one small row carrying it all.

  Args:
    Z: (d+1, d+1) symmetric PSD matrix, ideally in K; any float dtype (computed in float64).
    tol: relative tolerance: rotations go on while some row has g_k > tol‖p_k‖² and another
      g_k < −tol‖p_k‖² (g taken with G − κI).

  Returns:
    (k, d+1) float64 array P, k ≤ d+1 the number of eigenvalues kept, with
    Σ_k p_k p_kᵀ = Z to round-off and |p_kᵀGp_k| ≤ (tol + |κ|)‖p_k‖² for every row.

  Raises:
    ValueError: if Z is not a finite square matrix.
  """
  Z = _check_square(Z, "Z")
  Z = 0.5 * (Z + Z.T)
  w, V = np.linalg.eigh(Z)
  keep = w > Z.shape[0] * np.finfo(np.float64).eps * max(w[-1], 0.0)
  P = (V[:, keep] * np.sqrt(w[keep])).T
  if P.shape[0] == 0:
    return P
  form = np.ones(Z.shape[0])
  form[-1] = -1.0
  # Shift G so that its inner product with the factored matrix is exactly zero (see above).
  norms = np.sum(P**2, axis=1)
  form = form - np.sum((P**2) @ form) / np.sum(norms)
  g = (P**2) @ form
  for _ in range(4 * P.shape[0]):  # at most rank − 1 rotations are needed
    gamma = g / np.sum(P**2, axis=1)
    positive, negative = gamma > tol, gamma < -tol
    if not (positive.any() and negative.any()):
      break
    i = int(np.argmax(np.where(positive, g, -np.inf)))
    j = int(np.argmin(np.where(negative, g, np.inf)))
    h = (P[i] * form) @ P[j]
    # g_i g_j < 0, so the discriminant is positive; g_i / q is the root of smaller |t|.
    q = -(h + np.copysign(np.sqrt(h * h - g[i] * g[j]), h))
    t = g[i] / q
    scale = 1.0 / np.sqrt(1.0 + t * t)
    P[i], P[j] = (P[i] + t * P[j]) * scale, (P[j] - t * P[i]) * scale
    g[i], g[j] = (P[i] ** 2) @ form, (P[j] ** 2) @ form
  return P


def decompose(Z: np.ndarray, Zp: np.ndarray, *, binary: bool,
              prune: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
  """First- and second-layer weights (U, α) of the network that a head's matrices encode.

  Each row p = [c; s] of `neural_decomposition(Z_c)` is a neuron u = c/s, α = s² of head c
  (from Z′_c: α = −s²), so that α [u; 1][u; 1]ᵀ = ppᵀ exactly and the network reproduces
  f_c(x) = ⟨Z_c − Z′_c, Φ(x)⟩ to round-off on any input. u is not renormalised: ‖u‖ = 1 up to
  the round-off of Z's membership in K. Neurons with |α| ≤ prune · max|α| of their head are
  dropped (they are round-off, or an interior-point solver's residue).

  Args:
    Z, Zp: (C, d+1, d+1) matrices of K, one pair per head (a `PolyHead`'s Z and Zp).
    binary: whether the head is binary (C = 1).
    prune: relative size below which a neuron is dropped, ≥ 0.

  Returns:
    U: (M, d) float64 first-layer weights, M ≤ 2(d+1)C, all heads' neurons stacked.
    alpha: float64 second-layer weights, (M,) if binary, else (M, C) with the neuron of head c
      nonzero only in column c.

  Raises:
    ValueError: if the shapes disagree, binary is True with C ≠ 1, or prune < 0.
  """
  Z, Zp = np.asarray(Z, dtype=np.float64), np.asarray(Zp, dtype=np.float64)
  if Z.ndim != 3 or Z.shape[1] != Z.shape[2] or Z.shape[1] < 2:
    raise ValueError(f"Z must have shape (C, d+1, d+1) with d >= 1, got shape {Z.shape}")
  if Zp.shape != Z.shape:
    raise ValueError(f"Zp must have the shape of Z {Z.shape}, got shape {Zp.shape}")
  if binary and Z.shape[0] != 1:
    raise ValueError(f"binary heads have C = 1, but Z has C = {Z.shape[0]}")
  if not (np.isscalar(prune) and prune >= 0):
    raise ValueError(f"prune must be a number >= 0, got {prune!r}")
  heads, d = Z.shape[0], Z.shape[1] - 1
  weights, outputs = [], []
  for c in range(heads):
    rows = [neural_decomposition(Z[c]), neural_decomposition(Zp[c])]
    P = np.concatenate(rows)
    sign = np.concatenate([np.ones(len(rows[0])), -np.ones(len(rows[1]))])
    alpha = sign * P[:, -1] ** 2
    if alpha.size == 0:
      continue
    keep = np.abs(alpha) > prune * np.max(np.abs(alpha))
    weights.append(P[keep, :-1] / P[keep, -1:])
    column = np.zeros((int(keep.sum()), heads))
    column[:, c] = alpha[keep]
    outputs.append(column)
  U = np.concatenate(weights) if weights else np.zeros((0, d))
  alpha = np.concatenate(outputs) if outputs else np.zeros((0, heads))
  return U, (alpha[:, 0] if binary else alpha)


def network_predict(U: jnp.ndarray, alpha: jnp.ndarray, X: jnp.ndarray,
                    activation: Quadratic = DEFAULT_ACTIVATION) -> jnp.ndarray:
  """The two-layer network f(x) = Σ_j α_j σ(u_jᵀx) on every row of X.

  Args:
    U: (M, d) first-layer weights.
    alpha: (M,) or (M, C) second-layer weights.
    X: (n, d) inputs.
    activation: the coefficients (a, b, c) of σ.

  Returns:
    (n,) outputs if alpha is 1-D, else (n, C), as a jax array in the inputs' promoted dtype.
  """
  X, U, alpha = jnp.asarray(X), jnp.asarray(U), jnp.asarray(alpha)
  return polynomial(X @ U.T, activation) @ alpha
