"""Restarted primal–dual hybrid gradient for polynomial heads, certified at every check.

The adversarial hinge problem of docs/math.md §3 is the saddle point

    min_{Z,Z′∈K} max_{α∈[0,1]ⁿ}  Σ_i α_i (1 − m_i(Z − Z′)) + β(z₄ + z′₄),

convex in (Z, Z′) (each m_i is concave) and linear in α. Each iteration (Chambolle–Pock, with the
margins linearised at their exact worst cases, i.e. fixed cuts u_i = x_i + δ*_i):

    Z  ← Π_K(Z  − τ(βE − M)),   Z′ ← Π_K(Z′ − τ(βE + M)),   M = Σ_i α_i s_i Φ(u_i),
    α  ← clip(α + σ(1 − s_i⟨2D⁺ − D, Φ(u_i⁺)⟩), 0, 1),        u⁺ the worst cases at D⁺,

costs a few n×d×d products, one trust-region solve per example and two projections onto K: no
per-example matrices, memory O(n·d + d²) per head. Every `check_every` iterations the current and
the averaged iterates are certified (`cvxjax.poly_dual.certificate`: the exact objective and the
multipliers α scaled into the dual's feasible set), and the run restarts from the better one when
its certified gap has shrunk enough (as PDLP does with its normalised gap). The primal weight ω
(τ = η/ω, σ = ηω) is fixed: PDLP's re-balancing from the moves between restarts drove ω down
on adversarial problems until large primal steps parked the iterate at a kink of the margins.
The state keeps the best feasible point and the best bound, so the gap it reports is valid at
every step; it stops when that gap is at most tol·objective.
"""

import dataclasses
import functools
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from cvxjax.core import checks, poly, poly_dual, psd
from cvxjax.core.activations import Quadratic
from cvxjax.solvers import base

# Restart when the candidate's certified gap is this fraction of the gap at the last restart.
_SUFFICIENT = 0.2
# …or this fraction, and no better than at the previous check (progress stalled).
_NECESSARY = 0.8
# …or after this fraction of all iterations so far without a restart (PDLP's artificial restart).
_ARTIFICIAL = 0.36
# Power iterations for ‖A‖, the norm of the map (Z, Z′) ↦ (s_i⟨Z − Z′, Φ(x_i)⟩)_i.
_POWER_ITERS = 30
# Fraction of the largest stable step ητ·ησ‖A‖² < 1.
_STEP_FRACTION = 0.9
# The primal weight in units of β√n/n (PDLP's ‖c‖/‖b‖): 10× was too small on a 24-example
# adversarial problem (stuck at a kink), 100× reached CVXPY's optimum there, 1000× did best on
# breast cancer (n = 100, r = 0.5).
_OMEGA_SCALE = 100.0


class PrimalDualState(NamedTuple):
  """Solver state for one head (lax.map adds a leading head axis).

  Attributes:
    Z, Zp: (d+1, d+1) current primal iterates in K.
    alpha: (n,) current multipliers in [0, 1].
    Z_avg, Zp_avg, alpha_avg: the averages since the last restart.
    lift_avg: (d+1, d+1) the average of the lift sums M = Σ α_i s_i Φ(u_i) of those iterations,
      each at its own cuts: a dual point that mixes cuts, as the optimum's may need to where a
      worst case has two minimisers (the TRS hard case).
    anchor_gap: () certified gap at the last restart.
    last_gap: () candidate's certified gap at the previous check.
    since_restart: () iterations since the last restart.
    omega: () primal weight ω.
    eta: () step scale η (τ = η/ω, σ = ηω).
    multipliers: (2,) warm starts of the projections of Z and Z′ onto K.
    Z_best, Zp_best: (d+1, d+1) the feasible point with the lowest objective certified so far.
    upper: () its objective.
    lower: () best certified lower bound so far.
    step: () iterations taken.
    done: () whether upper − lower ≤ tol·upper.
  """

  Z: jnp.ndarray
  Zp: jnp.ndarray
  alpha: jnp.ndarray
  Z_avg: jnp.ndarray
  Zp_avg: jnp.ndarray
  alpha_avg: jnp.ndarray
  lift_avg: jnp.ndarray
  anchor_gap: jnp.ndarray
  last_gap: jnp.ndarray
  since_restart: jnp.ndarray
  omega: jnp.ndarray
  eta: jnp.ndarray
  multipliers: jnp.ndarray
  Z_best: jnp.ndarray
  Zp_best: jnp.ndarray
  upper: jnp.ndarray
  lower: jnp.ndarray
  step: jnp.ndarray
  done: jnp.ndarray


def _cuts(D, X, s, r, activation):
  """(margins m_i(D), cut points u_i) at the exact worst cases; r = 0 needs no attack."""
  if isinstance(r, (int, float)) and r == 0:
    return s * poly.lifted_predict(D, X, activation), X
  wc = poly.worst_case(D, X, s, r, activation)
  return wc.margin, poly.cut_points(X, wc.delta, r)


def operator_norm(X, s, activation: Quadratic, r=0.0) -> jnp.ndarray:
  """An estimate of ‖A‖ for A: (Z, Z′) ↦ (s_i⟨Z − Z′, Φ(u_i)⟩)_i over cut points in the ball.

  Power iteration on AAᵀ at u_i = x_i, scaled by ((ρ + r)/ρ)² with ρ the largest ‖x_i‖ (Φ grows
  at most quadratically in ‖u‖), so that steps stay stable for cuts anywhere in the ball.

  Args:
    X: (n, d) inputs.
    s: (n,) labels (0: a padding row).
    activation: the coefficients of σ.
    r: the radius.

  Returns:
    () the estimate.
  """
  w = poly.counted(s).astype(X.dtype)
  apply = lambda v: 2.0 * w * poly.lifted_predict(poly.weighted_lift_sum(X, w * v, activation),
                                                  X, activation)
  v0 = w / jnp.sqrt(jnp.maximum(jnp.sum(w), 1.0))

  def power(_, v):
    u = apply(v)
    return u / jnp.maximum(jnp.linalg.norm(u), jnp.finfo(X.dtype).tiny)

  v = jax.lax.fori_loop(0, _POWER_ITERS, power, v0)
  rho = jnp.max(jnp.linalg.norm(X, axis=1))
  growth = ((rho + r) / jnp.maximum(rho, jnp.finfo(X.dtype).tiny)) ** 2
  return jnp.sqrt(jnp.maximum(v @ apply(v), 0.0)) * growth


def init(X, s, *, r, beta, activation: Quadratic) -> PrimalDualState:
  """Starts at Z = Z′ = 0, α = 1 on the counted examples (the hinge's subgradient there).

  The primal weight is `_OMEGA_SCALE`·β√n/n: multipliers of size 1 against a primal of trace
  up to n/β, scaled by measurement.

  Args:
    X: (n, d) inputs.
    s: (n,) labels in {−1, +1} (0: a padding row).
    r, beta, activation: the problem.

  Returns:
    A `PrimalDualState` for one head.
  """
  m = X.shape[1] + 1
  zero = jnp.zeros((m, m), X.dtype)
  alpha = poly.counted(s).astype(X.dtype)
  n = jnp.maximum(jnp.sum(alpha), 1.0)
  upper = n  # the objective at Z = Z′ = 0
  eta = _STEP_FRACTION / operator_norm(X, s, activation, r)
  omega = _OMEGA_SCALE * beta * jnp.sqrt(n) / n
  inf = jnp.asarray(jnp.inf, X.dtype)
  lift = poly.weighted_lift_sum(X, alpha * s, activation)  # the cuts at D = 0: δ = 0
  return PrimalDualState(zero, zero, alpha, zero, zero, alpha, lift, inf, inf,
                         jnp.asarray(0), jnp.asarray(omega, X.dtype), eta, jnp.zeros(2, X.dtype),
                         zero, zero, jnp.asarray(upper, X.dtype), -inf, jnp.asarray(0),
                         jnp.asarray(False))


def iterate(carry, X, s, *, r, beta, activation: Quadratic, tau, sigma):
  """One primal–dual iteration.

  Args:
    carry: (Z, Z′, α, margins at D, cut points at D, projection multipliers).
    X, s, r, beta, activation: the problem.
    tau, sigma: primal and dual steps.

  Returns:
    The next carry, and the lift sum M of this iteration's multipliers and cuts.
  """
  Z, Zp, alpha, _, U, mult = carry
  M = poly.weighted_lift_sum(U, alpha * s, activation)
  E = jnp.zeros_like(Z).at[-1, -1].set(beta)
  new_Z = psd.trace_psd_projection(Z - tau * (E - M), mult[0])
  new_Zp = psd.trace_psd_projection(Zp - tau * (E + M), mult[1])
  D = Z - Zp
  D_new = new_Z.point - new_Zp.point
  margin, U_new = _cuts(D_new, X, s, r, activation)
  # s_i⟨2D⁺ − D, Φ(u_i⁺)⟩ = 2m_i⁺ − s_i f_D(u_i⁺): the margin at the extrapolated point, linearised.
  extrapolated = 2.0 * margin - s * poly.lifted_predict(D, U_new, activation)
  alpha_next = jnp.where(poly.counted(s), jnp.clip(alpha + sigma * (1.0 - extrapolated), 0.0, 1.0),
                         0.0)
  return (new_Z.point, new_Zp.point, alpha_next, margin, U_new,
          jnp.stack([new_Z.multiplier, new_Zp.multiplier])), M


def step_block(state: PrimalDualState, X, s, *, r, beta, activation: Quadratic, tol,
               check_every: int) -> PrimalDualState:
  """`check_every` iterations, then a certificate of the current and the averaged iterates.

  Args:
    state: the `PrimalDualState` of one head.
    X, s, r, beta, activation: the problem.
    tol: relative gap at which the head is done.
    check_every: iterations between certificates (static).

  Returns:
    The next state (unchanged once done).
  """
  tau, sigma = state.eta / state.omega, state.eta * state.omega
  margin, U = _cuts(state.Z - state.Zp, X, s, r, activation)
  one = functools.partial(iterate, X=X, s=s, r=r, beta=beta, activation=activation, tau=tau,
                          sigma=sigma)

  def body(k, c):
    carry, sums = c
    alpha = carry[2]
    carry, M = one(carry)
    weight = 1.0 / (state.since_restart + k + 1.0)
    # The primal average takes the new iterates, the dual one the (α, M) each step used.
    sums = tuple(avg + weight * (new - avg)
                 for avg, new in zip(sums, (*carry[:2], alpha, M), strict=True))
    return carry, sums

  carry = (state.Z, state.Zp, state.alpha, margin, U, state.multipliers)
  carry, (Z_avg, Zp_avg, alpha_avg, lift_avg) = jax.lax.fori_loop(
      0, check_every, body,
      (carry, (state.Z_avg, state.Zp_avg, state.alpha_avg, state.lift_avg)))
  Z, Zp, alpha, _, _, mult = carry
  certify = lambda Z, Zp, alpha: poly_dual.certificate(Z, Zp, X, s, alpha, r=r, beta=beta,
                                                       activation=activation)
  cur = certify(Z, Zp, alpha)
  # The average of points of K lies in K, up to the round-off of the sum.
  avg = certify(Z_avg, Zp_avg, alpha_avg)
  upper_cur, lower_cur, upper_avg = cur.upper, cur.lower, avg.upper
  mixed = poly_dual.restored_bound(lift_avg, jnp.sum(alpha_avg), beta, avg.upper)
  lower_avg = jnp.maximum(avg.lower, jnp.nan_to_num(mixed, nan=-jnp.inf))
  lower = jnp.maximum(state.lower, jnp.maximum(jnp.nan_to_num(lower_cur, nan=-jnp.inf),
                                               jnp.nan_to_num(lower_avg, nan=-jnp.inf)))
  better_cur = upper_cur < jnp.minimum(upper_avg, state.upper)
  better_avg = (upper_avg <= upper_cur) & (upper_avg < state.upper)
  Z_best = jnp.where(better_cur, Z, jnp.where(better_avg, Z_avg, state.Z_best))
  Zp_best = jnp.where(better_cur, Zp, jnp.where(better_avg, Zp_avg, state.Zp_best))
  upper = jnp.minimum(state.upper, jnp.minimum(upper_cur, upper_avg))

  gap_cur, gap_avg = upper_cur - lower_cur, upper_avg - lower_avg
  use_avg = gap_avg < gap_cur
  gap = jnp.where(use_avg, gap_avg, gap_cur)
  since = state.since_restart + check_every
  restart = ((gap <= _SUFFICIENT * state.anchor_gap)
             | ((gap <= _NECESSARY * state.anchor_gap) & (gap > state.last_gap))
             | (since >= _ARTIFICIAL * (state.step + check_every)))
  pick = lambda a, b: jnp.where(use_avg, a, b)
  cand = (pick(Z_avg, Z), pick(Zp_avg, Zp), pick(alpha_avg, alpha), pick(lift_avg, cur.lift))
  sel = lambda new, old: jnp.where(restart, new, old)
  Zr, Zpr, ar = (sel(c, now) for c, now in zip(cand, (Z, Zp, alpha), strict=False))
  done = upper - lower <= tol * upper
  new = PrimalDualState(
      Z=Zr, Zp=Zpr, alpha=ar,
      Z_avg=sel(cand[0], Z_avg), Zp_avg=sel(cand[1], Zp_avg), alpha_avg=sel(cand[2], alpha_avg),
      lift_avg=sel(cand[3], lift_avg),
      anchor_gap=sel(gap, state.anchor_gap), last_gap=gap,
      since_restart=jnp.where(restart, 0, since), omega=state.omega, eta=state.eta,
      multipliers=mult,
      Z_best=Z_best, Zp_best=Zp_best, upper=upper, lower=lower,
      step=state.step + check_every, done=done)
  return jax.tree.map(lambda old, nw: jnp.where(state.done, old, nw), state, new)


@dataclasses.dataclass(frozen=True)
class Solver(base.Solver):
  """The restarted primal–dual method over a `cvxjax.core.poly.Problem`.

  One `step` is `check_every` iterations and a certificate of every head; heads run one after
  another (`lax.map`), each keeping only O(n·d + d²) of temporaries. A warm start (Z, Z′) sets
  the primal iterate and its average; the multipliers start at 1 as from a cold start.

  Attributes:
    check_every: iterations between certificates (and restart decisions).
    tol: the relative certified gap at which a head is done.
  """

  check_every: int = 64

  name: ClassVar[str] = "primal_dual"

  def __post_init__(self):
    checks.check_count(self.check_every, "check_every")

  @property
  def iterations_per_step(self) -> int:
    return self.check_every

  def init(self, problem: poly.Problem, start=None) -> PrimalDualState:
    state = jax.vmap(lambda s: init(problem.X, s, **problem.settings))(problem.S)
    if start is None:
      return state
    Z, Zp = (jnp.asarray(v, problem.X.dtype) for v in start)
    return state._replace(Z=Z, Zp=Zp, Z_avg=Z, Zp_avg=Zp)

  def step(self, problem: poly.Problem, state: PrimalDualState) -> PrimalDualState:
    block = lambda a: step_block(a[0], problem.X, a[1], tol=self.tol,
                                 check_every=self.check_every, **problem.settings)
    return jax.lax.map(block, (state, problem.S))

  def terminate(self, problem: poly.Problem, state: PrimalDualState) -> jnp.ndarray:
    return jnp.all(state.done)

  def solution(self, problem: poly.Problem, state: PrimalDualState):
    return (state.Z_best, state.Zp_best), base.summed(state.upper, state.lower, state.step)
