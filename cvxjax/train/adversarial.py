"""Adversarial training: PGD (Madry et al.) and the saddle-point dynamical system (SSDS).

Both are ways of computing a minibatch's gradient; the trainers (`cvxjax.train.head.fit` on
frozen features, `cvxjax.train.backbone.train_backbone` for the whole network) call
`training_gradients` with their own loss and keep everything else (optimizer, checkpoints,
progress) as in normal training. MATH.md §6.

- "pgd": the loss at the PGD-k point of the cross-entropy in the ε-ball (`attacks.pgd`, one
  random start); k + 1 gradient evaluations per step.
- "ssds": descent–ascent with persistent per-example perturbations δᵢ and multipliers vᵢ and
  the scalars λ (the weight of the descent step) and t. One gradient evaluation per step
  gives ∇_θ and ∇_δ at (θ, δ) together; then

      δᵢ ← P_ε(δᵢ + α(∇_δᵢ Σ L − vᵢ s(δᵢ)/c₁))      s: sign for ℓ∞, δ/‖δ‖₂ for ℓ₂
      vᵢ ← (vᵢ + α(‖δᵢ‖ − ε))₊
      t ← t + α(λ − 1)
      λ ← (λ + (α/c₂) L − t − Σᵢ vᵢ(‖δᵢ‖ − ε))₊
      θ ← θ + λ · (the optimizer's update)

  with L the batch's mean loss (∇_δᵢ of the sum is example i's own loss gradient, whatever
  the batch size). Defaults are the public code's.
"""

from typing import Any, Callable, NamedTuple, Optional, Tuple

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cvxjax import attacks

METHODS = ("standard", "pgd", "ssds")
NORMS = ("inf", 2)  # "2" is accepted too: a command-line override of a string field gives it


class Adversary(NamedTuple):
  """How the training examples are perturbed (hashable, so jitted steps take it as static).

  Attributes:
    method: "standard" (no perturbation), "pgd" or "ssds".
    eps: radius of the ball.
    norm: "inf" or 2.
    pgd_steps: PGD's steps k.
    pgd_step_size: PGD's step (None: 2.5 ε / k).
    alpha, c1, c2: SSDS's step and the scales of its δ and λ updates.
    v0, lambda0, t0: SSDS's initial multipliers vᵢ, λ and t.
  """

  method: str = "standard"
  eps: float = 0.0
  norm: Any = "inf"
  pgd_steps: int = 7
  pgd_step_size: Optional[float] = None
  alpha: float = 2.0
  c1: float = 100.0
  c2: float = 100.0
  v0: float = 1.0
  lambda0: float = 4.0
  t0: float = 1.0


STANDARD = Adversary()  # normal training


def default_config() -> ml_collections.ConfigDict:
  """The adversary's settings as a config (see `Adversary`); method "standard" trains normally."""
  # Not type-safe: norm is "inf" or 2, pgd_step_size None or a number.
  return ml_collections.ConfigDict(Adversary()._asdict(), type_safe=False)


def from_config(config: Optional[ml_collections.ConfigDict]) -> Adversary:
  """The validated `Adversary` of a config (None: standard training).

  Raises:
    ValueError: naming the first invalid field.
  """
  if config is None:
    return Adversary()
  values = dict(config)
  unknown = sorted(set(values) - set(Adversary._fields))
  if unknown:
    raise ValueError(f"unknown adversary settings {unknown}; expected {Adversary._fields}")
  adversary = Adversary(**values)
  if adversary.norm == "2":
    adversary = adversary._replace(norm=2)
  positive = ("alpha", "c1", "c2")
  rules = [("method", adversary.method in METHODS, f"one of {METHODS}"),
           ("norm", adversary.norm in NORMS, f"one of {NORMS}"),
           ("eps", _finite(adversary.eps) and adversary.eps >= 0, "a finite number >= 0"),
           ("pgd_steps", isinstance(adversary.pgd_steps, (int, np.integer))
            and adversary.pgd_steps >= 1, "an integer >= 1"),
           ("pgd_step_size", adversary.pgd_step_size is None
            or (_finite(adversary.pgd_step_size) and adversary.pgd_step_size > 0),
            "None or a finite number > 0")]
  rules += [(name, _finite(getattr(adversary, name)) and getattr(adversary, name) > 0,
             "a finite number > 0") for name in positive]
  rules += [(name, _finite(getattr(adversary, name)) and getattr(adversary, name) >= 0,
             "a finite number >= 0") for name in ("v0", "lambda0")]
  rules += [("t0", _finite(adversary.t0), "a finite number")]
  for name, valid, expected in rules:
    if not valid:
      raise ValueError(f"adversary.{name} must be {expected}, got {getattr(adversary, name)!r}")
  if adversary.method != "standard" and adversary.eps == 0:
    raise ValueError(f"adversary.eps must be > 0 for method {adversary.method!r}")
  return adversary._replace(eps=float(adversary.eps))


def _finite(value) -> bool:
  return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
          and bool(np.isfinite(value)))


@flax.struct.dataclass
class SSDSState:
  """SSDS's dual and adversarial variables (a pytree, saved with the training state).

  Attributes:
    delta: (n, ...) the perturbation δᵢ of every training example.
    multiplier: (n,) the multipliers vᵢ ≥ 0 of the constraints ‖δᵢ‖ ≤ ε.
    weight: () λ ≥ 0, the weight of the descent step.
    level: () t, the integrator that drives λ towards 1.
  """

  delta: jnp.ndarray
  multiplier: jnp.ndarray
  weight: jnp.ndarray
  level: jnp.ndarray


def init_state(adversary: Adversary, inputs_shape: Tuple[int, ...], dtype=jnp.float32) -> Any:
  """The adversarial state of a training set of `inputs_shape` (n, ...): an `SSDSState` for
  SSDS (δ = 0, vᵢ = v₀, λ = λ₀, t = t₀), else an empty dict."""
  if adversary.method != "ssds":
    return {}
  n = inputs_shape[0]
  return SSDSState(delta=jnp.zeros(inputs_shape, dtype),
                   multiplier=jnp.full((n,), adversary.v0, dtype),
                   weight=jnp.asarray(adversary.lambda0, dtype),
                   level=jnp.asarray(adversary.t0, dtype))


def _shrink_direction(delta: jnp.ndarray, norm) -> jnp.ndarray:
  """s(δ) of the δ update: sign(δ) for ℓ∞ (the public code's), δ/‖δ‖₂ (0 at 0) for ℓ₂."""
  if norm == "inf":
    return jnp.sign(delta)
  return attacks.steepest_direction(delta, 2)


def ssds_update(adversary: Adversary, state: SSDSState, index: jnp.ndarray, x: jnp.ndarray,
                grad_delta: jnp.ndarray, loss: jnp.ndarray, bounds=None) -> SSDSState:
  """SSDS's ascent on the batch's perturbations and its multiplier updates.

  Args:
    adversary: the settings (method "ssds").
    state: the current state.
    index: (b,) the batch's example indices.
    x: (b, ...) the batch's clean inputs (augmented ones for images).
    grad_delta: (b, ...) ∇_δ of the batch's summed loss at x + δ.
    loss: () the batch's mean loss at x + δ.
    bounds: None or (lower, upper) of the inputs; x + δ is kept inside.

  Returns:
    The next state: δᵢ inside the ε-ball (and x + δᵢ inside the bounds), vᵢ ≥ 0, λ ≥ 0.
  """
  a, eps, norm = adversary.alpha, adversary.eps, adversary.norm
  delta, v = state.delta[index], state.multiplier[index]
  shrink = v.reshape(v.shape + (1,) * (delta.ndim - 1)) * _shrink_direction(delta, norm)
  step = grad_delta - shrink / adversary.c1
  delta = attacks.project(x + delta + a * step, x, eps, norm, bounds) - x
  slack = attacks.norm_of(delta, norm) - eps
  v = jnp.maximum(v + a * slack, 0.0)
  level = state.level + a * (state.weight - 1.0)
  weight = jnp.maximum(state.weight + a / adversary.c2 * loss - level - jnp.sum(v * slack), 0.0)
  return SSDSState(delta=state.delta.at[index].set(delta.astype(state.delta.dtype)),
                   multiplier=state.multiplier.at[index].set(v.astype(state.multiplier.dtype)),
                   weight=weight.astype(state.weight.dtype),
                   level=level.astype(state.level.dtype))


LossFn = Callable[[Any, jnp.ndarray], Tuple[jnp.ndarray, Any]]


class Gradients(NamedTuple):
  """What `training_gradients` computed for one minibatch."""

  loss: jnp.ndarray  # () mean loss at the perturbed batch
  aux: Any  # loss_fn's aux there
  grads: Any  # ∇_params of the mean loss
  inputs: jnp.ndarray  # (b, ...) the perturbed batch
  state: Any  # the next adversarial state
  weight: jnp.ndarray  # () the factor of the optimizer's update: SSDS's λ, else 1


def training_gradients(adversary: Adversary, loss_fn: LossFn, logits_fn, params, x: jnp.ndarray,
                       y: jnp.ndarray, *, index: jnp.ndarray, state: Any, key: jax.Array,
                       bounds=None):
  """The gradient a training step descends along, at the adversary's perturbation of the batch.

  Args:
    adversary: the settings.
    loss_fn: (params, x) -> (the batch's mean loss, aux).
    logits_fn: (params, x) -> (b, C) logits, which PGD attacks.
    params: the model's parameters.
    x: (b, ...) clean (augmented) inputs.
    y: (b,) integer labels.
    index: (b,) the batch's example indices (SSDS's persistent state is per example).
    state: the adversarial state (`init_state`).
    key: PRNG key of PGD's random start.
    bounds: None or (lower, upper) of the inputs (e.g. (0, 1) for pixels).

  Returns:
    A `Gradients`: the mean loss and aux at the perturbed batch, its gradient in params, the
    perturbed batch, the next adversarial state, and the factor (λ for SSDS, else 1) the
    optimizer's update is scaled by.
  """
  if adversary.method == "ssds":
    delta = state.delta[index]
    (loss, aux), (grads, grad_delta) = jax.value_and_grad(
        lambda p, d: loss_fn(p, x + d), argnums=(0, 1), has_aux=True)(params, delta)
    # The batch mean's gradient scaled back to each example's own loss gradient.
    next_state = ssds_update(adversary, state, index, x, grad_delta * x.shape[0], loss, bounds)
    return Gradients(loss, aux, grads, x + delta, next_state, next_state.weight)
  if adversary.method == "pgd":
    x = jax.lax.stop_gradient(attacks.pgd(
        logits_fn, params, x, y, adversary.eps, key=key, norm=adversary.norm,
        steps=adversary.pgd_steps, step_size=adversary.pgd_step_size, bounds=bounds, loss="ce"))
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x)
  return Gradients(loss, aux, grads, x, state, jnp.ones((), loss.dtype))


def scale_updates(updates: Any, weight: jnp.ndarray) -> Any:
  """The optimizer's updates times the descent weight (SSDS's λ; 1 otherwise)."""
  return jax.tree.map(lambda u: u * weight.astype(u.dtype), updates)
