"""Low-rank (Burer–Monteiro) solver for polynomial heads at feature scale, certified.

Each of Z, Z′ ∈ K is held as a factor (`point`): Z = LLᵀ with L = [A; bᵀ], A of shape (d, k) and
b = ‖A‖_F c/‖c‖, so that tr Z₁ = ‖A‖²_F = ‖b‖² = z₄. Every factor pair (A, c) is a point of K, and
the regulariser β(z₄ + z′₄) is β(‖A‖²_F + ‖A′‖²_F), smooth. The hinge is replaced by its smooth
upper bound (t + √(t² + δ²))/2 (`numerics.smooth_plus`), and L-BFGS (optax.lbfgs, with its zoom
line search) minimises the smoothed objective over the factors: one round of `inner_steps`
iterations per δ, δ shrinking tenfold a round from 1 (docs/solvers.md, "The low-rank solver").

The margins need only Aᵀx_i and, at r > 0, each example's trust-region problem, which lives in
the factors' 2k-dimensional range (`attacks`): O(n·d·k) per evaluation, no (d+1)² matrix. After
every round the iterate is certified (`poly_dual.certificate`) with α_i the smoothed hinge's
derivative at its exact worst-case margins (any α ∈ [0, 1]ⁿ gives a valid bound once scaled into
the dual's feasible set); the best bound so far is kept, so the gap is valid at every iterate.

The problem over the factors is not convex. For smooth convex objectives its local minima are
global once k is large enough (Burer & Monteiro 2005; Boumal, Voroninski & Bandeira 2016); here
a too small k stalls far above the optimum (a fit whose factors fill their rank warns), and even
with room to spare the smoothing path can end above it: about 1% at r = 0, up to 5% at r > 0,
where it depends on `first_smoothing` (measured in docs/solvers.md).
"""

import dataclasses
from typing import ClassVar, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from cvxjax.core import numerics, poly, poly_dual, psd
from cvxjax.core.activations import Quadratic
from cvxjax.solvers import base

_FIRST_SMOOTHING = 1.0  # δ of the first round: the margins' natural scale
_FULL_RANK = 1e-3  # a factor whose smallest singular value exceeds this fraction fills its rank
_LEAST_SMOOTHING = 1e-12  # below this δ the smoothed hinge equals the hinge to round-off


class LowRankState(NamedTuple):
  """Solver state for one head (lax.map adds a leading head axis).

  Attributes:
    factors: (A, c, A′, c′): A, A′ of shape (d, k), c, c′ of shape (k,).
    smoothing: () the δ of the next round.
    lower: () the best certified lower bound on the optimum found so far.
    step: () L-BFGS iterations taken.
    best: the factors of the lowest exact objective at the start (a warm one) or at the end of
      a round (the solution: at a small δ L-BFGS may raise the exact objective while lowering
      the smoothed one).
    best_objective: () that objective (+inf before the first round from a random start).
  """

  factors: tuple
  smoothing: jnp.ndarray
  lower: jnp.ndarray
  step: jnp.ndarray
  best: tuple
  best_objective: jnp.ndarray


def point(A: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
  """The point LLᵀ of K with L = [A; bᵀ], b = ‖A‖_F c/‖c‖; A (d, k), c (k,) → (d+1, d+1)."""
  L = jnp.concatenate([A, _border(A, c)[None]], axis=0)
  return L @ L.T


def _border(A, c):
  """b = ‖A‖_F c/‖c‖; (k,) (0 at c = 0, a measure-zero set that the iterates do not meet)."""
  norm = jnp.sqrt(jnp.sum(c * c))
  return jnp.linalg.norm(A) * c / jnp.where(norm > 0, norm, 1.0)


def margins(factors, X, s, *, r, activation: Quadratic) -> jnp.ndarray:
  """The exact worst-case margins of the head (Z, Z′) that the factors stand for; (n,).

  They are s_i(a(‖Aᵀu_i‖² − ‖A′ᵀu_i‖²) + b u_iᵀ(Ab − A′b′) + c(‖b‖² − ‖b′‖²)) at u_i = x_i + δ_i,
  the attack `attacks` held fixed (Danskin's gradient), from the factors alone.
  """
  A, c, Ap, cp = factors
  if r > 0:
    X = X + jax.lax.stop_gradient(attacks(factors, X, s, r=r, activation=activation))
  a, b_act, c_act = activation
  b, bp = _border(A, c), _border(Ap, cp)
  quadratic = jnp.sum((X @ A) ** 2, axis=1) - jnp.sum((X @ Ap) ** 2, axis=1)
  value = a * quadratic + b_act * (X @ (A @ b - Ap @ bp)) + c_act * (b @ b - bp @ bp)
  return s * value


def attacks(factors, X, s, *, r, activation: Quadratic) -> jnp.ndarray:
  """The exact worst cases δ_i (n, d), ‖δ_i‖ ≤ r, of D = Z − Z′ in the range of the factors.

  D₁ = AAᵀ − A′A′ᵀ has rank at most 2k and d₂ = Ab − A′b′ lies in the same span, so every TRS
  lives in 2k coordinates: a thin QR of [A, A′] and an eigh of a 2k×2k matrix replace the eigh
  of D₁ and its n×d×d product (`poly.worst_case`), in O(n·d·k).
  """
  A, c, Ap, cp = factors
  k = A.shape[1]
  basis, R = jnp.linalg.qr(jnp.concatenate([A, Ap], axis=1))
  mu, W = jnp.linalg.eigh(R[:, :k] @ R[:, :k].T - R[:, k:] @ R[:, k:].T)
  Q = basis @ W
  b, bp = _border(A, c), _border(Ap, cp)
  nu, g_hat, _, _ = poly.trust_region_terms(A @ b - Ap @ bp, b @ b - bp @ bp, mu, Q, X, s,
                                            activation)
  delta_hat = jax.vmap(psd.trust_region, in_axes=(0, 0, None))(nu, g_hat, r).delta
  return delta_hat @ Q.T


def smoothed_objective(factors, X, s, smoothing, *, r, beta, activation: Quadratic):
  """Σ_i smooth_plus(1 − m_i, δ) + β(‖A‖²_F + ‖A′‖²_F): an upper bound on the objective, within
  nδ/2 of it."""
  m = margins(factors, X, s, r=r, activation=activation)
  hinge = jnp.where(poly.counted(s), numerics.smooth_plus(1.0 - m, smoothing), 0.0)
  A, _, Ap, _ = factors
  return jnp.sum(hinge) + beta * (jnp.sum(A * A) + jnp.sum(Ap * Ap))


def init(X: jnp.ndarray, rank: int, start: Optional[tuple] = None,
         first_smoothing: float = _FIRST_SMOOTHING) -> LowRankState:
  """A small random start (fixed key: runs repeat exactly), or the top-k factors of (Z, Z′).

  Args:
    X: (n, d) inputs (only the shape and dtype are used).
    rank: k, the factors' columns.
    start: (Z, Z′), each (d+1, d+1) in K, or None.
    first_smoothing: δ of the first round.
  """
  d = X.shape[1]
  if start is None:
    keys = jax.random.split(jax.random.key(0), 4)
    shapes = ((d, rank), (rank,), (d, rank), (rank,))
    # Drawn in float32 whatever the precision, so that float32 and float64 runs start alike.
    factors = tuple(0.1 * jax.random.normal(key, shape, jnp.float32).astype(X.dtype)
                    for key, shape in zip(keys, shapes, strict=True))
  else:
    factors = sum((_factor(jnp.asarray(Y, X.dtype), rank) for Y in start), ())
  return LowRankState(factors, jnp.asarray(first_smoothing, X.dtype), jnp.zeros((), X.dtype),
                      jnp.asarray(0), factors, jnp.asarray(jnp.inf, X.dtype))


def _factor(Y, rank):
  """(A, c) of the top `rank` eigenpairs of Y ∈ K (its best rank-k approximation)."""
  w, V = jnp.linalg.eigh(Y)
  L = V[:, -rank:] * jnp.sqrt(jnp.maximum(w[-rank:], 0.0))
  return L[:-1], L[-1]


def round_(state: LowRankState, X, s, *, r, beta, activation: Quadratic, inner_steps: int,
           shrink: float) -> LowRankState:
  """`inner_steps` L-BFGS iterations at δ = state.smoothing, then the certificate and δ·shrink."""
  settings = dict(r=r, beta=beta, activation=activation)
  f = lambda p: smoothed_objective(p, X, s, state.smoothing, **settings)
  optimizer = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(f)

  def iterate(carry, _):
    p, opt_state = carry
    value, grad = value_and_grad(p, state=opt_state)
    updates, opt_state = optimizer.update(grad, opt_state, p, value=value, grad=grad,
                                          value_fn=f)
    return (optax.apply_updates(p, updates), opt_state), None

  (factors, _), _ = jax.lax.scan(iterate, (state.factors, optimizer.init(state.factors)), None,
                                 length=inner_steps)
  # A failed line search can leave non-finite factors: the round is then dropped.
  finite = jnp.isfinite(f(factors))
  factors = jax.tree.map(lambda new, old: jnp.where(finite, new, old), factors, state.factors)
  upper, lower = certificate(factors, X, s, state.smoothing, **settings)
  better = upper < state.best_objective
  best = jax.tree.map(lambda new, old: jnp.where(better, new, old), factors, state.best)
  return LowRankState(factors, jnp.maximum(state.smoothing * shrink, _LEAST_SMOOTHING),
                      jnp.maximum(state.lower, lower), state.step + inner_steps, best,
                      jnp.minimum(upper, state.best_objective))


def certificate(factors, X, s, smoothing, *, r, beta, activation: Quadratic):
  """(objective, certified lower bound) at the factors, α the smoothed hinge's derivative."""
  A, c, Ap, cp = factors
  Z, Zp = point(A, c), point(Ap, cp)
  m = margins(factors, X, s, r=r, activation=activation)
  alpha = numerics.smooth_plus_derivative(1.0 - m, smoothing)
  result = poly_dual.certificate(Z, Zp, X, s, alpha, r=r, beta=beta, activation=activation)
  return result.upper, result.lower


def fills_its_rank(factors) -> jnp.ndarray:
  """Whether a factor uses all its k columns (its k-th singular value above 1e-3 of its first),
  so that an optimum of higher rank may lie out of reach; () bool over Z and Z′ of one head.
  Never when k ≥ d + 1: the factors then reach every point of K."""
  A, c, Ap, cp = factors
  if A.shape[1] >= A.shape[0] + 1:
    return jnp.asarray(False)

  def full(A, c):
    L = jnp.concatenate([A, _border(A, c)[None]], axis=0)
    singular = jnp.linalg.svd(L, compute_uv=False)
    return singular[-1] > _FULL_RANK * singular[0]

  return full(A, c) | full(Ap, cp)


@dataclasses.dataclass(frozen=True)
class Solver(base.Solver):
  """The low-rank solver over a `cvxjax.core.poly.Problem`, heads one after another.

  Attributes:
    rank: k, columns of each factor (memory O(d·k) per factor); an optimum of rank above k is
      out of reach, so k should exceed the number of neurons a head needs.
    inner_steps: L-BFGS iterations per smoothing level δ (one `step`).
    shrink: the factor by which δ shrinks after each round, in (0, 1).
    first_smoothing: δ of the first round (> 0). The path, and at r > 0 where it ends, depend
      on it (docs/solvers.md, "The low-rank solver").
    head_batch_size: heads processed together (`lax.map`; None: all).
    free_multipliers: free multipliers of the final certificate of each head (examples at
      r = 0, half as many at r > 0; `cvxjax.solvers.dual_interior.certify`, memory
      O(free_multipliers²)); 0 skips it.
    tol: the relative certified gap to stop at.
  """

  rank: int = 32
  inner_steps: int = 500
  shrink: float = 0.1
  first_smoothing: float = _FIRST_SMOOTHING
  head_batch_size: Optional[int] = None
  free_multipliers: int = 4096

  name: ClassVar[str] = "low_rank"

  def __post_init__(self):
    if not (isinstance(self.free_multipliers, int) and self.free_multipliers >= 0):
      raise ValueError(f"free_multipliers must be an integer >= 0, got {self.free_multipliers!r}")
    for field in ("rank", "inner_steps"):
      value = getattr(self, field)
      if not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{field} must be an integer >= 1, got {value!r}")
    if not (isinstance(self.first_smoothing, (int, float)) and self.first_smoothing > 0):
      raise ValueError(f"first_smoothing must be a number > 0, got {self.first_smoothing!r}")
    if not 0 < self.shrink < 1:
      raise ValueError(f"shrink must lie in (0, 1), got {self.shrink!r}")
    if self.head_batch_size is not None and not (
        isinstance(self.head_batch_size, int) and self.head_batch_size >= 1):
      raise ValueError(f"head_batch_size must be None or an integer >= 1, got "
                       f"{self.head_batch_size!r}")

  @property
  def iterations_per_step(self) -> int:
    return self.inner_steps

  def init(self, problem: poly.Problem, start=None) -> LowRankState:
    if start is None:
      return jax.vmap(lambda _: init(problem.X, self.rank, None, self.first_smoothing))(
          problem.S)

    def warm(Z, Zp, s):
      # The start counts as the best point so far: the first rounds, at large δ, leave it.
      state = init(problem.X, self.rank, (Z, Zp), self.first_smoothing)
      upper, lower = certificate(state.factors, problem.X, s, state.smoothing, **problem.settings)
      return state._replace(lower=lower, best_objective=upper)

    return jax.vmap(warm)(*start, problem.S)

  def step(self, problem: poly.Problem, state: LowRankState) -> LowRankState:
    one = lambda a: round_(a[0], problem.X, a[1], inner_steps=self.inner_steps,
                           shrink=self.shrink, **problem.settings)
    return jax.lax.map(one, (state, problem.S), batch_size=self.head_batch_size)

  def solution(self, problem: poly.Problem, state: LowRankState):
    A, c, Ap, cp = state.best
    Z, Zp = jax.vmap(point)(A, c), jax.vmap(point)(Ap, cp)
    upper = jax.vmap(lambda Z, Zp, s: poly.objective(Z, Zp, problem.X, s, **problem.settings)
                     )(Z, Zp, problem.S)
    return (Z, Zp), base.summed(upper, state.lower, state.step)
