"""Adversarial training: PGD (Madry et al.) and the saddle-point dynamical system (SSDS).

Both are ways of computing a minibatch's gradient; the trainers (`cvxjax.train.head.fit` on
frozen features, `cvxjax.train.backbone.train_backbone` for the whole network) call
`training_gradients` with their own loss and keep everything else (optimizer, checkpoints,
progress) as in normal training. docs/math.md §6.

- "pgd": the loss at the PGD-k point of the cross-entropy in the ε-ball (`attacks.pgd`, one
  random start); k + 1 gradient evaluations per step.
- "ssds": descent–ascent with persistent per-example perturbations δᵢ and multipliers vᵢ and
  the scalars λ (the weight of the descent step) and t. One gradient evaluation per step
  gives ∇_θ and ∇_δ at (θ, δ) together; then

      δ̂ᵢ = δᵢ + α ∇_δᵢ Σ L                     ascent
      δ̃ᵢ = δ̂ᵢ − α (vᵢ/c₁) nᵢ                   nᵢ: the ball's unit outward normal at δ̂ᵢ
      vᵢ ← (vᵢ + α(‖δ̃ᵢ‖ − ε))₊                 the violation before the projection
      δᵢ ← P_ε(δ̃ᵢ)
      t ← t + α(λ⁺ − 1),  λ⁺ = (λ + u − t⁺)₊,   u = (α/c₂)(L − meanᵢ (vᵢ/c₁)(‖δᵢ‖ − ε))
      θ ← θ + λ⁺ · (the optimizer's update)

  with L the batch's mean loss (∇_δᵢ of the sum is example i's own loss gradient, whatever
  the batch size). Defaults (α, c₁, c₂, v₀, λ₀, t₀) are the public code's; four things differ
  from it, each because its dynamics do not converge:

  1. (λ, t) step. The public code steps t with the old λ, t⁺ = t + α(λ − 1), then
     λ⁺ = (λ + u − t⁺)₊. With u fixed its Jacobian ∂(λ⁺, t⁺)/∂(λ, t) is [[1 − α, −1], [α, 1]]:
     trace 2 − α, determinant 1 for every α, so both eigenvalues lie on the unit circle
     (0 < α < 4; ±i at α = 2, where λ cycles with period 4 and never settles). It is the
     explicit discretisation of the flow ṫ = λ − 1, λ̇ = u − t, a pure rotation about (1, u).
     Here t is stepped with the new λ (backward Euler), the pair solved in closed form:
     λ⁺ = ((λ − t + α + u)/(1 + α))₊, t⁺ = t + α(λ⁺ − 1). Its Jacobian is
     [[1, −1], [α, 1]]/(1 + α), eigenvalues (1 ± i√α)/(1 + α) of modulus 1/√(1 + α) < 1 for
     every α > 0 (0.577 at α = 2), with the same fixed point λ = 1, t = u.
     `lambda_scheme="explicit"` keeps the public code's step.
  2. The multipliers. The public code measures ‖δᵢ‖ − ε after the projection, where it is never
     positive, so vᵢ can only fall. Here it is measured on δ̃ᵢ, before the projection: vᵢ grows
     while the ascent pushes δᵢ out of the ball and falls once its pull brings δᵢ inside, so at
     a fixed point on the boundary vᵢ/c₁ is the constraint's KKT multiplier ‖∇_δᵢ L‖_*.
  3. The pull's direction. The public code pulls along sign(δ) (ℓ∞) or δ/‖δ‖ (ℓ₂) everywhere;
     sign(δ) is the gradient of ‖δ‖₁, not of ‖δ‖∞, and a multiplier that grows would pull every
     coordinate below the largest gradient towards 0. Here the pull is along nᵢ, the
     projection's residual δ̂ᵢ − P_ε(δ̂ᵢ) scaled to unit dual norm (ℓ₁ for ℓ∞, ℓ₂ for ℓ₂): a
     subgradient of the norm at P_ε(δ̂ᵢ), zero inside the ball, so the pull only moves δᵢ
     once vᵢ/c₁ exceeds the multiplier, and then back into the ball.
  4. λ's drive. The public code's u = (α/c₂)L − Σᵢ vᵢ(‖δᵢ‖ − ε) adds the batch's sum in units of
     vᵢ, not vᵢ/c₁; harmless while vᵢ only falls from v₀ = 1, but once vᵢ tracks c₁ times the
     multiplier the sum outweighs (α/c₂)L by orders of magnitude (a head on breast cancer, ℓ₂
     ε = 1: λ stuck at 0 for hundreds of steps, then spikes, the loss diverging to ~100). Here
     u is (α/c₂) times ∂/∂λ of the batch's mean Lagrangian ℓᵢ − (vᵢ/c₁)(‖δᵢ‖ − ε), the same
     per-example objective the ascent climbs.

  With an augmentation (random crops and flips of images) δᵢ lives in the frame of the
  un-augmented image: the loss is taken at augment(xᵢ + δᵢ), so the same δᵢ perturbs the same
  pixels whatever crop is drawn (the map is linear and never increases a norm, so the
  perturbation applied stays in the ball).
"""

import dataclasses
from typing import Any, Callable, NamedTuple, Optional, Tuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from cvxjax import attacks

METHODS = ("standard", "pgd", "ssds")
LAMBDA_SCHEMES = ("implicit", "explicit")
NORMS = ("inf", 2)  # "2" is accepted too: a command-line override of a string field gives it


def _finite(value) -> bool:
  return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
          and bool(np.isfinite(value)))


@dataclasses.dataclass(frozen=True)
class Adversary:
  """How the training examples are perturbed, validated on construction (hashable, so jitted
  steps take it as static).

  Attributes:
    method: "standard" (no perturbation), "pgd" or "ssds".
    eps: radius of the ball (> 0 unless method is "standard").
    norm: "inf" or 2 ("2", as a command-line override of a string field gives it, becomes 2).
    pgd_steps: PGD's steps k.
    pgd_step_size: PGD's step (None: 2.5 ε / k).
    alpha, c1, c2: SSDS's step and the scales of its δ and λ updates.
    v0, lambda0, t0: SSDS's initial multipliers vᵢ, λ and t.
    lambda_scheme: SSDS's (λ, t) step: "implicit" (t stepped with the new λ; converges) or
      "explicit" (the public code's; marginally stable, see the module docstring).

  Raises:
    ValueError: naming the first invalid field (as "adversary.<field>").
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
  lambda_scheme: str = "implicit"

  def __post_init__(self):
    if self.norm == "2":
      object.__setattr__(self, "norm", 2)
    rules = [("method", self.method in METHODS, f"one of {METHODS}"),
             ("norm", self.norm in NORMS, f"one of {NORMS}"),
             ("lambda_scheme", self.lambda_scheme in LAMBDA_SCHEMES, f"one of {LAMBDA_SCHEMES}"),
             ("eps", _finite(self.eps) and self.eps >= 0, "a finite number >= 0"),
             ("pgd_steps", isinstance(self.pgd_steps, (int, np.integer))
              and not isinstance(self.pgd_steps, bool) and self.pgd_steps >= 1,
              "an integer >= 1"),
             ("pgd_step_size", self.pgd_step_size is None
              or (_finite(self.pgd_step_size) and self.pgd_step_size > 0),
              "None or a finite number > 0")]
    rules += [(name, _finite(getattr(self, name)) and getattr(self, name) > 0,
               "a finite number > 0") for name in ("alpha", "c1", "c2")]
    rules += [(name, _finite(getattr(self, name)) and getattr(self, name) >= 0,
               "a finite number >= 0") for name in ("v0", "lambda0")]
    rules += [("t0", _finite(self.t0), "a finite number")]
    for name, valid, expected in rules:
      if not valid:
        raise ValueError(f"adversary.{name} must be {expected}, got {getattr(self, name)!r}")
    if self.method != "standard" and self.eps == 0:
      raise ValueError(f"adversary.eps must be > 0 for method {self.method!r}")
    object.__setattr__(self, "eps", float(self.eps))


STANDARD = Adversary()  # normal training


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


def _per_example(values: jnp.ndarray, like: jnp.ndarray) -> jnp.ndarray:
  """(b,) per-example values broadcastable against a batch `like` of shape (b, ...)."""
  return values.reshape(values.shape + (1,) * (like.ndim - 1))


def outward_normal(delta: jnp.ndarray, eps: float, norm) -> jnp.ndarray:
  """The residual δ − P_ε(δ) of the projection onto the ε-ball, scaled to unit dual norm.

  Outside the ball it is a subgradient of the norm at P_ε(δ) (a unit normal of the ball there);
  inside, where the normal cone is {0}, it is 0.

  Args:
    delta: (b, ...) points.
    eps: radius of the ball.
    norm: "inf" (dual ℓ₁) or 2 (dual ℓ₂).

  Returns:
    (b, ...) the normals.
  """
  zero = jnp.zeros_like(delta)
  residual = delta - attacks.project(delta, zero, eps, norm)
  axes = tuple(range(1, delta.ndim))
  dual = (jnp.sum(jnp.abs(residual), axis=axes) if norm == "inf"
          else jnp.sqrt(jnp.sum(residual**2, axis=axes)))
  return residual / _per_example(jnp.where(dual > 0, dual, 1.0), residual)


def weight_and_level(weight: jnp.ndarray, level: jnp.ndarray, drive: jnp.ndarray, alpha: float,
                     scheme: str = "implicit") -> Tuple[jnp.ndarray, jnp.ndarray]:
  """SSDS's step of λ (the descent weight) and t (its integrator), both ().

  The pair discretises ṫ = λ − 1, λ̇ = u − t (λ ≥ 0): t with step α, λ with step 1.

  - "implicit": t⁺ = t + α(λ⁺ − 1) and λ⁺ = (λ + u − t⁺)₊ solved together, i.e.
    λ⁺ = ((λ − t + α + u)/(1 + α))₊. Jacobian [[1, −1], [α, 1]]/(1 + α) in (λ, t), eigenvalues
    (1 ± i√α)/(1 + α), of modulus 1/√(1 + α) < 1: (λ, t) → (1, u) geometrically.
  - "explicit" (the public code's): t⁺ = t + α(λ − 1), λ⁺ = (λ + u − t⁺)₊. Jacobian
    [[1 − α, −1], [α, 1]], determinant 1: eigenvalues on the unit circle (±i at α = 2), so
    λ oscillates around 1 forever.

  Args:
    weight: () λ.
    level: () t.
    drive: () u, the constant of the flow's fixed point (1, u).
    alpha: the step α > 0.
    scheme: "implicit" or "explicit".

  Returns:
    (λ⁺, t⁺).
  """
  if scheme == "explicit":
    level = level + alpha * (weight - 1.0)
    return jnp.maximum(weight + drive - level, 0.0), level
  weight = jnp.maximum((weight - level + alpha + drive) / (1.0 + alpha), 0.0)
  return weight, level + alpha * (weight - 1.0)


def ssds_update(adversary: Adversary, state: SSDSState, index: jnp.ndarray, x: jnp.ndarray,
                grad_delta: jnp.ndarray, loss: jnp.ndarray, bounds=None) -> SSDSState:
  """SSDS's ascent on the batch's perturbations and its multiplier updates (module docstring).

  Args:
    adversary: the settings (method "ssds").
    state: the current state.
    index: (b,) the batch's example indices.
    x: (b, ...) the batch's clean inputs (un-augmented ones for images).
    grad_delta: (b, ...) ∇_δ of the batch's summed loss at x + δ.
    loss: () the batch's mean loss at x + δ.
    bounds: None or (lower, upper) of the inputs; x + δ is kept inside.

  Returns:
    The next state: δᵢ inside the ε-ball (and x + δᵢ inside the bounds), vᵢ ≥ 0, λ ≥ 0.
  """
  a, eps, norm = adversary.alpha, adversary.eps, adversary.norm
  delta, v = state.delta[index], state.multiplier[index]
  ascent = delta + a * grad_delta
  pulled = ascent - a * _per_example(v / adversary.c1, delta) * outward_normal(ascent, eps, norm)
  # The violation before the projection, which the projection would hide.
  v = jnp.maximum(v + a * (attacks.norm_of(pulled, norm) - eps), 0.0)
  delta = attacks.project(x + pulled, x, eps, norm, bounds) - x
  # ∂/∂λ of the batch's Lagrangian, the mean of ℓᵢ − (vᵢ/c₁)(‖δᵢ‖ − ε) that the ascent climbs.
  lagrangian = loss - jnp.mean(v / adversary.c1 * (attacks.norm_of(delta, norm) - eps))
  drive = a / adversary.c2 * lagrangian
  weight, level = weight_and_level(state.weight, state.level, drive, a, adversary.lambda_scheme)
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
                       bounds=None, augment: Optional[Callable[[jnp.ndarray], jnp.ndarray]] = None):
  """The gradient a training step descends along, at the adversary's perturbation of the batch.

  Args:
    adversary: the settings.
    loss_fn: (params, x) -> (the batch's mean loss, aux).
    logits_fn: (params, x) -> (b, C) logits, which PGD attacks.
    params: the model's parameters.
    x: (b, ...) clean inputs, un-augmented when `augment` is given.
    y: (b,) integer labels.
    index: (b,) the batch's example indices (SSDS's persistent state is per example).
    state: the adversarial state (`init_state`).
    key: PRNG key of PGD's random start.
    bounds: None or (lower, upper) of the inputs (e.g. (0, 1) for pixels).
    augment: None or a map (b, ...) -> (b, ...) of the batch (a random crop and flip, its
      randomness fixed): linear, within the bounds and never increasing the ball's norm. PGD
      attacks the augmented batch; SSDS perturbs the un-augmented one, so that δᵢ stays
      attached to the same pixels of example i whichever augmentation is drawn.

  Returns:
    A `Gradients`: the mean loss and aux at the perturbed batch, its gradient in params, the
    perturbed (augmented) batch, the next adversarial state, and the factor (λ for SSDS, else
    1) the optimizer's update is scaled by.
  """
  augment = augment or (lambda batch: batch)
  if adversary.method == "ssds":
    delta = state.delta[index]
    (loss, aux), (grads, grad_delta) = jax.value_and_grad(
        lambda p, d: loss_fn(p, augment(x + d)), argnums=(0, 1), has_aux=True)(params, delta)
    # The batch mean's gradient scaled back to each example's own loss gradient.
    next_state = ssds_update(adversary, state, index, x, grad_delta * x.shape[0], loss, bounds)
    return Gradients(loss, aux, grads, augment(x + delta), next_state, next_state.weight)
  x = augment(x)
  if adversary.method == "pgd":
    x = jax.lax.stop_gradient(attacks.pgd(
        logits_fn, params, x, y, adversary.eps, key=key, norm=adversary.norm,
        steps=adversary.pgd_steps, step_size=adversary.pgd_step_size, bounds=bounds, loss="ce"))
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x)
  return Gradients(loss, aux, grads, x, state, jnp.ones((), loss.dtype))


def scale_updates(updates: Any, weight: jnp.ndarray) -> Any:
  """The optimizer's updates times the descent weight (SSDS's λ; 1 otherwise)."""
  return jax.tree.map(lambda u: u * weight.astype(u.dtype), updates)
