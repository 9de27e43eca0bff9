"""Adversarial attacks composed from an initialiser, a step rule and a projection (docs/math.md §5).

Every attack acts on a model given as `apply(params, x) -> scores`, with scores of shape (n,)
for a binary model with labels ±1 (margin y·f) or (n, C) logits with labels 0..C−1 (margin
f_y − max_{c≠y} f_c). `apply` must treat the examples of a batch independently (batch-norm in
inference mode), so that one gradient of the summed objective gives every example's gradient.
It must be a stable, hashable callable (a module-level function or `PolyHead.scores`, not a
fresh lambda per call): it is a static argument of the jitted attack, and a new one recompiles.

    x_adv = attacks.pgd(poly.PolyHead.scores, head, X, y, 0.5, norm=2, key=key)
    acc = attacks.robust_accuracy(poly.PolyHead.scores, head, X, y, 0.5,
                                  functools.partial(attacks.pgd, norm=2, key=key))

The returned points satisfy the ball (‖x_adv − x‖∞ ≤ ε or ‖x_adv − x‖₂ ≤ ε) and the input
bounds exactly as computed in floating point: a final repair pulls back any point that the
rounding of x + δ pushed out of the ball by an ulp (for ℓ₂ to a few ulps inside, so that the
norm computed in another summation order holds too). Precision: the attacks run in X's dtype.
"""

import functools
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

Apply = Callable[[Any, jnp.ndarray], jnp.ndarray]
Bounds = Optional[Tuple[Any, Any]]
Attack = Callable[..., jnp.ndarray]

# Repair rounds: each doubles the shrink, so x_adv reaches x itself by round ~53 in float64.
_MAX_REPAIRS = 64


def margin(scores: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
  """Margin of the true label; > 0 iff the example is classified correctly.

  Args:
    scores: (n,) binary scores f, or (n, C) logits.
    y: (n,) labels: ±1 for binary scores, integers 0..C−1 for logits.

  Returns:
    (n,) y·f for binary scores, f_y − max_{c≠y} f_c for logits.
  """
  if scores.ndim == 1:
    return y.astype(scores.dtype) * scores
  y = y.astype(jnp.int32)
  true = jnp.take_along_axis(scores, y[:, None], axis=-1)[:, 0]
  is_true = jax.nn.one_hot(y, scores.shape[-1], dtype=bool)
  return true - jnp.max(jnp.where(is_true, -jnp.inf, scores), axis=-1)


def log_likelihood(scores: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
  """log p(y | x), the negative cross-entropy; minimising it is the CE attack.

  Args:
    scores: (n,) binary scores f (p(y|x) = sigmoid(y f)), or (n, C) logits.
    y: (n,) labels as for `margin`.

  Returns:
    (n,) log-likelihoods.
  """
  if scores.ndim == 1:
    return jax.nn.log_sigmoid(y.astype(scores.dtype) * scores)
  log_probs = jax.nn.log_softmax(scores, axis=-1)
  return jnp.take_along_axis(log_probs, y.astype(jnp.int32)[:, None], axis=-1)[:, 0]


def difference_of_logits_ratio(scores: jnp.ndarray, y: jnp.ndarray,
                               target: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """The DLR objective of Croce & Hein (2020), invariant to shifting and scaling the logits.

  Untargeted: (z_y − max_{c≠y} z_c) / (z_π1 − z_π3); targeted at class t:
  (z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2), with z_π1 ≥ z_π2 ≥ ... the sorted logits. Minimising
  it is the DLR attack; it is > 0 iff the margin is.

  Args:
    scores: (n, C) logits, C ≥ 3 (C ≥ 4 when targeted).
    y: (n,) integer labels.
    target: None, or (n,) integer target classes.

  Returns:
    (n,) values.
  """
  top = -jnp.sort(-scores, axis=-1)
  if target is None:
    numerator, scale = margin(scores, y), top[:, 0] - top[:, 2]
  else:
    true = jnp.take_along_axis(scores, y.astype(jnp.int32)[:, None], axis=-1)[:, 0]
    numerator = true - jnp.take_along_axis(scores, target[:, None], axis=-1)[:, 0]
    scale = top[:, 0] - 0.5 * (top[:, 2] + top[:, 3])
  return numerator / (scale + 1e-12)


# What an attack minimises, by name; the kept point is always the one of lowest margin.
OBJECTIVES = {"margin": margin, "ce": log_likelihood, "dlr": difference_of_logits_ratio}
# Logits an objective needs: DLR divides by z_π1 − z_π3, targeted DLR by a mean with z_π4.
_MIN_CLASSES = {"dlr": 3}


def _expand(v: jnp.ndarray, like: jnp.ndarray) -> jnp.ndarray:
  """(n,) per-example values broadcastable against a batch `like` of shape (n, ...)."""
  return v.reshape(v.shape + (1,) * (like.ndim - 1))


def norm_of(delta: jnp.ndarray, norm) -> jnp.ndarray:
  """Per-example ℓ∞ or ℓ₂ norm over all but the batch axis: (n, ...) -> (n,)."""
  axes = tuple(range(1, delta.ndim))
  if norm == "inf":
    return jnp.max(jnp.abs(delta), axis=axes)
  return jnp.sqrt(jnp.sum(delta**2, axis=axes))


def random_init(key: jax.Array, X: jnp.ndarray, eps, norm) -> jnp.ndarray:
  """A uniform random point of the ball around the origin, per example.

  Args:
    key: PRNG key.
    X: (n, ...) inputs (for shape and dtype).
    eps: radius ≥ 0.
    norm: "inf" (uniform in the cube) or 2 (uniform in the Euclidean ball).

  Returns:
    (n, ...) perturbations δ with ‖δ‖ ≤ ε (before rounding; `project` makes it exact).
  """
  if norm == "inf":
    return jax.random.uniform(key, X.shape, X.dtype, -1.0, 1.0) * eps
  k_dir, k_rad = jax.random.split(key)
  direction = jax.random.normal(k_dir, X.shape, X.dtype)
  direction = direction / _expand(jnp.maximum(norm_of(direction, 2), jnp.finfo(X.dtype).tiny), X)
  dim = float(np.prod(X.shape[1:]))
  radius = eps * jax.random.uniform(k_rad, X.shape[:1], X.dtype) ** (1.0 / dim)
  return direction * _expand(radius, X)


def steepest_direction(grad: jnp.ndarray, norm) -> jnp.ndarray:
  """The unit-norm ascent direction of a linear function in the ball's norm.

  Args:
    grad: (n, ...) gradients.
    norm: "inf" (sign(g), the FGSM step) or 2 (g / ‖g‖₂; zero where g = 0).

  Returns:
    (n, ...) directions.
  """
  if norm == "inf":
    return jnp.sign(grad)
  length = norm_of(grad, 2)
  return grad / _expand(jnp.where(length > 0, length, 1.0), grad)


def _inner_radius(eps, norm, dtype):
  """The radius the repair enforces: ε for ℓ∞, a few ulps less for ℓ₂, whose norm another
  summation order (a fused kernel, NumPy) may compute an ulp larger."""
  return eps if norm == "inf" else eps * (1 - 16 * jnp.finfo(dtype).eps)


def _outside(X_adv: jnp.ndarray, X: jnp.ndarray, eps, norm) -> jnp.ndarray:
  """Which entries (ℓ∞: per component) or examples (ℓ₂) lie outside the ball as computed."""
  delta, limit = X_adv - X, _inner_radius(eps, norm, X.dtype)
  return jnp.abs(delta) > limit if norm == "inf" else norm_of(delta, 2) > limit


def _repair(X_adv: jnp.ndarray, X: jnp.ndarray, eps, norm) -> jnp.ndarray:
  """Pulls points that rounding left just outside the ball back in, by shrinking δ."""
  ulp = jnp.finfo(X.dtype).eps
  limit = _inner_radius(eps, norm, X.dtype)

  def body(carry):
    k, X_adv = carry
    delta = X_adv - X
    size = jnp.abs(delta) if norm == "inf" else _expand(norm_of(delta, 2), X)
    # Shrink a little more every round, so that the loop ends (δ = 0 is inside).
    scale = limit / jnp.maximum(size, jnp.finfo(X.dtype).tiny) * (1.0 - ulp * 2.0**k)
    scale = jnp.clip(scale, 0.0, 1.0)
    bad = _outside(X_adv, X, eps, norm)
    bad = bad if norm == "inf" else _expand(bad, X)
    return k + 1, jnp.where(bad, X + delta * scale, X_adv)

  def cond(carry):
    k, X_adv = carry
    return (k < _MAX_REPAIRS) & jnp.any(_outside(X_adv, X, eps, norm))

  _, X_adv = jax.lax.while_loop(cond, body, (jnp.asarray(1.0, X.dtype), X_adv))
  return X_adv


def project(X_adv: jnp.ndarray, X: jnp.ndarray, eps, norm, bounds: Bounds = None) -> jnp.ndarray:
  """Projects candidate points onto the ball around X, then clips them to the bounds.

  Clipping after the ball keeps the ball: X lies within the bounds, so clipping only moves a
  coordinate towards X's. The result satisfies both exactly as computed in floating point.

  Args:
    X_adv: (n, ...) candidate points.
    X: (n, ...) clean inputs (within `bounds`).
    eps: radius ≥ 0 of the ball.
    norm: "inf" or 2.
    bounds: None, or (lower, upper), each broadcastable to X (e.g. (0., 1.) for pixels).

  Returns:
    (n, ...) points with ‖x_adv − x‖ ≤ ε and lower ≤ x_adv ≤ upper.
  """
  delta = X_adv - X
  if norm == "inf":
    delta = jnp.clip(delta, -eps, eps)
  else:
    length = norm_of(delta, 2)
    delta = delta * _expand(jnp.where(length > eps, eps / jnp.where(length > 0, length, 1.0),
                                      1.0), X)
  X_adv = _repair(X + delta, X, eps, norm)
  if bounds is not None:
    X_adv = jnp.clip(X_adv, bounds[0], bounds[1])
  return X_adv


def _value_and_grad(apply: Apply, params, y: jnp.ndarray, objective: str, target=None):
  """x -> ((Σ objective, (per-example objectives, margins)), ∇_x Σ objective)."""

  def total(x):
    scores = apply(params, x)
    values = (OBJECTIVES[objective](scores, y) if target is None
              else difference_of_logits_ratio(scores, y, target))
    return jnp.sum(values), (values, margin(scores, y))

  return jax.value_and_grad(total, has_aux=True)


def _keep_lowest(best, X_new: jnp.ndarray, m_new: jnp.ndarray):
  """Per example, the candidate (X_best, m_best) or (X_new, m_new) of lower margin."""
  X_best, m_best = best
  lower = m_new < m_best
  return jnp.where(_expand(lower, X_new), X_new, X_best), jnp.where(lower, m_new, m_best)


@functools.partial(jax.jit, static_argnames=("apply", "norm", "loss"))
def _fgsm(apply, params, X, y, eps, bounds, *, norm, loss):
  _, grad = _value_and_grad(apply, params, y, loss)(X)
  return project(X - eps * steepest_direction(grad, norm), X, eps, norm, bounds)


@functools.partial(jax.jit,
                   static_argnames=("apply", "norm", "steps", "restarts", "loss", "random_start"))
def _pgd(apply, params, X, y, eps, step_size, key, bounds, *, norm, steps, restarts, loss,
         random_start):
  value_and_grad = _value_and_grad(apply, params, y, loss)

  def step(_, carry):
    X_cur, best = carry
    (_, (_, m)), grad = value_and_grad(X_cur)
    best = _keep_lowest(best, X_cur, m)
    X_cur = project(X_cur - step_size * steepest_direction(grad, norm), X, eps, norm, bounds)
    return X_cur, best

  def restart(best, key):
    start = random_init(key, X, eps, norm) if random_start else jnp.zeros_like(X)
    X_cur = project(X + start, X, eps, norm, bounds)
    X_cur, best = jax.lax.fori_loop(0, steps, step, (X_cur, best))
    return _keep_lowest(best, X_cur, margin(apply(params, X_cur), y)), None

  # The clean point is the first candidate, so the attack never raises a margin.
  best = (X, margin(apply(params, X), y))
  (X_best, _), _ = jax.lax.scan(restart, best, jax.random.split(key, restarts))
  return X_best


def apgd_checkpoints(steps: int) -> np.ndarray:
  """AutoAttack's checkpoints: where APGD may halve its step, and the length of each stretch.

  The first stretch is 22% of the steps; each next one is 3% of the steps shorter, down to 6%
  (Croce & Hein 2020, as in their code).

  Args:
    steps: iterations N ≥ 0.

  Returns:
    (N,) int array: at iteration i (0-based), the length of the stretch that ends there, or 0
    where i is not a checkpoint.
  """
  lengths = np.zeros(steps, np.int32)
  stretch, shrink, shortest = (max(int(f * steps), 1) for f in (0.22, 0.03, 0.06))
  end = stretch - 1
  while end < steps:
    lengths[end] = stretch
    stretch = max(stretch - shrink, shortest)
    end += stretch
  return lengths


def _targets(scores: jnp.ndarray, y: jnp.ndarray, rank) -> jnp.ndarray:
  """(n,) the class of the rank-th largest logit other than y's (rank 0: the runner-up)."""
  others = jnp.where(jax.nn.one_hot(y, scores.shape[-1], dtype=bool), -jnp.inf, scores)
  return jnp.argsort(-others, axis=-1)[:, rank]


@functools.partial(jax.jit, static_argnames=("apply", "norm", "steps", "restarts", "loss",
                                             "targets"))
def _apgd(apply, params, X, y, eps, key, bounds, *, norm, steps, restarts, loss, targets,
          momentum, rho):
  dtype = X.dtype
  checkpoints = jnp.asarray(np.append(apgd_checkpoints(steps), 0))  # never empty
  to_ball = lambda Z: project(Z, X, eps, norm, bounds)
  clean_scores = apply(params, X)

  def run(best, run_key, rank):
    target = None if targets == 0 else _targets(clean_scores, y, rank)
    value_and_grad = _value_and_grad(apply, params, y, loss, target)
    x = to_ball(X + random_init(run_key, X, eps, norm))
    (_, (obj, m)), grad = value_and_grad(x)
    best = _keep_lowest(best, x, m)
    # The kept state mirrors AutoAttack's: the iterate and the one before it (momentum), the
    # point of lowest objective (restarted from when the step halves), and the step's record.
    state = dict(x=x, x_prev=x, grad=grad, obj=obj, step=jnp.full(obj.shape, 2.0, dtype) * eps,
                 x_low=x, grad_low=grad, obj_low=obj, obj_low_at_check=obj,
                 halved_at_check=jnp.ones(obj.shape, bool), decreases=jnp.zeros(obj.shape, int),
                 best=best)

    def iteration(i, s):
      a = jnp.where(i == 0, 1.0, momentum).astype(dtype)
      z = to_ball(s["x"] - _expand(s["step"], X) * steepest_direction(s["grad"], norm))
      x = to_ball(s["x"] + a * (z - s["x"]) + (1 - a) * (s["x"] - s["x_prev"]))
      (_, (obj, m)), grad = value_and_grad(x)
      lower = obj < s["obj_low"]
      s = dict(s, x_prev=s["x"], x=x, grad=grad, obj=obj,
               decreases=s["decreases"] + (obj < s["obj"]),
               x_low=jnp.where(_expand(lower, X), x, s["x_low"]),
               grad_low=jnp.where(_expand(lower, X), grad, s["grad_low"]),
               obj_low=jnp.where(lower, obj, s["obj_low"]), best=_keep_lowest(s["best"], x, m))
      # At a checkpoint, halve the step and go back to the lowest point where the objective
      # fell in at most ρ of the stretch's steps, or where it did not fall since the last one.
      stretch = checkpoints[i]
      stalled = ~s["halved_at_check"] & (s["obj_low_at_check"] <= s["obj_low"])
      halve = (stretch > 0) & ((s["decreases"] <= rho * stretch) | stalled)
      at_check = lambda new, old: jnp.where(stretch > 0, new, old)
      return dict(
          s, step=jnp.where(halve, s["step"] / 2, s["step"]),
          x=jnp.where(_expand(halve, X), s["x_low"], s["x"]),
          grad=jnp.where(_expand(halve, X), s["grad_low"], s["grad"]),
          halved_at_check=at_check(halve, s["halved_at_check"]),
          obj_low_at_check=at_check(s["obj_low"], s["obj_low_at_check"]),
          decreases=at_check(jnp.zeros_like(s["decreases"]), s["decreases"]))

    return jax.lax.fori_loop(0, steps, iteration, state)["best"], None

  runs = max(targets, 1)
  keys = jax.random.split(key, restarts * runs)
  ranks = jnp.tile(jnp.arange(runs), restarts)
  # The clean point is the first candidate, so the attack never raises a margin.
  best = (X, margin(clean_scores, y))
  (X_best, _), _ = jax.lax.scan(lambda b, kr: run(b, *kr), best, (keys, ranks))
  return X_best


def _is_concrete(*values) -> bool:
  """Whether every leaf is a concrete value (not traced by an enclosing jit)."""
  return not any(isinstance(v, jax.core.Tracer) for v in jax.tree_util.tree_leaves(values))


def _check_norm(norm) -> Union[str, int]:
  if isinstance(norm, str) and norm.lower() in ("inf", "linf"):
    return "inf"
  if not isinstance(norm, str) and norm in (np.inf, 2):
    return "inf" if norm == np.inf else 2
  if norm in ("2", "l2"):
    return 2
  raise ValueError(f"norm must be 'inf' or 2, got {norm!r}")


def _check_inputs(apply: Apply, params, X, y, eps, bounds, loss):
  """Validates and converts the arguments shared by the attacks; returns (X, y, eps, bounds).

  The model's output shape is found by `jax.eval_shape`, without running it.
  """
  X = jnp.asarray(X)
  if X.ndim < 2 or X.shape[0] == 0 or not jnp.issubdtype(X.dtype, jnp.floating):
    raise ValueError(f"X must be a non-empty float array (n, ...), got {X.shape} {X.dtype}")
  y = jnp.asarray(y)
  if y.shape != X.shape[:1]:
    raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got shape {y.shape}")
  if loss not in OBJECTIVES:
    raise ValueError(f"loss must be one of {tuple(OBJECTIVES)}, got {loss!r}")
  if _is_concrete(eps) and not (np.ndim(eps) == 0 and np.isfinite(eps) and eps >= 0):
    raise ValueError(f"eps must be a finite scalar >= 0, got {eps!r}")
  eps = jnp.asarray(eps, X.dtype)
  scores = jax.eval_shape(apply, params, X)
  if scores.ndim not in (1, 2) or scores.shape[0] != X.shape[0] or scores.shape[1:] == (1,):
    raise ValueError(f"apply(params, X) must return ({X.shape[0]},) binary scores or "
                     f"({X.shape[0]}, C) logits to match the labels, got shape {scores.shape}")
  classes = 2 if scores.ndim == 1 else scores.shape[1]
  if classes < _MIN_CLASSES.get(loss, 1):
    raise ValueError(f"loss {loss!r} needs logits of at least {_MIN_CLASSES[loss]} classes, "
                     f"apply(params, X) has shape {scores.shape}")
  if _is_concrete(y):
    labels = np.asarray(y)
    valid = (np.isin(labels, (-1, 1)) if scores.ndim == 1
             else (labels == np.round(labels)) & (labels >= 0) & (labels < classes))
    if not np.all(valid):
      expected = "±1 for (n,) scores" if scores.ndim == 1 else f"in 0..{classes - 1} (integers)"
      raise ValueError(f"y must hold labels {expected}, got {np.unique(labels)[:10]}")
  if scores.ndim == 2:
    y = y.astype(jnp.int32)
  if bounds is not None:
    if len(bounds) != 2:
      raise ValueError(f"bounds must be None or (lower, upper), got {bounds!r}")
    bounds = tuple(jnp.broadcast_to(jnp.asarray(b, X.dtype), X.shape) for b in bounds)
    if _is_concrete(X, bounds) and not bool(jnp.all((X >= bounds[0]) & (X <= bounds[1]))):
      raise ValueError("X must lie within bounds (lower, upper)")
  return X, y, eps, bounds


def _check_count(name: str, value, least: int) -> int:
  if not (isinstance(value, (int, np.integer)) and value >= least):
    raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
  return int(value)


def fgsm(apply: Apply, params, X, y, eps, *, norm="inf", bounds: Bounds = None,
         loss: str = "margin") -> jnp.ndarray:
  """Fast gradient (sign) method: one full step of size ε from the clean point.

  ℓ∞: x − ε·sign(∇ objective) (Goodfellow et al.); ℓ₂: x − ε·∇/‖∇‖₂. Exact for a linear
  model: the margin becomes y(wᵀx + b) − ε‖w‖_q, q the dual norm (1 for ℓ∞, 2 for ℓ₂).

  Args:
    apply: (params, x) -> scores, (n,) binary or (n, C) logits.
    params: the model's parameters (any pytree; a `PolyHead` is one).
    X: (n, ...) float inputs.
    y: (n,) labels: ±1 for binary scores, 0..C−1 for logits.
    eps: radius ≥ 0 of the ball.
    norm: "inf" or 2.
    bounds: None (tabular features) or (lower, upper) broadcastable to X, e.g. (0., 1.).
    loss: "margin" or "ce", the objective whose gradient gives the step.

  Returns:
    (n, ...) adversarial inputs with ‖x_adv − x‖ ≤ ε and within bounds, exactly.

  Raises:
    ValueError: if an argument is malformed (named in the message).
  """
  norm = _check_norm(norm)
  X, y, eps, bounds = _check_inputs(apply, params, X, y, eps, bounds, loss)
  return _fgsm(apply, params, X, y, eps, bounds, norm=norm, loss=loss)


def pgd(apply: Apply, params, X, y, eps, *, key: jax.Array, norm="inf", steps: int = 20,
        step_size: Optional[float] = None, restarts: int = 1, bounds: Bounds = None,
        loss: str = "margin", random_start: bool = True) -> jnp.ndarray:
  """Projected gradient descent on the margin (Madry et al.), with random starts and restarts.

  Each restart starts at a uniform random point of the ball (or at x) and takes `steps`
  steepest-descent steps of the objective in the ball's norm (sign steps for ℓ∞, normalised
  gradient steps for ℓ₂), projecting onto the ball and the bounds after each. Every iterate of
  every restart, and the clean point, is a candidate: per example the one with the lowest
  margin is returned, so the attack never raises a margin.

  Args:
    apply: (params, x) -> scores, (n,) binary or (n, C) logits.
    params: the model's parameters (any pytree).
    X: (n, ...) float inputs.
    y: (n,) labels: ±1 for binary scores, 0..C−1 for logits.
    eps: radius ≥ 0 of the ball.
    key: PRNG key for the random starts.
    norm: "inf" or 2.
    steps: steps per restart, ≥ 0.
    step_size: step length α > 0 in the ball's norm (default 2.5·ε/steps).
    restarts: independent restarts, ≥ 1.
    bounds: None or (lower, upper) broadcastable to X.
    loss: "margin" or "ce", the objective the steps minimise.
    random_start: start each restart at a random point of the ball (else at x).

  Returns:
    (n, ...) adversarial inputs with ‖x_adv − x‖ ≤ ε and within bounds, exactly.

  Raises:
    ValueError: if an argument is malformed (named in the message).
  """
  norm = _check_norm(norm)
  X, y, eps, bounds = _check_inputs(apply, params, X, y, eps, bounds, loss)
  steps, restarts = _check_count("steps", steps, 0), _check_count("restarts", restarts, 1)
  if step_size is None:
    step_size = 2.5 * eps / max(int(steps), 1)
  elif _is_concrete(step_size) and not (np.ndim(step_size) == 0 and step_size > 0):
    raise ValueError(f"step_size must be a scalar > 0, got {step_size!r}")
  return _pgd(apply, params, X, y, eps, jnp.asarray(step_size, X.dtype), key, bounds,
              norm=norm, steps=steps, restarts=restarts, loss=loss,
              random_start=bool(random_start))


def apgd(apply: Apply, params, X, y, eps, *, key: jax.Array, norm="inf", steps: int = 100,
         restarts: int = 1, loss: str = "ce", targets: int = 0, bounds: Bounds = None,
         momentum: float = 0.75, rho: float = 0.75) -> jnp.ndarray:
  """Auto-PGD (Croce & Hein 2020): PGD with momentum and a step that halves when progress stalls.

  From a random point of the ball, steps of 2ε shrink at AutoAttack's checkpoints
  (`apgd_checkpoints`) whenever the objective fell in at most ρ of the stretch's steps or its
  lowest value did not improve since the last checkpoint; the iterate then restarts from the
  lowest point. With `targets` = T > 0 it runs the targeted DLR attack once per target, the T
  classes of highest clean logit besides the label (APGD-T of AutoAttack, T = 9 there). Every
  iterate of every run, and the clean point, is a candidate: per example the one with the
  lowest margin is returned, so the attack never raises a margin.

  Args:
    apply: (params, x) -> scores, (n,) binary or (n, C) logits.
    params: the model's parameters (any pytree).
    X: (n, ...) float inputs.
    y: (n,) labels: ±1 for binary scores, 0..C−1 for logits.
    eps: radius ≥ 0 of the ball.
    key: PRNG key for the random starts.
    norm: "inf" or 2.
    steps: iterations per run, ≥ 0 (100 in AutoAttack).
    restarts: independent random starts, ≥ 1.
    loss: "ce" (APGD-CE), "dlr" (APGD-DLR, C ≥ 3; targeted with `targets`, C ≥ 4) or "margin".
    targets: 0 (untargeted), or the number T ≥ 1 of target classes (loss "dlr" only).
    bounds: None or (lower, upper) broadcastable to X.
    momentum: the weight α of the new step against the previous move.
    rho: the fraction of steps in a stretch that must lower the objective to keep the step.

  Returns:
    (n, ...) adversarial inputs with ‖x_adv − x‖ ≤ ε and within bounds, exactly.

  Raises:
    ValueError: if an argument is malformed (named in the message).
  """
  norm = _check_norm(norm)
  X, y, eps, bounds = _check_inputs(apply, params, X, y, eps, bounds, loss)
  steps, restarts = _check_count("steps", steps, 0), _check_count("restarts", restarts, 1)
  targets = _check_count("targets", targets, 0)
  if targets:
    classes = jax.eval_shape(apply, params, X).shape[1:]
    if loss != "dlr" or not classes or classes[0] < 4:
      raise ValueError(f"targets > 0 needs loss 'dlr' and at least 4 classes, got loss {loss!r} "
                       f"and scores of shape (n,) + {classes}")
    targets = min(targets, classes[0] - 1)
  for name, value in (("momentum", momentum), ("rho", rho)):
    if not 0 <= value <= 1:
      raise ValueError(f"{name} must be in [0, 1], got {value!r}")
  return _apgd(apply, params, X, y, eps, key, bounds, norm=norm, steps=steps,
               restarts=restarts, loss=loss, targets=targets, momentum=momentum, rho=rho)


# AutoAttack's schedule of square sizes: p, the fraction of the image a square covers, halves
# after these iterations of a 10000-query run (at the same fractions of a shorter or longer one).
_SQUARE_HALVINGS = np.array([10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000])
_MAX_QUERIES = 200_000  # the schedule computes i·10000 in int32


def square_schedule(i, n_queries, p_init):
  """The fraction p of the image that the square of iteration i covers (AutoAttack's schedule).

  p starts at p_init and halves after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and
  8000 of a 10000-query run; a run of N queries reaches each halving at the same fraction of N.

  Args:
    i: iteration(s), 0-based, integer array (traceable).
    n_queries: iterations N of the run, 1 ≤ N ≤ 200000 (i·10000 is computed in int32).
    p_init: the first fraction, in (0, 1].

  Returns:
    p, of i's shape.
  """
  rescaled = (jnp.asarray(i, jnp.int32) * 10000 // n_queries)[..., None]  # exact: N ≤ 200000
  halvings = jnp.sum(rescaled > jnp.asarray(_SQUARE_HALVINGS), axis=-1)
  return p_init / 2.0**halvings


def square_window(i, n_queries, p_init, grid: Tuple[int, int], rank: int, norm) -> jnp.ndarray:
  """The window (rows, columns) of iteration i on an (H, W) grid of spatial rank 1 or 2.

  On an image (rank 2) a square's side is round(√(p·H·W)) (AutoAttack's); on a vector of W
  features (rank 1, H = 1) the window is round(p·W) long: either way it covers a fraction p of
  the positions. ℓ₂ windows are at least 3 long and odd (AutoAttack's); every window is cut to
  the grid.

  Args:
    i: iteration(s), 0-based (traceable).
    n_queries: iterations N ≥ 1 of the run.
    p_init: the first fraction, in (0, 1].
    grid: (H, W), the spatial size (H = 1 for rank 1), static.
    rank: 1 or 2.
    norm: "inf" or 2.

  Returns:
    (..., 2) int32 window sizes (rows, columns), for i of shape (...).
  """
  height, width = grid
  p = square_schedule(i, n_queries, p_init)
  side = jnp.round(jnp.sqrt(p * height * width) if rank == 2 else p * width).astype(jnp.int32)
  side = jnp.maximum(side, 1) if norm == "inf" else jnp.maximum(side, 3) | 1
  rows = jnp.minimum(side, height) if rank == 2 else jnp.ones_like(side)
  return jnp.stack([rows, jnp.minimum(side, width)], axis=-1)


def _to_grid(shape: Tuple[int, ...], channel_axis: Optional[int]):
  """Maps between a batch of `shape` and the (n, H, W, C) grid the Square attack works on.

  (n, d) features are one row of d positions with one channel (H = 1, rank 1); otherwise the
  channel axis (None: none) moves last and the other non-batch axes, one (H = 1) or two, are
  the spatial ones.

  Returns:
    (to_grid, from_grid, rank): the two maps of arrays and the spatial rank.
  """
  if len(shape) == 2 or channel_axis is None:
    spatial, channels, moved = shape[1:], 1, shape
  else:
    moved = tuple(np.delete(np.array(shape), channel_axis)) + (shape[channel_axis],)
    spatial, channels = moved[1:-1], moved[-1]
  grid = (shape[0],) + ((1,) if len(spatial) == 1 else ()) + tuple(spatial) + (channels,)

  def to_grid(A):
    if len(shape) > 2 and channel_axis is not None:
      A = jnp.moveaxis(A, channel_axis, -1)
    return A.reshape(grid)

  def from_grid(A):
    A = A.reshape(moved)
    if len(shape) > 2 and channel_axis is not None:
      A = jnp.moveaxis(A, -1, channel_axis)
    return A

  return to_grid, from_grid, len(spatial)


def _block_profile(r, q, rows, cols, table: jnp.ndarray) -> jnp.ndarray:
  """AutoAttack's nested rectangles on a (rows, cols) block, at block coordinates (r, q) inside.

  The value is Σ_{k=c}^{K−1} 1/(k+1)², c the Chebyshev distance to the centre (rows//2,
  cols//2) and K = max(rows//2, cols//2) + 1: rectangles around the centre, weighted 1/(k+1)².
  `table[m]` = Σ_{k=1}^{m} 1/k².
  """
  cheb = jnp.maximum(jnp.abs(r - rows // 2), jnp.abs(q - cols // 2))
  top = jnp.maximum(rows // 2, cols // 2) + 1
  return table[top] - table[jnp.minimum(cheb, top)]


def _eta_halves(r, q, rows, cols, split_rows, table):
  """The two halves of the ℓ₂ update on a (rows, cols) window at window coordinates (r, q).

  Returns:
    (profile, first): the nested-rectangle profile of the half (r, q) lies in (0 outside the
    window), and whether that is the first half (split across rows or across columns).
  """
  inside = (r >= 0) & (r < rows) & (q >= 0) & (q < cols)
  cut = jnp.where(split_rows, rows // 2, cols // 2)
  first = jnp.where(split_rows, r < cut, q < cut)
  r_block = jnp.where(split_rows & ~first, r - cut, r)
  q_block = jnp.where(~split_rows & ~first, q - cut, q)
  block_rows = jnp.where(split_rows, jnp.where(first, cut, rows - cut), rows)
  block_cols = jnp.where(split_rows, cols, jnp.where(first, cut, cols - cut))
  profile = _block_profile(r_block, q_block, block_rows, block_cols, table)
  return jnp.where(inside, profile, 0.0), first


def _eta(r, q, rows, cols, split_rows, table, canvas: Tuple[int, int]) -> jnp.ndarray:
  """The ℓ₂ Square update η on a (rows, cols) window, at window coordinates (r, q).

  +profile on the first half and −profile on the second, each half of unit ℓ₂ norm and then the
  whole (Andriushchenko et al.'s η). The norms are summed over a `canvas` that holds the window.

  Args:
    r, q: (n or 1, H, W) integer window coordinates.
    rows, cols: the window's size (scalars).
    split_rows: (n,) whether the halves are the top and bottom rows (else the columns).
    table: Σ_{k=1}^{m} 1/k² for m = 0, 1, ...
    canvas: (H, W), static.

  Returns:
    (n, H, W) η at (r, q), 0 outside the window.
  """
  split = split_rows[:, None, None]
  grid_r, grid_q = jnp.arange(canvas[0])[None, :, None], jnp.arange(canvas[1])[None, None, :]
  profile, first = _eta_halves(grid_r, grid_q, rows, cols, split, table)
  sums = [jnp.sum(jnp.where(part, profile**2, 0.0), axis=(1, 2), keepdims=True)
          for part in (first, ~first)]
  halves = sum((s > 0).astype(profile.dtype) for s in sums)
  scales = [jnp.where(s > 0, 1.0 / jnp.sqrt(jnp.where(s > 0, s * halves, 1.0)), 0.0)
            for s in sums]
  profile, first = _eta_halves(r, q, rows, cols, split, table)
  return jnp.where(first, profile * scales[0], -profile * scales[1])


def _sum_over(values: jnp.ndarray, axes) -> jnp.ndarray:
  return jnp.sum(values, axis=axes, keepdims=True)


@functools.partial(jax.jit, static_argnames=("apply", "norm", "restarts", "channel_axis"))
def _square(apply, params, X, y, eps, key, bounds, n_queries, p_init, *, norm, restarts,
            channel_axis):
  to_grid, from_grid, rank = _to_grid(X.shape, channel_axis)
  G, dtype = to_grid(X), X.dtype
  n, height, width, channels = G.shape
  grid_bounds = None if bounds is None else tuple(to_grid(b) for b in bounds)
  table = jnp.asarray(np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, max(height, width)
                                                                          + 2) ** 2)]), dtype)
  rows, cols = jnp.arange(height)[None, :, None], jnp.arange(width)[None, None, :]
  margin_at = lambda A: margin(apply(params, from_grid(A)), y)
  to_ball = lambda A: project(A, G, eps, norm, grid_bounds)
  signs = lambda k, shape: jnp.where(jax.random.bernoulli(k, 0.5, shape), 1.0, -1.0).astype(dtype)
  spatial = (1, 2)

  def place(k, size):
    """(n, H, W) window coordinates of a window of `size` at a random place per example."""
    k_r, k_c = jax.random.split(k)
    top = jax.random.randint(k_r, (n, 1, 1), 0, height - size[0] + 1)
    left = jax.random.randint(k_c, (n, 1, 1), 0, width - size[1] + 1)
    r, q = rows - top, cols - left
    return r, q, ((r >= 0) & (r < size[0]) & (q >= 0) & (q < size[1]))[..., None]

  def init(k):
    if norm == "inf":  # vertical stripes: one random corner value per column and channel
      return to_ball(G + eps * signs(k, (n, 1, width, channels)))
    # Square windows of side H/5 tiling the middle of the grid, each ±η per channel.
    side = (max(height // 5, 1),) * 2 if rank == 2 else (1, max(width // 5, 1))
    count = (height // side[0], width // side[1])
    r0, q0 = rows - (height - count[0] * side[0]) // 2, cols - (width - count[1] * side[1]) // 2
    tile_r, tile_q = r0 // side[0], q0 // side[1]
    tiled = (r0 >= 0) & (tile_r < count[0]) & (q0 >= 0) & (tile_q < count[1])
    tile_r, tile_q = jnp.clip(tile_r, 0, count[0] - 1), jnp.clip(tile_q, 0, count[1] - 1)
    k_split, k_sign = jax.random.split(k)
    split = jax.random.bernoulli(k_split, 0.5, (n,)) & (rank == 2)
    eta = _eta(r0 - tile_r * side[0], q0 - tile_q * side[1], side[0], side[1], split, table,
               (height, width))
    sign = signs(k_sign, (n,) + count + (channels,))[jnp.arange(n)[:, None, None], tile_r, tile_q]
    delta = jnp.where(tiled[..., None], eta[..., None] * sign, 0.0)
    return to_ball(G + eps * delta / _expand(jnp.maximum(norm_of(delta, 2), 1e-12), G))

  def step(k, G_best, size):
    k_place, k_sign, k_place2, k_split = jax.random.split(k, 4)
    r, q, window = place(k_place, size)
    sign = signs(k_sign, (n, 1, 1, channels))
    if norm == "inf":  # the window's channels jump to a random corner of the ball
      return to_ball(jnp.where(window, G + eps * sign, G_best))
    # ℓ₂: a new η in the first window, the second window cleared, the freed budget moved in.
    _, _, window2 = place(k_place2, size)
    delta = G_best - G
    in_window = _sum_over(jnp.where(window, delta, 0.0) ** 2, spatial) ** 0.5  # (n, 1, 1, C)
    total = norm_of(delta, 2)[:, None, None, None]
    freed = _sum_over(jnp.where(window | window2, delta, 0.0) ** 2, (1, 2, 3))
    split = jax.random.bernoulli(k_split, 0.5, (n,)) & (rank == 2)  # rank 1: along the row
    eta = _eta(r, q, size[0], size[1], split, table, (height, width))
    new = eta[..., None] * sign + jnp.where(window, delta, 0.0) / (1e-12 + in_window)
    length = _sum_over(jnp.where(window, new, 0.0) ** 2, spatial) ** 0.5
    budget = jnp.sqrt(jnp.maximum(eps**2 - total**2, 0.0) / channels + freed)
    delta = jnp.where(window, new / (1e-12 + length) * budget, jnp.where(window2, 0.0, delta))
    return to_ball(G + eps * delta / _expand(jnp.maximum(norm_of(delta, 2), 1e-12), G))

  def run(best, run_key):
    todo = best[1] > 0  # examples no earlier run has misclassified
    k_init, k_steps = jax.random.split(run_key)
    G_start = init(k_init)

    def searching(s):
      i, _, m = s
      return (i < n_queries) & jnp.any(todo & (m > 0))

    def iteration(s):
      i, G_cur, m = s
      size = square_window(i, n_queries, p_init, (height, width), rank, norm)
      candidate = step(jax.random.fold_in(k_steps, i), G_cur, size)
      m_new = margin_at(candidate)
      # Accept only lower margins, and stop each example once it is misclassified.
      accept = todo & (m > 0) & (m_new < m)
      return i + 1, jnp.where(_expand(accept, G), candidate, G_cur), jnp.where(accept, m_new, m)

    _, G_run, m_run = jax.lax.while_loop(searching, iteration,
                                         (jnp.asarray(0), G_start, margin_at(G_start)))
    return _keep_lowest(best, G_run, m_run), None

  # The clean point is the first candidate, so the attack never raises a margin.
  best = (G, margin_at(G))
  (G_best, _), _ = jax.lax.scan(run, best, jax.random.split(key, restarts))
  return from_grid(G_best)


def square(apply: Apply, params, X, y, eps, *, key: jax.Array, norm="inf",
           n_queries: int = 5000, p_init: float = 0.8, restarts: int = 1,
           bounds: Bounds = None, channel_axis: Optional[int] = -1) -> jnp.ndarray:
  """The Square attack (Andriushchenko et al. 2020): random search that needs no gradients.

  It sees what gradients miss (jumps, flat or masked gradients). From a random start (ℓ∞:
  vertical stripes of ±ε; ℓ₂: ±η windows tiling the grid, η the nested-rectangle pattern
  of the paper), each query changes one square window of the current point, at a random
  place per example: ℓ∞ moves the window's channels to a random corner of the ball, ℓ₂ puts a
  new ±η there and clears a second window, keeping ‖δ‖₂ = ε. A candidate is kept only if it
  lowers the margin, and an example stops once it is misclassified. The squares shrink on
  AutoAttack's schedule (`square_schedule`, `square_window`). Every run's best point and the
  clean point are candidates: per example the lowest margin is returned, so the attack never
  raises a margin.

  Layout: (n, d) features are one row of d positions with one channel, whose "squares" are
  windows of a fraction p of the features. Otherwise the axis `channel_axis` (-1: channels
  last, (n, H, W, C); 1 for (n, C, H, W); None: no channel axis) holds channels, each with its
  own random sign, and the other one or two non-batch axes are spatial.

  Args:
    apply: (params, x) -> scores, (n,) binary or (n, C) logits.
    params: the model's parameters (any pytree).
    X: (n, d), or (n, ...) with one or two spatial axes beside `channel_axis`, float inputs.
    y: (n,) labels: ±1 for binary scores, 0..C−1 for logits.
    eps: radius ≥ 0 of the ball.
    key: PRNG key of the starts and the squares.
    norm: "inf" or 2.
    n_queries: iterations of each run, 1..200000 (one model evaluation of the batch each; 5000 in
      AutoAttack's standard suite); the loop ends early once every example is misclassified.
    p_init: the fraction of the image the first squares cover, in (0, 1].
    restarts: runs from independent starts, ≥ 1, each on the examples no earlier run broke.
    bounds: None or (lower, upper) broadcastable to X.
    channel_axis: the channel axis of X (ignored for (n, d) features), or None.

  Returns:
    (n, ...) adversarial inputs with ‖x_adv − x‖ ≤ ε and within bounds, exactly.

  Raises:
    ValueError: if an argument is malformed (named in the message).
  """
  norm = _check_norm(norm)
  X, y, eps, bounds = _check_inputs(apply, params, X, y, eps, bounds, "margin")
  n_queries, restarts = _check_count("n_queries", n_queries, 1), _check_count("restarts",
                                                                               restarts, 1)
  if n_queries > _MAX_QUERIES:
    raise ValueError(f"n_queries must be at most {_MAX_QUERIES}, got {n_queries}")
  if not (np.ndim(p_init) == 0 and 0 < p_init <= 1):
    raise ValueError(f"p_init must be in (0, 1], got {p_init!r}")
  if X.ndim > 2 and channel_axis is not None:
    if not (isinstance(channel_axis, (int, np.integer)) and -X.ndim < channel_axis < X.ndim
            and channel_axis % X.ndim != 0):
      raise ValueError(f"channel_axis must be None or a non-batch axis of X {X.shape}, got "
                       f"{channel_axis!r}")
    channel_axis = int(channel_axis) % X.ndim
  spatial = X.ndim - 1 - (X.ndim > 2 and channel_axis is not None)
  if X.ndim > 2 and spatial not in (1, 2):
    raise ValueError(f"X must have one or two spatial axes beside channel_axis={channel_axis}, "
                     f"got shape {X.shape}")
  return _square(apply, params, X, y, eps, key, bounds, jnp.asarray(n_queries),
                 jnp.asarray(p_init, X.dtype), norm=norm, restarts=restarts,
                 channel_axis=None if X.ndim == 2 else channel_axis)


def gated_scores(params: Tuple[Any, Any], X: jnp.ndarray) -> jnp.ndarray:
  """A gated-ReLU head f_c(x) = Σ_k 1[xᵀh_k ≥ 0] xᵀu_{k,c}, as an `apply` for the attacks.

  Args:
    params: (U, gates): U (P, d, C) gated weights (`ReluHead.u`; C = 1 for a binary head),
      gates (d, P).
    X: (n, d) inputs.

  Returns:
    (n,) scores for C = 1, else (n, C) logits.
  """
  U, gates = params
  scores = jnp.einsum("np,nd,pdc->nc", (X @ gates >= 0).astype(X.dtype), X, U)
  return scores[:, 0] if U.shape[2] == 1 else scores


def _to_boundary(Z: jnp.ndarray, m: jnp.ndarray, g: jnp.ndarray, norm) -> jnp.ndarray:
  """The shortest move (in the ball's norm) of rows Z that takes m + gᵀδ just below 0.

  Z, g: (k, d); m: (k,). Rows with g = 0 stay.
  """
  direction = steepest_direction(g, norm)
  slope = jnp.sum(g * direction, axis=1)  # ‖g‖ in the dual norm
  overshoot = 1e-6 * jnp.abs(m) + jnp.finfo(Z.dtype).tiny  # to land on the wrong side
  length = jnp.where(slope > 0, (m + overshoot) / jnp.where(slope > 0, slope, 1.0), 0.0)
  return Z - length[:, None] * direction


@functools.partial(jax.jit, static_argnames=("norm", "steps", "tabu"))
def _gated_walk(U, gates, X, y, eps, bounds, *, norm, steps, tabu):
  n, d = X.shape
  P, binary = gates.shape[1], U.shape[2] == 1
  H = gates.T  # (P, d)
  h_dir = steepest_direction(H, norm)
  h_len = jnp.sum(H * h_dir, axis=1)  # ‖h_k‖ in the dual norm: the distance is |xᵀh_k| / it
  h_len = jnp.where(h_len > 0, h_len, 1.0)
  repeat = lambda A, k: jnp.repeat(A, k, axis=0)
  candidates = 2 * P + 1
  X_rep, y_rep = repeat(X, candidates), repeat(y, candidates)
  bounds_rep = None if bounds is None else tuple(repeat(b, candidates) for b in bounds)
  margin_at = lambda Z, labels: margin(gated_scores((U, gates), Z), labels)

  def differences(Z):
    """(n, P, d) a_k with margin f_y − f_t = Σ_k D_k xᵀa_k on a piece (t: the rival at Z)."""
    if binary:
      return y.astype(X.dtype)[:, None, None] * U[None, :, :, 0]
    scores = gated_scores((U, gates), Z)
    rival = _targets(scores, y, 0)
    return (U[:, :, y] - U[:, :, rival]).transpose(2, 0, 1)

  def iteration(_, state):
    Z, m, Z_best, m_best, since = state
    A = differences(Z)
    side = Z @ gates  # (n, P)
    on = side >= 0
    slope = jnp.einsum("np,npd->nd", on.astype(X.dtype), A)  # the margin's gradient on the piece
    # Just across each gate's hyperplane, the shortest move from Z.
    flip = jnp.where(on, 1.0, -1.0).astype(X.dtype)
    across = (side + flip * 1e-6 * eps * h_len) / h_len
    crossed = Z[:, None, :] - across[..., None] * h_dir[None]  # (n, P, d)
    # From there, to the decision boundary along the new piece (gate k on -> off or off -> on).
    slope_crossed = slope[:, None, :] - flip[..., None] * A
    m_crossed = margin_at(crossed.reshape(n * P, d), repeat(y, P))
    beyond = _to_boundary(crossed.reshape(n * P, d), m_crossed, slope_crossed.reshape(n * P, d),
                          norm).reshape(n, P, d)
    here = _to_boundary(Z, m, slope, norm)[:, None, :]
    found = jnp.concatenate([here, crossed, beyond], axis=1).reshape(n * candidates, d)
    found = project(found, X_rep, eps, norm, bounds_rep)
    m_found = margin_at(found, y_rep).reshape(n, candidates)
    # A tabu search: always move to the best candidate, but not back across a gate crossed in
    # the last `tabu` moves, so that the walk leaves local minima without cycling.
    barred = jnp.concatenate([jnp.zeros((n, 1), bool), since < tabu, since < tabu], axis=1)
    choice = jnp.argmin(jnp.where(barred, jnp.inf, m_found), axis=1)
    m_next = jnp.take_along_axis(m_found, choice[:, None], axis=1)[:, 0]
    Z_next = found.reshape(n, candidates, d)[jnp.arange(n), choice]
    going = m_best > 0  # an example stops once misclassified
    crossed_gate = jax.nn.one_hot((choice - 1) % P, P, dtype=bool) & (choice > 0)[:, None]
    since = jnp.where(going[:, None] & crossed_gate, 0, since + 1)
    lower = going & (m_next < m_best)
    return (jnp.where(going[:, None], Z_next, Z), jnp.where(going, m_next, m),
            jnp.where(lower[:, None], Z_next, Z_best), jnp.where(lower, m_next, m_best), since)

  m_clean = margin_at(X, y)
  never = jnp.full((n, P), tabu, jnp.int32)
  state = jax.lax.fori_loop(0, steps, iteration, (X, m_clean, X, m_clean, never))
  return state[2]


def gated_walk(U, gates, X, y, eps, *, norm=2, steps: int = 60, tabu: int = 5,
               bounds: Bounds = None) -> jnp.ndarray:
  """An attack on gated-ReLU heads that walks across gates and along their linear pieces.

  A gated head is linear on each cell of its gate hyperplanes and jumps where a gate flips;
  gradients see only the current piece. From x, each step evaluates 2P + 1 points of the ball
  (projected onto it): the shortest step to the decision boundary on the current piece, the
  nearest point just across each gate's hyperplane (the jumps the certificate
  `certify.gated_certified_radius` bounds), and from each of those the shortest step to the
  boundary on the piece across. It moves to the one of lowest margin, except back across a
  gate crossed in the last `tabu` moves (a tabu search, which leaves local minima without
  cycling), and returns the lowest point it visited. An example stops once misclassified.
  Deterministic; the clean point is the first candidate, so no margin rises.

  Args:
    U: (P, d, C) gated weights (`ReluHead.u`), C = 1 for a binary head.
    gates: (d, P) gates h_k (`ReluHead.gates`).
    X: (n, d) float inputs.
    y: (n,) labels: ±1 for a binary head, 0..C−1 otherwise.
    eps: radius ≥ 0 of the ball.
    norm: "inf" or 2.
    steps: moves per example, ≥ 1.
    tabu: moves during which a crossed gate may not be crossed back, ≥ 0 (0: a plain walk that
      may cycle between two cells).
    bounds: None or (lower, upper) broadcastable to X.

  Returns:
    (n, d) adversarial inputs with ‖x_adv − x‖ ≤ ε and within bounds, exactly.

  Raises:
    ValueError: if an argument is malformed (named in the message).
  """
  norm = _check_norm(norm)
  U, gates = jnp.asarray(U), jnp.asarray(gates)
  if U.ndim != 3 or gates.shape != (U.shape[1], U.shape[0]) or np.ndim(X) != 2:
    raise ValueError(f"U (P, d, C), gates (d, P) and X (n, d) must agree, got shapes "
                     f"{U.shape}, {gates.shape}, {np.shape(X)}")
  X, y, eps, bounds = _check_inputs(gated_scores, (U, gates), X, y, eps, bounds, "margin")
  steps, tabu = _check_count("steps", steps, 1), _check_count("tabu", tabu, 0)
  return _gated_walk(U.astype(X.dtype), gates.astype(X.dtype), X, y, eps, bounds, norm=norm,
                     steps=steps, tabu=tabu)


def gated_walk_attack(norm=2, steps: int = 60, tabu: int = 5) -> Attack:
  """`gated_walk` as an attack of a suite for `robust_accuracy` on a gated `ReluHead`.

  Returns:
    (apply, head, X, y, eps, bounds=None) -> X_adv, reading `head.u` and `head.gates` (apply
    is not needed: a gated head's scores are `gated_scores`).
  """
  norm = _check_norm(norm)

  def attack(apply, head, X, y, eps, bounds=None):
    del apply
    if head.bias:
      raise ValueError("head: gated_walk follows gates through the origin; this head has "
                       "biases (affine gates)")
    return gated_walk(head.u, head.gates, X, y, eps, norm=norm, steps=steps, tabu=tabu,
                      bounds=bounds)

  return attack


def standard_attacks(norm="inf", *, key: jax.Array, classes: int = 2, pgd_steps: int = 20,
                     apgd_steps: int = 100, restarts: int = 1, targets: int = 9,
                     square_queries: int = 5000, channel_axis: Optional[int] = -1,
                     names: Optional[Sequence[str]] = None) -> Dict[str, Attack]:
  """The attacks a robustness report runs, by name, for one norm.

  FGSM (the papers' number) and PGD with a random start (Madry et al.), both on the
  cross-entropy as in their papers (on logits PGD finds more with it than on the margin, as the
  torchattacks cross-check measured; on binary scores the two give the same steps), then
  AutoAttack's standard suite in its order: APGD-CE, for logits APGD-DLR (C ≥ 3) and APGD-T
  with up to 9 targets (C ≥ 4), and the Square attack, which needs no gradients (FAB-T is
  left out). The dict's order is the order `robust_accuracy(..., mode="worst")` runs them in.

  Args:
    norm: "inf" or 2.
    key: PRNG key of the random starts (each attack gets its own).
    classes: 2 for binary scores, else the number C of logits.
    pgd_steps: PGD's steps (step 2.5·ε/steps).
    apgd_steps: each APGD run's iterations.
    restarts: random restarts of PGD and APGD.
    targets: APGD-T's target classes (at most C − 1 are used).
    square_queries: the Square attack's queries (5000 in AutoAttack).
    channel_axis: the channel axis of image inputs, for the Square attack (see `square`).
    names: keep only these of the suite (None: all that apply to `classes`).

  Returns:
    {name: attack}, each (apply, params, X, y, eps, bounds=...) -> X_adv.

  Raises:
    ValueError: if `names` holds a name outside the suite for `classes`.
  """
  norm = _check_norm(norm)
  k_pgd, k_ce, k_dlr, k_t = jax.random.split(key, 4)
  suite = {
      "fgsm": functools.partial(fgsm, norm=norm, loss="ce"),
      "pgd": functools.partial(pgd, norm=norm, key=k_pgd, steps=pgd_steps, restarts=restarts,
                               loss="ce"),
      "apgd-ce": functools.partial(apgd, norm=norm, key=k_ce, steps=apgd_steps,
                                   restarts=restarts, loss="ce"),
  }
  if classes >= 3:
    suite["apgd-dlr"] = functools.partial(apgd, norm=norm, key=k_dlr, steps=apgd_steps,
                                          restarts=restarts, loss="dlr")
  if classes >= 4:
    suite["apgd-t"] = functools.partial(apgd, norm=norm, key=k_t, steps=apgd_steps,
                                        restarts=restarts, loss="dlr", targets=targets)
  suite["square"] = functools.partial(square, norm=norm, key=jax.random.fold_in(key, 4),
                                      n_queries=square_queries, channel_axis=channel_axis)
  if names is None:
    return suite
  unknown = set(names) - set(suite)
  if unknown:
    raise ValueError(f"names must be among {tuple(suite)} for {classes} classes, got "
                     f"{sorted(unknown)}")
  return {name: suite[name] for name in names}


@functools.partial(jax.jit, static_argnames=("apply",))
def _margins(apply: Apply, params, X: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
  """margin(apply(params, X), y), compiled: run eagerly, a deep network dispatches op by op."""
  return margin(apply(params, X), y)


def _survives(attack: Attack, apply: Apply, params, X, y, eps, bounds: Bounds,
              index: np.ndarray, size: int, bucket: bool) -> np.ndarray:
  """Whether the examples `index` keep a margin > 0 under `attack`, attacked `size` at a time.

  A short last batch is padded with its last example: to `size` (one shape, one compilation),
  or with `bucket` to the next power of two ≤ `size`, at least 64 (a few shapes, however many
  remain; below 64 rows a compilation costs more than the padded rows).
  """
  ok = np.empty(index.size, bool)
  for start in range(0, index.size, size):
    part = index[start:start + size]
    padded = min(size, max(64, 1 << (part.size - 1).bit_length())) if bucket else size
    rows = jnp.asarray(np.concatenate([part, np.full(padded - part.size, part[-1])]))
    X_adv = attack(apply, params, X[rows], y[rows], eps,
                   bounds=None if bounds is None else (bounds[0][rows], bounds[1][rows]))
    ok[start:start + part.size] = np.asarray(_margins(apply, params, X_adv, y[rows]) > 0)[
        :part.size]
  return ok


def robust_accuracy(apply: Apply, params, X, y, eps_list: Sequence[float],
                    attacks: Optional[Mapping[str, Attack]] = None, *, norm="inf",
                    bounds: Bounds = None, key: Optional[jax.Array] = None,
                    batch_size: Optional[int] = None, mode: str = "all") -> Dict[str, Any]:
  """Clean accuracy, accuracy under each attack at each ε, and under the worst of them all.

  An example counts as robust to an attack if its clean and attacked margins are both > 0; it
  counts as robust to all only if every attack fails on it (the worst-of-all evaluation).
  mode "all" runs every attack on every example and reports each; mode "worst" (AutoAttack's
  evaluation) runs the attacks in their order, each only on the examples every earlier attack
  failed on, and reports the worst of all and how many examples each attack broke first. The
  two give the same worst of all when each example's attacked point depends on that example
  alone; the random starts are drawn per batch, so on other examples they may differ by
  chance.

      report = cvxjax.robust_accuracy(apply, params, X, y, [0.0, 4 / 255, 8 / 255],
                                      bounds=(0.0, 1.0), key=jax.random.key(0))
      report["attacks"]["apgd-ce"], report["worst_of_all"]

  Args:
    apply: (params, x) -> scores, (n,) binary or (n, C) logits.
    params: the model's parameters.
    X: (n, ...) inputs; y: (n,) labels.
    eps_list: the radii ε ≥ 0.
    attacks: {name: attack}, each (apply, params, X, y, eps, bounds=...) -> X_adv; None: the
      `standard_attacks` of `norm` (then `key` is required).
    norm: the ball of the standard attacks, "inf" or 2.
    bounds: None or (lower, upper) input bounds, passed to every attack.
    key: PRNG key of the standard attacks.
    batch_size: attack this many examples at a time (the last batch is padded, so that every
      batch has one shape and compiles once; in mode "worst" the survivors' last batch is
      padded to a power of two, at least 64); None: all at once.
    mode: "all" or "worst".

  Returns:
    {"eps": [T], "clean": float, "worst_of_all": [T]} and, in mode "all",
    "attacks": {name: [T] accuracies}; in mode "worst", "broken_first": {name: [T] fractions
    of all examples that the attack misclassified and no earlier one had}.

  Raises:
    ValueError: if an argument is malformed (named in the message).
  """
  if mode not in ("all", "worst"):
    raise ValueError(f"mode must be 'all' or 'worst', got {mode!r}")
  X, y = jnp.asarray(X), jnp.asarray(y)
  eps_list = [float(e) for e in np.atleast_1d(np.asarray(eps_list, dtype=float))]
  if not eps_list or any(not (np.isfinite(e) and e >= 0) for e in eps_list):
    raise ValueError(f"eps_list must hold finite radii >= 0, got {eps_list!r}")
  X, y, _, bounds = _check_inputs(apply, params, X, y, 0.0, bounds, "margin")
  if attacks is None:
    if key is None:
      raise ValueError("key is required when attacks is None (the standard attacks' starts)")
    shape = jax.eval_shape(apply, params, X).shape
    attacks = standard_attacks(norm, key=key, classes=2 if len(shape) == 1 else shape[1])
  if not attacks:
    raise ValueError("attacks must name at least one attack")
  n = X.shape[0]
  if batch_size is not None and int(batch_size) < 1:
    raise ValueError(f"batch_size must be None or >= 1, got {batch_size!r}")
  size = n if batch_size is None else min(int(batch_size), n)  # no padding past n
  everyone = np.arange(n)
  unmoved = lambda apply, params, X, y, eps, bounds: X
  correct = _survives(unmoved, apply, params, X, y, 0.0, bounds, everyone, size, False)
  robust = np.zeros((len(attacks), len(eps_list)), np.int64)
  worst = np.zeros(len(eps_list), np.int64)
  for j, eps in enumerate(eps_list):
    survives = correct.copy()
    for i, attack in enumerate(attacks.values()):
      if eps == 0:  # the ball is {x}: every attack returns x, so spare the work
        continue
      if mode == "all":
        ok = correct & _survives(attack, apply, params, X, y, eps, bounds, everyone, size, False)
        robust[i, j] = ok.sum()
        survives &= ok
      else:
        alive = np.flatnonzero(survives)
        if alive.size:
          ok = _survives(attack, apply, params, X, y, eps, bounds, alive, size, True)
          survives[alive[~ok]] = False
          robust[i, j] = np.sum(~ok)
    worst[j] = survives.sum()
  if mode == "all":
    robust[:, [j for j, eps in enumerate(eps_list) if eps == 0]] = correct.sum()
    return {"eps": eps_list, "clean": float(correct.mean()),
            "attacks": {name: (robust[i] / n).tolist() for i, name in enumerate(attacks)},
            "worst_of_all": (worst / n).tolist()}
  return {"eps": eps_list, "clean": float(correct.mean()), "worst_of_all": (worst / n).tolist(),
          "broken_first": {name: (robust[i] / n).tolist() for i, name in enumerate(attacks)}}
