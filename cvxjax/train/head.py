"""The nonconvex two-layer head d → H → C (ReLU) on frozen features, trained with optax.

Its parameters are a dict {"W1": (d, H), "b1": (H,), "W2": (H, C), "b2": (C,)}: the layout of
`PreActResNet18`'s own head (see `from_model_params`), so the backbone's head, a head retrained
on frozen features and the recovered convex heads all plug into the same assembled model.
"""

from typing import Any, Dict, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

HeadParams = Dict[str, jnp.ndarray]


def scores(params: HeadParams, features: jnp.ndarray) -> jnp.ndarray:
  """Logits relu(F W1 + b1) W2 + b2: features (n, d) -> (n, C)."""
  hidden = jax.nn.relu(features @ params["W1"] + params["b1"])
  return hidden @ params["W2"] + params["b2"]


def from_model_params(params: Mapping[str, Any]) -> HeadParams:
  """The head of a `PreActResNet18`'s parameters, as `scores` takes it."""
  head = params["head"]
  return {"W1": head["hidden"]["kernel"], "b1": head["hidden"]["bias"],
          "W2": head["output"]["kernel"], "b2": head["output"]["bias"]}


def init(key: jax.Array, dim: int, hidden: int, classes: int) -> HeadParams:
  """He-initialised weights (the scale Flax's Dense layers would not give a ReLU layer)."""
  k1, k2 = jax.random.split(key)
  return {"W1": jax.random.normal(k1, (dim, hidden)) * np.sqrt(2.0 / dim),
          "b1": jnp.zeros(hidden),
          "W2": jax.random.normal(k2, (hidden, classes)) * np.sqrt(1.0 / hidden),
          "b2": jnp.zeros(classes)}


def fit(features, labels, *, hidden: int, steps: int, learning_rate: float,
        weight_decay: float, key: jax.Array, batch_size: int = 256) -> HeadParams:
  """Trains the head with AdamW on the cross-entropy over shuffled minibatches.

  Args:
    features: (n, d) frozen features.
    labels: (n,) integer labels in 0..C−1 (C = max label + 1).
    hidden: the hidden width H.
    steps: optimiser steps.
    learning_rate: AdamW's step size (cosine-decayed to 0).
    weight_decay: AdamW's decoupled weight decay.
    key: PRNG key of the initialisation and the minibatches.
    batch_size: examples per step (all of them if fewer).

  Returns:
    The trained parameters.
  """
  features = jnp.asarray(features, jnp.float32)
  labels = jnp.asarray(labels, jnp.int32)
  n, dim = features.shape
  if steps < 1 or hidden < 1 or batch_size < 1:
    raise ValueError(f"steps, hidden and batch_size must be >= 1, got {steps}, {hidden}, "
                     f"{batch_size}")
  k_init, k_batch = jax.random.split(key)
  params = jax.tree.map(lambda a: a.astype(jnp.float32),
                        init(k_init, dim, hidden, int(labels.max()) + 1))
  optimizer = optax.adamw(optax.cosine_decay_schedule(learning_rate, steps),
                          weight_decay=weight_decay)
  size = min(batch_size, n)

  def loss(params, index):
    logits = scores(params, features[index])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels[index]).mean()

  def step(carry, key):
    params, state = carry
    index = jax.random.choice(key, n, (size,), replace=False)
    updates, state = optimizer.update(jax.grad(loss)(params, index), state, params)
    return (optax.apply_updates(params, updates), state), None

  (params, _), _ = jax.jit(lambda p, s, k: jax.lax.scan(step, (p, s), k))(
      params, optimizer.init(params), jax.random.split(k_batch, steps))
  return params
