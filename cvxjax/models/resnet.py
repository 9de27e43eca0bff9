"""A pre-activation ResNet-18 for CIFAR-sized images, with a two-layer dense head.

He et al., "Identity Mappings in Deep Residual Networks" (2016), with the CIFAR stem (a 3×3
convolution, no max-pool). The parameters split into params["backbone"] (everything up to the
pooled features) and params["head"] (Dense "hidden" → ReLU → Dense "output"), so the head's
weights can be taken out and replaced by a convex one on `PreActResNet18.features`.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# Per-channel CIFAR-10 training-set statistics; normalising inside the model keeps inputs in
# pixel space [0, 1], where attack budgets are defined.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

STAGE_MULTIPLIERS = (1, 2, 4, 8)
STAGE_STRIDES = (1, 2, 2, 2)
BLOCKS_PER_STAGE = 2


def _norm(train: bool, dtype: Any) -> nn.BatchNorm:
  # momentum 0.9 is PyTorch's 0.1; flax's default 0.99 warms the running statistics too slowly.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      param_dtype=jnp.float32)


def _conv(channels: int, kernel: int, strides: int, dtype: Any) -> nn.Conv:
  # Symmetric padding as in PyTorch; "SAME" would pad a stride-2 convolution on one side only.
  return nn.Conv(channels, (kernel, kernel), strides=strides, padding=kernel // 2, use_bias=False,
                 dtype=dtype, param_dtype=jnp.float32)


class PreActBlock(nn.Module):
  """A basic block BN-ReLU-conv3×3-BN-ReLU-conv3×3 plus a shortcut.

  Attributes:
    channels: output channels.
    strides: stride of the first convolution (and of the projection shortcut).
    dtype: computation dtype.
  """

  channels: int
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """(n, h, w, c) → (n, h/strides, w/strides, channels)."""
    out = nn.relu(_norm(train, self.dtype)(x))
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.channels:
      # The projection sees the pre-activated input, as in the reference implementation.
      shortcut = _conv(self.channels, 1, self.strides, self.dtype)(out)
    out = _conv(self.channels, 3, self.strides, self.dtype)(out)
    out = nn.relu(_norm(train, self.dtype)(out))
    out = _conv(self.channels, 3, 1, self.dtype)(out)
    return out + shortcut


class Backbone(nn.Module):
  """Normalisation, stem, four stages of pre-activation blocks, BN-ReLU, global average pool.

  Attributes:
    width: channels of the first stage; the stages have width·(1, 2, 4, 8).
    dtype: computation dtype.
  """

  width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """(n, 32, 32, 3) pixels in [0, 1] → (n, 8·width) float32 features."""
    mean = jnp.asarray(CIFAR10_MEAN, jnp.float32)
    std = jnp.asarray(CIFAR10_STD, jnp.float32)
    x = ((jnp.asarray(x, jnp.float32) - mean) / std).astype(self.dtype)
    x = _conv(self.width, 3, 1, self.dtype)(x)
    for multiplier, strides in zip(STAGE_MULTIPLIERS, STAGE_STRIDES, strict=True):
      for block in range(BLOCKS_PER_STAGE):
        x = PreActBlock(self.width * multiplier, strides if block == 0 else 1, self.dtype)(x, train)
    x = nn.relu(_norm(train, self.dtype)(x))
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


class Head(nn.Module):
  """Dense(head_width) → ReLU → Dense(num_classes), in float32.

  Kept in float32 under mixed precision: it is tiny, and callers re-evaluate it from its
  extracted weights W1 (d, head_width), b1, W2 (head_width, C), b2.

  Attributes:
    head_width: hidden units.
    num_classes: outputs C.
  """

  head_width: int = 256
  num_classes: int = 10

  @nn.compact
  def __call__(self, features: jnp.ndarray) -> jnp.ndarray:
    """(n, d) features → (n, num_classes) float32 logits."""
    h = jnp.asarray(features, jnp.float32)
    h = nn.relu(nn.Dense(self.head_width, dtype=jnp.float32, param_dtype=jnp.float32,
                         name="hidden")(h))
    return nn.Dense(self.num_classes, dtype=jnp.float32, param_dtype=jnp.float32,
                    name="output")(h)


class PreActResNet18(nn.Module):
  """Pre-activation ResNet-18 (CIFAR stem) with a two-layer head; 11.3M parameters at width 64.

  Attributes:
    num_classes: number of logits C.
    width: channels of the first stage; features have dimension 8·width.
    head_width: hidden units of the head.
    dtype: computation dtype of the backbone (bfloat16 for mixed precision); parameters,
      features and logits are float32 whatever it is.
  """

  num_classes: int = 10
  width: int = 64
  head_width: int = 256
  dtype: Any = jnp.float32

  def setup(self):
    self.backbone = Backbone(self.width, self.dtype)
    # Named explicitly: the attribute `head` is the method below.
    self.head_net = Head(self.head_width, self.num_classes, name="head")

  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """(n, 32, 32, 3) pixels in [0, 1] → (n, num_classes) float32 logits."""
    return self.head(self.features(x, train))

  def features(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """(n, 32, 32, 3) pixels in [0, 1] → (n, 8·width) float32 pooled features."""
    return self.backbone(x, train)

  def head(self, features: jnp.ndarray) -> jnp.ndarray:
    """(n, 8·width) features → (n, num_classes) float32 logits."""
    return self.head_net(features)
