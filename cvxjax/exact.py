"""Exact CVXPY oracle for one binary polynomial head (MATH.md §2–§3).

Solves the convex lift of the two-layer polynomial network with the hinge loss, either plainly
(r = 0) or adversarially over the l2 ball of radius r > 0 through the paper's S-lemma SDP. It is
slow (n LMIs of size d+1) and meant as the reference that the first-order solvers are checked
against. CVXPY is an optional dependency, so it is imported inside `solve_poly_sdp`.
"""

import warnings
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

_SOLVERS = ("CLARABEL", "SCS")

# Interior-point methods stall near 1e-8 relative gap on these degenerate SDPs (most r = 0 problems
# end "AlmostSolved" at eps = 1e-9), so Clarabel's reduced tolerances are set to this floor and its
# AlmostSolved status, which then certifies gap and feasibility below it, is accepted.
CLARABEL_ACCURACY_FLOOR = 1e-6


def _check_inputs(X, y, r, beta, activation) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
  """Light validation; returns X as (n, d) float64, y as (n,) float64 and (a, b, c)."""
  X = np.asarray(X, dtype=np.float64)
  y = np.asarray(y, dtype=np.float64)
  if X.ndim != 2:
    raise ValueError(f"X must have shape (n, d), got shape {X.shape}")
  if y.ndim != 1 or y.shape[0] != X.shape[0]:
    raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got shape {y.shape}")
  if not np.all(np.isin(y, (-1.0, 1.0))):
    raise ValueError(f"y must take values in {{-1, +1}}, got {np.unique(y)}")
  if not r >= 0:
    raise ValueError(f"r must be >= 0, got {r}")
  if not beta > 0:
    raise ValueError(f"beta must be > 0, got {beta}")
  if len(activation) != 3:
    raise ValueError(f"activation must be a triple (a, b, c), got {activation}")
  return X, y, tuple(float(v) for v in activation)


def _feature_matrix(X: np.ndarray, activation: Sequence[float]) -> np.ndarray:
  """Rows vec_C(Φ(x_i)) with Φ(x) = [[a xxᵀ, (b/2)x], [(b/2)xᵀ, c]], so f_D(x_i) = row_i · vec_C(D).

  Args:
    X: (n, d) inputs.
    activation: (a, b, c).

  Returns:
    (n, (d+1)²) array.
  """
  a, b, c = activation
  n, d = X.shape
  phi = np.empty((n, d + 1, d + 1))
  phi[:, :d, :d] = a * X[:, :, None] * X[:, None, :]
  phi[:, :d, d] = 0.5 * b * X
  phi[:, d, :d] = 0.5 * b * X
  phi[:, d, d] = c
  return phi.reshape(n, (d + 1) ** 2)


def _lmi_operators(X: np.ndarray, y: np.ndarray, r: float, activation: Sequence[float]):
  """Sparse linear maps giving the n stacked S-lemma LMI matrices in row-major order.

  With D̃ = [[a D₁, (b/2) d₂], [(b/2) d₂ᵀ, c d₄]] and H_i = [[I, x_i], [0, 1]], the LMI of example i
  is M_i = y_i H_iᵀ D̃ H_i + λ_i diag(I, −r²) − w_i e eᵀ: its blocks are A_i + λ_i I,
  g_i/2 = y_i (a D₁x_i + (b/2) d₂) and y_i f_D(x_i) − w_i − λ_i r² as in MATH.md §3, and it is
  symmetric by construction.

  Args:
    X: (n, d) inputs.
    y: (n,) labels in {-1, +1}.
    r: radius of the l2 ball.
    activation: (a, b, c).

  Returns:
    (scale, K, L, W) where scale is the (d+1, d+1) elementwise weight with D̃ = scale ∘ D, and
    K: (n (d+1)², (d+1)²), L and W: (n (d+1)², n) sparse, so that
    vec_C([M_1; ...; M_n]) = K vec_C(D̃) + L λ + W w.
  """
  a, b, c = activation
  n, d = X.shape
  m = d + 1
  scale = np.full((m, m), 0.5 * b)
  scale[:d, :d] = a
  scale[d, d] = c
  blocks = []
  for i in range(n):
    # H_i is identity plus one column, so kron(H_iᵀ, H_iᵀ) stays sparse (about 4 m² nonzeros).
    h = sp.eye(m, format="csr") + sp.csr_matrix((X[i], (np.arange(d), np.full(d, d))), shape=(m, m))
    blocks.append(y[i] * sp.kron(h.T, h.T, format="csr"))
  K = sp.vstack(blocks, format="csr")
  lam_block = np.diag(np.append(np.ones(d), -r**2)).reshape(m * m, 1)
  w_block = np.zeros((m * m, 1))
  w_block[-1, 0] = -1.0
  L = sp.kron(sp.eye(n), sp.csr_matrix(lam_block), format="csr")
  W = sp.kron(sp.eye(n), sp.csr_matrix(w_block), format="csr")
  return scale, K, L, W


def _solver_kwargs(cp, solver: str, eps: float, verbose: bool) -> dict:
  """Maps the solver name and tolerance onto CVXPY's `solve` keyword arguments."""
  if not eps > 0:
    raise ValueError(f"eps must be > 0, got {eps}")
  name = str(solver).upper()
  # The batched LMI is a 3-D expression, which only CVXPY's SCIPY backend canonicalises.
  common = {"verbose": verbose, "canon_backend": cp.SCIPY_CANON_BACKEND}
  if name == "CLARABEL":
    almost = max(eps, CLARABEL_ACCURACY_FLOOR)
    return dict(solver=cp.CLARABEL, tol_gap_abs=eps, tol_gap_rel=eps, tol_feas=eps,
                reduced_tol_gap_abs=almost, reduced_tol_gap_rel=almost, reduced_tol_feas=almost,
                max_iter=500, **common)
  if name == "SCS":
    # SCS is first order: tight tolerances need many iterations.
    return dict(solver=cp.SCS, eps_abs=eps, eps_rel=eps, max_iters=1_000_000, **common)
  raise ValueError(f"solver must be one of {_SOLVERS}, got {solver!r}")


def _accepted_statuses(cp, solver_name: str) -> tuple[str, ...]:
  """Statuses taken as solved: Clarabel's AlmostSolved is certified by its reduced tolerances."""
  if solver_name == cp.CLARABEL:
    return (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)
  return (cp.OPTIMAL,)


def solve_poly_sdp(X, y, *, r, beta, activation, solver="CLARABEL", eps=1e-9, verbose=False):
  """Solves the (adversarial) hinge-loss training problem of one polynomial head exactly.

  Minimises Σ_i (1 − m_i)₊ + β (z₄ + z′₄) over Z, Z′ ⪰ 0 with tr(Z₁) = z₄ and tr(Z′₁) = z′₄,
  where m_i = y_i f_D(x_i) for r = 0 and, for r > 0, the worst case over ‖δ‖₂ ≤ r written with
  the S-lemma as one LMI of size d+1 per example (MATH.md §3).

  Args:
    X: (n, d) float inputs.
    y: (n,) labels in {-1, +1}.
    r: radius of the l2 ball, >= 0.
    beta: regularisation weight, > 0.
    activation: (a, b, c) with σ(t) = a t² + b t + c.
    solver: "CLARABEL" or "SCS".
    eps: solver tolerance (Clarabel gap and feasibility, SCS eps_abs and eps_rel). Clarabel's
      AlmostSolved is accepted when it meets max(eps, CLARABEL_ACCURACY_FLOOR).
    verbose: passed to the solver.

  Returns:
    (Z, Zp, value): Z and Zp are (d+1, d+1) float64 arrays, value is the optimal objective (float).

  Raises:
    ValueError: on invalid arguments, an unknown solver, or a failed or inaccurate solve.
  """
  import cvxpy as cp  # Optional dependency: only the oracle needs it.

  X, y, activation = _check_inputs(X, y, r, beta, activation)
  kwargs = _solver_kwargs(cp, solver, eps, verbose)
  n, d = X.shape
  m = d + 1

  Z = cp.Variable((m, m), PSD=True)
  Zp = cp.Variable((m, m), PSD=True)
  D = Z - Zp
  constraints = [cp.trace(Z[:d, :d]) == Z[d, d], cp.trace(Zp[:d, :d]) == Zp[d, d]]
  regulariser = beta * (Z[d, d] + Zp[d, d])

  if r == 0:
    margins = cp.multiply(y, _feature_matrix(X, activation) @ cp.vec(D, order="C"))
  else:
    scale, K, L, W = _lmi_operators(X, y, r, activation)
    lam = cp.Variable(n, nonneg=True)
    margins = cp.Variable(n)  # w_i, a lower bound on the worst-case margin m_i.
    stacked = K @ cp.vec(cp.multiply(scale, D), order="C") + L @ lam + W @ margins
    constraints.append(cp.reshape(stacked, (n, m, m), order="C") >> 0)

  problem = cp.Problem(cp.Minimize(cp.sum(cp.pos(1 - margins)) + regulariser), constraints)
  _solve_checked(cp, problem, kwargs)
  return (np.asarray(Z.value, dtype=np.float64), np.asarray(Zp.value, dtype=np.float64),
          float(problem.value))


def _solve_checked(cp, problem, kwargs: dict) -> None:
  """Solves a CVXPY problem and raises ValueError unless its status is accepted."""
  accepted = _accepted_statuses(cp, kwargs["solver"])
  try:
    with warnings.catch_warnings():
      # Inaccurate statuses are judged below, so CVXPY's generic warning is redundant.
      warnings.filterwarnings("ignore", message="Solution may be inaccurate")
      problem.solve(**kwargs)
  except cp.error.SolverError as err:
    raise ValueError(
        f"{kwargs['solver']} failed (solver error or numerical failure): {err}") from err
  if problem.status not in accepted:
    raise ValueError(f"{kwargs['solver']} returned status {problem.status!r}; accepted: {accepted}")


def solve_relu(problem, *, solver: str = "CLARABEL", eps: float = 1e-9,
               verbose: bool = False) -> np.ndarray:
  """Solves a convex ReLU / gated-ReLU training problem (MATH.md §4) exactly with CVXPY.

  Args:
    problem: a validated `cvxjax.core.relu.Problem` (inputs, patterns, targets, loss, ball, β).
    solver: "CLARABEL" or "SCS".
    eps: solver tolerance.
    verbose: passed to the solver.

  Returns:
    (S, P, d, C) float64 weights: [v, w] for ReLU, [u] for gated ReLU.
  """
  import cvxpy as cp  # Optional dependency: only the oracle needs it.

  kwargs = _solver_kwargs(cp, solver, eps, verbose)
  kwargs.pop("canon_backend")
  X, D, t = problem.X, problem.D, problem.targets
  n, d = X.shape
  P = D.shape[1]
  C = t.onehot.shape[1]
  signs = (1.0,) if problem.gated else (1.0, -1.0)
  # V[s][c]: (P, d) weights of output c in block s.
  V = [[cp.Variable((P, d)) for _ in range(C)] for _ in signs]
  # theta[c] = Σ_s σ_s D V[s][c]: row i is θ_i's column c; f_ic = x_iᵀθ_ic.
  theta = [sum(sig * (D @ V[s][c]) for s, sig in enumerate(signs)) for c in range(C)]
  F = [cp.sum(cp.multiply(X, th), axis=1) for th in theta]
  regulariser = problem.beta * sum(cp.sum(cp.norm(V[s][c], 2, axis=1))
                                   for s in range(len(signs)) for c in range(C))
  constraints = []
  if not problem.gated:
    for s in range(len(signs)):
      for c in range(C):
        slack = cp.multiply(2.0 * D - 1.0, X @ V[s][c].T)  # (n, P)
        need = problem.eps * cp.norm(V[s][c], problem.q, axis=1)  # (P,)
        constraints.append(slack >= np.ones((n, 1)) @ cp.reshape(need, (1, P), order="C"))
  if problem.loss == "squared":
    loss = 0.5 * sum(cp.sum_squares(F[c] - t.onehot[:, c]) for c in range(C))
  elif problem.binary:
    slack = 1 - cp.multiply(t.labels, F[0])
    if problem.eps > 0:
      slack = slack + problem.eps * cp.norm(theta[0], problem.q, axis=1)
    loss = cp.sum(cp.pos(slack))
  else:
    labels = np.asarray(t.labels)
    pick = [np.diag((labels == c).astype(float)) for c in range(C)]
    theta_true = sum(pick[c] @ theta[c] for c in range(C))
    f_true = sum(cp.multiply(labels == c, F[c]) for c in range(C))
    loss = 0
    for c in range(C):
      rows = np.flatnonzero(labels != c)
      slack = 1 - f_true[rows] + F[c][rows]
      if problem.eps > 0:
        slack = slack + problem.eps * cp.norm((theta_true - theta[c])[rows], problem.q, axis=1)
      loss = loss + cp.sum(cp.pos(slack))
  _solve_checked(cp, cp.Problem(cp.Minimize(loss + regulariser), constraints), kwargs)
  return np.stack([np.stack([V[s][c].value for c in range(C)], axis=-1)
                   for s in range(len(signs))])
