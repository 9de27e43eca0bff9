"""The nonconvex two-layer head d → H → C (ReLU) on frozen features, trained with optax,
normally or adversarially (PGD-AT, SSDS: `cvxjax.train.adversarial`).

Its parameters are a dict {"W1": (d, H), "b1": (H,), "W2": (H, C), "b2": (C,)}: the layout of
`PreActResNet18`'s own head (see `from_model_params`) and the fields of `heads.NetworkHead`, the
head with the common interface (`NetworkHead(**fit(...))`).
"""

import functools
from typing import Any, Dict, Mapping, Optional, Tuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from cvxjax import checkpoint
from cvxjax.heads import NetworkHead
from cvxjax.train import adversarial

HeadParams = Dict[str, jnp.ndarray]


def scores(params: HeadParams, features: jnp.ndarray) -> jnp.ndarray:
  """Logits relu(F W1 + b1) W2 + b2 of `heads.NetworkHead`: features (n, d) -> (n, C)."""
  return NetworkHead(**params).scores(features)


def from_model_params(params: Mapping[str, Any]) -> HeadParams:
  """The head of a `PreActResNet18`'s parameters, as `scores` takes it."""
  head = params["head"]
  return {"W1": head["hidden"]["kernel"], "b1": head["hidden"]["bias"],
          "W2": head["output"]["kernel"], "b2": head["output"]["bias"]}


def certified_radius(params: HeadParams, features, labels, *,
                     backbone_lipschitz: float = 1.0) -> jnp.ndarray:
  """ℓ₂ radii certified by the head's Lipschitz margin bound (`NetworkHead.certified_radius`).

  Args:
    params: the head. features: (n, d). labels: (n,) in 0..C−1.
    backbone_lipschitz: the Lipschitz constant of the map from the input to the features.

  Returns:
    (n,) radii, 0 where misclassified.
  """
  return NetworkHead(**params).certified_radius(features, labels,
                                                backbone_lipschitz=backbone_lipschitz)


def init(key: jax.Array, dim: int, hidden: int, classes: int) -> HeadParams:
  """He-initialised weights (the scale Flax's Dense layers would not give a ReLU layer)."""
  k1, k2 = jax.random.split(key)
  return {"W1": jax.random.normal(k1, (dim, hidden)) * np.sqrt(2.0 / dim),
          "b1": jnp.zeros(hidden),
          "W2": jax.random.normal(k2, (hidden, classes)) * np.sqrt(1.0 / hidden),
          "b2": jnp.zeros(classes)}


@flax.struct.dataclass
class HeadState:
  """A head's training state (a pytree that orbax saves).

  Attributes:
    step: () int32, optimizer steps taken.
    params: the head's parameters.
    opt_state: AdamW's state.
    adversarial: the adversary's state (`adversarial.init_state`; SSDS's δᵢ, vᵢ, λ, t).
  """

  step: jax.Array
  params: HeadParams
  opt_state: Any
  adversarial: Any


def _optimizer(learning_rate, weight_decay, steps: int) -> optax.GradientTransformation:
  # Traced rates: one compilation serves every weight decay and step size of a sweep.
  return optax.adamw(optax.cosine_decay_schedule(learning_rate, steps), weight_decay=weight_decay)


@functools.partial(jax.jit, static_argnames=("adversary", "steps", "size", "count"))
def _train_chunk(state: HeadState, features, labels, key, learning_rate, weight_decay, *,
                 adversary: adversarial.Adversary, steps: int, size: int,
                 count: int) -> Tuple[HeadState, jnp.ndarray]:
  """`count` optimizer steps from `state`; returns the state and the steps' mean loss."""
  optimizer = _optimizer(learning_rate, weight_decay, steps)

  def loss_fn(params, x, y):
    loss = optax.softmax_cross_entropy_with_integer_labels(scores(params, x), y).mean()
    return loss, None

  def step(state, _):
    # Drawn from the step number alone, so a resumed run replays the same batches.
    batch_key, attack_key = jax.random.split(jax.random.fold_in(key, state.step))
    index = jax.random.choice(batch_key, features.shape[0], (size,), replace=False)
    y = labels[index]
    out = adversarial.training_gradients(
        adversary, lambda p, x: loss_fn(p, x, y), scores, state.params, features[index], y,
        index=index, state=state.adversarial, key=attack_key)
    updates, opt_state = optimizer.update(out.grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, adversarial.scale_updates(updates, out.weight))
    return HeadState(state.step + 1, params, opt_state, out.state), out.loss

  state, losses = jax.lax.scan(step, state, None, length=count)
  return state, losses.mean()


def fit(features, labels, *, hidden: int, steps: int, learning_rate: float,
        weight_decay: float, key: jax.Array, batch_size: int = 256,
        adversary: adversarial.Adversary = adversarial.STANDARD,
        checkpoint_dir: Optional[str] = None, checkpoint_every: int = 0,
        progress: bool = False) -> HeadParams:
  """Trains the head with AdamW on the cross-entropy, normally or adversarially, resumably.

  Args:
    features: (n, d) frozen features.
    labels: (n,) integer labels in 0..C−1 (C = max label + 1).
    hidden: the hidden width H.
    steps: optimiser steps.
    learning_rate: AdamW's step size (cosine-decayed to 0).
    weight_decay: AdamW's decoupled weight decay.
    key: PRNG key of the initialisation, the minibatches and PGD's random starts.
    batch_size: examples per step (all of them if fewer).
    adversary: the perturbation of the features each step trains on (`adversarial.Adversary`):
      none, PGD-k, or SSDS (whose λ scales AdamW's update).
    checkpoint_dir: where the state is saved every `checkpoint_every` steps and at the end; a
      rerun resumes from the latest save and ends exactly where an uninterrupted run does.
    checkpoint_every: steps between saves (0: only at the end).
    progress: show a progress bar with the running loss.

  Returns:
    The trained parameters.

  Raises:
    ValueError: on a malformed argument (named in the message), before any computation.
  """
  features = jnp.asarray(features, jnp.float32)
  labels = jnp.asarray(labels, jnp.int32)
  if features.ndim != 2 or labels.shape != features.shape[:1]:
    raise ValueError(f"features must be (n, d) and labels (n,), got {features.shape} and "
                     f"{labels.shape}")
  for name, value in (("steps", steps), ("hidden", hidden), ("batch_size", batch_size)):
    if not (isinstance(value, (int, np.integer)) and value >= 1):
      raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
  if not (isinstance(checkpoint_every, (int, np.integer)) and checkpoint_every >= 0):
    raise ValueError(f"checkpoint_every must be an integer >= 0, got {checkpoint_every!r}")
  if not isinstance(adversary, adversarial.Adversary):
    raise ValueError(f"adversary must be an adversarial.Adversary, got {adversary!r}")
  n, dim = features.shape
  init_key, run_key = jax.random.split(key)
  classes = int(labels.max()) + 1

  def initial() -> HeadState:
    params = jax.tree.map(lambda a: a.astype(jnp.float32), init(init_key, dim, hidden, classes))
    opt_state = _optimizer(learning_rate, weight_decay, steps).init(params)
    return HeadState(jnp.zeros((), jnp.int32), params, opt_state,
                     adversarial.init_state(adversary, features.shape))

  mgr = checkpoint.manager(checkpoint_dir) if checkpoint_dir else None
  state = checkpoint.restore_latest(mgr, jax.eval_shape(initial)) if mgr else None
  state = initial() if state is None else state
  chunk = checkpoint_every or steps
  done = int(state.step)
  with tqdm.tqdm(total=steps, initial=done, disable=not progress, unit="step",
                 desc=f"head ({adversary.method})", dynamic_ncols=True) as bar:
    while done < steps:
      count = min(chunk - done % chunk, steps - done)
      state, loss = _train_chunk(state, features, labels, run_key, learning_rate, weight_decay,
                                 adversary=adversary, steps=steps, size=min(batch_size, n),
                                 count=count)
      done += count
      if mgr:
        checkpoint.save(mgr, done, state)
      bar.update(count)
      bar.set_postfix(loss=f"{float(loss):.3f}")
  return state.params
