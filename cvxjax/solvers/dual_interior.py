"""The fixed-cut dual of a polynomial head by an interior-point method in the multipliers' space.

For cut points u_i in the balls (docs/math.md §3), every α ∈ [0, 1]ⁿ and μ, μ′ with

    S = βE − M(α) − μG ⪰ 0,   S′ = βE + M(α) − μ′G ⪰ 0,   M(α) = Σ α_i s_i Φ(u_i),

give the lower bound Σ α_i. That is a linear SDP in n + 2 variables with two (d+1)×(d+1) blocks,
and its primal is the hinge problem at the fixed cuts, (Z, Z′) being the blocks' multipliers: at
r = 0 the head's own problem. `solve` follows the central path of the pair (the HKM direction,
Mehrotra's predictor–corrector, the dual iterates kept feasible, so every one of them is a
bound) with the Newton system reduced to the multipliers:

    H_ij = s_i s_j [tr(Φ_i Z Φ_j S⁻¹) + tr(Φ_i Z′ Φ_j S′⁻¹)] + (box terms),

formed by `poly_dual.lift_products` from n×d×d products: O(n²d + n³) a step and O(n²) memory,
where the interior-point method in Z's space (`interior`) needs (d+1)⁴ memory and (d+1)⁶ time.

Only examples near the margin need free multipliers: at the optimum α_i = 1 where the margin is
below 1 and 0 where it is above. `certify` frees the examples whose worst-case margins at a given
point lie closest to 1 (as many as `max_free` multipliers allow) and fixes the others, those below
the margin at one shared θ ∈ [0, 1] (so that a start near θ = 0 is feasible), those above at 0.
Every point of the restricted dual is a point of the full one, so the bound holds whatever the
restriction; it is the optimum of the fixed-cut problem once the restriction agrees with the
optimum's margins. At r > 0 the cuts come from the given point, and the bound is as good as its
worst cases (the fixed-cut problem's own optimum lies below the head's wherever they differ);
the primal blocks then solve the fixed-cut problem only, which can be far from the head's (they
are kept only where better).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from cvxjax.core import poly, poly_dual, psd
from cvxjax.core.activations import Quadratic

_TO_BOUNDARY = 0.95  # the fraction of the step to the cones' boundary that a step takes
_RIDGE = 1e-13  # Tikhonov term on the diagonally scaled Schur complement (round-off guard)
_RESIDUAL_TOL = 1e-6  # relative primal residual below which the blocks count as solved


class Cuts(NamedTuple):
  """The restricted dual's data.

  Attributes:
    U: (f, k, d) the free examples' cut points, k per example (their multipliers share the
      example's hinge: Σ_j α_ij ≤ 1).
    s: (f,) their labels (0: a row that counts nowhere).
    ones: (d+1, d+1) Σ s_i Φ(u_i) over the examples fixed at θ.
    ones_count: () how many examples that is.
  """

  U: jnp.ndarray
  s: jnp.ndarray
  ones: jnp.ndarray
  ones_count: jnp.ndarray


class DualState(NamedTuple):
  """An iterate of `solve`.

  Attributes:
    y: (f·k + 3,) the dual point (α over the free examples' cuts, θ, μ, μ′).
    Z, Zp: (d+1, d+1) the primal blocks, positive definite.
    x_low: (f·k + 1,) the primal multipliers of α ≥ 0 and θ ≥ 0.
    x_high: (f + 1,) those of Σ_j α_ij ≤ 1 and θ ≤ 1.
    iteration: () steps taken.
  """

  y: jnp.ndarray
  Z: jnp.ndarray
  Zp: jnp.ndarray
  x_low: jnp.ndarray
  x_high: jnp.ndarray
  iteration: jnp.ndarray


def _blocks(cuts: Cuts):
  """The coefficient matrices of (θ, μ, μ′) in S and in S′: two (3, m, m) stacks."""
  m = cuts.ones.shape[0]
  G, zero = psd.lorentz_form(m, cuts.ones.dtype), jnp.zeros_like(cuts.ones)
  return jnp.stack([cuts.ones, G, zero]), jnp.stack([-cuts.ones, zero, G])


def _flat(cuts: Cuts):
  """The cut points (f·k, d) and their labels (f·k,), example by example."""
  f, k, d = cuts.U.shape
  return cuts.U.reshape(f * k, d), jnp.repeat(cuts.s, k)


def _per_example(cuts: Cuts, values):
  """Σ_j over each example's k cuts of values (f·k,) → (f,)."""
  f, k, _ = cuts.U.shape
  return values.reshape(f, k).sum(axis=1)


def _cost(cuts: Cuts) -> jnp.ndarray:
  """b of the dual objective bᵀy = Σ α + θ·ones_count."""
  _, s = _flat(cuts)
  return jnp.concatenate([poly.counted(s).astype(cuts.U.dtype),
                          jnp.stack([cuts.ones_count.astype(cuts.U.dtype)]),
                          jnp.zeros(2, cuts.U.dtype)])


def _adjoint(cuts: Cuts, y, activation):
  """Σ y_k A_k in each block: (S-block, S′-block, lower-bound rows, upper-bound rows)."""
  U, s = _flat(cuts)
  cut_count = s.shape[0]
  A, Ap = _blocks(cuts)
  M = poly.weighted_lift_sum(U, y[:cut_count] * s, activation)
  extra = jnp.einsum("e,epq->pq", y[cut_count:], A)
  extra_p = jnp.einsum("e,epq->pq", y[cut_count:], Ap)
  upper = jnp.concatenate([_per_example(cuts, y[:cut_count]), y[cut_count:cut_count + 1]])
  return M + extra, -M + extra_p, -y[:cut_count + 1], upper


def _forward(cuts: Cuts, Z, Zp, x_low, x_high, activation):
  """𝒜(X): ⟨A_k, ·⟩ summed over the blocks, for every dual coordinate k; (f·k + 3,)."""
  U, s = _flat(cuts)
  k = cuts.U.shape[1]
  A, Ap = _blocks(cuts)
  cuts_part = s * (poly.lifted_predict(Z, U, activation) - poly.lifted_predict(Zp, U, activation))
  extra = jnp.einsum("epq,pq->e", A, Z) + jnp.einsum("epq,pq->e", Ap, Zp)
  upper = jnp.concatenate([jnp.repeat(x_high[:-1], k), x_high[-1:]])
  return jnp.concatenate([cuts_part, extra]).at[:s.shape[0] + 1].add(upper - x_low)


def slacks(cuts: Cuts, y, *, beta, activation):
  """S, S′, the lower slacks (α, θ) and the upper slacks (1 − Σ_j α_ij, 1 − θ) at y."""
  m = cuts.ones.shape[0]
  E = jnp.zeros((m, m), y.dtype).at[-1, -1].set(beta)
  A, Ap, low, upper = _adjoint(cuts, y, activation)
  return E - A, E - Ap, -low, 1.0 - upper


def _psd_step(X, dX):
  """The largest a with X + a·dX ⪰ 0 for X ≻ 0 (inf if dX ⪰ 0)."""
  L = jnp.linalg.cholesky(X)
  inv = jax.scipy.linalg.solve_triangular(L, jnp.eye(X.shape[0], dtype=X.dtype), lower=True)
  low = jnp.linalg.eigvalsh(inv @ dX @ inv.T)[0]
  return jnp.where(low < 0, -1.0 / low, jnp.inf)


def _positive_step(v, dv):
  """The largest a with v + a·dv ≥ 0 for v > 0 (inf if dv ≥ 0)."""
  falling = dv < 0
  return jnp.min(jnp.where(falling, -v / jnp.where(falling, dv, -1.0), jnp.inf))


def _residual(cuts, state, activation):
  """The primal residual b − 𝒜(X) relative to 1 + ‖b‖."""
  b = _cost(cuts)
  forward = _forward(cuts, state.Z, state.Zp, state.x_low, state.x_high, activation)
  return jnp.linalg.norm(b - forward) / (1.0 + jnp.linalg.norm(b))


def _complementarity(state, S, Sp, low, high):
  """⟨Z, S⟩ + ⟨Z′, S′⟩ + x_lowᵀy + x_highᵀ(1 − y): the pair's duality gap."""
  return (jnp.sum(state.Z * S) + jnp.sum(state.Zp * Sp) + state.x_low @ low
          + state.x_high @ high)


def step(cuts: Cuts, state: DualState, *, beta, activation: Quadratic) -> DualState:
  """One predictor–corrector step; the dual point stays strictly feasible."""
  U, s = _flat(cuts)
  k = cuts.U.shape[1]
  A, Ap = _blocks(cuts)
  S, Sp, low, high = slacks(cuts, state.y, beta=beta, activation=activation)
  T, Tp = psd.symmetrize(jnp.linalg.inv(S)), psd.symmetrize(jnp.linalg.inv(Sp))
  Z, Zp, x_low, x_high = state.Z, state.Zp, state.x_low, state.x_high
  nu = _barrier_parameter(cuts)
  mu = _complementarity(state, S, Sp, low, high) / nu
  # Schur complement H_kl = Σ_blocks tr(A_k X A_l S⁻¹), the multipliers' block by lift_products.
  W = psd.symmetrize(jnp.einsum("pq,eqr,rs->eps", Z, A, T))
  Wp = psd.symmetrize(jnp.einsum("pq,eqr,rs->eps", Zp, Ap, Tp))
  predict = jax.vmap(lambda D: poly.lifted_predict(D, U, activation))
  cross = s[:, None] * (predict(W) - predict(Wp)).T
  H = jnp.block([
      [poly_dual.lift_products(Z, T, U, s, activation)
       + poly_dual.lift_products(Zp, Tp, U, s, activation), cross],
      [cross.T, jnp.einsum("epq,fqp->ef", W, A) + jnp.einsum("epq,fqp->ef", Wp, Ap)]])
  # The bounds: α ≥ 0 on the diagonal, Σ_j α_ij ≤ 1 on each example's k×k block, θ on both.
  upper = x_high / high
  f, cut_count = cuts.s.shape[0], s.shape[0]
  examples = jnp.arange(f)
  blocks = H[:cut_count, :cut_count].reshape(f, k, f, k).at[examples, :, examples, :].add(
      upper[:-1, None, None])
  H = H.at[:cut_count, :cut_count].set(blocks.reshape(cut_count, cut_count))
  H = H + jnp.diag(jnp.concatenate([x_low / low, jnp.zeros(2, H.dtype)]).at[s.shape[0]].add(
      upper[-1]))
  scale = jnp.sqrt(jnp.abs(jnp.diag(H))) + jnp.finfo(H.dtype).tiny
  chol = jnp.linalg.cholesky(H / scale[:, None] / scale[None, :]
                             + _RIDGE * jnp.eye(H.shape[0], dtype=H.dtype))
  b = _cost(cuts)

  def direction(sigma, correction):
    """The Newton direction towards σμ on the central path, with a second-order correction
    (dX_aff dS_aff S⁻¹ in each block, dx·ds in the bounds)."""
    C, Cp, c_low, c_high = correction
    target = (psd.symmetrize(sigma * mu * T - C), psd.symmetrize(sigma * mu * Tp - Cp),
              (sigma * mu - c_low) / low, (sigma * mu - c_high) / high)
    rhs = b - _forward(cuts, *target, activation)
    dy = jax.scipy.linalg.cho_solve((chol, True), rhs / scale) / scale
    dS, dSp, d_low, d_high = (-v for v in _adjoint(cuts, dy, activation))
    dZ = psd.symmetrize(target[0] - Z - Z @ dS @ T)
    dZp = psd.symmetrize(target[1] - Zp - Zp @ dSp @ Tp)
    dx_low = target[2] - x_low - x_low * d_low / low
    dx_high = target[3] - x_high - x_high * d_high / high
    primal = jnp.min(jnp.stack([_psd_step(Z, dZ), _psd_step(Zp, dZp),
                                _positive_step(x_low, dx_low), _positive_step(x_high, dx_high)]))
    dual = jnp.min(jnp.stack([_psd_step(S, dS), _psd_step(Sp, dSp), _positive_step(low, d_low),
                              _positive_step(high, d_high)]))
    return (dy, (dZ, dZp, dx_low, dx_high), (dS, dSp, d_low, d_high),
            jnp.minimum(1.0, primal), jnp.minimum(1.0, dual))

  none = (jnp.zeros_like(Z), jnp.zeros_like(Z), jnp.zeros_like(low), jnp.zeros_like(high))
  _, dX, dS, a_primal, a_dual = direction(0.0, none)
  X = (Z, Zp, x_low, x_high)
  slack = (S, Sp, low, high)
  gap_affine = sum(jnp.sum((x + a_primal * dx) * (s + a_dual * ds))
                   for x, dx, s, ds in zip(X, dX, slack, dS, strict=True))
  sigma = jnp.clip(gap_affine / (mu * nu), 0.0, 1.0) ** 3
  correction = (dX[0] @ dS[0] @ T, dX[1] @ dS[1] @ Tp, dX[2] * dS[2], dX[3] * dS[3])
  dy, dX, _, a_primal, a_dual = direction(sigma, correction)
  a_primal, a_dual = _TO_BOUNDARY * a_primal, _TO_BOUNDARY * a_dual
  Z, Zp, x_low, x_high = (x + a_primal * dx for x, dx in zip(X, dX, strict=True))
  return DualState(state.y + a_dual * dy, Z, Zp, x_low, x_high, state.iteration + 1)


def _barrier_parameter(cuts: Cuts) -> int:
  """ν: the two blocks' sizes and the (f·k + 1) + (f + 1) bounds."""
  f, k, _ = cuts.U.shape
  return 2 * cuts.ones.shape[0] + f * k + f + 2


def init(cuts: Cuts, *, beta, activation: Quadratic) -> DualState:
  """A strictly feasible, centred start: y = (α₀, …, α₀, −β/2, −β/2), X = S⁻¹, x = 1/slack.

  With α₀ = β / (4 Σ_i ‖Φ(u_i)‖ + 4‖ones‖) (at most 1/(2k)), ‖M‖ ≤ β/4, so S, S′ ⪰ βI/4.
  """
  a, b, c = activation
  U, s = _flat(cuts)
  norms = jnp.linalg.norm(U, axis=1)
  size = (jnp.sum(jnp.where(poly.counted(s), abs(a) * norms**2 + abs(b) * norms + abs(c), 0))
          + jnp.linalg.norm(cuts.ones))
  first = jnp.minimum(0.5 / cuts.U.shape[1],
                      beta / (4.0 * size + jnp.finfo(cuts.U.dtype).tiny))
  y = jnp.concatenate([jnp.full(s.shape[0] + 1, first, cuts.U.dtype),
                       jnp.full(2, -beta / 2, cuts.U.dtype)])
  S, Sp, low, high = slacks(cuts, y, beta=beta, activation=activation)
  return DualState(y, psd.symmetrize(jnp.linalg.inv(S)), psd.symmetrize(jnp.linalg.inv(Sp)),
                   1.0 / low, 1.0 / high, jnp.asarray(0))


def bound(cuts: Cuts, state: DualState) -> jnp.ndarray:
  """bᵀy, the dual objective: a lower bound whenever S, S′ ⪰ 0 (up to round-off)."""
  return _cost(cuts) @ state.y


@functools.partial(jax.jit, static_argnames=("beta", "activation", "tol", "max_iterations"))
def solve(cuts: Cuts, *, beta, activation: Quadratic, tol: float,
          max_iterations: int) -> DualState:
  """Steps from `init` until the duality gap is below tol·bound with the primal residual below
  1e-6, a step fails (non-finite), or `max_iterations` steps."""
  def going(state):
    S, Sp, low, high = slacks(cuts, state.y, beta=beta, activation=activation)
    gap = _complementarity(state, S, Sp, low, high)
    solved = ((gap <= tol * jnp.abs(bound(cuts, state)))
              & (_residual(cuts, state, activation) <= _RESIDUAL_TOL))
    finite = jnp.all(jnp.isfinite(state.y)) & jnp.isfinite(gap)
    return (state.iteration < max_iterations) & ~solved & finite & (gap > 0)

  def advance(state):
    new = step(cuts, state, beta=beta, activation=activation)
    # A failed factorisation gives NaN: keep the last finite iterate and stop.
    finite = jnp.all(jnp.isfinite(new.y)) & jnp.all(jnp.isfinite(new.Z)) & jnp.all(
        jnp.isfinite(new.Zp))
    kept = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, state)
    return kept._replace(iteration=jnp.where(finite, new.iteration, max_iterations))

  return jax.lax.while_loop(going, advance, init(cuts, beta=beta, activation=activation))


def on_cone(Z: jnp.ndarray) -> jnp.ndarray:
  """A PSD block moved onto K: the corner raised to tr Z₁, or Z₁'s diagonal raised evenly to
  z₄ (both keep Z ⪰ 0; the interior-point blocks are off K by their residual, ~1e-8)."""
  d = Z.shape[0] - 1
  excess = jnp.trace(Z[:-1, :-1]) - Z[-1, -1]
  Z = Z.at[-1, -1].add(jnp.maximum(excess, 0.0))
  return Z.at[jnp.arange(d), jnp.arange(d)].add(jnp.maximum(-excess, 0.0) / d)


class Certified(NamedTuple):
  """A head's point and its certificate after `certify`.

  Attributes:
    Z, Zp: (d+1, d+1) the better (by exact objective) of the given point and the dual's primal
      blocks moved onto K.
    objective: () that point's exact objective.
    lower: () the certified lower bound on the optimum.
    iteration: () interior-point steps taken, over all rounds.
  """

  Z: jnp.ndarray
  Zp: jnp.ndarray
  objective: jnp.ndarray
  lower: jnp.ndarray
  iteration: jnp.ndarray


def reflected_cuts(wc: poly.WorstCase, s: jnp.ndarray, activation: Quadratic) -> jnp.ndarray:
  """Each worst case reflected across its TRS's bottom eigenvector v_i: δ_i − 2(v_iᵀδ_i)v_i.

  Where D₁'s extreme eigenvalue makes the TRS (nearly) hard, its minimisers are δ₀ ± τv, and at
  the optimum the hinge multiplier of such an example may split between the two; one cut per
  example then leaves the fixed-cut dual short of the optimum. The reflection has δ_i's norm,
  so it is a cut in the ball whatever D.

  Args:
    wc: the worst cases of `poly.worst_case` (n examples).
    s: (n,) labels.
    activation: σ's coefficients (the sign of a orients the TRS).

  Returns:
    (n, d) the reflected perturbations.
  """
  bottom = jnp.where((s * activation.a >= 0)[:, None], wc.eigvecs[:, 0][None, :],
                     wc.eigvecs[:, -1][None, :])
  return wc.delta - 2.0 * jnp.sum(bottom * wc.delta, axis=1, keepdims=True) * bottom


def certify(Z, Zp, X, s, *, r, beta, activation: Quadratic, max_free: int = 4096,
            rounds: int = 3, tol: float = 1e-7, max_iterations: int = 80) -> Certified:
  """A lower bound from the fixed-cut dual at (Z, Z′)'s worst cases, and a better point if any.

  The cuts are (Z, Z′)'s worst cases, and at r > 0 also their `reflected_cuts`. The first round
  frees the examples whose margins lie closest to 1 and fixes the others by the side of 1 they
  are on. The dual's primal blocks then solve the fixed-cut problem with those examples' hinges
  fixed (dropped or linear); at r = 0, where their margins contradict a fixing, the next round
  frees those examples first (the rest again by closeness to 1), up to `rounds` rounds. Every
  round's bound is re-derived from its multipliers by `poly_dual.restored_bound` (scaled into
  the dual's feasible set), so it is valid whatever the interior-point method reached; the best
  counts.

  Args:
    Z, Zp: (d+1, d+1) a point of K × K (e.g. the low-rank solver's).
    X: (n, d) inputs. s: (n,) labels ±1 (0: padding).
    r, beta, activation: the problem.
    max_free: how many multipliers are free (memory O(max_free²)): as many examples at r = 0,
      half as many at r > 0 (two cuts each).
    rounds: the most interior-point solves (at r = 0; one at r > 0).
    tol: the relative duality gap at which the interior-point method stops.
    max_iterations: its step limit per round; at r > 0 the one round takes the rounds' budget,
      rounds × max_iterations (two cuts per example: 98 steps on a 2048-example head).

  Returns:
    A `Certified`.
  """
  wc = poly.worst_case(Z - Zp, X, s, r, activation)
  points = [poly.cut_points(X, wc.delta, r)]
  if r > 0:
    points.append(poly.cut_points(X, reflected_cuts(wc, s, activation), r))
  counted = poly.counted(s)
  # The given point's objective from the worst cases already at hand (poly.objective's sum).
  given = poly.hinge_sum(wc.margin, s) + beta * (Z[-1, -1] + Zp[-1, -1])
  best = Certified(Z, Zp, given, jnp.asarray(-jnp.inf, X.dtype), jnp.asarray(0))
  margin, priority = wc.margin, jnp.abs(wc.margin - 1.0)
  # At r > 0 the fixed-cut problem's optimum can lie far from the head's, and its margins say
  # little about the head's: one round.
  budget = max_iterations if r == 0 else rounds * max_iterations
  for _ in range(rounds if r == 0 else 1):
    free = jnp.argsort(jnp.where(counted, priority, jnp.inf))[:max_free // len(points)]
    is_free = jnp.zeros_like(counted).at[free].set(True)
    fixed_one = counted & (margin < 1.0) & ~is_free
    ones = poly.weighted_lift_sum(points[0], jnp.where(fixed_one, s, 0.0), activation)
    cuts = Cuts(jnp.stack([U[free] for U in points], axis=1), s[free], ones, jnp.sum(fixed_one))
    state = solve(cuts, beta=beta, activation=activation, tol=tol, max_iterations=budget)
    Zc, Zpc = on_cone(state.Z), on_cone(state.Zp)
    candidate = poly.objective(Zc, Zpc, X, s, r, beta, activation)
    better = candidate < best.objective  # False where the candidate is NaN
    best = Certified(jnp.where(better, Zc, best.Z), jnp.where(better, Zpc, best.Zp),
                     jnp.where(better, candidate, best.objective),
                     jnp.fmax(best.lower, _restored(cuts, state, beta, activation, best.objective)),
                     best.iteration + state.iteration)
    # The blocks' margins at the cuts: those the fixed-cut problem sees (at r = 0 the true ones).
    margin = s * poly.lifted_predict(Zc - Zpc, points[0], activation)
    wrong_side = jnp.where(fixed_one, margin > 1.0, margin < 1.0)
    contradicted = counted & ~is_free & wrong_side
    if not bool(jnp.any(contradicted)):
      break
    priority = jnp.where(contradicted, -1.0, jnp.abs(margin - 1.0))
  return best


def _restored(cuts: Cuts, state: DualState, beta, activation, upper) -> jnp.ndarray:
  """The bound of `solve`'s multipliers scaled into the full dual's feasible set."""
  cut_points, cut_labels = _flat(cuts)
  k = cuts.U.shape[1]
  alpha = jnp.nan_to_num(jnp.clip(state.y[:cut_labels.shape[0]], 0.0, 1.0))
  # Σ_j α_ij ≤ 1 again after clipping and round-off (scaling an example's α keeps every bound).
  alpha = alpha / jnp.repeat(jnp.maximum(1.0, _per_example(cuts, alpha)), k)
  theta = jnp.nan_to_num(jnp.clip(state.y[cut_labels.shape[0]], 0.0, 1.0))
  M = poly.weighted_lift_sum(cut_points, alpha * cut_labels, activation) + theta * cuts.ones
  alpha_sum = jnp.sum(jnp.where(poly.counted(cut_labels), alpha, 0.0)) + theta * cuts.ones_count
  return poly_dual.restored_bound(M, alpha_sum, beta, upper)
