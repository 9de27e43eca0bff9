"""Duality-gap certificates for convex ReLU and gated-ReLU heads, plain and robust.

See docs/math.md §4.

Every head solves  min_W ℓ(A W) + β Σ_g ‖W_g‖₂  s.t. W_g ∈ K_g  over the groups g = (s, k, c),
with A the loss map (the scores F W, or for a robust hinge the pair weights Ξ = E Θ W) and K_g the
neuron's cone: {w : a_iᵀw ≥ ε‖w‖_q ∀i}, a_i = (2D_ik − 1) x_i (ReLU; ε = 0 when plain), or all
of R^d (gated). Its Lagrange dual is

    max_{ν, z}  −ℓ*(ν)   s.t.  ‖(Aᵀν)_g − z_g‖₂ ≤ β,  z_g ∈ K_g*,

and K_g* ⊇ {G_gᵀλ − u : λ ≥ 0, ‖u‖_p ≤ ε Σ_i λ_i} (G_g w = (a_iᵀw)_i, p the dual norm of q).
Given λ, the best u leaves the residual dist_p(Aᵀν − G_gᵀλ, ε Σλ): the ℓ₂ distance to an ℓ_p
ball. Any ν in the domain of ℓ* and λ ≥ 0 thus give a lower bound once the pair (ν, λ) is
scaled by θ = min(1, β / max_g dist_g) (the dual cone and the domains below are scaled sets):

  - squared loss, ℓ(F) = ½‖F − Y‖²: −ℓ*(θν) = −½θ²‖ν‖² − θ⟨ν, Y⟩ (θ chosen best in [0, θ_max]);
  - hinge, ℓ = Σ_pairs (1 − m)₊ with m = E F the pair margins: ν = −Eᵀα, α ∈ [0, 1], −ℓ* = Σα;
  - robust hinge, per pair (1 − xᵀξ + ε‖ξ‖_q)₊ = max_{α∈[0,1], ‖u‖_p ≤ αε} α + (u − αx)ᵀξ:
    ν = u − αx with ‖ν + αx‖_p ≤ αε, −ℓ* = Σα.

The multipliers come from the solver (ADMM's scaled duals, the augmented Lagrangian's λ) or from
the loss's gradient at the weights; a few projected-gradient steps on the λ's refine them. The
objective side needs feasible weights: `restore_feasibility` moves each neuron along a direction
strictly inside its cone (`interior_directions`) by the least amount that makes it feasible, or
zeroes it, and the gap is the objective there minus the bound.
"""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from cvxjax.core import relu

_BISECTIONS = 100  # interval searches on [0, 1] for the robust hinge's α: past float64 resolution


# ----------------------------------------------------------------------------- the loss side


def plain_hinge_point(mu: jnp.ndarray, targets: relu.Targets):
  """Projects a score-space multiplier μ (n, C) onto the hinge's dual domain {−Eᵀα : α ∈ [0,1]}.

  α is read from μ as the solvers' multipliers hold it: −y_iμ_i (binary), μ_ic for c ≠ y_i.

  Returns:
    (ν (n, C), Σα): the dual point and its value −ℓ*(ν).
  """
  binary = targets.pairs.shape[-1] == 1 and mu.shape[-1] == 1
  raw = -mu * targets.labels[:, None] if binary else mu
  alpha = targets.pairs * jnp.clip(raw, 0.0, 1.0)
  _, transpose = jax.vjp(lambda F: relu.pair_margins(F, targets), mu)
  return -transpose(alpha)[0], jnp.sum(alpha)


def robust_hinge_point(nu: jnp.ndarray, X: jnp.ndarray, pairs: jnp.ndarray, eps, q: int):
  """Projects pair multipliers ν (n, d, K) onto the robust hinge's dual domain.

  Per pair, φ(α) = ‖ν + αx‖_p − αε is convex; α is the largest point of [0, 1] with φ ≤ 0, or
  φ's minimiser when there is none, and ν moves to the ℓ_p ball's projection: ν′ = u − αx with
  u = proj_{‖·‖_p ≤ αε}(ν + αx) (ν′ = ν when ν is already in the domain).

  Args:
    nu: (n, d, K) multipliers of the pair weights ξ. X: (n, d) inputs. pairs: (n, K) 0/1.
    eps, q: the ball (ε > 0, q the weights' dual norm: 1 or 2).

  Returns:
    (ν′ (n, d, K), Σα).
  """
  x = X[:, :, None]
  p_norm = lambda V: jnp.max(jnp.abs(V), axis=1) if q == 1 else relu.l2_norm(V, axis=1)
  phi = lambda a: p_norm(nu + a[:, None, :] * x) - a * eps

  def ternary(_, bounds):  # the minimiser of a convex function
    lo, hi = bounds
    m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
    left = phi(m1) <= phi(m2)
    return jnp.where(left, lo, m1), jnp.where(left, m2, hi)

  def bisect(_, bounds):  # the last point with φ ≤ 0 (φ nondecreasing past its minimiser)
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    ok = phi(mid) <= 0
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

  zeros, ones = jnp.zeros(pairs.shape, nu.dtype), jnp.ones(pairs.shape, nu.dtype)
  lo, hi = jax.lax.fori_loop(0, _BISECTIONS, ternary, (zeros, ones))
  best = 0.5 * (lo + hi)
  last, _ = jax.lax.fori_loop(0, _BISECTIONS, bisect, (best, ones))
  alpha = jnp.where(phi(ones) <= 0, 1.0, jnp.where(phi(best) <= 0, last, best))
  alpha = alpha * pairs
  shifted = nu + alpha[:, None, :] * x
  radius = (alpha * eps)[:, None, :]
  if q == 1:
    u = jnp.clip(shifted, -radius, radius)
  else:
    u = shifted * jnp.minimum(1.0, radius / jnp.maximum(relu.l2_norm(shifted, 1)[:, None, :],
                                                         jnp.finfo(nu.dtype).tiny))
  return (u - alpha[:, None, :] * x) * pairs[:, None, :], jnp.sum(alpha)


def loss_map(W: jnp.ndarray, X: jnp.ndarray, D: jnp.ndarray, targets: relu.Targets, robust: bool):
  """A W: the scores F W (n, C), or for a robust hinge the pair weights E Θ W (n, d, K)."""
  if robust:
    return relu.pair_margins(relu.example_weights(W, D), targets)
  return relu.scores(W, X, D)


def loss_gradient(W, X, D, targets: relu.Targets, *, loss: str, eps, q: int) -> jnp.ndarray:
  """A (sub)gradient of ℓ at A W, in A's range: the multiplier estimate of a primal-only solver."""
  if eps > 0:
    def robust_loss(Xi):
      slack = 1.0 - jnp.sum(X[:, :, None] * Xi, axis=1) + eps * relu.dual_norm(Xi, q, axis=1)
      return jnp.sum(targets.pairs * jnp.maximum(slack, 0.0))
    return jax.grad(robust_loss)(loss_map(W, X, D, targets, True))
  return jax.grad(lambda F: relu.loss_value(F, None, targets, loss, 0.0, q))(relu.scores(W, X, D))


def dual_loss_point(nu, X, targets: relu.Targets, *, loss: str, eps, q: int):
  """ν in ℓ*'s domain and −ℓ*(θν) as (linear, quadratic) coefficients: lin·θ − ½quad·θ²."""
  if eps > 0:
    nu, value = robust_hinge_point(nu, X, targets.pairs, eps, q)
    return nu, value, jnp.zeros_like(value)
  if loss == "hinge":
    nu, value = plain_hinge_point(nu, targets)
    return nu, value, jnp.zeros_like(value)
  return nu, -jnp.vdot(nu, targets.onehot), jnp.vdot(nu, nu)


# ----------------------------------------------------------------------------- the cone side


def cone_residual(B, lam, X, D, eps, q: int):
  """The residual of Bᵀ = Aᵀν against the dual cone: Bᵀ − G_gᵀλ_g − u_g, u_g the best in its ball.

  Args:
    B: (S, P, d, C) Aᵀν. lam: (S, P, n, C) λ ≥ 0, or None (gated: no cones).
    X: (n, d). D: (n, P). eps, q: the robust cones (ε = 0: plain).

  Returns:
    (S, P, d, C) the residual r_g, whose ℓ₂ norm is dist_p(Bᵀ − G_gᵀλ_g, ε Σ_i λ_ig).
  """
  if lam is None:
    return B
  c = B - relu.cone_slacks_adjoint(lam, X, D)
  if eps == 0:
    return c
  radius = eps * jnp.sum(lam, axis=2)[:, :, None, :]
  if q == 1:  # ball of ℓ∞
    return c - jnp.clip(c, -radius, radius)
  norm = relu.l2_norm(c, axis=2)[:, :, None, :]
  return c * jnp.maximum(1.0 - radius / jnp.maximum(norm, jnp.finfo(c.dtype).tiny), 0.0)


def refine_cone_multipliers(lam, B, X, D, counted, eps, q: int, num_steps: int):
  """`num_steps` projected-gradient steps on ½ Σ_g ‖r_g‖² over λ ≥ 0 (λ = 0 on padding rows).

  Args:
    lam: (S, P, n, C) the start. B: (S, P, d, C) Aᵀν. X, D: the data. counted: (n,) bool.
    eps, q: the cones. num_steps: a Python int.
  """
  n, d = X.shape
  # The map λ ↦ (Gᵀλ, εΣλ) has norm² ≤ ‖X‖₂² + ε²n; ½dist² is (1 + d)- (q = 1) or 2-smooth.
  smooth = 1.0 if eps == 0 else (1.0 + d if q == 1 else 2.0)
  step = 1.0 / (smooth * (jnp.linalg.norm(X, 2) ** 2 + eps ** 2 * n))
  mask = counted[None, None, :, None]
  half_square = lambda lam: 0.5 * jnp.sum(cone_residual(B, lam, X, D, eps, q) ** 2)
  grad = jax.grad(half_square)
  body = lambda _, lam: jnp.maximum(lam - step * grad(lam), 0.0) * mask
  return jax.lax.fori_loop(0, num_steps, body, jnp.maximum(lam, 0.0) * mask)


def lower_bound(nu, lam, X, D, targets: relu.Targets, *, loss: str, eps, q: int, beta,
                num_blocks: int, refine_steps: int = 0) -> jnp.ndarray:
  """A lower bound on the head's optimum from multiplier estimates; a scalar.

  Args:
    nu: multipliers of the loss map: (n, C) scores, or (n, d, K) pair weights (robust hinge).
    lam: (S, P, n, C) cone multipliers (any sign: clipped at 0), or None for a gated head.
    X: (n, d). D: (n, P). targets: encoded labels (padding rows: no pairs, zero targets).
    loss, eps, q, beta: the problem. num_blocks: S (1 gated, 2 ReLU).
    refine_steps: projected-gradient steps on λ before the bound (`refine_cone_multipliers`).
  """
  # Non-finite multipliers (a Newton system that round-off broke) bound nothing: the residual's
  # norm reads NaN as 0, which would pass any α.
  finite = jnp.all(jnp.isfinite(nu)) & (True if lam is None else jnp.all(jnp.isfinite(lam)))
  robust = eps > 0
  nu, lin, quad = dual_loss_point(nu, X, targets, loss=loss, eps=eps, q=q)
  shape = (num_blocks, D.shape[1], X.shape[1], targets.onehot.shape[1])
  _, transpose = jax.vjp(lambda W: loss_map(W, X, D, targets, robust), jnp.zeros(shape, X.dtype))
  B = transpose(nu)[0]
  if lam is not None and refine_steps > 0:
    lam = refine_cone_multipliers(lam, B, X, D, relu.counted(targets), eps, q, refine_steps)
  elif lam is not None:
    lam = jnp.maximum(lam, 0.0) * relu.counted(targets)[None, None, :, None]
  worst = jnp.max(relu.l2_norm(cone_residual(B, lam, X, D, eps, q), axis=2))
  theta_max = jnp.minimum(1.0, beta / jnp.maximum(worst, jnp.finfo(X.dtype).tiny))
  theta = jnp.where(quad > 0, jnp.clip(lin / jnp.where(quad > 0, quad, 1.0), 0.0, theta_max),
                    theta_max)
  return jnp.where(finite, lin * theta - 0.5 * quad * theta ** 2, -jnp.inf)


# ----------------------------------------------------------------------------- the primal side


def feasibility_shift(W, X, D, directions, counted, eps, q: int):
  """How far each ReLU neuron must move along its pattern's interior direction to be feasible.

  With gain_i = a_iᵀc − ε‖c‖_q and ‖w + tc‖_q ≤ ‖w‖_q + t‖c‖_q, w + tc is feasible for
  t = max_i (ε‖w‖_q − a_iᵀw)₊ / gain_i; a neuron short on a row without gain cannot be shifted.
  Both outputs combine over chunks of rows by max and or.

  Args:
    W: (2, P, d, C) convex ReLU weights. X: (n, d). D: (n, P). directions: (P, d) c_k.
    counted: (n,) bool, False on padding rows (no constraint there). eps, q: the cones.

  Returns:
    (t (2, P, C) ≥ 0, blocked (2, P, C) bool).
  """
  rows = counted[None, None, :, None]
  need = eps * relu.dual_norm(W, q)[:, :, None, :]
  short = jnp.where(rows, jnp.maximum(need - relu.cone_slacks(W, X, D), 0.0), 0.0)
  C = directions[None, :, :, None]
  gain = relu.cone_slacks(C, X, D) - eps * relu.dual_norm(C, q)[:, :, None, :]  # (1, P, n, 1)
  blocked = jnp.any((short > 0) & (gain <= 0), axis=2)
  t = jnp.max(jnp.where(short > 0, short / jnp.where(gain > 0, gain, 1.0), 0.0), axis=2)
  return t, blocked


def shifted(W, t, blocked, directions) -> jnp.ndarray:
  """W + t c per neuron (`feasibility_shift`), zero where blocked: feasible up to round-off."""
  return jnp.where(blocked[:, :, None, :], 0.0,
                   W + t[:, :, None, :] * directions[None, :, :, None])


def restore_feasibility(W, X, D, directions, counted, eps, q: int) -> jnp.ndarray:
  """Feasible weights near W (2, P, d, C): `shifted` by the `feasibility_shift` on all rows."""
  return shifted(W, *feasibility_shift(W, X, D, directions, counted, eps, q), directions)


def interior_directions(X: np.ndarray, gates: np.ndarray, eps: float, q: int) -> np.ndarray:
  """A direction c_k inside every pattern's cone {v : a_iᵀv ≥ ε‖v‖_q}; host-side, (P, d).

  The direction with the largest margin min_i a_iᵀv − ε‖v‖_q: the shift that makes a neuron
  feasible divides its shortfall by that margin. ε = 0 or q = 2: v = p/‖p‖ for p the
  minimum-norm point of the hull of the a_i, which maximises min_i a_iᵀv over ‖v‖₂ ≤ 1 (plain
  cones: the unit gate when it does better, as it may when the hull point is inexact). ε > 0
  and q = 1: the maximiser of min_i a_iᵀv − ε‖v‖₁ over ‖v‖_∞ ≤ 1 (an LP). A direction whose
  margin is not positive makes `restore_feasibility` zero that pattern's infeasible neurons.

  Args:
    X: (n, d) inputs (no padding rows). gates: (d, P). eps: ε ≥ 0. q: 1 or 2.
  """
  unit = (gates / np.linalg.norm(gates, axis=0, keepdims=True)).T
  D = X @ gates >= 0
  n, d = X.shape
  starts = None if eps > 0 and q == 1 else relu.margin_directions(X, gates)
  out = np.empty_like(unit)
  for k in range(gates.shape[1]):
    A = np.where(D[:, k:k + 1], X, -X)
    if eps > 0 and q == 1:
      # max s − ε Σt over (v, t, s): a_iᵀv ≥ s, −t ≤ v ≤ t, −1 ≤ v ≤ 1.
      eye = np.eye(d)
      A_ub = np.block([[-A, np.zeros((n, d)), np.ones((n, 1))],
                       [eye, -eye, np.zeros((d, 1))], [-eye, -eye, np.zeros((d, 1))]])
      res = scipy.optimize.linprog(np.r_[np.zeros(d), eps * np.ones(d), -1.0], A_ub=A_ub,
                                   b_ub=np.zeros(n + 2 * d),
                                   bounds=[(-1, 1)] * d + [(0, 1)] * d + [(None, None)],
                                   method="highs")
      out[k] = res.x[:d] if res.status == 0 else unit[k]
      continue
    point = relu.min_norm_hull_point(A, starts[k])
    norm = np.linalg.norm(point)
    hull = point / norm if norm > 0 else unit[k]
    better = eps > 0 or np.min(A @ hull) > np.min(A @ unit[k])
    out[k] = hull if better else unit[k]
  return out
