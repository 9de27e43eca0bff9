"""Two-layer polynomial-activation networks as convex programs over K (docs/math.md §2–§3).

`fit` trains a `PolyHead` to global optimality with a certified gap, `exact_fit` solves the same
problem with CVXPY, `decompose` recovers the two-layer network, and `worst_case_margin` /
`certified_radius` certify a head. The mathematics (lift, worst case, objective, dual bound)
lives in `cvxjax.core.poly` and is re-exported here.
"""

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from cvxjax import certify, decomposition, exact, sharding, streaming
from cvxjax.core import psd
from cvxjax.core.activations import DEFAULT_ACTIVATION, Quadratic
from cvxjax.core.checks import check_array, check_labels, check_nonnegative, check_positive
from cvxjax.core.poly import (
    WorstCase,
    counted,
    cut_points,
    default_block_rows,
    dual_bound,
    hinge_sum,
    lift,
    lift_dual_bound,
    lifted_predict,
    margins,
    max_min_eigenvalue,
    objective,
    trust_region_data,
    weighted_lift_sum,
    worst_case,
)
from cvxjax.solvers import driver

__all__ = [
    "PolyHead",
    "WorstCase",
    "certified_radius",
    "counted",
    "cut_points",
    "decompose",
    "default_block_rows",
    "dual_bound",
    "exact_fit",
    "fit",
    "hinge_sum",
    "lift",
    "lift_dual_bound",
    "lifted_predict",
    "margins",
    "max_min_eigenvalue",
    "objective",
    "trust_region_data",
    "weighted_lift_sum",
    "worst_case",
    "worst_case_margin",
]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PolyHead:
  """A trained polynomial head: C pairs (Z_c, Z′_c) of K, one per output.

  A binary head (labels ±1) has C = 1 and predicts sign f; a one-vs-all head has C ≥ 2
  and predicts argmax_c f_c (docs/math.md §3, multi-class option a).

  Attributes:
    Z, Zp: (C, d+1, d+1) matrices of K.
    objective: the training objective Σ_c [Σ_i (1 − m_ci)₊ + β(z₄ + z′₄)], exact.
    gap: a certified upper bound on objective − global optimum (inf if none was computed).
    steps: solver steps taken.
    activation: the coefficients (a, b, c) of σ.
    binary: whether the head is binary (C = 1, labels ±1).
  """

  Z: jnp.ndarray
  Zp: jnp.ndarray
  objective: jnp.ndarray
  gap: jnp.ndarray
  steps: jnp.ndarray
  activation: Quadratic = dataclasses.field(default=DEFAULT_ACTIVATION,
                                            metadata=dict(static=True))
  binary: bool = dataclasses.field(default=True, metadata=dict(static=True))

  def scores(self, X: jnp.ndarray) -> jnp.ndarray:
    """f_c(x) for every row of X: (n,) for a binary head, (n, C) otherwise."""
    f = jax.vmap(lifted_predict, in_axes=(0, None, None))(self.Z - self.Zp, X, self.activation)
    return f[0] if self.binary else f.T

  def predict(self, X: jnp.ndarray) -> jnp.ndarray:
    """Labels: ±1 for a binary head, argmax_c f_c (in 0..C−1) otherwise; shape (n,)."""
    f = self.scores(X)
    return jnp.where(f >= 0, 1, -1) if self.binary else jnp.argmax(f, axis=-1)

  def certified_radius(self, X, y, *, backbone_lipschitz: float = 1.0) -> jnp.ndarray:
    """(n,) exact ℓ₂ radii: `certified_radius` (the module's function) of this head."""
    return certified_radius(self, X, y, backbone_lipschitz=backbone_lipschitz)

  def summary(self) -> dict:
    """{"objective", "gap" (None where no gap was computed: `exact_fit`), "violation" (None:
    Z, Z′ are kept in K), "steps", "width" (neurons of `decompose` with |α| ≥ 1e-6·max|α|)}."""
    gap = float(self.gap)
    return dict(objective=float(self.objective), gap=gap if np.isfinite(gap) else None,
                violation=None, steps=int(self.steps),
                width=decomposition.network_width(decompose(self)[1]))


def _encode_labels(y, n: int) -> tuple[np.ndarray, bool]:
  """Labels → (C, n) signs: ±1 labels give one binary head, integers 0..C−1 give C heads."""
  labels, binary = check_labels(y, n)
  if binary:
    return labels[None, :], True
  classes = int(labels.max()) + 1
  return np.where(np.arange(classes)[:, None] == labels[None, :], 1.0, -1.0), False


def _check_problem(X, y, r, beta) -> tuple[np.ndarray, np.ndarray, bool]:
  X = check_array(X, "X")
  S, binary = _encode_labels(y, X.shape[0])
  check_nonnegative(r, "r")
  check_positive(beta, "beta")
  return X, S, binary


def fit(X, y, *, r: float = 0.0, beta: float = 1e-3,
        activation: Quadratic = DEFAULT_ACTIVATION, solver="auto", tol: Optional[float] = None,
        max_steps: Optional[int] = None, checkpoint_dir: Optional[str] = None,
        checkpoint_every: int = 20, progress: bool = False, mesh=None,
        chunk_size: Optional[int] = None, start: Optional[PolyHead] = None) -> PolyHead:
  """Trains a polynomial head to global optimality (docs/math.md §3).

  Solves min_{Z,Z′∈K} Σ_i (1 − m_i)₊ + β(z₄ + z′₄) with m_i the exact worst-case margin over
  the ℓ₂ ball of radius r (r = 0: the plain hinge problem), per head.

  Solvers (a name for the default settings, or a solver value with its own settings):
    "interior", `interior.Solver()`: the primal–dual interior-point method of
      `cvxjax.solvers.interior` (exact worst cases, Nesterov–Todd scaling, Mehrotra steps);
      stops when the certified relative gap is below `tol`, 20–40 steps where it converges.
      Memory and time grow like d⁴ and d⁶.
    "sdp", `sdp.Solver()` (r > 0): the S-lemma SDP (one LMI of size d+1 per example) by the same
      primal–dual method (`cvxjax.solvers.sdp`): no kinks at large r, its block multipliers
      certify; memory O(n d² + d⁴); its endgame stops at relative gaps of 1e-6 to 1e-3.
    "interior+sdp", `working_set.Solver(switch_after=, slack=, max_rounds=, bucket=)` (r > 0):
      "interior" on every example until each head certifies, fails or has taken `switch_after`
      (60) steps, then "sdp" on each open head's working set, the examples whose worst-case
      margin is below 1 + `slack` (0.5), grown and solved again while an example outside it
      has a margin below 1: the SDP's cost follows the examples near the margin, not n.
    "barrier", `barrier.Solver()`: the primal barrier method of `cvxjax.solvers.barrier`;
      stops when the certified relative gap is below `tol`. Memory and time grow like d⁴ and d⁶.
    "projected", `projected.Solver(optimizer=, head_batch_size=)`: an optax optimiser (default
      optax.adam(1e-2)) on the exact objective with Π_K after every step, until the certified
      relative gap is below `tol` or for `max_steps` steps; heads `head_batch_size` at a time
      (bounds memory). A baseline that scales to large d but stalls above the optimum (its gap,
      from multipliers scaled into the dual's feasible set, is reported honestly).
    "low_rank", `low_rank.Solver(rank=, inner_steps=, shrink=, first_smoothing=,
      free_multipliers=)`: Burer–Monteiro factors of Z and Z′ (rank k = 32 by default), L-BFGS
      on a smoothed hinge whose smoothing shrinks tenfold from `first_smoothing` (1) every
      `inner_steps` (500) iterations (`cvxjax.solvers.low_rank`); memory O(n·d + d·k) per head
      at r = 0. Reaches objectives within about 1% of the optimum (r = 0; up to 5% at r > 0)
      where "projected" stays orders of magnitude above; then
      each head's fixed-cut dual is solved in the multipliers' space
      (`cvxjax.solvers.dual_interior`, memory O(free_multipliers²)), whose bound is the gap and
      whose primal replaces the head where better: at r = 0 the optimum itself when the margin
      examples fit in `free_multipliers` (4096). It warns when the factors fill their rank.
    "primal_dual", `primal_dual.Solver(check_every=)`: restarted primal–dual hybrid gradient
      (`cvxjax.solvers.primal_dual`), O(n·d + d²) memory per head, certified every
      `check_every` (64) iterations; stops at `tol`. Experimental: its fixed primal weight suits
      some problems and not others.
    "auto": when d ≤ 49, "interior" for r = 0 and "interior+sdp" for r > 0; else "low_rank"
      ("projected" with `chunk_size`).

  Precision: the interior-point, SDP and barrier solvers are built for float64
  (`jax_enable_x64`); in float32 they stop where round-off stops them and report the gap they
  certified.

  Args:
    X: (n, d) inputs, finite.
    y: (n,) labels in {−1, +1} (one binary head) or integers 0..C−1 (C one-vs-all heads).
    r: radius of the ℓ₂ ball of the adversary, ≥ 0.
    beta: regularisation weight β > 0.
    activation: the coefficients (a, b, c) of σ.
    solver: "auto", "interior", "sdp", "interior+sdp", "barrier", "projected", "low_rank",
      "primal_dual", or a `Solver` value of `cvxjax.solvers.interior`, `sdp`, `working_set`,
      `barrier`, `projected`, `low_rank` or `primal_dual`.
    tol: relative certified gap at which the solver stops (None: the solver's `tol`, 1e-6 by
      default); a fit that ends above it warns with the gap it reached.
    max_steps: step limit (default 150 for "interior" and "sdp", 450 for each head of
      "interior+sdp", 300 for "barrier", 1000 for "projected", 4000 iterations for
      "low_rank", 20000 for "primal_dual").
    checkpoint_dir: if given, the solver state is saved there every `checkpoint_every` steps
      and a run finds and resumes the latest checkpoint, ending where an uninterrupted run does.
    checkpoint_every: steps between checkpoints (and progress reports).
    progress: print step, objective and gap as the run goes.
    mesh: a `cvxjax.sharding.make_mesh` mesh: examples split over its "examples" axis (padded
      to a multiple of it by rows that count nowhere), heads over its "model" axis. None: one
      device.
    chunk_size: stream X from the host (a NumPy array or memory map) in chunks of this many
      examples, one chunk on the device at a time (`cvxjax.streaming`); projected solver only.
    start: a `PolyHead` of the same shapes (e.g. the fit at a neighbouring β or r) to start
      from (the low-rank solver never returns a point worse than it); the projected, low-rank
      and primal–dual solvers take it, the interior-point, SDP and barrier solvers do not.

  Returns:
    A `PolyHead` whose Z, Z′ lie in K, with its objective and certified gap.

  Raises:
    ValueError: if an argument is malformed (named in the message).
  """
  X, S, binary = _check_problem(X, y, r, beta)
  solver = driver.resolve_solver(solver, X.shape[1], chunk_size is not None, float(r))
  if tol is not None:
    if not (np.isscalar(tol) and tol > 0):
      raise ValueError(f"tol must be a number > 0, got {tol!r}")
    solver = dataclasses.replace(solver, tol=float(tol))
  if checkpoint_every < 1:
    raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
  sharding.check_mesh(mesh)
  streaming.check_chunk_size(chunk_size, X.shape[0])
  if solver.name == "primal_dual" and mesh is not None:
    raise ValueError(f"solver='primal_dual' runs on one device; it takes no mesh (got {mesh!r})")
  if chunk_size is not None and (solver.name != "projected" or mesh is not None):
    raise ValueError("chunk_size streams the projected solver on one device; it takes neither "
                     "solver='interior', 'barrier', 'sdp' or 'primal_dual' nor a mesh (got "
                     f"solver={solver!r}, mesh={mesh!r})")
  if start is not None:
    if not solver.warm_start:
      raise ValueError(f"start: the {solver.name} solver takes no warm start")
    shape = (S.shape[0], X.shape[1] + 1, X.shape[1] + 1)
    if not (isinstance(start, PolyHead) and start.Z.shape == shape):
      raise ValueError(f"start must be a PolyHead with Z of shape {shape}, got {start!r}")
  activation = Quadratic(*(float(v) for v in activation))
  solution = driver.fit_poly(X, S, r=float(r), beta=float(beta), activation=activation,
                             solver=solver, max_steps=max_steps, checkpoint_dir=checkpoint_dir,
                             checkpoint_every=checkpoint_every, progress=progress, mesh=mesh,
                             chunk_size=chunk_size,
                             start=None if start is None else (start.Z, start.Zp))
  return PolyHead(**solution._asdict(), activation=activation, binary=binary)


def exact_fit(X, y, *, r: float = 0.0, beta: float = 1e-3,
              activation: Quadratic = DEFAULT_ACTIVATION, solver: str = "CLARABEL",
              eps: float = 1e-9, verbose: bool = False) -> PolyHead:
  """The same problem as `fit`, solved as the S-lemma SDP of docs/math.md §3 with CVXPY.

  An oracle for small problems (n LMIs of size d+1; needs the `exact` extra). The solver's
  matrices are projected onto K (a round-off-sized move) and the returned objective is then
  evaluated exactly with the TRS, so it is comparable with `fit`'s; `gap` is inf, since the
  solver's own accuracy is not certified here.

  Args:
    X, y, r, beta, activation: as for `fit`.
    solver: "CLARABEL" or "SCS".
    eps: the solver's tolerance.
    verbose: print the solver's log.

  Returns:
    A `PolyHead`.
  """
  X, S, binary = _check_problem(X, y, r, beta)
  activation = Quadratic(*(float(v) for v in activation))
  pairs = [exact.solve_poly_sdp(X, s, r=float(r), beta=float(beta), activation=activation,
                                solver=solver, eps=eps, verbose=verbose)[:2] for s in S]
  dtype = jnp.result_type(float)
  project = jax.jit(jax.vmap(psd.project_trace_psd))
  Z = project(jnp.asarray(np.stack([p[0] for p in pairs]), dtype))
  Zp = project(jnp.asarray(np.stack([p[1] for p in pairs]), dtype))
  Xj, Sj = jnp.asarray(X, dtype), jnp.asarray(S, dtype)
  values = jax.vmap(objective, in_axes=(0, 0, None, 0, None, None, None))(
      Z, Zp, Xj, Sj, float(r), float(beta), activation)
  return PolyHead(Z=Z, Zp=Zp, objective=jnp.sum(values), gap=jnp.asarray(jnp.inf, dtype),
                  steps=jnp.asarray(0), activation=activation, binary=binary)


def decompose(head: PolyHead, *, prune: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
  """The two-layer network (U, α) of docs/math.md §2 with f(x) = Σ_j α_j σ(u_jᵀx) = f_Z(x).

  Neural decomposition of every Z_c (α > 0) and Z′_c (α < 0); the output equals the head's
  on any input to round-off (float64), up to neurons with |α| ≤ prune·max|α|.

  Args:
    head: a `PolyHead`.
    prune: relative size under which neurons are dropped.

  Returns:
    U of shape (M, d) with unit rows, and α of shape (M,) (binary) or (M, C) (one column per
    head, one nonzero per row); evaluate with `cvxjax.decomposition.network_predict`.
  """
  return decomposition.decompose(np.asarray(head.Z, np.float64), np.asarray(head.Zp, np.float64),
                                 binary=head.binary, prune=prune)


def worst_case_margin(head: PolyHead, X, y, r) -> jnp.ndarray:
  """Exact worst-case margins over the ℓ₂ ball of radius r (docs/math.md §3), shape (n,).

  Binary: min_{‖δ‖≤r} y f(x + δ). One-vs-all: min_{‖δ‖≤r} min_{c≠y} (f_y − f_c)(x + δ), one
  TRS per class pair. Negative means some perturbation in the ball misclassifies x.
  """
  return certify.poly_worst_case_margin(head.Z, head.Zp, X, y, r, head.activation, head.binary)


def certified_radius(head: PolyHead, X, y, *, backbone_lipschitz: float = 1.0) -> jnp.ndarray:
  """The exact ℓ₂ distance of each example to the decision boundary, shape (n,).

  0 for misclassified examples, +inf where no perturbation flips the prediction. With X the
  features of an L-Lipschitz backbone, `backbone_lipschitz` = L gives radii in its input space
  (divided by L; certified, no longer exact: docs/math.md §7).
  """
  if not backbone_lipschitz > 0:
    raise ValueError(f"backbone_lipschitz must be > 0, got {backbone_lipschitz!r}")
  radii = certify.poly_certified_radius(head.Z, head.Zp, X, y, head.activation, head.binary)
  return radii / backbone_lipschitz
