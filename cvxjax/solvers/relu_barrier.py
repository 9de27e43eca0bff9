"""Interior-point solver for plain convex ReLU and gated-ReLU heads, with a duality-gap
certificate.

The squared loss and the binary hinge do not couple the classes, so each class c is its own
problem over the neurons j = (s, k), with weights w_j = W[s, k, :, c] (docs/math.md §4). With
epigraph variables t_j ≥ ‖w_j‖₂ its barrier is

    Φ_τ(w, t) = τ[ℓ(f) + β Σ_j t_j] − Σ_{j,i} log s_ji − Σ_j log(t_j² − ‖w_j‖²),

with the cone slacks s_ji = (2D_ik − 1) x_iᵀw_j and the scores f = Σ_j σ_j D_j X w_j. A gated
head has one block of neurons (σ = +1) and no cone constraints: the same method without the
slacks' terms, from W = 0 (its dual bound is the group lasso's). Every t_j
is minimised out in closed form (`_norm_terms`: a smooth function of ‖w_j‖, with no boundary
at w_j = 0, where most neurons of a group-lasso optimum sit), and so are the hinge's epigraph
variables (`numerics.smoothed_hinge`). Newton's method runs on the weights alone. Every iterate is
strictly feasible: the returned weights satisfy the cone constraints exactly, not up to a
tolerance. Once an iterate is centred (`_centring_tolerance`; loosely for the squared loss),
τ grows fivefold and the iterate takes the Newton step of the new Φ_τ, predicted
from the current factorisation: Φ_τ's gradient is affine in τ, so that step is the old Newton
step plus Δτ times the central path's tangent. τ grows until the centre's gap m/τ is a quarter
of the target.

Newton's system is block diagonal, one d×d block per neuron from the barriers, plus the loss's
curvature Fᵀ diag(h) F of rank n. Woodbury's identity reduces it to one n×n Cholesky factor per
step, of I + √h (Σ_k D_k X (H_v⁻¹ + H_w⁻¹) Xᵀ D_k) √h: v_k and w_k share D_k X. Cost per step:
O(P n² d) for that matrix (one GEMM) plus O(N n d²) for the blocks, N = 2P neurons. It suits n
up to a few thousand; ADMM's Cholesky path has the same n×n limit.

Every step certifies. With μ = ∇ℓ and λ_j ≥ 0 the multipliers that the Newton step predicts
(μ = ∇ℓ(f + df), λ_j = (1/s_j)(1 − ds_j/s_j)/τ, clipped at 0), the pair (θμ, θλ) is dual
feasible when θ·max_j ‖σ_j XᵀD_jμ − G_jᵀλ_j‖₂ ≤ β, G_j = diag(2D_j − 1) X; then −ℓ*(θμ) bounds
the optimum from below (squared: −½θ²‖μ‖² − θμᵀy, maximised over θ; hinge, μ = −αy with
α ∈ [0, 1]: θ Σ α). At the centre of Φ_τ the pair is feasible with θ = 1 and the gap is at
most m/τ, m the barrier's parameter. Barrier Hessians grow like τ²: the solver needs float64,
and a Newton system that round-off breaks ends the run with the gap reached (a valid bound).
Two steps of iterative refinement (residuals by the exact Hessian-vector product) keep each
solve accurate longer. Measured: the squared loss certifies relative gaps of 1e-8; the hinge
stops near 1e-5, where its curvature (τ² at the kink) outruns float64 (breast cancer, n = 343,
P = 100: at τ ≈ 5e9; refinement took its gap from 4.6e-5 to 1.1e-5).

On a CPU, run it with XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false (set
before jax starts its backend, as the experiments and the tests' conftest do): XLA's
concurrency-optimised scheduler deadlocks on programs that run batched LAPACK calls side by
side, as the Newton step does.
"""

import dataclasses
import functools
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cvxjax.core import numerics, relu
from cvxjax.solvers import base, relu_robust_barrier

_T_FACTOR = 5.0  # τ grows by this factor once the iterate is centred (`_centring_tolerance`)
_CENTERED = 0.5  # centred: the Newton decrement λ²/2 is below this
_LOOSE_CENTERING = 0.01  # squared loss: centred once λ² < this·m (m the barrier's parameter)
_ARMIJO = 0.01
_QUADRATIC = 0.1  # below this decrement the full step is taken unless Φ_τ rises past round-off
_START_REGULARISER = 0.1  # the start's β Σ‖w_j‖ as a fraction of the loss at f = 0
_REFINEMENTS = 2  # steps of iterative refinement of each Newton solve
_CHOLESKY_PIVOT_RATIO = 1e-4  # Cholesky while its pivots span < 1e4 (they estimate √cond(H_j))


class Setup(NamedTuple):
  """A problem's data, laid out per neuron j = (s, k) (N = S·P neurons; S = 2 convex, 1 gated).

  Attributes:
    X: (n, d) inputs.
    D: (n, P) the sign patterns.
    mask: (N, n) σ_j D_ik: the neuron's signed pattern in the scores.
    signs: (N, n) 2D_ik − 1 where the constraint binds, 0 where x_i = 0 (void constraints) and
      for gated heads (no cone constraints).
    gates: (N, d) the start's directions: unit gates h_k, strictly inside the neuron's cone (0
      for gated heads, which start at W = 0).
  """

  X: jnp.ndarray
  D: jnp.ndarray
  mask: jnp.ndarray
  signs: jnp.ndarray
  gates: jnp.ndarray


class State(NamedTuple):
  """The iterate of one class (`run` adds a leading class axis).

  Attributes:
    W: (N, d) strictly feasible neuron weights.
    tau: () barrier weight. step: () Newton steps taken.
    upper: () the objective at W. lower: () the best certified lower bound so far.
    done: () whether the relative gap reached `tol` (or no progress is possible).
  """

  W: jnp.ndarray
  tau: jnp.ndarray
  step: jnp.ndarray
  upper: jnp.ndarray
  lower: jnp.ndarray
  done: jnp.ndarray


def build_setup(X, D, gates, gated: bool = False) -> Setup:
  """The per-neuron layout of X (n, d), patterns D (n, P) and gates (d, P): S = 2 blocks for
  convex ReLU, 1 for gated ReLU."""
  n, d = X.shape
  sigma = relu.neuron_signs(gated)
  mask = (sigma[:, None, None] * D.T[None]).reshape(-1, n)
  N = mask.shape[0]
  if gated:  # no cones, and the start W = 0
    return Setup(X, D, mask, jnp.zeros((N, n), X.dtype), jnp.zeros((N, d), X.dtype))
  nonzero = jnp.any(X != 0, axis=1)
  signs = jnp.tile(jnp.where(nonzero[None, :], 2.0 * D.T - 1.0, 0.0), (2, 1))
  unit = gates / jnp.linalg.norm(gates, axis=0, keepdims=True)
  return Setup(X, D, mask, signs, jnp.tile(unit.T, (2, 1)))


def parameter(setup: Setup, loss: str) -> jnp.ndarray:
  """m, the barrier's parameter: binding cone constraints + 2 per norm (+ 2 per hinge)."""
  m = jnp.sum(setup.signs != 0) + 2.0 * setup.mask.shape[0]
  return m + (2.0 * setup.X.shape[0] if loss == "hinge" else 0.0)


def objective(W, setup: Setup, y, *, loss: str, beta) -> jnp.ndarray:
  """ℓ(f) + β Σ_j ‖w_j‖ for one class: W (N, d), y (n,) targets (squared) or ±1 labels (hinge)."""
  f = jnp.sum(setup.mask * (W @ setup.X.T), axis=0)
  value = 0.5 * jnp.sum((f - y) ** 2) if loss == "squared" else jnp.sum(jax.nn.relu(1 - y * f))
  return value + beta * jnp.sum(jnp.linalg.norm(W, axis=1))


def _loss_terms(f, y, tau, loss: str):
  """(τℓ(f), its gradient and curvature in f (n,), and μ = ∇ℓ(f) (n,))."""
  if loss == "squared":
    r = f - y
    return 0.5 * tau * jnp.sum(r * r), tau * r, jnp.full_like(f, tau), r
  psi, d1, d2, alpha = numerics.smoothed_hinge(1.0 - y * f, tau)
  return jnp.sum(psi), -y * d1, d2, -y * alpha


def _norm_terms(W, a):
  """φ(w) = min_t a t − log(t² − ‖w‖²) per neuron, up to a constant: q − log(1 + q) with
  q = √(1 + a²‖w‖²) (the minimiser is t = (1 + q)/a). Returns φ (N,), ∇φ = c w (N, d) and a
  square root of the Hessian ∇²φ = c (I − ŵŵᵀ) + (c/q) ŵŵᵀ (N, d, d), with c = a²/(1 + q) and
  ŵ = w/‖w‖: in this form the curvature along w, c/q, is not a difference of two terms of size c.
  """
  r2 = jnp.sum(W * W, axis=1)
  q = jnp.sqrt(1.0 + a * a * r2)
  c = a * a / (1.0 + q)
  outer = W[:, :, None] * W[:, None, :] / jnp.maximum(r2, jnp.finfo(W.dtype).tiny)[:, None, None]
  eye = jnp.eye(W.shape[1], dtype=W.dtype)
  root = jnp.sqrt(c)[:, None, None] * (eye - outer) + jnp.sqrt(c / q)[:, None, None] * outer
  return q - jnp.log1p(q), c[:, None] * W, root


def _barrier_value(W, setup: Setup, y, tau, *, loss: str, beta):
  """Φ_τ(W) with the norms' epigraph variables minimised out; +inf outside the interior."""
  XW = W @ setup.X.T  # (N, n)
  slacks = setup.signs * XW
  binding = setup.signs != 0
  value = (_loss_terms(jnp.sum(setup.mask * XW, axis=0), y, tau, loss)[0]
           + jnp.sum(_norm_terms(W, tau * beta)[0])
           - jnp.sum(jnp.where(binding, jnp.log(jnp.where(binding, slacks, 1.0)), 0.0)))
  inside = jnp.all(~binding | (slacks > 0))
  return jnp.where(inside & jnp.isfinite(value), value, jnp.inf)


def init(setup: Setup, y, *, loss: str, beta) -> State:
  """The start w_j = c h_k (so f = 0: v_k = w_k; W = 0 for gated heads), c setting β Σ‖w_j‖ to
  a tenth of ℓ(0), and τ the weight at which the centre's gap m/τ equals the start's objective."""
  N = setup.mask.shape[0]
  zero_loss = 0.5 * jnp.sum(y * y) if loss == "squared" else jnp.asarray(y.shape[0], y.dtype)
  W = _START_REGULARISER * zero_loss / (beta * N) * setup.gates
  upper = objective(W, setup, y, loss=loss, beta=beta)
  return State(W=W, tau=parameter(setup, loss) / upper, step=jnp.asarray(0), upper=upper,
               lower=jnp.asarray(-jnp.inf, y.dtype), done=jnp.asarray(False))


def _lower_bound(mu, lam, y, setup: Setup, *, loss: str, beta):
  """The dual bound −ℓ*(θμ) of (θμ, θλ), θ the largest feasible scale (see the docstring)."""
  residual = (setup.mask * mu - setup.signs * lam) @ setup.X  # (N, d)
  theta = jnp.minimum(1.0, beta / jnp.max(jnp.linalg.norm(residual, axis=1)))
  if loss == "hinge":
    return theta * jnp.sum(-y * mu)
  # −½θ²‖μ‖² − θμᵀy is concave in θ: its best θ in [0, θ_max].
  best = jnp.clip(-jnp.vdot(mu, y) / jnp.maximum(jnp.vdot(mu, mu), jnp.finfo(mu.dtype).tiny),
                  0.0, theta)
  return -0.5 * best * best * jnp.vdot(mu, mu) - best * jnp.vdot(mu, y)


def _gradient(W, setup: Setup, y, tau, *, loss: str, beta):
  """∇Φ_τ(W) (N, d), and the pieces of the Newton system: 1/s (N, n), the loss's curvature in f
  (n,), μ = ∇ℓ(f) (n,) and a square root of the norm terms' Hessians (N, d, d)."""
  XW = W @ setup.X.T
  binding = setup.signs != 0
  inv_slack = jnp.where(binding, 1.0 / jnp.where(binding, setup.signs * XW, 1.0), 0.0)
  _, grad_f, curv_f, mu = _loss_terms(jnp.sum(setup.mask * XW, axis=0), y, tau, loss)
  _, grad_norm, root_norm = _norm_terms(W, tau * beta)
  grad = (setup.mask * grad_f - setup.signs * inv_slack) @ setup.X + grad_norm
  return grad, (inv_slack, curv_f, mu, root_norm)


def _newton(state: State, setup: Setup, y, *, loss: str, beta):
  """The Newton direction dW (N, d) of Φ_τ, the central path's tangent dW/dτ, the decrement
  −∇Φᵀ dW, the objective, and the dual bound of the multipliers the Newton step predicts."""
  X, W, tau = setup.X, state.W, state.tau
  N, d = W.shape
  P = setup.D.shape[1]
  gradient = functools.partial(_gradient, W, setup, y, loss=loss, beta=beta)
  grad, (inv_slack, curv_f, mu, root_norm) = gradient(tau)

  # The per-neuron blocks H_j = Xᵀ diag(1/s²) X + ∇²φ = AᵀA, A = [diag(1/s) X; √∇²φ]. Their
  # Cholesky factors (one GEMM forms every H_j) serve while H_j is well conditioned; late on the
  # path its condition number reaches 1e19, and that neuron's block is factored by QR of A,
  # whose R⁻¹ has the accuracy of cond(A) = √cond(H_j) instead.
  eye = jnp.eye(d, dtype=W.dtype)
  outer_X = (X[:, :, None] * X[:, None, :]).reshape(X.shape[0], d * d)
  grams = ((inv_slack * inv_slack) @ outer_X).reshape(N, d, d) + root_norm @ root_norm

  def inverse_root(args):  # R⁻¹ with H_j = RᵀR, so that H_j⁻¹ = R⁻¹R⁻ᵀ
    gram, inv_s, root = args
    lower = jnp.linalg.cholesky(gram)
    pivots = jnp.diagonal(lower)
    accurate = jnp.min(pivots) >= _CHOLESKY_PIVOT_RATIO * jnp.max(pivots)  # False if NaN
    by_cholesky = lambda: jax.scipy.linalg.solve_triangular(lower, eye, lower=True).T
    by_qr = lambda: jax.scipy.linalg.solve_triangular(
        jnp.linalg.qr(jnp.concatenate([inv_s[:, None] * X, root]), mode="r"), eye, lower=False)
    return jax.lax.cond(accurate, by_cholesky, by_qr)

  # One neuron at a time: XLA's CPU runtime deadlocked on the batched LAPACK calls (2 cores).
  R_inv = jax.lax.map(inverse_root, (grams, inv_slack, root_norm))  # (N, d, d)
  block_solve = lambda r: jnp.einsum("jde,jfe,jf->jd", R_inv, R_inv, r)

  # Woodbury: (H_b + Fᵀ h F)⁻¹ = H_b⁻¹ − H_b⁻¹ Fᵀ√h (I + √h F H_b⁻¹ Fᵀ √h)⁻¹ √h F H_b⁻¹. The
  # neurons v_k and w_k share D_k X, so F H_b⁻¹ Fᵀ = Σ_k D_k X (H_v⁻¹ + H_w⁻¹) Xᵀ D_k.
  inverse = jnp.einsum("jde,jfe->jdf", R_inv, R_inv)
  paired = jnp.sum(inverse.reshape(N // P, P, d, d), axis=0)  # (P, d, d)
  root_h = jnp.sqrt(curv_f)
  patterns = root_h[:, None] * setup.D  # (n, P): √h D
  left = (patterns[:, :, None] * X[:, None, :]).reshape(X.shape[0], -1)
  right = (patterns[:, :, None] * jnp.einsum("nd,kde->nke", X, paired)).reshape(X.shape[0], -1)
  capacitance = left @ right.T
  capacitance = 0.5 * (capacitance + capacitance.T) + jnp.eye(X.shape[0], dtype=W.dtype)
  cap_chol = jnp.linalg.cholesky(capacitance)

  def solve(rhs):
    a = block_solve(rhs)
    z = root_h * jax.scipy.linalg.cho_solve(
        (cap_chol, True), root_h * jnp.sum(setup.mask * (a @ X.T), axis=0))
    return a - block_solve((setup.mask * z) @ X)

  def hessian_times(V):  # the exact Newton matrix (blocks + the loss's curvature) times V
    XV = V @ X.T
    norms = jnp.einsum("jde,jef,jf->jd", root_norm, root_norm, V)
    return (inv_slack * inv_slack * XV + setup.mask * (curv_f * jnp.sum(setup.mask * XV, axis=0))
            ) @ X + norms

  def refined_solve(rhs):  # iterative refinement: the factors' round-off grows like τ²
    x = solve(rhs)
    for _ in range(_REFINEMENTS):
      x = x + solve(rhs - hessian_times(x))
    return x

  direction = refined_solve(-grad)
  tau_grad = jax.jvp(lambda tau: gradient(tau)[0], (tau,), (jnp.ones_like(tau),))[1]
  tangent = refined_solve(-tau_grad)
  decrement = -jnp.sum(grad * direction)

  # The multipliers at the Newton point: λ⁺ = (1/s)(1 − ds/s)/τ and μ⁺ = ∇ℓ(f + df).
  XdW = direction @ X.T
  lam = jnp.maximum(inv_slack * (1.0 - inv_slack * setup.signs * XdW), 0.0) / tau
  df = jnp.sum(setup.mask * XdW, axis=0)
  if loss == "squared":
    mu = mu + df
  else:
    mu = -y * jnp.clip(-y * mu + curv_f * (-y * df) / tau, 0.0, 1.0)
  upper = objective(W, setup, y, loss=loss, beta=beta)
  lower = _lower_bound(mu, lam, y, setup, loss=loss, beta=beta)
  return direction, tangent, decrement, upper, lower


def _centring_tolerance(m, loss: str):
  """The Newton decrement λ² below which τ grows. The squared loss centres loosely (λ² < m/100:
  a third fewer Newton steps on the ReLU benchmark). The hinge centres fully: round-off ends its
  run near τ ~ 1e8, and only a centred last iterate gives a tight certificate (measured: loose
  centring left a 4e-4 relative gap where full centring certifies 1e-5)."""
  return _LOOSE_CENTERING * m if loss == "squared" else 2 * _CENTERED


def step(state: State, setup: Setup, y, *, loss: str, beta, tol) -> State:
  """One step on the central path, with a fresh certificate.

  Away from the centre of Φ_τ: a damped Newton step. Near it: τ grows by `_T_FACTOR` and W takes
  the predicted Newton step of the new Φ_τ (kept where that Φ_τ falls).

  Args:
    state: the `State` of one class.
    setup: the problem's layout.
    y: (n,) the class's targets (squared loss) or ±1 labels (hinge).
    loss: "squared" or "hinge". beta: the regulariser. tol: relative gap to stop at.

  Returns:
    The next `State`; a class marked done no longer moves.
  """
  dW, tangent, decrement, upper, bound = _newton(state, setup, y, loss=loss, beta=beta)
  lower = jnp.maximum(state.lower, jnp.where(jnp.isnan(bound), -jnp.inf, bound))
  converged = upper - lower <= tol * jnp.abs(upper)
  m = parameter(setup, loss)
  # τ pauses where the centre's gap m/τ is a quarter of the target (and grows on only if the
  # certificate is still looser than that), and is never below the weight whose centre's gap is
  # the objective already reached.
  tiny = jnp.finfo(upper.dtype).tiny
  tau_final = m / (0.25 * tol * jnp.maximum(upper, tiny))
  tau_floor = m / jnp.maximum(upper, tiny)
  centred = decrement < _centring_tolerance(m, loss)
  tau = jnp.where(centred, _T_FACTOR * state.tau, state.tau)
  tau = jnp.maximum(tau, tau_floor)
  tau = jnp.where(state.tau < tau_final, jnp.minimum(tau, tau_final), tau)
  # τ also moves off the centre when the objective falls below m/τ (the floor): predict then too.
  predicted = tau != state.tau
  direction = dW + (tau - state.tau) * tangent

  value = functools.partial(_barrier_value, setup=setup, y=y, tau=tau, loss=loss, beta=beta)
  current = value(state.W)
  # The largest step that keeps every cone slack positive, shortened to stay off the boundary.
  slacks, moves = setup.signs * (state.W @ setup.X.T), setup.signs * (direction @ setup.X.T)
  ratios = jnp.where(moves < 0, -slacks / jnp.where(moves < 0, moves, -1.0), jnp.inf)
  alpha0 = jnp.minimum(1.0, 0.99 * jnp.min(ratios))
  # Newton steps pass Armijo's test (near the centre, up to Φ's round-off); predictions need
  # only lower Φ at the new τ.
  decrease = jnp.where(predicted, 0.0, _ARMIJO * decrement)
  slack = jnp.where(decrement < _QUADRATIC, 64 * jnp.finfo(upper.dtype).eps * jnp.abs(current),
                    0.0)

  def sufficient(alpha, trial):
    return trial <= current - alpha * decrease + slack

  alpha, trial = numerics.backtrack(lambda a: value(state.W + a * direction), sufficient, alpha0)
  moved = sufficient(alpha, trial) & (predicted | (decrement > 0))
  # No descent off the centre (round-off), or a Newton system that round-off broke (the
  # hinge's curvature grows like τ², and near τ ~ 1e8 it swamps the n×n system in float64).
  stuck = ~(decrement >= 0) | (~moved & ~predicted)
  keep = converged | stuck | state.done
  return State(
      W=jnp.where(~keep & moved, state.W + alpha * direction, state.W),
      tau=jnp.where(keep, state.tau, tau),
      step=state.step + jnp.where(state.done, 0, 1),
      upper=jnp.where(state.done, state.upper, upper),
      lower=jnp.where(state.done, state.lower, lower),
      done=keep)


def class_targets(targets: relu.Targets, loss: str) -> jnp.ndarray:
  """(C, n): the one-hot columns (squared loss) or the ±1 labels (binary hinge, C = 1)."""
  return targets.onehot.T if loss == "squared" else targets.labels[None, :]


def weights(state: State, num_patterns: int) -> jnp.ndarray:
  """The batched state's weights in the heads' layout (S, P, d, C)."""
  C, N, d = state.W.shape
  return jnp.moveaxis(state.W.reshape(C, N // num_patterns, num_patterns, d), 0, -1)


def unsupported_reason(problem: relu.Problem) -> str:
  """Why the barrier cannot solve `problem` ('' if it can)."""
  if problem.eps > 0:
    return relu_robust_barrier.unsupported_reason(problem)
  if problem.loss == "hinge" and not problem.binary:
    return "solves the squared loss or the binary hinge (the multi-class hinge couples classes)"
  if problem.gated:
    return ""  # no cones: W = 0 is an interior start
  scores = problem.X @ problem.gates
  tie = (scores == 0) & np.any(problem.X != 0, axis=1)[:, None]
  if np.any(tie):
    i, k = np.argwhere(tie)[0]
    return (f"needs x_iᵀh_k ≠ 0 for every nonzero row (a strictly feasible start); gates "
            f"column {k} is orthogonal to row {i} of X")
  return ""


@dataclasses.dataclass(frozen=True)
class Solver(base.Solver):
  """The barrier method over a ReLU `cvxjax.core.relu.Instance` (float64): plain convex or gated
  heads with the squared loss or the binary hinge, one class after another (`lax.map`), and
  robust binary hinge convex heads (`relu_robust_barrier`).

  A class whose certified relative gap reaches `tol` is done and no longer moves; the run stops
  when every class is. Its iterates stay strictly feasible (no violation). It takes no warm
  start: its iterates follow the central path from their own start.

  Attributes:
    tol: the relative certified gap at which a class is done.
  """

  name: ClassVar[str] = "barrier"
  warm_start: ClassVar[bool] = False

  def prepare(self, problem: relu.Instance) -> tuple:
    """(problem, the per-neuron setup, the (C, n) targets per class; None when robust)."""
    if problem.eps > 0:
      setup = relu_robust_barrier.build_setup(problem.X, problem.targets.labels, problem.D,
                                              problem.directions)
      return problem, setup, None
    return (problem, build_setup(problem.X, problem.D, problem.gates, problem.gated),
            class_targets(problem.targets, problem.loss))

  def init(self, prepared: tuple, start=None) -> State:
    problem, setup, Y = prepared
    if problem.eps > 0:
      return relu_robust_barrier.init(setup, problem.D, problem.targets, eps=problem.eps,
                                      q=problem.q, beta=problem.beta)
    return jax.vmap(lambda y: init(setup, y, loss=problem.loss, beta=problem.beta))(Y)

  def step(self, prepared: tuple, state: State) -> State:
    problem, setup, Y = prepared
    if problem.eps > 0:
      return relu_robust_barrier.step(state, setup, problem.D, problem.targets, eps=problem.eps,
                                      q=problem.q, beta=problem.beta, tol=self.tol)
    one = lambda a: step(a[0], setup, a[1], loss=problem.loss, beta=problem.beta, tol=self.tol)
    return jax.lax.map(one, (state, Y))

  def terminate(self, prepared: tuple, state: State) -> jnp.ndarray:
    return jnp.all(state.done)

  def solution(self, prepared: tuple, state: State):
    problem = prepared[0]
    layout = relu_robust_barrier.weights if problem.eps > 0 else weights
    return (layout(state, problem.D.shape[1]), base.summed(state.upper, state.lower, state.step))
