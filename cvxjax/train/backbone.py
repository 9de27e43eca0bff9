"""Training a backbone on CIFAR-sized images with SGD or SAM, normally or adversarially, resumably.

Any Flax module `model(x, train=...) -> logits` with batch norm (PreActResNet18) or without
(SOCNet) trains here, with the settings of a `TrainSettings`. `settings.adversary`
(`cvxjax.train.adversarial`) makes the run PGD
adversarial training or SSDS; the pixels are then perturbed within the ball and [0, 1] (PGD
attacks the augmented image; SSDS's persistent δᵢ perturbs the image before its augmentation,
so it stays on the same pixels every epoch), and SSDS's per-example perturbations and
multipliers are part of the saved state.

SAM is `optax.contrib.sam` in opaque mode: one `update` takes the ascent step
ε = ρ g/‖g‖ internally (adversary: normalise, then SGD with learning rate ρ), asks `grad_fn`
for the gradient at w + ε, and hands that to the outer optimizer at w. Opaque mode because the
ascent pass must not move the batch-norm running statistics: `train_step`'s `grad_fn` runs the
model in train mode but drops the statistics it computes, so they come only from the pass at
the parameters that are kept, and a step stays one call of `train_step` with one state.

`train_backbone` saves the whole `TrainState` with orbax (cvxjax.checkpoint) in its
checkpoint directory, beside `architecture.json` (the model's shape, checked on resume and
load) and `config.json` (the last run's `TrainSettings`; its optimizer and its adversary's
method fix the state's layout).
"""

import dataclasses
import functools
import json
import numbers
import os
from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from cvxjax import checkpoint
from cvxjax.train import adversarial

OPTIMIZERS = ("sgd", "sam")
DTYPES = ("float32", "bfloat16")
ARCHITECTURE_FILE = "architecture.json"
CONFIG_FILE = "config.json"
IMAGE_SHAPE = (32, 32, 3)
CROP_PADDING = 4
# Steps between refreshes of the progress line; reading metrics back stalls the device queue.
_REFRESH_EVERY = 25


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs; a pytree that orbax saves.

  Attributes:
    step: () int32, optimizer steps taken.
    params: the model's parameters {"backbone": ..., "head": ...}.
    batch_stats: the batch-norm running statistics.
    opt_state: the optimizer's state.
    adversarial: the adversary's state (SSDS's per-example δᵢ, vᵢ and its λ, t; else {}).
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  adversarial: Any

  @property
  def variables(self) -> Dict[str, Any]:
    """{"params", "batch_stats"}, as `model.apply` takes them."""
    return {"params": self.params, "batch_stats": self.batch_stats}


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """How `train_backbone` trains, validated on construction. The defaults are the usual CIFAR-10
  recipe for a PreAct ResNet-18: 200 epochs of Nesterov SGD with a warmup-cosine schedule.

  Attributes:
    optimizer: "sgd" or "sam" (SAM around the same SGD).
    learning_rate: peak of the warmup-cosine schedule, > 0.
    momentum: Nesterov momentum in [0, 1).
    weight_decay: on convolution and dense kernels only, >= 0.
    epochs: passes over the training set, >= 1 (the schedule spans them).
    batch_size: images per step, >= 1 (at most the training set).
    sam_rho: radius of SAM's ascent step, > 0.
    warmup_epochs: epochs of linear warmup, in [0, epochs).
    dtype: computation dtype in training, "float32" or "bfloat16" (parameters stay float32).
    checkpoint_every_steps: steps between saves, >= 0 (0: at the end of every epoch only).
    adversary: the perturbation trained on (`adversarial.STANDARD`: normal training; method
      "pgd" or "ssds": adversarial training).

  Raises:
    ValueError: naming the first invalid field.
  """

  optimizer: str = "sgd"
  learning_rate: float = 0.1
  momentum: float = 0.9
  weight_decay: float = 5e-4
  epochs: int = 200
  batch_size: int = 128
  sam_rho: float = 0.05
  warmup_epochs: float = 5
  dtype: str = "float32"
  checkpoint_every_steps: int = 0
  adversary: adversarial.Adversary = adversarial.STANDARD

  def __post_init__(self):
    rules = (
        ("optimizer", lambda v: v in OPTIMIZERS, f"one of {OPTIMIZERS}"),
        ("dtype", lambda v: v in DTYPES, f"one of {DTYPES}"),
        ("epochs", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("learning_rate", lambda v: _is_real(v) and v > 0, "a finite number > 0"),
        ("momentum", lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)"),
        ("weight_decay", lambda v: _is_real(v) and v >= 0, "a finite number >= 0"),
        ("sam_rho", lambda v: _is_real(v) and v > 0, "a finite number > 0"),
        ("warmup_epochs", lambda v: _is_real(v) and 0 <= v < self.epochs,
         "a number in [0, epochs)"),
        ("checkpoint_every_steps", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
        ("adversary", lambda v: isinstance(v, adversarial.Adversary),
         "an adversarial.Adversary"),
    )
    for name, valid, expected in rules:
      if not valid(getattr(self, name)):
        raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")


def _saved_settings(saved: Dict[str, Any]) -> TrainSettings:
  """The settings `train_backbone` wrote to config.json (other keys, such as "num_examples",
  ignored; settings saved before adversarial training: standard)."""
  fields = {f.name for f in dataclasses.fields(TrainSettings)} - {"adversary"}
  return TrainSettings(**{k: v for k, v in saved.items() if k in fields},
                       adversary=adversarial.Adversary(**saved.get("adversary", {})))


def _is_kernel(params: Any) -> Any:
  # Biases and batch-norm scales are not decayed: shrinking them only fights the normalisation.
  return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)


def make_optimizer(settings: TrainSettings,
                   steps_per_epoch: int) -> optax.GradientTransformationExtraArgs:
  """Nesterov SGD with weight decay on kernels and a warmup-cosine schedule, wrapped in SAM.

  Args:
    settings: its optimizer, learning_rate, momentum, weight_decay, epochs, warmup_epochs and
      sam_rho are used.
    steps_per_epoch: optimizer steps per epoch (the schedule spans settings.epochs of them).

  Returns:
    The SGD optimizer, or with settings.optimizer == "sam" SAM around it, whose `update` needs
    `grad_fn` (see `train_step`).
  """
  if not isinstance(settings, TrainSettings):
    raise ValueError(f"settings must be a TrainSettings, got {type(settings).__name__}")
  if not (_is_int(steps_per_epoch) and steps_per_epoch >= 1):
    raise ValueError(f"steps_per_epoch must be an integer >= 1, got {steps_per_epoch!r}")
  return _optimizer(settings.optimizer, float(settings.learning_rate), float(settings.momentum),
                    float(settings.weight_decay), float(settings.sam_rho),
                    int(round(settings.warmup_epochs * steps_per_epoch)),
                    settings.epochs * steps_per_epoch)


# Cached because jit keys `train_step` on the optimizer's identity: equal settings then share
# one compilation (every `train_backbone` call would otherwise recompile).
@functools.cache
def _optimizer(kind: str, learning_rate: float, momentum: float, weight_decay: float,
               sam_rho: float, warmup_steps: int,
               total_steps: int) -> optax.GradientTransformationExtraArgs:
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=learning_rate, warmup_steps=warmup_steps,
      decay_steps=total_steps)
  sgd = optax.chain(optax.add_decayed_weights(weight_decay, mask=_is_kernel),
                    optax.sgd(schedule, momentum=momentum, nesterov=True))
  if kind == "sgd":
    return sgd
  adversary = optax.chain(optax.contrib.normalize(), optax.sgd(sam_rho))
  return optax.contrib.sam(sgd, adversary, sync_period=2, opaque_mode=True)


def _augment_one(key: jax.Array, image: jnp.ndarray) -> jnp.ndarray:
  """A random crop of the zero-padded (h, w, c) image, flipped left-right half the time."""
  crop_key, flip_key = jax.random.split(key)
  pad = CROP_PADDING
  padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  dy, dx = jax.random.randint(crop_key, (2,), 0, 2 * pad + 1)
  crop = jax.lax.dynamic_slice(padded, (dy, dx, 0), image.shape)
  return jnp.where(jax.random.bernoulli(flip_key), crop[:, ::-1], crop)


def augment(key: jax.Array, images: jnp.ndarray) -> jnp.ndarray:
  """The standard CIFAR augmentation, drawn independently per image.

  Args:
    key: PRNG key.
    images: (n, h, w, c) images.

  Returns:
    (n, h, w, c) images of the same dtype: each a random h×w crop of the image zero-padded by
    4 pixels, flipped left-right with probability 1/2.
  """
  return jax.vmap(_augment_one)(jax.random.split(key, images.shape[0]), images)


@functools.partial(jax.jit, static_argnums=0)
def _init_variables(model: nn.Module, key: jax.Array) -> Dict[str, Any]:
  return model.init(key, jnp.zeros((1, *IMAGE_SHAPE), jnp.float32), train=False)


def _init_state(model: nn.Module, optimizer: optax.GradientTransformation,
                adversary: adversarial.Adversary, num_examples: int,
                key: jax.Array) -> TrainState:
  variables = _init_variables(model, key)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}),
                    opt_state=optimizer.init(params),
                    adversarial=adversarial.init_state(adversary, (num_examples, *IMAGE_SHAPE)))


@functools.partial(jax.jit, static_argnums=(0, 1), static_argnames=("adversary",))
def train_step(model: nn.Module, optimizer: optax.GradientTransformationExtraArgs,
               state: TrainState, images: jnp.ndarray, labels: jnp.ndarray, key: jax.Array, *,
               index: Optional[jnp.ndarray] = None,
               adversary: adversarial.Adversary = adversarial.STANDARD
               ) -> Tuple[TrainState, Dict[str, jnp.ndarray]]:
  """One optimizer step on an augmented (and perturbed) minibatch, SAM's two gradients included.

  Args:
    model: the network (static).
    optimizer: from `make_optimizer` (static).
    state: the current state.
    images: (b, 32, 32, 3) pixels in [0, 1].
    labels: (b,) integer classes.
    key: PRNG key of the augmentation and PGD's random start.
    index: (b,) the images' indices in the training set (SSDS's state is per example).
    adversary: the perturbation trained on (static; an `adversarial.Adversary`).

  Returns:
    The next state (batch statistics updated) and {"loss", "accuracy"} of the (perturbed)
    minibatch, both () arrays, computed before the step.
  """
  augment_key, attack_key = jax.random.split(key)

  def forward(params, x):
    logits, updated = model.apply({"params": params, "batch_stats": state.batch_stats}, x,
                                  train=True, mutable=["batch_stats"])
    return logits, updated.get("batch_stats", {})

  def loss_fn(params, x):
    logits, batch_stats = forward(params, x)
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    return loss, (logits, batch_stats)

  # PGD attacks the training-mode network, whose statistics it must not move.
  logits_fn = lambda params, x: forward(params, x)[0]
  out = adversarial.training_gradients(adversary, loss_fn, logits_fn, state.params, images,
                                       labels, index=index, state=state.adversarial,
                                       key=attack_key, bounds=(0.0, 1.0),
                                       augment=functools.partial(augment, augment_key))
  logits, batch_stats = out.aux
  # SAM's gradient at its perturbed parameters, on the same inputs; the statistics of that
  # pass are dropped, and plain SGD ignores grad_fn.
  grad_fn = lambda params, _: jax.grad(lambda p: loss_fn(p, out.inputs)[0])(params)
  updates, opt_state = optimizer.update(out.grads, state.opt_state, state.params,
                                        grad_fn=grad_fn)
  updates = adversarial.scale_updates(updates, out.weight)
  next_state = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                          batch_stats=batch_stats, opt_state=opt_state, adversarial=out.state)
  return next_state, {"loss": out.loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}


@functools.partial(jax.jit, static_argnums=0)
def _predictions(model: nn.Module, variables: Any, images: jnp.ndarray) -> jnp.ndarray:
  return jnp.argmax(model.apply(variables, images, train=False), axis=-1)


def accuracy(model: nn.Module, variables: Any, images: np.ndarray, labels: np.ndarray,
             batch_size: int = 500) -> float:
  """The fraction of images classified correctly, in inference mode.

  Args:
    model: the network.
    variables: {"params", "batch_stats"}, e.g. `TrainState.variables`.
    images: (n, 32, 32, 3) pixels in [0, 1].
    labels: (n,) integer classes.
    batch_size: images per forward pass.

  Returns:
    Accuracy in [0, 1].
  """
  labels = np.asarray(labels)
  correct = sum(
      int(np.sum(np.asarray(_predictions(model, variables, images[i:i + batch_size]))
                 == labels[i:i + batch_size]))
      for i in range(0, len(labels), batch_size))
  return correct / len(labels)


def _architecture(model: nn.Module) -> Dict[str, Any]:
  """The module's class and its shape-determining fields, as JSON (the dtype is not one)."""
  fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
            if f.name not in ("parent", "name", "dtype")}
  return json.loads(json.dumps(dict(model=type(model).__name__, **fields)))


def _read_json(directory: str, name: str) -> Optional[Dict[str, Any]]:
  path = os.path.join(directory, name)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def _check_saved(directory: str, model: nn.Module, settings: Optional[TrainSettings]) -> None:
  """Raises ValueError if `directory` holds a different architecture or state layout."""
  saved = _read_json(directory, ARCHITECTURE_FILE)
  if saved is not None:
    expected = _architecture(model)
    differing = sorted(k for k in expected.keys() | saved.keys() if saved.get(k) != expected.get(k))
    if differing:
      details = ", ".join(f"{k}: {saved.get(k)!r} there, {expected.get(k)!r} in the model"
                          for k in differing)
      raise ValueError(f"the checkpoint in {directory!r} is of a different architecture "
                       f"({details})")
  saved = _read_json(directory, CONFIG_FILE)
  if settings is None or saved is None:
    return
  # Both fix the saved state's layout: SAM's extra state, SSDS's per-example variables.
  layouts = (("optimizer", saved["optimizer"], settings.optimizer),
             ("adversary.method", saved.get("adversary", {}).get("method", "standard"),
              settings.adversary.method))
  for key, there, here in layouts:
    if there != here:
      raise ValueError(f"the checkpoint in {directory!r} was trained with {key} {there!r}, "
                       f"not {here!r}; use another directory")


def _write_json(directory: str, name: str, content: Dict[str, Any]) -> None:
  with open(os.path.join(directory, name), "w") as f:
    json.dump(content, f, indent=2)


def _check_data(train: Tuple[Any, Any], num_classes: int) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """(images, labels) as float32 and int32 device arrays, after checking them."""
  images, labels = np.asarray(train[0]), np.asarray(train[1])
  if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE or len(images) == 0:
    raise ValueError(f"images must have shape (n, 32, 32, 3), got {images.shape}")
  if not (np.issubdtype(images.dtype, np.floating) and images.min() >= 0 and images.max() <= 1):
    raise ValueError("images must hold floating-point pixels in [0, 1]")
  if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be integers of shape ({len(images)},), got {labels.dtype} "
                     f"of shape {labels.shape}")
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f"labels must lie in 0..{num_classes - 1} (model.num_classes)")
  return jnp.asarray(images, jnp.float32), jnp.asarray(labels, jnp.int32)


def _epoch_plan(data_key: jax.Array, epoch: int, n: int, steps: int,
                batch_size: int) -> Tuple[jnp.ndarray, jax.Array]:
  """Epoch `epoch`'s minibatch indices (steps, batch_size) and augmentation key.

  Drawn from fold_in(data_key, epoch) alone, so a resumed run replays the same batches.
  """
  order_key, augment_key = jax.random.split(jax.random.fold_in(data_key, epoch))
  order = jax.random.permutation(order_key, n)[:steps * batch_size]
  return order.reshape(steps, batch_size), augment_key


def train_backbone(model: nn.Module, settings: TrainSettings,
                   train: Tuple[Any, Any], *, checkpoint_dir: str, key: jax.Array,
                   progress: bool = True) -> TrainState:
  """Trains `model` on `train`, resuming from (and checkpointing to) `checkpoint_dir`.

  Each epoch visits a fresh permutation of the data in minibatches of settings.batch_size (the
  last incomplete one dropped), augmented by `augment`. The state is saved at the end of every
  epoch and every settings.checkpoint_every_steps steps; a rerun resumes from the latest save and
  ends exactly where an uninterrupted run does, or returns at once if training has finished.
  The learning-rate schedule spans settings.epochs, so resuming with other epochs changes it.

  Args:
    model: the network (`model(x, train=...) -> logits`, e.g. PreActResNet18 or SOCNet); it
      trains in settings.dtype whatever its own dtype.
    settings: how it trains (`TrainSettings`).
    train: (images (n, 32, 32, 3) float pixels in [0, 1], labels (n,) integers).
    checkpoint_dir: where checkpoints, architecture.json and config.json live.
    key: PRNG key of the initialisation, the data order and the augmentation.
    progress: show a progress bar with the running loss and accuracy.

  Returns:
    The final `TrainState` (float32 parameters).

  Raises:
    ValueError: on invalid settings or data, or if `checkpoint_dir` holds another
      architecture, optimizer or adversary (checked before any computation).
  """
  if not isinstance(settings, TrainSettings):
    raise ValueError(f"settings must be a TrainSettings, got {type(settings).__name__}")
  _check_saved(checkpoint_dir, model, settings)
  images, labels = _check_data(train, model.num_classes)
  n = len(images)
  if settings.batch_size > n:
    raise ValueError(f"batch_size must be at most the {n} training images, got "
                     f"{settings.batch_size}")
  os.makedirs(checkpoint_dir, exist_ok=True)
  _write_json(checkpoint_dir, ARCHITECTURE_FILE, _architecture(model))
  # The number of examples fixes the size of SSDS's per-example state.
  _write_json(checkpoint_dir, CONFIG_FILE, dict(dataclasses.asdict(settings), num_examples=n))

  model = model.clone(dtype=jnp.dtype(settings.dtype))
  steps_per_epoch = n // settings.batch_size
  total = settings.epochs * steps_per_epoch
  optimizer = make_optimizer(settings, steps_per_epoch)
  init_key, data_key = jax.random.split(key)
  adversary = settings.adversary
  init = functools.partial(_init_state, model, optimizer, adversary, n, init_key)
  mgr = checkpoint.manager(checkpoint_dir)
  state = checkpoint.restore_latest(mgr, jax.eval_shape(init))
  if state is None:
    # Committed to a device as a restored state is: fresh and resumed runs share a compilation.
    state = jax.device_put(init(), jax.devices()[0])
  start = int(state.step)
  if start >= total:
    return state

  method = "" if adversary.method == "standard" else f", {adversary.method}"
  bar = tqdm.tqdm(total=total, initial=start, disable=not progress, unit="step",
                  desc=f"backbone ({settings.optimizer}{method})", dynamic_ncols=True)
  with bar:
    for epoch in range(start // steps_per_epoch, settings.epochs):
      order, augment_key = _epoch_plan(data_key, epoch, n, steps_per_epoch, settings.batch_size)
      sums, count = {"loss": 0.0, "accuracy": 0.0}, 0
      for index in range(int(state.step) - epoch * steps_per_epoch, steps_per_epoch):
        batch = order[index]
        state, metrics = train_step(model, optimizer, state, images[batch], labels[batch],
                                    jax.random.fold_in(augment_key, index), index=batch,
                                    adversary=adversary)
        step = epoch * steps_per_epoch + index + 1
        if index + 1 == steps_per_epoch or (settings.checkpoint_every_steps > 0
                                            and step % settings.checkpoint_every_steps == 0):
          checkpoint.save(mgr, step, state)
        sums, count = {k: sums[k] + metrics[k] for k in sums}, count + 1
        bar.update()
        if progress and (count % _REFRESH_EVERY == 0 or index + 1 == steps_per_epoch):
          means = {k: f"{float(v) / count:.3f}" for k, v in sums.items()}
          bar.set_postfix(epoch=epoch + 1, **means)
  return state


def load_backbone(checkpoint_dir: str, model: nn.Module) -> TrainState:
  """The latest `TrainState` that `train_backbone` saved in `checkpoint_dir`, for inference.

  Raises:
    ValueError: if `checkpoint_dir` holds no checkpoint or one of another architecture.
  """
  saved = _read_json(checkpoint_dir, CONFIG_FILE)
  if saved is None or _read_json(checkpoint_dir, ARCHITECTURE_FILE) is None:
    raise ValueError(f"no backbone checkpoint in {checkpoint_dir!r} (no {ARCHITECTURE_FILE} or "
                     f"{CONFIG_FILE})")
  _check_saved(checkpoint_dir, model, None)
  # Only the optimizer's and the adversary's kinds shape the state; the schedule's length does not.
  settings = _saved_settings(saved)
  optimizer = make_optimizer(settings, steps_per_epoch=1)
  like = jax.eval_shape(functools.partial(_init_state, model, optimizer, settings.adversary,
                                          saved.get("num_examples", 0), jax.random.key(0)))
  state = checkpoint.restore_latest(checkpoint.manager(checkpoint_dir), like)
  if state is None:
    raise ValueError(f"no backbone checkpoint in {checkpoint_dir!r}")
  return state
