"""Convex ReLU and gated-ReLU networks over sampled sign patterns, plain and robust.

See docs/math.md §4.

`fit` trains a `ReluHead` to global optimality, `exact_fit` solves the same problem with CVXPY,
`recover` returns the two-layer network, and `certified_radius` certifies it. The mathematics
(sign patterns, scores and their adjoints, cones, losses, the validated `Problem`) lives in
`cvxjax.core.relu`, with the weight layout W (S, P, d, C), and is re-exported here.
"""

import dataclasses
import functools
import os
import warnings
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cvxjax import certify, exact, sharding, streaming
from cvxjax.core.relu import (
    LOSSES,
    NORMS,
    Problem,
    Targets,
    check_problem,
    cone_slacks,
    cone_slacks_adjoint,
    constraint_violation,
    counted,
    dual_norm,
    encode_targets,
    example_weights,
    group_norms,
    l2_norm,
    loss_value,
    network_scores,
    neuron_signs,
    objective,
    pair_margins,
    robust_cone_has_interior,
    sample_gates,
    scores,
    scores_adjoint,
    sign_patterns,
    unique_gates,
    with_intercept,
)
from cvxjax.solvers import relu_driver

ONE_VS_ALL = "ova_hinge"  # the `loss` of C binary hinge heads, one per class (see `fit`)

__all__ = [
    "LOSSES",
    "NORMS",
    "ONE_VS_ALL",
    "Problem",
    "ReluHead",
    "Targets",
    "certified_radius",
    "check_problem",
    "cone_slacks",
    "cone_slacks_adjoint",
    "constraint_violation",
    "counted",
    "dual_norm",
    "encode_targets",
    "exact_fit",
    "example_weights",
    "fit",
    "group_norms",
    "l2_norm",
    "loss_value",
    "network_scores",
    "neuron_signs",
    "objective",
    "pair_margins",
    "recover",
    "robust_cone_has_interior",
    "sample_gates",
    "scores",
    "scores_adjoint",
    "sign_patterns",
    "unique_gates",
    "with_intercept",
]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
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
    gap: a certified bound on objective − optimum (`cvxjax.core.relu_dual`: a scaled dual point from
      the solver's multipliers or the loss's gradient); None for a streamed fit.
    eps, p: the ball the head was trained against (eps = 0: plain).
    loss: "squared", "hinge" or `ONE_VS_ALL` (C binary hinge heads, see `fit`).
    binary: whether the head is binary (C = 1, labels ±1).
    bias: whether the neurons have biases: the head then acts on `with_intercept(X)`, gates and
      weights have d + 1 rows, and a robust head's ball also covers the constant feature.
  """

  gates: jnp.ndarray
  weights: jnp.ndarray
  objective: jnp.ndarray
  violation: jnp.ndarray
  steps: jnp.ndarray
  gap: Optional[jnp.ndarray] = None
  eps: float = dataclasses.field(default=0.0, metadata=dict(static=True))
  p: object = dataclasses.field(default="inf", metadata=dict(static=True))
  loss: str = dataclasses.field(default="hinge", metadata=dict(static=True))
  binary: bool = dataclasses.field(default=True, metadata=dict(static=True))
  bias: bool = dataclasses.field(default=False, metadata=dict(static=True))

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
    """f(x) for every row of X (n, d): (n,) for a binary head, (n, C) otherwise."""
    X = self.inputs(X)
    if self.gated:
      f = scores(self.weights, X, sign_patterns(X, self.gates))
    else:
      f = jnp.einsum("spnc,s->nc", jax.nn.relu(jnp.einsum("nd,spdc->spnc", X, self.weights)),
                     neuron_signs(False))
    return f[:, 0] if self.binary else f

  def inputs(self, X) -> jnp.ndarray:
    """The (n, d) inputs X as the head's weights see them: (n, d + 1) `with_intercept` if bias."""
    X = jnp.asarray(X, self.weights.dtype)
    return with_intercept(X) if self.bias else X

  def predict(self, X: jnp.ndarray) -> jnp.ndarray:
    """Labels: ±1 for a binary head, argmax_c f_c (in 0..C−1) otherwise; shape (n,)."""
    f = self.scores(X)
    return jnp.where(f >= 0, 1, -1) if self.binary else jnp.argmax(f, axis=-1)

  def certified_radius(self, X, y, *, backbone_lipschitz: float = 1.0) -> jnp.ndarray:
    """(n,) certified ℓ₂ radii: `certified_radius` (the module's function) of this head."""
    return certified_radius(self, X, y, backbone_lipschitz=backbone_lipschitz)

  def summary(self) -> dict:
    """{"objective", "gap" (None when streamed or not finite), "violation", "steps", "width"
    (neurons of `recover`)}."""
    gap = None if self.gap is None else float(self.gap)
    return dict(objective=float(self.objective),
                gap=gap if gap is not None and np.isfinite(gap) else None,
                violation=float(self.violation), steps=int(self.steps),
                width=int(recover(self)[0].shape[1]))


def recover(head: ReluHead, *, prune: float = 1e-10):
  """The two-layer network of a head (docs/math.md §4): u = v_k/√‖v_k‖, α = ±√‖v_k‖ per neuron.

  Neurons with ‖·‖₂ ≤ prune · max‖·‖₂ are dropped. For a gated head the network is gated:
  evaluate it with `network_scores(W1, w2, X, gates=G)`, G being `head.gates` repeated per
  neuron, which `recover` returns as a third element only for gated heads.

  Returns:
    (W1 (d, H), w2 (H,) or (H, C)) for a ReLU head; (W1, w2, G (d, H)) for a gated head; with
    `head.bias`, W1 and G have d + 1 rows, the last the biases (evaluate on `head.inputs(X)`).
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

  A ReLU head's recovered network has the Lipschitz margin bound (docs/math.md §7,
  `certify.lipschitz_certified_radius`); a gated head, discontinuous at its gates, has the
  gate-aware bound `certify.gated_certified_radius`. Both are sound lower bounds on the distance
  to the decision boundary; `backbone_lipschitz` divides them (radii in the backbone's input).
  With biases they are radii in (x, 1) space, where the constant may move too: smaller than
  (so as sound as) the radii in x alone.
  """
  X = head.inputs(X)
  if head.gated:
    return certify.gated_certified_radius(head.u, head.gates, X, y,
                                          backbone_lipschitz=backbone_lipschitz)
  W1, w2 = recover(head)
  return certify.lipschitz_certified_radius(W1, w2, X, y, backbone_lipschitz=backbone_lipschitz)


def fit(X, y, *, eps: float = 0.0, p="inf", beta: float = 1e-3, num_patterns: int = 100,
        gates=None, gated: bool = False, loss: str = "hinge", solver="auto",
        key: Optional[jax.Array] = None, tol: Optional[float] = None,
        max_steps: Optional[int] = None, drop_empty_cones: bool = True, bias: bool = False,
        checkpoint_dir: Optional[str] = None, checkpoint_every: int = 500,
        progress: bool = False, mesh=None, chunk_size: Optional[int] = None,
        start: Optional[ReluHead] = None) -> ReluHead:
  """Trains a convex ReLU or gated-ReLU head to global optimality (docs/math.md §4).

  Solves min_W loss(W) + β Σ‖W[s, k, :, c]‖₂ over the sign patterns of `gates` (sampled from
  `key` and deduplicated when not given), subject for ReLU to the cone constraints, robust
  against ‖δ‖_p ≤ eps when eps > 0 (Bai, Gautam & Sojoudi; exact worst case of the model with
  its patterns held fixed on the ball).

  Every in-memory fit returns a certified `gap` (objective − optimum ≤ gap, `cvxjax.core.relu_dual`)
  and, for convex ReLU, weights that satisfy the (robust) cone constraints up to round-off: a
  final step moves each neuron into its cone along an interior direction (or zeroes it), and the
  objective and gap are those of the moved weights. A fit whose relative gap ends above `tol`
  warns with the gap and the cone violation it reached.

  Solvers (a name for the default settings, or a solver value with its own settings):
    "auto": "barrier" for a convex ReLU head in float64 fitted from scratch on one device that
      it solves at a small size: robust binary hinge with N·d ≤ 4096 (N = 2P neurons), or plain
      squared loss or binary hinge with n ≤ 2048; else "admm".
    "admm", `admm.Solver(linear_solver=, nystrom_rank=)`: the exact ADMM of
      `cvxjax.solvers.admm`, for every loss, ball and head; stops when both relative residuals
      are below `tol` or the relative gap is (checked every `checkpoint_every` steps). Its
      linear solves without eps: "cholesky" (an n×n factor, cached) or "cg" (matrix-free, for n
      too large to factor) with a Nyström preconditioner of rank `nystrom_rank` (0: none).
    "apg", `proximal.Solver()`: FISTA with restarts (gated ReLU, plain, squared loss).
    "al", `proximal.Solver(augmented=True)`: augmented Lagrangian with an inner FISTA (convex
      ReLU, plain, squared loss).
    "barrier", `relu_barrier.Solver()`: the interior-point method of
      `cvxjax.solvers.relu_barrier` (convex ReLU, plain with the squared loss or binary hinge,
      or robust with the binary hinge: `relu_robust_barrier`; float64):
      strictly feasible weights and a certified gap, stopping when the gap is below `tol`
      relative to the objective.
    "penalty", `penalty.Solver(optimizer=, rho=)`: an optax optimiser (default
      optax.adam(1e-2)) on objective + rho·(violation)₊ for `max_steps` steps: the reference
      code's baseline, approximate.

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
    loss: "hinge" (binary, or Σ_{c≠y} multi-class hinge), "squared" (targets ±1 / one-hot), or
      `ONE_VS_ALL` ("ova_hinge", labels 0..C−1): Σ_c Σ_i (1 − y_ic f_ic)₊ with y_ic = ±1, C
      binary hinge heads on the same gates, class c against the rest. The classes do not
      couple, so each is fitted on its own (its own solver choice: the barriers certify binary
      heads that the multi-class hinge leaves to ADMM); objective and gap are the sums over the
      classes, violation and steps the largest; a checkpoint keeps one folder per class.
    solver: "auto", "admm", "apg", "al", "barrier", "penalty", or a `Solver` value of
      `cvxjax.solvers.admm`, `proximal`, `relu_barrier` or `penalty`.
    key: jax.random key for the gates (and the penalty method's start, Nyström's sketch).
    tol: the relative certified gap asked for (and the relative residual at which "admm",
      "apg" and "al" stop); None: the solver's `tol`, 1e-6 by default.
    max_steps: iteration limit (defaults per solver).
    drop_empty_cones: for robust ReLU, drop the patterns whose robust cone has no interior
      (their neurons are zero at the optimum; see `robust_cone_has_interior`).
    bias: give every neuron a bias, as a constant input feature (`with_intercept`), and add the
      all-active gate. A hyperplane then need not pass through the origin: on centred features
      a robust cone {v : a_iᵀv ≥ ε‖v‖_q} through the origin often has no interior, while the
      all-active pattern's has one for ε < 1 (docs/math.md §4). The ball also covers the
      constant feature: the robust objective bounds a larger set of perturbations (sound).
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
    start: a `ReluHead` fitted with the same gates (e.g. at a neighbouring β) to start from;
      its gates are used when `gates` is None. Every solver but "barrier" takes it.

  Returns:
    A `ReluHead` with its gates, weights, exact objective, constraint violation and gap.

  Raises:
    ValueError: if an argument is malformed, or the solver does not handle the problem.
  """
  if start is not None and not isinstance(start, ReluHead):
    raise ValueError(f"start must be a ReluHead, got {start!r}")
  gates = start.gates if start is not None and gates is None else gates
  _check_loss(loss)
  if loss == ONE_VS_ALL:
    settings = dict(eps=eps, p=p, beta=beta, gated=gated, bias=bias)
    fit_class = functools.partial(
        fit, **settings, solver=solver, tol=tol, max_steps=max_steps, drop_empty_cones=False,
        checkpoint_every=checkpoint_every, progress=progress, mesh=mesh, chunk_size=chunk_size)
    return _one_vs_all(fit_class, check_problem(
        X, y, **settings, num_patterns=num_patterns, gates=gates, loss="hinge", key=key,
        drop_empty_cones=drop_empty_cones), X, y, start=start, checkpoint_dir=checkpoint_dir)
  problem = check_problem(X, y, eps=eps, p=p, beta=beta, num_patterns=num_patterns, gates=gates,
                          gated=gated, loss=loss, key=key, drop_empty_cones=drop_empty_cones,
                          bias=bias)
  solver = relu_driver.resolve_solver(
      solver, problem, plain_fit=start is None and mesh is None and chunk_size is None)
  if tol is not None:
    if not (np.isscalar(tol) and tol > 0):
      raise ValueError(f"tol must be a number > 0, got {tol!r}")
    solver = dataclasses.replace(solver, tol=float(tol))
  if getattr(solver, "nystrom_rank", 0) > problem.X.shape[0]:
    raise ValueError(f"nystrom_rank must be at most n = {problem.X.shape[0]}, got "
                     f"{solver.nystrom_rank}")
  if checkpoint_every < 1:
    raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
  sharding.check_mesh(mesh)
  if solver.name == "barrier" and (rows := sharding.padding(problem.X.shape[0], mesh)):
    raise ValueError(f"solver='barrier' needs n divisible by the mesh's example devices (a "
                     f"padding row would close its cones); X has n = {problem.X.shape[0]}, "
                     f"{rows} short of a multiple of {mesh.shape[sharding.EXAMPLES]}")
  streaming.check_chunk_size(chunk_size, problem.X.shape[0])
  if chunk_size is not None and (solver.name not in ("apg", "penalty") or mesh is not None):
    raise ValueError("chunk_size streams solver='apg' or solver='penalty' on one device; got "
                     f"solver={solver.name!r}, mesh={mesh!r}")
  if start is not None:
    if not solver.warm_start:
      raise ValueError(f"start: the {solver.name} solver takes no warm start")
    if start.weights.shape != (shape := problem.weight_shape):
      raise ValueError(f"start must be a ReluHead with weights of shape {shape} (the same gates "
                       f"and head), got shape {start.weights.shape}")
  key = jax.random.key(0) if key is None else key
  solution = relu_driver.fit_relu(
      problem, solver=solver, max_steps=max_steps, key=key, checkpoint_dir=checkpoint_dir,
      checkpoint_every=checkpoint_every, progress=progress, mesh=mesh, chunk_size=chunk_size,
      start=None if start is None else start.weights)
  return _head(problem, solution, bias)


def exact_fit(X, y, *, eps: float = 0.0, p="inf", beta: float = 1e-3, num_patterns: int = 100,
              gates=None, gated: bool = False, loss: str = "hinge", key=None,
              drop_empty_cones: bool = True, bias: bool = False, solver: str = "CLARABEL",
              verbose: bool = False) -> ReluHead:
  """The same problem as `fit`, solved with CVXPY: an oracle for small problems.

  Args:
    X, y, eps, p, beta, num_patterns, gates, gated, loss, key, drop_empty_cones, bias: as for
      `fit`.
    solver: a CVXPY conic solver ("CLARABEL" or "SCS").
    verbose: print the solver's log.

  Returns:
    A `ReluHead` whose objective and violation are evaluated exactly at the solver's weights.
  """
  _check_loss(loss)
  if loss == ONE_VS_ALL:
    settings = dict(eps=eps, p=p, beta=beta, gated=gated, bias=bias)
    fit_class = functools.partial(exact_fit, **settings, drop_empty_cones=False, solver=solver,
                                  verbose=verbose)
    return _one_vs_all(fit_class, check_problem(
        X, y, **settings, num_patterns=num_patterns, gates=gates, loss="hinge", key=key,
        drop_empty_cones=drop_empty_cones), X, y)
  problem = check_problem(X, y, eps=eps, p=p, beta=beta, num_patterns=num_patterns, gates=gates,
                          gated=gated, loss=loss, key=key, drop_empty_cones=drop_empty_cones,
                          bias=bias)
  W = exact.solve_relu(problem, solver=solver, verbose=verbose)
  return _head(problem, relu_driver.solution_from_weights(problem, W), bias)


def _check_loss(loss) -> None:
  if loss not in (*LOSSES, ONE_VS_ALL):
    raise ValueError(f"loss must be one of {(*LOSSES, ONE_VS_ALL)}, got {loss!r}")


def _one_vs_all(fit_class: Callable[..., ReluHead], problem: Problem, X, y, *,
                start: Optional[ReluHead] = None,
                checkpoint_dir: Optional[str] = None) -> ReluHead:
  """The `ONE_VS_ALL` head: `fit_class(X, ±1 labels, gates=, ...)` per class, stacked.

  Args:
    fit_class: `fit` or `exact_fit` with every setting but the labels, gates, start and folder.
    problem: the validated multi-class problem (its gates: sampled, deduplicated, and for robust
      heads those with an interior).
    X, y: the inputs and the labels 0..C−1.
    start: a `ONE_VS_ALL` head to warm-start every class from, or None.
    checkpoint_dir: the folder of the per-class checkpoints (class_0, class_1, …), or None.
  """
  if problem.binary:
    raise ValueError(f"loss={ONE_VS_ALL!r} needs multi-class labels 0..C-1, got labels ±1")
  labels = np.asarray(problem.targets.labels)
  C = problem.targets.onehot.shape[1]
  if start is not None and (start.loss != ONE_VS_ALL or start.weights.shape[-1] != C):
    raise ValueError(f"start must be a loss={ONE_VS_ALL!r} head with {C} classes, got "
                     f"loss={start.loss!r} with weights of shape {start.weights.shape}")
  heads = []
  for c in range(C):
    extra = {}
    if start is not None:
      extra["start"] = dataclasses.replace(start, weights=start.weights[..., c:c + 1],
                                           loss="hinge", binary=True)
    if checkpoint_dir is not None:
      extra["checkpoint_dir"] = os.path.join(checkpoint_dir, f"class_{c}")
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      heads.append(fit_class(X, np.where(labels == c, 1.0, -1.0), gates=problem.gates, **extra))
    for warning in caught:  # each class's warning, naming the class, at the caller's line
      warnings.warn(f"class {c} of {C}: {warning.message}", warning.category, stacklevel=3)
  gaps = [h.gap for h in heads]
  return ReluHead(
      gates=heads[0].gates, weights=jnp.concatenate([h.weights for h in heads], axis=-1),
      objective=sum(h.objective for h in heads),
      violation=jnp.max(jnp.stack([h.violation for h in heads])),
      steps=jnp.max(jnp.stack([h.steps for h in heads])),
      gap=None if any(g is None for g in gaps) else sum(gaps), eps=heads[0].eps, p=heads[0].p,
      loss=ONE_VS_ALL, binary=False, bias=heads[0].bias)


def _head(problem: Problem, solution: relu_driver.ReluSolution, bias: bool) -> ReluHead:
  """The head of a solved problem: its gates, the solution's arrays and the problem's settings."""
  p = next(k for k, v in NORMS.items() if v == problem.q)
  return ReluHead(gates=jnp.asarray(problem.gates, solution.weights.dtype), **solution._asdict(),
                  eps=problem.eps, p=p, loss=problem.loss, binary=problem.binary, bias=bool(bias))
