"""Skew Orthogonal Convolutions and a 1-Lipschitz SOC network with a computed Lipschitz bound.

Singla & Feizi, "Skew Orthogonal Convolutions" (ICML 2021), and Singla, Singla & Feizi, "Improved
techniques for deterministic l2 robustness" (NeurIPS 2022). A SOC layer maps x to exp(A)x, where A
is a convolution with a skew-symmetric filter, so exp(A) is orthogonal; the exponential is a Taylor
series truncated after K powers, whose distance from orthogonality is at most the series' tail.
With MaxMin activations, space-to-channel downsampling, channel projections and ℓ₂-norm pooling
(all 1-Lipschitz), `lipschitz_bound` gives an upper bound on the Lipschitz constant of
`SOCNet.features`, and `jacobian_norm_estimate` measures how close the network comes to it.

Layout NHWC, filters HWIO, as in `jax.lax.conv_general_dilated` and flax. The bounds hold in exact
arithmetic; evaluated in float64 they hold to about 1e-15 relative, in float32 to about 1e-6.
The parameters split into params["backbone"] (the SOC layers, named by `soc_layer_name`) and
params["head"]["output"] (the last linear layer), as in `PreActResNet18`.
"""

from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# The public SOC code's "correction": filters are rescaled to a norm bound of 0.7, so that a
# 6-term series in training is within 2e-5 of orthogonal.
SOC_SCALE = 0.7
# Keeps the gradient of ℓ₂-norm pooling finite at zero; see `l2_norm_pool`.
POOL_EPSILON = 1e-12
# Power iterations of the spectral norms that rescale the filters in training.
_POWER_STEPS = 10
# Series terms summed past the truncation before a geometric bound on the rest; 60 make the tail
# exact to float64 precision for norms up to 10.
_TAIL_TERMS = 60


def _check_terms(terms: int, name: str) -> None:
  if not isinstance(terms, int) or terms < 0:
    raise ValueError(f"{name} must be an integer >= 0, got {terms!r}")


def _check_images(x: jnp.ndarray, name: str = "x") -> None:
  if x.ndim != 4:
    raise ValueError(f"{name} must have shape (n, h, w, c), got shape {x.shape}")


def transpose_filter(kernel: jnp.ndarray) -> jnp.ndarray:
  """The filter of the adjoint convolution: spatially flipped, input and output channels swapped.

  Args:
    kernel: (kh, kw, c_in, c_out) HWIO filter.

  Returns:
    (kh, kw, c_out, c_in) filter. For odd kh, kw, the stride-1 'SAME' convolution with it is the
    transpose of the one with `kernel`.
  """
  return jnp.flip(kernel, axis=(0, 1)).transpose(0, 1, 3, 2)


def skew_symmetric_filter(kernel: jnp.ndarray) -> jnp.ndarray:
  """A = (W − Wᵀ)/2, whose stride-1 'SAME' convolution is a skew-symmetric linear map.

  Args:
    kernel: (k, k, c, c) HWIO filter W with odd k.

  Returns:
    (k, k, c, c) filter A, with Wᵀ = `transpose_filter(W)`.
  """
  if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
    raise ValueError(f"kernel must have shape (k, k, c, c) with odd k, got shape {kernel.shape}")
  if kernel.shape[2] != kernel.shape[3]:
    raise ValueError(f"kernel must have as many input as output channels, got shape {kernel.shape}")
  return (kernel - transpose_filter(kernel)) / 2


def conv_same(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
  """Stride-1 cross-correlation with 'SAME' zero padding, as `flax.linen.Conv` without bias.

  Args:
    x: (n, h, w, c_in) images.
    kernel: (kh, kw, c_in, c_out) HWIO filter.

  Returns:
    (n, h, w, c_out) images.
  """
  # TF32 convolutions on GPUs would move exp(A) away from the orthogonality the bound relies on.
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      precision=jax.lax.Precision.HIGHEST)


def _spectral_norm(matrices: jnp.ndarray) -> jnp.ndarray:
  """(..., m, n) → (...) largest singular values."""
  return jnp.linalg.norm(matrices, ord=2, axis=(-2, -1))


def conv_norm_bound(kernel: jnp.ndarray) -> jnp.ndarray:
  """An upper bound on the ℓ₂ operator norm of the zero-padded, stride-1 convolution with a filter.

  The minimum of Σ_ab ‖W_ab‖₂ over the kh·kw offsets and of √(kh·kw)·‖R‖₂ over the four reshapes
  R of the filter into matrices (Singla & Feizi, "Fantastic Four", NeurIPS 2021). Proof: the
  zero-padded convolution is a compression of a circular one on a larger torus, whose Fourier
  blocks Σ_ab ω_ab W_abᵀ (|ω_ab| = 1) are bounded by the triangle inequality, and by √(kh·kw)·‖R‖₂
  on moving the phases into block rows and columns of norms √kh and √kw (or √(kh·kw) and 1). It
  holds for every image size, up to the rounding of the singular value decompositions.

  Args:
    kernel: (kh, kw, c_in, c_out) HWIO filter W.

  Returns:
    () bound, in the filter's dtype.
  """
  return _norm_combination(kernel, _spectral_norm)


def _norm_combination(kernel: jnp.ndarray, spectral_norm) -> jnp.ndarray:
  """min(Σ_ab ‖W_ab‖₂, √(kh·kw)·min_R ‖R‖₂) with the given (..., m, n) → (...) spectral norm."""
  if kernel.ndim != 4:
    raise ValueError(f"kernel must have shape (kh, kw, c_in, c_out), got shape {kernel.shape}")
  kh, kw, c_in, c_out = kernel.shape
  offset_sum = jnp.sum(spectral_norm(kernel.reshape(kh * kw, c_in, c_out)))
  reshapes = (kernel.transpose(0, 3, 1, 2).reshape(kh * c_out, kw * c_in),
              kernel.transpose(1, 3, 0, 2).reshape(kw * c_out, kh * c_in),
              kernel.transpose(3, 0, 1, 2).reshape(c_out, kh * kw * c_in),
              kernel.transpose(0, 1, 3, 2).reshape(kh * kw * c_out, c_in))
  reshape_bound = (kh * kw) ** 0.5 * jnp.min(jnp.stack([spectral_norm(R) for R in reshapes]))
  return jnp.minimum(offset_sum, reshape_bound)


def _spectral_norm_estimate(matrices: jnp.ndarray) -> jnp.ndarray:
  """(..., m, n) → (...) largest singular values by power iteration from a fixed start.

  The vectors are held constant under differentiation, as in spectral normalisation; an
  underestimate only lets ‖A‖₂ exceed the scale a little, which the bound accounts for.
  """
  v = jax.random.normal(jax.random.key(0), matrices.shape[:-2] + matrices.shape[-1:],
                        matrices.dtype)

  def step(_, v):
    u = _unit_rows(jnp.einsum("...mn,...n->...m", matrices, v))
    return _unit_rows(jnp.einsum("...mn,...m->...n", matrices, u))

  v = jax.lax.stop_gradient(jax.lax.fori_loop(0, _POWER_STEPS, step, _unit_rows(v)))
  return jnp.sqrt(jnp.sum(jnp.square(jnp.einsum("...mn,...n->...m", matrices, v)), -1))


def _unit_rows(v: jnp.ndarray) -> jnp.ndarray:
  return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), jnp.finfo(v.dtype).tiny)


def conv_norm_estimate(kernel: jnp.ndarray) -> jnp.ndarray:
  """`conv_norm_bound` with its spectral norms estimated by power iteration: no SVD.

  Differentiable and cheap, for rescaling filters in training (singular value decompositions
  and their gradients are slow on CPUs); not a bound, since power iteration approaches the
  spectral norm from below.

  Args:
    kernel: (kh, kw, c_in, c_out) HWIO filter W.

  Returns:
    () estimate, in the filter's dtype.
  """
  return _norm_combination(kernel, _spectral_norm_estimate)


def scaled_skew_filter(kernel: jnp.ndarray, scale: float = SOC_SCALE) -> jnp.ndarray:
  """The SOC filter: `skew_symmetric_filter(kernel)` rescaled to a `conv_norm_estimate` of `scale`.

  Args:
    kernel: (k, k, c, c) HWIO filter with odd k.
    scale: the target operator norm of the returned filter's convolution, > 0.

  Returns:
    (k, k, c, c) skew-symmetric filter A with ‖A‖₂ about `scale` or less (`soc_lipschitz_bound`
    bounds it rigorously).
  """
  skew = skew_symmetric_filter(kernel)
  # The floor keeps a zero filter zero instead of 0/0.
  return skew * (scale / jnp.maximum(conv_norm_estimate(skew), jnp.finfo(skew.dtype).tiny))


def taylor_exponential(apply_A: Callable[[jnp.ndarray], jnp.ndarray], x: jnp.ndarray,
                       terms: int) -> jnp.ndarray:
  """exp(A)x truncated after `terms` powers, Σ_{j=0}^{K} A^j x / j!, in Horner form.

  z ← x + A(z)/j for j = K, …, 1, starting from z = x: K applications of A.

  Args:
    apply_A: the linear map z ↦ Az on arrays shaped like x.
    x: array of any shape.
    terms: the highest power K >= 0.

  Returns:
    array shaped like x.
  """
  _check_terms(terms, "terms")

  # Unrolled: XLA's CPU backend runs convolutions inside a loop's gradient ~20× slower.
  z = x
  for j in range(terms, 0, -1):
    z = x + apply_A(z) / j
  return z


def exponential_tail(norm_bound: jnp.ndarray, terms: int) -> jnp.ndarray:
  """Σ_{j>K} s^j / j!, the exponential series past its K-th power.

  Summed as s^{K+1}/(K+1)! · (1 + s/(K+2)·(1 + s/(K+3)·(…))) over 60 terms and a geometric bound
  on the rest: an upper bound for 0 ≤ s < K + 61, exact to the float precision for s ≤ 10. For a
  skew-symmetric A, exp(A) is orthogonal and the truncated series T_K has singular values within
  exponential_tail(‖A‖₂, K) of 1.

  Args:
    norm_bound: s >= 0, any shape.
    terms: K >= 0.

  Returns:
    tail >= 0, shaped like norm_bound.
  """
  _check_terms(terms, "terms")
  s = jnp.asarray(norm_bound, jnp.result_type(norm_bound, float))
  last = terms + _TAIL_TERMS
  # Σ_i (s/(last+1))^i bounds 1 + s/(last+1) + s²/((last+1)(last+2)) + …, the terms not summed.
  bracket = 1 / (1 - s / (last + 1))
  for j in range(last, terms + 1, -1):
    bracket = 1 + s / j * bracket
  first_term = jnp.ones_like(s)
  for j in range(1, terms + 2):
    first_term = first_term * s / j
  return first_term * bracket


def soc_lipschitz_bound(layer_params: Mapping[str, jnp.ndarray], terms: int,
                        scale: float = SOC_SCALE) -> jnp.ndarray:
  """1 + exponential_tail(‖A‖₂ bound, K): the Lipschitz bound of a SOC layer.

  Args:
    layer_params: the layer's parameters, with the (k, k, c, c) "kernel".
    terms: the layer's number of series terms K (train_terms or eval_terms).
    scale: the layer's scale.

  Returns:
    () bound, in the widest float dtype available.
  """
  kernel = jnp.asarray(layer_params["kernel"])
  # In float32, 1 + 1e-16 would round down to 1.
  kernel = kernel.astype(jnp.promote_types(kernel.dtype, jax.dtypes.canonicalize_dtype(float)))
  return 1 + exponential_tail(conv_norm_bound(scaled_skew_filter(kernel, scale)), terms)


class SOC(nn.Module):
  """Skew Orthogonal Convolution x ↦ T_K(A)x + bias, with T_K the exponential's series to A^K.

  A is the convolution with `scaled_skew_filter(kernel, scale)`, so ‖A‖₂ is about scale and the
  layer is `soc_lipschitz_bound`-Lipschitz; at evaluation (15 terms) it is orthogonal to float
  precision.

  Attributes:
    features: channels c, of both the input and the output.
    kernel_size: odd filter size k.
    train_terms: K in training.
    eval_terms: K at evaluation.
    scale: the bound on ‖A‖₂, > 0.
    use_bias: whether to add a learned bias.
    dtype: computation dtype; the parameters are float32.
  """

  features: int
  kernel_size: int = 3
  train_terms: int = 6
  eval_terms: int = 15
  scale: float = SOC_SCALE
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """(n, h, w, features) → (n, h, w, features)."""
    _check_images(x)
    if x.shape[-1] != self.features:
      raise ValueError(f"x must have {self.features} channels (features), got shape {x.shape}")
    if self.kernel_size < 1 or self.kernel_size % 2 == 0:
      raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}")
    if not self.scale > 0:
      raise ValueError(f"scale must be > 0, got {self.scale}")
    terms = self.train_terms if train else self.eval_terms
    _check_terms(terms, "train_terms" if train else "eval_terms")
    shape = (self.kernel_size, self.kernel_size, self.features, self.features)
    kernel = self.param("kernel", nn.initializers.lecun_normal(), shape, jnp.float32)
    # The rescaling runs in at least float32 even under bfloat16, to keep ‖A‖₂ ≤ scale.
    conv_filter = scaled_skew_filter(kernel.astype(jnp.promote_types(kernel.dtype, self.dtype)),
                                     self.scale).astype(self.dtype)
    y = taylor_exponential(lambda z: conv_same(z, conv_filter), x.astype(self.dtype), terms)
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


def space_to_channel(x: jnp.ndarray, factor: int = 2) -> jnp.ndarray:
  """Moves each factor×factor block of pixels into the channels: a permutation of the entries.

  Args:
    x: (n, h, w, c) images, h and w divisible by factor.
    factor: block size f >= 1.

  Returns:
    (n, h/f, w/f, f·f·c) images; output channel (a·f + b)·c + k of pixel (i, j) is channel k of
    input pixel (f·i + a, f·j + b).
  """
  _check_images(x)
  if not isinstance(factor, int) or factor < 1:
    raise ValueError(f"factor must be an integer >= 1, got {factor!r}")
  n, h, w, c = x.shape
  if h % factor or w % factor:
    raise ValueError(f"x must have height and width divisible by {factor}, got shape {x.shape}")
  blocks = x.reshape(n, h // factor, factor, w // factor, factor, c).transpose(0, 1, 3, 2, 4, 5)
  return blocks.reshape(n, h // factor, w // factor, factor * factor * c)


def max_min(x: jnp.ndarray) -> jnp.ndarray:
  """MaxMin (GroupSort with groups of 2): channel pairs (a, b) → (max(a, b), min(a, b)).

  The pairs are channel k and k + c/2. The map permutes each pair, so it preserves norms, is
  1-Lipschitz, and its Jacobian is a permutation, which preserves gradient norms.

  Args:
    x: (..., c) array, c even.

  Returns:
    (..., c) array: the maxima in the first c/2 channels, the minima in the last.
  """
  if x.ndim < 1 or x.shape[-1] % 2:
    raise ValueError(f"x must have an even number of channels, got shape {x.shape}")
  first, second = jnp.split(x, 2, axis=-1)
  # One comparison selects both outputs, so the Jacobian is a permutation even at ties.
  first_is_larger = first >= second
  return jnp.concatenate([jnp.where(first_is_larger, first, second),
                          jnp.where(first_is_larger, second, first)], axis=-1)


def l2_norm_pool(x: jnp.ndarray) -> jnp.ndarray:
  """Per-channel ℓ₂ norm over the spatial positions, smoothed at zero: √(‖v‖² + ε).

  Its gradient v/√(‖v‖² + ε) has norm below 1, so each channel's map is 1-Lipschitz, and so is the
  map to R^c (the squared differences add up over channels); it is within √ε = 1e-6 of the norm.

  Args:
    x: (n, h, w, c) images.

  Returns:
    (n, c) pooled features.
  """
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=(1, 2)) + POOL_EPSILON)


def soc_layer_name(stage: int, block: int) -> str:
  """The name of a SOC layer in params["backbone"]."""
  return f"soc{stage}_{block}"


def _soc_layer_names(widths: Sequence[int], depth: int) -> list:
  return [soc_layer_name(stage, block) for stage in range(len(widths)) for block in range(depth)]


def _check_network(x: jnp.ndarray, widths: Sequence[int], depth: int) -> None:
  """Raises ValueError unless (x, widths, depth) make a valid SOCNet input and layout."""
  _check_images(x)
  if not widths or any(not isinstance(w, int) or w < 2 or w % 2 for w in widths):
    raise ValueError(f"widths must be a non-empty sequence of even integers >= 2, got {widths!r}")
  for previous, width in zip(widths[:-1], widths[1:], strict=True):
    if width > 4 * previous:
      raise ValueError(f"widths must grow at most 4-fold per stage (space-to-channel 2×2), got "
                       f"{width} after {previous}")
  if not isinstance(depth, int) or depth < 1:
    raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
  if x.shape[-1] > widths[0]:
    raise ValueError(f"x must have at most widths[0] = {widths[0]} channels, got shape {x.shape}")
  downsampling = 2 ** (len(widths) - 1)
  if x.shape[1] % downsampling or x.shape[2] % downsampling:
    raise ValueError(f"x must have height and width divisible by {downsampling} for "
                     f"{len(widths)} stages, got shape {x.shape}")


class SOCBackbone(nn.Module):
  """Channel padding, stages of (SOC → MaxMin) blocks joined by space-to-channel, ℓ₂-norm pooling.

  Every piece but the SOC layers is 1-Lipschitz: zero-padding channels and space-to-channel are
  isometries, keeping the first channels is a coordinate projection, and MaxMin and the pooling
  are 1-Lipschitz.

  Attributes:
    widths: channels of each stage; each at most 4 times the previous, all even.
    depth: SOC → MaxMin blocks per stage.
    kernel_size: odd filter size of the SOC layers.
    train_terms: series terms of the SOC layers in training.
    eval_terms: series terms of the SOC layers at evaluation.
    input_mean: the per-channel (or one) pixel value subtracted first, e.g. the training mean.
    dtype: computation dtype.
  """

  widths: Sequence[int] = (16, 32, 64)
  depth: int = 2
  kernel_size: int = 3
  train_terms: int = 6
  eval_terms: int = 15
  input_mean: Sequence[float] = (0.5,)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """(n, h, w, c) pixels in [0, 1], c ≤ widths[0] → (n, widths[-1]) features.

    The features are float32, or float64 when dtype is float64.
    """
    _check_network(x, self.widths, self.depth)
    # A constant shift changes no Lipschitz constant; uncentred inputs swamp the pooled norms.
    x = jnp.asarray(x, self.dtype) - jnp.asarray(self.input_mean, self.dtype)
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, self.widths[0] - x.shape[-1])))
    for stage, width in enumerate(self.widths):
      if stage > 0:
        x = space_to_channel(x, 2)[..., :width]
      for block in range(self.depth):
        x = SOC(width, self.kernel_size, self.train_terms, self.eval_terms, dtype=self.dtype,
                name=soc_layer_name(stage, block))(x, train)
        x = max_min(x)
    return l2_norm_pool(x.astype(jnp.promote_types(self.dtype, jnp.float32)))


class LinearHead(nn.Module):
  """Dense(num_classes) named "output", in float32.

  Attributes:
    num_classes: outputs C.
  """

  num_classes: int = 10

  @nn.compact
  def __call__(self, features: jnp.ndarray) -> jnp.ndarray:
    """(n, d) features → (n, num_classes) float32 logits."""
    return nn.Dense(self.num_classes, dtype=jnp.float32, param_dtype=jnp.float32,
                    name="output")(jnp.asarray(features, jnp.float32))


class SOCNet(nn.Module):
  """A 1-Lipschitz SOC backbone (`SOCBackbone`) and a linear head.

  `lipschitz_bound(model, params)` bounds the Lipschitz constant of `features`; it exceeds 1 only
  by the SOC layers' series truncation (about 1e-16 per layer at evaluation, 2e-5 in training).

  Attributes:
    num_classes: number of logits C.
    widths: channels of each stage; features have dimension widths[-1].
    depth: SOC → MaxMin blocks per stage.
    kernel_size: odd filter size of the SOC layers.
    train_terms: series terms of the SOC layers in training.
    eval_terms: series terms of the SOC layers at evaluation.
    input_mean: the per-channel (or one) pixel value subtracted first, e.g. the training mean.
    dtype: computation dtype of the backbone; parameters and logits are float32.
  """

  num_classes: int = 10
  widths: Sequence[int] = (16, 32, 64)
  depth: int = 2
  kernel_size: int = 3
  train_terms: int = 6
  eval_terms: int = 15
  input_mean: Sequence[float] = (0.5,)
  dtype: Any = jnp.float32

  def setup(self):
    self.backbone = SOCBackbone(self.widths, self.depth, self.kernel_size, self.train_terms,
                                self.eval_terms, self.input_mean, self.dtype)
    # Named explicitly: the attribute `head` is the method below.
    self.head_net = LinearHead(self.num_classes, name="head")

  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """(n, h, w, c) pixels in [0, 1] → (n, num_classes) float32 logits."""
    return self.head(self.features(x, train))

  def features(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """(n, h, w, c) pixels in [0, 1] → (n, widths[-1]) ℓ₂-pooled features."""
    return self.backbone(x, train)

  def head(self, features: jnp.ndarray) -> jnp.ndarray:
    """(n, widths[-1]) features → (n, num_classes) float32 logits."""
    return self.head_net(features)


def lipschitz_bound(model: SOCNet, params: Mapping[str, Any], train: bool = False) -> jnp.ndarray:
  """An upper bound on the ℓ₂ Lipschitz constant of `model.features`.

  The product of the SOC layers' `soc_lipschitz_bound`s, the other pieces being 1-Lipschitz.

  Args:
    model: the SOCNet the parameters belong to.
    params: its parameters (variables["params"]), with params["backbone"].
    train: bound the training-mode features (train_terms) instead of evaluation mode (eval_terms).

  Returns:
    () bound, in the widest float dtype available.
  """
  if "backbone" not in params:
    raise ValueError(f"params must be a SOCNet's variables['params'] with a 'backbone' entry, got "
                     f"keys {list(params)}")
  terms = model.train_terms if train else model.eval_terms
  bound = jnp.ones(())
  for name in _soc_layer_names(model.widths, model.depth):
    bound = bound * soc_lipschitz_bound(params["backbone"][name], terms)
  return bound


def _unit(v: jnp.ndarray) -> jnp.ndarray:
  """v / ‖v‖₂ (flattened), and 0 for v = 0."""
  return v / jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(v))), jnp.finfo(v.dtype).tiny)


def jacobian_norm_estimate(fn: Callable[[jnp.ndarray], jnp.ndarray], x: jnp.ndarray,
                           key: jax.Array, iterations: int = 50) -> jnp.ndarray:
  """Largest singular value of fn's Jacobian J at x, by power iteration on JᵀJ.

  The result is ‖Jv‖₂ for a unit vector v, so it never exceeds the largest singular value (up to
  rounding): a lower estimate of fn's local Lipschitz constant, to check computed upper bounds
  against. It approaches the largest singular value as the iterations grow.

  Args:
    fn: differentiable map from arrays shaped like x to arrays.
    x: the point, a float array of any shape. For a batch, the estimate is of the Jacobian of the
      whole batch map: if fn maps examples independently, it approaches the largest per-example
      value. Use vmap over examples (and keys) for one value per example.
    key: PRNG key of the random starting vector.
    iterations: power iterations >= 0.

  Returns:
    () estimate, in x's dtype.
  """
  _check_terms(iterations, "iterations")
  _, jvp = jax.linearize(fn, x)
  vjp = jax.linear_transpose(jvp, x)

  def power_step(_, v):
    (gradient,) = vjp(jvp(v))
    return _unit(gradient)

  start = _unit(jax.random.normal(key, x.shape, x.dtype))
  v = jax.lax.fori_loop(0, iterations, power_step, start)
  return jnp.sqrt(jnp.sum(jnp.square(jvp(v))))
