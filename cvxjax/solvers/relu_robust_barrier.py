"""Interior-point solver for robust convex ReLU heads (binary hinge, ℓ∞ or ℓ₂ ball), certified.

The robust binary head (docs/math.md §4) is, over the neurons j = (s, k) with weights w_j,

    min  Σ_i ζ_i + β Σ_j ‖w_j‖₂   s.t.  ζ_i ≥ 0,  ζ_i − 1 + x_iᵀξ_i ≥ ε‖ξ_i‖_q,
                                       a_jiᵀw_j ≥ ε‖w_j‖_q  ∀ j, i,

with ξ_i = y_i θ_i = Σ_j m_ji w_j the pair weights (m_ji = y_i σ_j D_ik), a_ji = (2D_ik − 1)x_i and
ζ_i the hinge's epigraph. For ℓ₂ (q = 2) both kinds of ‖·‖_q constraint are second-order cones,
−log(c² − ε²‖v‖²); for ℓ∞ (q = 1) they are linear once u_j ≥ |w_j| and v_i ≥ |ξ_i| (two logarithms
per component). The norms ‖w_j‖₂ are minimised out in closed form, as in `relu_barrier`.

What remains separates into per-neuron blocks (w_j, u_j) and per-example blocks (ξ_i, ζ_i, v_i),
coupled only through ξ = Mᵀw. Newton's system eliminates each u_j and each (ζ_i, v_i) by its own
small Schur complement, which leaves one dense (N·d)×(N·d) system in the weights:
blockdiag(B_j) + Σ_i (m_i m_iᵀ) ⊗ G_i, G_i the d×d reduced curvature of example i. It is formed in
O(N² n d²) and factored by one Cholesky; memory O(N²d² + N n d): it suits N·d up to a few thousand.

Every iterate is strictly feasible, so the returned weights satisfy the robust cones exactly. Every
step certifies with `relu_dual.lower_bound`: the loss multipliers ν_i = ∇_ξ g_i/τ (g_i the example
block's barrier) and the cones' multipliers λ_ji, the scalar parts of their dual points
(2s/(τ(s² − ε²‖w‖²)) for ℓ₂, 1/(τ(s − εΣu)) for ℓ∞), both at the Newton point to first order.
float64 throughout: the barrier Hessians grow like τ², and round-off ends runs near relative gaps
of 1e-6 (docs/solvers.md). For ℓ₂ each ζ_i is re-minimised after every step and each example's
reduced curvature comes from its closed-form inverse, so that no slack falls below 1/τ and no
Schur complement cancels (docs/math.md §4). A Newton matrix that round-off still breaks is
damped until it factors.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cvxjax.core import numerics, relu, relu_dual

_T_FACTOR = 2.0  # τ grows by this factor once the iterate is centred (8: ℓ₂ heads stalled)
_CENTERED = 0.25  # centred: the Newton decrement λ²/2 is below this
_POLISHED = 1e-12  # centred as far as float64 goes
_ARMIJO = 0.01
_QUADRATIC = 0.1  # below this decrement a step need not lower Φ_τ by more than its round-off
_LONG_STEPS = (2.0, 4.0, 16.0)  # steps past the Newton step tried once it is accepted
# The fraction of the step to the boundary that a step may take: at 0.99 the damped steps pressed
# a digits head against a thin robust cone (slack 1e-9 of ‖w‖) and it crawled (docs/solvers.md).
_TO_BOUNDARY = 0.5
_START_REGULARISER = 0.1  # the start's β Σ‖w_j‖ as a fraction of the loss at w = 0


class Setup(NamedTuple):
  """A robust binary problem laid out per neuron j = (s, k) (N = 2P neurons).

  Attributes:
    X: (n, d) inputs.
    signs: (N, n) 2D_ik − 1: the cones' a_ji = signs_ji x_i.
    pairs: (N, n) m_ji = y_i σ_j D_ik: ξ_i = Σ_j m_ji w_j.
    directions: (N, d) directions strictly inside each neuron's robust cone.
  """

  X: jnp.ndarray
  signs: jnp.ndarray
  pairs: jnp.ndarray
  directions: jnp.ndarray


class State(NamedTuple):
  """The iterate.

  Attributes:
    W: (N, d) strictly feasible weights. U: (N, d) their |w| epigraph (ℓ∞), or (N, 0).
    E: (n, 1 + k): each example's hinge epigraph ζ_i, then v_i ≥ |ξ_i| (ℓ∞, k = d; ℓ₂: k = 0).
    tau: () barrier weight. step: () Newton steps taken. upper: () the objective at W.
    lower: () the best certified lower bound so far.
    done: () whether the relative gap reached `tol` (or no progress is possible).
  """

  W: jnp.ndarray
  U: jnp.ndarray
  E: jnp.ndarray
  tau: jnp.ndarray
  step: jnp.ndarray
  upper: jnp.ndarray
  lower: jnp.ndarray
  done: jnp.ndarray


def build_setup(X, y, D, directions) -> Setup:
  """The per-neuron layout of X (n, d), labels y (n,), patterns D (n, P), directions (P, d)."""
  sigma = relu.neuron_signs(False)
  signs = jnp.tile(2.0 * D.T - 1.0, (2, 1))
  pairs = (sigma[:, None, None] * D.T[None]).reshape(-1, X.shape[0]) * y[None, :]
  unit = directions / jnp.linalg.norm(directions, axis=1, keepdims=True)
  return Setup(X, signs, pairs, jnp.tile(unit, (2, 1)))


def parameter(setup: Setup, q: int) -> jnp.ndarray:
  """m, the barrier's parameter: the logarithms of the cones, the norms and the hinges."""
  N, n = setup.signs.shape
  d = setup.X.shape[1]
  per_cone, per_example = (1.0, 2.0 + 2.0 * d) if q == 1 else (2.0, 3.0)
  return per_cone * N * n + 2.0 * N * (1.0 + (d if q == 1 else 0.0)) + per_example * n


def margins(W, setup: Setup, eps, q: int) -> jnp.ndarray:
  """(N, n) the robust cones' slacks a_jiᵀw_j − ε‖w_j‖_q (> 0 strictly inside)."""
  return setup.signs * (W @ setup.X.T) - eps * relu.dual_norm(W, q, axis=1)[:, None]


def _neuron_barrier(wu, signs, X, tau, *, eps, q: int, beta):
  """One neuron's block of Φ_τ: its norm term and cone barriers (+ |w| ≤ u for ℓ∞); (w, u) flat.
  The norm term is `relu_barrier._norm_terms`' q − log(1 + q), here differentiated by JAX."""
  d = X.shape[1]
  w, u = wu[:d], wu[d:]
  a = tau * beta
  root = jnp.sqrt(1.0 + a * a * jnp.dot(w, w))
  s = signs * (X @ w)
  if q == 1:
    cones = -jnp.sum(jnp.log(s - eps * jnp.sum(u))) - jnp.sum(jnp.log(u - w) + jnp.log(u + w))
  else:
    r = jnp.sqrt(jnp.dot(w, w))  # w ≠ 0 inside the cone: the norm is smooth there
    cones = -jnp.sum(jnp.log(s - eps * r) + jnp.log(s + eps * r))
  return root - jnp.log1p(root) + cones


def _example_barrier(xie, x, tau, *, eps, q: int):
  """One example's block of Φ_τ: τζ − log ζ − log(its robust cone), (ξ, ζ[, v]) flat.

  ζ ≥ 0 is the hinge's epigraph, and the robust margin c = ζ − 1 + xᵀξ must cover ε‖ξ‖_q:
  c² ≥ ε²‖ξ‖² with c > 0 (ℓ₂), or c ≥ ε Σv with v ≥ |ξ| (ℓ∞).
  """
  d = x.shape[0]
  xi, zeta = xie[:d], xie[d]
  c = zeta - 1.0 + jnp.dot(x, xi)
  if q == 1:
    v = xie[d + 1:]
    cone = -jnp.log(c - eps * jnp.sum(v)) - jnp.sum(jnp.log(v - xi) + jnp.log(v + xi))
  else:
    # c > 0 picks the cone's upper nappe (c² > ε²‖ξ‖² alone also holds for c < −ε‖ξ‖).
    cone = -jnp.log(jnp.where(c > 0, c * c - eps * eps * jnp.dot(xi, xi), -1.0))
  return tau * zeta - jnp.log(zeta) + cone


def example_curvature(xie, x, *, eps) -> jnp.ndarray:
  """(d, d) an ℓ₂ example block's Hessian in ξ with ζ eliminated (its Schur complement), exactly.

  Near the cone's boundary the block's Hessian has a rank-one part of size c²/s²
  (s = c² − ε²‖ξ‖²) that the elimination cancels, leaving round-off of order eps·c²/s² that made
  the reduced curvature indefinite on digits. Its inverse has no such part: in the variables (c, ξ)
  the cone's Hessian inverts to wwᵀ + diag(−s/2, αI) (w = (c, ξ), α = s/(2ε²)), and with the
  hinge's 1/ζ² along a = (1, −x) (Sherman–Morrison), with t = ζ − 1,

      G⁻¹ = αI + (γ ξξᵀ + tα(ξxᵀ + xξᵀ) − α² xxᵀ)/κ,   γ = ζ² − s/2 + α‖x‖²,   κ = γ + t²,

  a sum of terms each computed to full relative precision.

  Args:
    xie: (d + 1,) the block's (ξ, ζ), strictly inside. x: (d,) the example. eps: the radius ε > 0.
  """
  d = x.shape[0]
  xi, zeta = xie[:d], xie[d]
  c = zeta - 1.0 + jnp.dot(x, xi)
  s = (c - eps * jnp.linalg.norm(xi)) * (c + eps * jnp.linalg.norm(xi))
  alpha = s / (2.0 * eps * eps)
  t = zeta - 1.0
  gamma = zeta * zeta - 0.5 * s + alpha * jnp.dot(x, x)
  cross = jnp.outer(xi, x)
  inverse = (alpha * jnp.eye(d, dtype=x.dtype)
             + (gamma * jnp.outer(xi, xi) + t * alpha * (cross + cross.T)
                - alpha * alpha * jnp.outer(x, x)) / (gamma + t * t))
  return jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(inverse), True),
                                    jnp.eye(d, dtype=x.dtype))


def centred_hinges(xi, X, tau, *, eps) -> jnp.ndarray:
  """(n,) each ℓ₂ example's ζ that minimises its block of Φ_τ with ξ (n, d) fixed.

  The block τζ − log ζ − log(c − ρ) − log(c + ρ), c = ζ + b, b = xᵀξ − 1, ρ = ε‖ξ‖, is convex in
  ζ on ζ > ζ₀ = max(0, ρ − b); with u = ζ − ζ₀ its derivative is ≤ τ − 1/u, and ≥ τ − 3/u since
  each logarithm's argument exceeds u, so the minimiser has u in [1/τ, 3/τ] (bisected). There
  the hinge's and the robust margin's slacks are both ≥ 1/τ.
  """
  b = jnp.sum(X * xi, axis=1) - 1.0
  rho = eps * jnp.linalg.norm(xi, axis=1)
  floor = jnp.maximum(0.0, rho - b)
  above = floor - (rho - b)  # c − ρ at u = 0, without cancelling ρ against b

  def derivative(u):
    return tau - 1.0 / (floor + u) - 1.0 / (above + u) - 1.0 / (above + u + 2.0 * rho)

  def bisect(_, bracket):
    low, high = bracket
    middle = 0.5 * (low + high)
    negative = derivative(middle) < 0
    return jnp.where(negative, middle, low), jnp.where(negative, high, middle)

  start = jnp.full_like(b, 1.0 / tau)
  low, high = jax.lax.fori_loop(0, 64, bisect, (start, 3.0 * start))
  return floor + 0.5 * (low + high)


def _blocks(state: State, setup: Setup, *, eps, q: int, beta):
  """The block functions f(z, data, τ) of the neurons and the examples, and their variables:
  (N, d + d_u) rows (w_j, u_j) with data a_ji's signs, (n, d + k) rows (ξ_i, ζ_i, v_i) with x_i."""
  neuron = lambda z, s, tau: _neuron_barrier(z, s, setup.X, tau, eps=eps, q=q, beta=beta)
  example = lambda z, x, tau: _example_barrier(z, x, tau, eps=eps, q=q)
  Z_neurons = jnp.concatenate([state.W, state.U], axis=1)
  Z_examples = jnp.concatenate([setup.pairs.T @ state.W, state.E], axis=1)
  return neuron, example, Z_neurons, Z_examples


def barrier_value(state: State, setup: Setup, tau, *, eps, q: int, beta) -> jnp.ndarray:
  """Φ_τ at the state's (W, U, E); +inf outside the interior."""
  neuron, example, Zn, Ze = _blocks(state, setup, eps=eps, q=q, beta=beta)
  value = (jnp.sum(jax.vmap(neuron, (0, 0, None))(Zn, setup.signs, tau))
           + jnp.sum(jax.vmap(example, (0, 0, None))(Ze, setup.X, tau)))
  inside = jnp.all(margins(state.W, setup, eps, q) > 0)
  return jnp.where(inside & jnp.isfinite(value), value, jnp.inf)


def _first_root(a, b, c):
  """The first α > 0 at which a α² + b α + c (c > 0) vanishes, elementwise; +inf if none."""
  root = jnp.sqrt(jnp.maximum(b * b - 4.0 * a * c, 0.0))
  half = -0.5 * (b + jnp.where(b >= 0, root, -root))  # no cancellation: Numerical Recipes' form
  candidates = jnp.stack([jnp.where(a != 0, half / jnp.where(a != 0, a, 1.0), jnp.inf),
                          c / jnp.where(half != 0, half, jnp.inf)])
  real = b * b - 4.0 * a * c >= 0
  return jnp.min(jnp.where(real & (candidates > 0), candidates, jnp.inf), axis=0)


def _ratio(slack, move):
  """The first α > 0 with slack + α·move = 0 (slack > 0), elementwise; +inf if none."""
  return jnp.where(move < 0, -slack / jnp.where(move < 0, move, -1.0), jnp.inf)


def step_to_boundary(state: State, direction: State, setup: Setup, eps, q: int) -> jnp.ndarray:
  """The largest α with state + α·direction on the closure of the interior; a scalar.

  Linear constraints give ratios and second-order cones the first root of the quadratic
  (s + α ds)² − ‖v + α dv‖², as in interior-point codes' fraction-to-the-boundary rule.
  """
  s = setup.signs * (state.W @ setup.X.T)
  ds = setup.signs * (direction.W @ setup.X.T)
  xi, dxi = setup.pairs.T @ state.W, setup.pairs.T @ direction.W
  zeta, dzeta = state.E[:, 0], direction.E[:, 0]
  c = zeta - 1.0 + jnp.sum(setup.X * xi, axis=1)
  dc = dzeta + jnp.sum(setup.X * dxi, axis=1)
  limits = [_ratio(zeta, dzeta)]
  if q == 1:
    v, dv = state.E[:, 1:], direction.E[:, 1:]
    limits += [_ratio(s - eps * jnp.sum(state.U, axis=1)[:, None],
                      ds - eps * jnp.sum(direction.U, axis=1)[:, None]),
               _ratio(state.U - state.W, direction.U - direction.W),
               _ratio(state.U + state.W, direction.U + direction.W),
               _ratio(c - eps * jnp.sum(v, axis=1), dc - eps * jnp.sum(dv, axis=1)),
               _ratio(v - xi, dv - dxi), _ratio(v + xi, dv + dxi)]
  else:
    dot = lambda u, w: jnp.sum(u * w, axis=1)
    limits += [_first_root(ds * ds - eps ** 2 * dot(direction.W, direction.W)[:, None],
                           2.0 * (s * ds - eps ** 2 * dot(state.W, direction.W)[:, None]),
                           s * s - eps ** 2 * dot(state.W, state.W)[:, None]),
               _first_root(dc * dc - eps ** 2 * dot(dxi, dxi),
                           2.0 * (c * dc - eps ** 2 * dot(xi, dxi)),
                           c * c - eps ** 2 * dot(xi, xi))]
  return jnp.min(jnp.stack([jnp.min(limit) for limit in limits]))


def _eliminate(hessian, gradients, p: int):
  """The Schur complement of a block's trailing variables: with H = [[A, Bᵀ], [B, C]] (A p×p) and
  right-hand sides g = (g₁, g₂) (each (·, r)), returns A − BᵀC⁻¹B, g₁ − BᵀC⁻¹g₂ and the parts
  (C⁻¹B, C⁻¹g₂) of the back-substitution d₂ = −C⁻¹(g₂ + B d₁)."""
  if hessian.shape[0] == p:
    return hessian, gradients, None
  A, Bt, C = hessian[:p, :p], hessian[:p, p:], hessian[p:, p:]
  solved = jnp.linalg.solve(C, jnp.concatenate([Bt.T, gradients[p:]], axis=1))
  return A - Bt @ solved[:, :p], gradients[:p] - Bt @ solved[:, p:], (solved[:, :p], solved[:, p:])


def _back_substitute(parts, d1):
  """The trailing variables' steps −C⁻¹(g₂ + B d₁) (·, r) from `_eliminate`'s parts."""
  CB, Cg = parts
  return -(Cg + CB @ d1)


def _damped_cholesky(H) -> jnp.ndarray:
  """The Cholesky factor of H, or where round-off breaks it of H + δ·diag(H) with the smallest
  δ = 1e-12·100ᵏ that factors: a descent direction still, for the line search to take.

  Far from the path at small τ the weights are large (the centre's ‖w_j‖ grows like n/(τβ)) and
  cond(H) passes 1/eps: on a digits head with 24 patterns the factor failed at τ = 90.
  """
  def failed(carry):
    L, delta = carry
    return ~jnp.all(jnp.isfinite(L)) & (delta < 1.0)

  def damp(carry):
    _, delta = carry
    delta = jnp.where(delta == 0, 1e-12, 100.0 * delta)
    return jnp.linalg.cholesky(H + delta * jnp.diag(jnp.diag(H))), delta

  L, _ = jax.lax.while_loop(failed, damp, (jnp.linalg.cholesky(H), jnp.asarray(0.0, H.dtype)))
  return L


def _newton(state: State, setup: Setup, tau, *, eps, q: int, beta):
  """The Newton step of Φ_τ and the central path's tangent, both as (dW, dU, dE) with a trailing
  axis of 2 (step, tangent), the decrement −∇Φᵀ d, and the multipliers (ν, λ).

  The tangent −H⁻¹ ∂_τ∇Φ_τ predicts how the centre moves with τ (`step`).

  Returns:
    ((dW (N, d, 2), dU (N, d_u, 2), dE (n, k, 2)), decrement, ν (n, d), λ (N, n)).
  """
  N, d = state.W.shape
  neuron, example, Zn, Ze = _blocks(state, setup, eps=eps, q=q, beta=beta)

  def terms(block):  # the block's Hessian and (∇, ∂_τ∇), reduced to its first d variables
    def one(args):
      z, data = args
      grad = lambda t: jax.grad(block)(z, data, t)
      g, g_tau = jax.jvp(grad, (tau,), (jnp.ones_like(tau),))
      return _eliminate(jax.hessian(block)(z, data, tau), jnp.stack([g, g_tau], axis=1), d)
    return one

  # One block at a time: XLA's CPU runtime can deadlock on batched LAPACK calls (see
  # `relu_barrier`).
  B, g_w, neuron_parts = jax.lax.map(terms(neuron), (Zn, setup.signs))
  G, r, example_parts = jax.lax.map(terms(example), (Ze, setup.X))
  if q == 2:  # autodiff's G loses its digits near the cone's boundary
    G = jax.lax.map(lambda args: example_curvature(*args, eps=eps), (Ze, setup.X))

  # blockdiag(B_j) + Σ_i (m_i m_iᵀ) ⊗ G_i, and the reduced right-hand sides g_w + M r.
  coupling = (setup.pairs[:, None, :] * setup.pairs[None, :, :]).reshape(N * N, -1)
  H = jnp.transpose((coupling @ G.reshape(G.shape[0], d * d)).reshape(N, N, d, d), (0, 2, 1, 3))
  H = (H + jnp.einsum("jk,jab->jakb", jnp.eye(N, dtype=B.dtype), B)).reshape(N * d, N * d)
  rhs = (g_w + jnp.einsum("ji,iar->jar", setup.pairs, r)).reshape(N * d, 2)
  dW = -jax.scipy.linalg.cho_solve((_damped_cholesky(H), True), rhs).reshape(N, d, 2)
  dXi = jnp.einsum("ji,jar->iar", setup.pairs, dW)
  dU = (jax.vmap(_back_substitute)(neuron_parts, dW) if neuron_parts is not None
        else jnp.zeros(state.U.shape + (2,), state.U.dtype))
  dE = jax.vmap(_back_substitute)(example_parts, dXi)

  full_neurons = jax.vmap(jax.grad(neuron), (0, 0, None))(Zn, setup.signs, tau)
  full_examples = jax.vmap(jax.grad(example), (0, 0, None))(Ze, setup.X, tau)
  decrement = -(jnp.vdot(full_neurons[:, :d], dW[..., 0])
                + jnp.vdot(full_examples[:, :d], dXi[..., 0])
                + jnp.vdot(full_neurons[:, d:], dU[..., 0])
                + jnp.vdot(full_examples[:, d:], dE[..., 0]))
  # The multipliers at the Newton point, to first order (the gradient's value there): they are
  # the central path's within O(λ²), where the current gradient's are off by O(λ).
  step_e = jnp.concatenate([dXi[..., 0], dE[..., 0]], axis=1)
  curvature_e = jax.vmap(lambda z, x, dz: jax.jvp(lambda z: jax.grad(example)(z, x, tau), (z,),
                                                  (dz,))[1])(Ze, setup.X, step_e)
  nu = (full_examples + curvature_e)[:, :d] / tau
  multipliers = lambda W, U: _cone_multipliers(W, U, setup, tau, eps, q)
  lam, dlam = jax.jvp(multipliers, (state.W, state.U), (dW[..., 0], dU[..., 0]))
  return (dW, dU, dE), decrement, nu, lam + dlam


def _cone_multipliers(W, U, setup: Setup, tau, eps, q: int) -> jnp.ndarray:
  """(N, n) the scalar parts of the robust cones' dual points −∇(barrier)/τ at (W, U)."""
  s = setup.signs * (W @ setup.X.T)
  if q == 1:
    return 1.0 / (tau * (s - eps * jnp.sum(U, axis=1)[:, None]))
  r2 = jnp.sum(W * W, axis=1)[:, None]
  return 2.0 * s / (tau * (s * s - eps * eps * r2))


def lower_bound(nu, lam, setup: Setup, D, targets: relu.Targets, *, eps, q: int, beta):
  """The certified lower bound of (ν (n, d), λ (N, n)) (`relu_dual.lower_bound`)."""
  P = D.shape[1]
  return relu_dual.lower_bound(nu[:, :, None], lam.reshape(2, P, -1)[..., None], setup.X, D,
                               targets, loss="hinge", eps=eps, q=q, beta=beta, num_blocks=2)


def init(setup: Setup, D, targets: relu.Targets, *, eps, q: int, beta) -> State:
  """The start: w_j = c·(the neuron's interior direction), the same for the two neurons of a
  pattern (so ξ = 0), c setting β Σ‖w_j‖ to a tenth of the loss n at ξ = 0; u_j halfway between
  |w_j| and the cone's limit; ζ_i = 2 and v_i = 1/(2εd); τ the weight whose centre's gap m/τ is
  the start's objective."""
  N, d = setup.directions.shape
  n = setup.X.shape[0]
  dtype = setup.X.dtype
  W = _START_REGULARISER * n / (beta * N) * setup.directions
  # ξ = 0 at the start: ζ = 2 leaves the robust margin ζ − 1 = 1 (and Σv = 1/(2ε) half of it).
  zeta = jnp.full((n, 1), 2.0, dtype)
  if q == 1:
    slack = jnp.min(margins(W, setup, eps, q), axis=1)
    U = jnp.abs(W) + (0.5 * slack / (eps * d))[:, None]
    E = jnp.concatenate([zeta, jnp.full((n, d), 0.5 / (eps * d), dtype)], axis=1)
  else:
    U, E = jnp.zeros((N, 0), dtype), zeta
  upper = _objective(W, D, setup, targets, eps, q, beta)
  return State(W=W, U=U, E=E, tau=parameter(setup, q) / upper, step=jnp.asarray(0), upper=upper,
               lower=jnp.asarray(-jnp.inf, dtype), done=jnp.asarray(False))


def step(state: State, setup: Setup, D, targets: relu.Targets, *, eps, q: int, beta,
         tol) -> State:
  """One step on the central path, with a fresh certificate.

  Away from the centre of Φ_τ: a damped Newton step. Near it: τ grows `_T_FACTOR`-fold (up to the
  weight whose centre's gap is a quarter of the target) and the iterate takes the predicted step
  to the new centre, the Newton step plus Δτ times the central path's tangent (kept where the new
  Φ_τ falls), as in `relu_barrier`.

  Args:
    state: the `State`. setup: the layout. D: (n, P) patterns. targets: the encoded labels.
    eps, q, beta: the ball (ε > 0, q = 1 or 2) and the regulariser. tol: relative gap to stop at.

  Returns:
    The next `State`; once done it no longer moves.
  """
  (dW, dU, dE), decrement, nu, lam = _newton(state, setup, state.tau, eps=eps, q=q, beta=beta)
  upper = _objective(state.W, D, setup, targets, eps, q, beta)
  centred = decrement < 2 * _CENTERED
  # Certified near the centre only: elsewhere the multipliers bound little (a quarter of a step).
  bound = jax.lax.cond(
      centred, lambda: lower_bound(nu, lam, setup, D, targets, eps=eps, q=q, beta=beta),
      lambda: jnp.asarray(-jnp.inf, upper.dtype))
  lower = jnp.maximum(state.lower, jnp.where(jnp.isnan(bound), -jnp.inf, bound))
  converged = upper - lower <= tol * jnp.abs(upper)

  m = parameter(setup, q)
  tau_final = m / (0.25 * tol * jnp.maximum(upper, jnp.finfo(upper.dtype).tiny))
  # The multipliers certify the centre's gap m/τ only close to it: τ waits until they do.
  certifies = (upper - bound <= 2.0 * m / state.tau) | (decrement < _POLISHED)
  tau = jnp.where(centred & certifies, _T_FACTOR * state.tau, state.tau)
  tau = jnp.where(state.tau < tau_final, jnp.minimum(tau, tau_final), tau)
  direction = [a[..., 0] + (tau - state.tau) * a[..., 1] for a in (dW, dU, dE)]

  direction = state._replace(W=direction[0], U=direction[1], E=direction[2])
  moved_to = lambda a: state._replace(W=state.W + a * direction.W, U=state.U + a * direction.U,
                                      E=state.E + a * direction.E)
  value = lambda a: barrier_value(moved_to(a), setup, tau, eps=eps, q=q, beta=beta)
  current = value(0.0)
  # Newton steps pass Armijo's test (near the centre, up to Φ's round-off); predictions need
  # only lower Φ at the new τ.
  decrease = jnp.where(centred, 0.0, _ARMIJO * decrement)
  slack = jnp.where(decrement < _QUADRATIC, 64 * jnp.finfo(upper.dtype).eps * jnp.abs(current),
                    0.0)
  sufficient = lambda a, trial: trial <= current - a * decrease + slack
  # The largest step that keeps every slack positive, shortened to stay off the boundary.
  limit = _TO_BOUNDARY * step_to_boundary(state, direction, setup, eps, q)
  alpha, trial = numerics.backtrack(value, sufficient, jnp.minimum(1.0, limit))
  # A full step that is accepted may be short: in the damped phase Φ_τ can fall like −log of a
  # slack that doubles per step. Longer steps inside the boundary are tried, the best kept.
  for longer in _LONG_STEPS:
    a = jnp.minimum(longer, limit)
    candidate = jnp.where(alpha >= 1.0, value(a), jnp.inf)
    better = sufficient(a, candidate) & (candidate < trial)
    alpha, trial = jnp.where(better, a, alpha), jnp.where(better, candidate, trial)
  moved = sufficient(alpha, trial) & (centred | (decrement > 0))
  # A step that holds τ must lower Φ_τ: past round-off's floor holding would never end.
  moved = moved & ((tau > state.tau) | (trial < current))
  # No descent off the centre (round-off), or a Newton system that round-off broke.
  stuck = ~(decrement >= 0) | (~moved & (~centred | (tau == state.tau)))
  keep = converged | stuck | state.done
  new = moved_to(alpha)
  if q == 2:  # Φ_τ only falls, and no example's slack can fall below 1/τ (digits' did, to 1e-12)
    new = new._replace(E=centred_hinges(setup.pairs.T @ new.W, setup.X, tau, eps=eps)[:, None])
  new = jax.tree.map(lambda old, new: jnp.where(keep | ~moved, old, new), state, new)
  return new._replace(tau=jnp.where(keep, state.tau, tau),
                      step=state.step + jnp.where(state.done, 0, 1),
                      upper=jnp.where(state.done, state.upper, upper),
                      lower=jnp.where(state.done, state.lower, lower), done=keep)


def _objective(W, D, setup: Setup, targets: relu.Targets, eps, q: int, beta) -> jnp.ndarray:
  """`relu.objective` at the weights W (N, d): the robust hinge plus β Σ_j ‖w_j‖₂."""
  return relu.objective(W.reshape(2, D.shape[1], -1)[..., None], setup.X, D, targets,
                        loss="hinge", eps=eps, q=q, beta=beta)


def weights(state: State, num_patterns: int) -> jnp.ndarray:
  """The state's weights in the heads' layout (2, P, d, 1)."""
  return state.W.reshape(2, num_patterns, -1)[..., None]


def unsupported_reason(problem: relu.Problem) -> str:
  """Why the robust barrier cannot solve `problem` ('' if it can)."""
  if not problem.binary:
    return "solves the robust binary hinge (the multi-class robust hinge couples classes)"
  directions = relu_dual.interior_directions(problem.X, problem.gates, problem.eps, problem.q)
  D = np.asarray(problem.D, directions.dtype)
  slack = (np.tile(2.0 * D.T - 1.0, (2, 1)) * (np.tile(directions, (2, 1)) @ problem.X.T)
           - problem.eps * np.asarray(relu.dual_norm(np.tile(directions, (2, 1)), problem.q,
                                                     axis=1))[:, None])
  inside = np.min(slack, axis=1) > 0  # the LP's direction is 0 where it finds no interior
  if not np.all(inside):
    k = int(np.argmin(inside)) % D.shape[1]
    return (f"needs every pattern's robust cone to have an interior; pattern {k}'s has none "
            "(fit with drop_empty_cones=True)")
  return ""
