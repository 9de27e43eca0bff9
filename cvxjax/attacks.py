"""Adversarial attacks composed from an initialiser, a step rule and a projection (MATH.md §5).

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
rounding of x + δ pushed out of the ball by an ulp. Precision: the attacks run in X's dtype.
"""

import functools
from typing import Any, Callable, Optional, Tuple, Union

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


# What an attack minimises, by name; the kept point is always the one of lowest margin.
OBJECTIVES = {"margin": margin, "ce": log_likelihood}


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


def _outside(X_adv: jnp.ndarray, X: jnp.ndarray, eps, norm) -> jnp.ndarray:
  """Which entries (ℓ∞: per component) or examples (ℓ₂) lie outside the ball as computed."""
  delta = X_adv - X
  return jnp.abs(delta) > eps if norm == "inf" else norm_of(delta, 2) > eps


def _repair(X_adv: jnp.ndarray, X: jnp.ndarray, eps, norm) -> jnp.ndarray:
  """Pulls points that rounding left just outside the ball back in, by shrinking δ."""
  ulp = jnp.finfo(X.dtype).eps

  def body(carry):
    k, X_adv = carry
    delta = X_adv - X
    size = jnp.abs(delta) if norm == "inf" else _expand(norm_of(delta, 2), X)
    # Shrink a little more every round, so that the loop ends (δ = 0 is inside).
    scale = eps / jnp.maximum(size, jnp.finfo(X.dtype).tiny) * (1.0 - ulp * 2.0**k)
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


def _value_and_grad(apply: Apply, params, y: jnp.ndarray, objective: str):
  """x -> ((Σ objective, per-example margins), ∇_x Σ objective)."""

  def total(x):
    scores = apply(params, x)
    return jnp.sum(OBJECTIVES[objective](scores, y)), margin(scores, y)

  return jax.value_and_grad(total, has_aux=True)


@functools.partial(jax.jit, static_argnames=("apply", "norm", "loss"))
def _fgsm(apply, params, X, y, eps, bounds, *, norm, loss):
  (_, _), grad = _value_and_grad(apply, params, y, loss)(X)
  return project(X - eps * steepest_direction(grad, norm), X, eps, norm, bounds)


@functools.partial(jax.jit,
                   static_argnames=("apply", "norm", "steps", "restarts", "loss", "random_start"))
def _pgd(apply, params, X, y, eps, step_size, key, bounds, *, norm, steps, restarts, loss,
         random_start):
  value_and_grad = _value_and_grad(apply, params, y, loss)

  def keep_lowest(best, X_new, m_new):
    X_best, m_best = best
    lower = m_new < m_best
    return jnp.where(_expand(lower, X), X_new, X_best), jnp.where(lower, m_new, m_best)

  def step(_, carry):
    X_cur, best = carry
    (_, m), grad = value_and_grad(X_cur)
    best = keep_lowest(best, X_cur, m)
    X_cur = project(X_cur - step_size * steepest_direction(grad, norm), X, eps, norm, bounds)
    return X_cur, best

  def restart(best, key):
    start = random_init(key, X, eps, norm) if random_start else jnp.zeros_like(X)
    X_cur = project(X + start, X, eps, norm, bounds)
    X_cur, best = jax.lax.fori_loop(0, steps, step, (X_cur, best))
    return keep_lowest(best, X_cur, margin(apply(params, X_cur), y)), None

  # The clean point is the first candidate, so the attack never raises a margin.
  best = (X, margin(apply(params, X), y))
  (X_best, _), _ = jax.lax.scan(restart, best, jax.random.split(key, restarts))
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


def _check_inputs(X, y, eps, bounds, loss):
  """Validates and converts the arguments shared by the attacks; returns (X, y, eps, bounds)."""
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
  if bounds is not None:
    if len(bounds) != 2:
      raise ValueError(f"bounds must be None or (lower, upper), got {bounds!r}")
    bounds = tuple(jnp.broadcast_to(jnp.asarray(b, X.dtype), X.shape) for b in bounds)
    if _is_concrete(X, bounds) and not bool(jnp.all((X >= bounds[0]) & (X <= bounds[1]))):
      raise ValueError("X must lie within bounds (lower, upper)")
  return X, y, eps, bounds


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
  X, y, eps, bounds = _check_inputs(X, y, eps, bounds, loss)
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
  X, y, eps, bounds = _check_inputs(X, y, eps, bounds, loss)
  if not (isinstance(steps, (int, np.integer)) and steps >= 0):
    raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
  if not (isinstance(restarts, (int, np.integer)) and restarts >= 1):
    raise ValueError(f"restarts must be an integer >= 1, got {restarts!r}")
  if step_size is None:
    step_size = 2.5 * eps / max(int(steps), 1)
  elif _is_concrete(step_size) and not (np.ndim(step_size) == 0 and step_size > 0):
    raise ValueError(f"step_size must be a scalar > 0, got {step_size!r}")
  return _pgd(apply, params, X, y, eps, jnp.asarray(step_size, X.dtype), key, bounds,
              norm=norm, steps=int(steps), restarts=int(restarts), loss=loss,
              random_start=bool(random_start))


def robust_accuracy(apply: Apply, params, X, y, eps, attack: Attack, *,
                    batch_size: Optional[int] = None) -> float:
  """Accuracy under attack: an example counts only if its clean and attacked margins are > 0.

  Args:
    apply: (params, x) -> scores.
    params: the model's parameters.
    X: (n, ...) inputs.
    y: (n,) labels.
    eps: radius of the ball.
    attack: (apply, params, X, y, eps) -> X_adv, e.g. `fgsm` or
      `functools.partial(pgd, norm=2, key=key)`.
    batch_size: attack this many examples at a time (the last batch is padded, so that every
      batch has one shape and compiles once); None: all at once.

  Returns:
    The fraction of examples that stay correctly classified, in [0, 1].
  """
  X, y = jnp.asarray(X), jnp.asarray(y)
  n = X.shape[0]
  size = n if batch_size is None else int(batch_size)
  if size < 1:
    raise ValueError(f"batch_size must be None or >= 1, got {batch_size!r}")
  robust = 0
  for start in range(0, n, size):
    index = jnp.minimum(jnp.arange(start, start + size), n - 1)  # pad with the last example
    Xb, yb = X[index], y[index]
    X_adv = attack(apply, params, Xb, yb, eps)
    ok = (margin(apply(params, Xb), yb) > 0) & (margin(apply(params, X_adv), yb) > 0)
    robust += int(jnp.sum(ok[: min(size, n - start)]))
  return robust / n

