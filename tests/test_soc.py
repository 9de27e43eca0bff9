"""Skew Orthogonal Convolutions and the SOC network: skew-symmetry and orthogonality of the layers,
the norm and tail bounds against exact values, and the computed Lipschitz bound of the network
against measured ratios and Jacobian norms. float64 (conftest); tiny images."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvxjax.models import SOCNet, soc

# rbg keys: XLA:CPU takes ~0.3 s to compile each threefry draw, and the tests draw many shapes.
KEY = jax.random.key(0, impl="rbg")
MODEL = SOCNet(num_classes=3, widths=(4, 8), depth=2, dtype=jnp.float64)
IMAGE_SHAPE = (8, 8, 4)


def _normal(key, shape, std=1.0):
  return std * jax.random.normal(key, shape, jnp.float64)


def _random_params(variables_shape, key, kernel_std=0.5, bias_std=0.1):
  """Parameters shaped like `variables_shape`: kernels N(0, kernel_std²), others N(0, bias_std²)."""
  leaves, tree = jax.tree.flatten_with_path(variables_shape)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(tree, [
      _normal(k, leaf.shape, kernel_std if path[-1].key == "kernel" else bias_std)
      for (path, leaf), k in zip(leaves, keys, strict=True)])


def _matrix(linear_map, shape):
  """(size, size) Jacobian of an affine map on arrays of `shape` (size = prod(shape))."""
  size = math.prod(shape)
  return jax.jit(jax.jacfwd(lambda v: linear_map(v.reshape(shape)).reshape(-1)))(jnp.zeros(size))


@functools.partial(jax.jit, static_argnums=1)
def _conv_matrix(kernel, image_shape):
  """The matrix of `soc.conv_same` with `kernel` on images of `image_shape` (1, h, w, c_in)."""
  return _matrix(lambda x: soc.conv_same(x, kernel), image_shape)


def _singular_values(matrix):
  return np.linalg.svd(np.asarray(matrix), compute_uv=False)


def _exact_tail(s, terms):
  """Σ_{j>K} s^j/j! in float64 from 200 terms of the series, each formed by exact recurrence."""
  term, summands = 1.0, []
  for j in range(1, terms + 200):
    term *= s / j
    if j > terms:
      summands.append(term)
  return math.fsum(summands)


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_skew_symmetric_filter_gives_a_skew_symmetric_convolution(kernel_size):
  keys = jax.random.split(jax.random.fold_in(KEY, kernel_size), 4)
  u, v = _normal(keys[0], (1, 6, 6, 3)), _normal(keys[1], (1, 6, 6, 3))
  A = soc.skew_symmetric_filter(_normal(keys[2], (kernel_size, kernel_size, 3, 3)))
  np.testing.assert_allclose(jnp.vdot(u, soc.conv_same(v, A)), -jnp.vdot(soc.conv_same(u, A), v),
                             rtol=1e-12)
  W = _normal(keys[3], (kernel_size, kernel_size, 3, 5))
  w = _normal(keys[0], (1, 6, 6, 5))
  np.testing.assert_allclose(jnp.vdot(w, soc.conv_same(v, W)),
                             jnp.vdot(soc.conv_same(w, soc.transpose_filter(W)), v), rtol=1e-12)


def _soc_layer_singular_values(train, key):
  layer = soc.SOC(4, dtype=jnp.float64)
  shape = (1, 6, 6, 4)
  params = _random_params(jax.eval_shape(layer.init, key, jnp.zeros(shape))["params"], key)
  matrix = _matrix(lambda x: layer.apply({"params": params}, x, train), shape)
  return _singular_values(matrix), soc.soc_lipschitz_bound(params, 6 if train else 15)


def test_soc_layer_is_orthogonal_at_evaluation():
  singular_values, bound = _soc_layer_singular_values(False, jax.random.fold_in(KEY, 1))
  assert np.max(np.abs(singular_values - 1)) < 1e-4
  assert singular_values.max() <= bound + 1e-12
  assert bound - 1 < 1e-14


def test_soc_layer_in_training_is_within_the_tail_of_orthogonal():
  singular_values, bound = _soc_layer_singular_values(True, jax.random.fold_in(KEY, 2))
  tail = bound - 1
  assert 1e-5 < tail < 1e-4
  assert singular_values.max() <= 1 + tail and singular_values.min() >= 1 - tail


@pytest.mark.parametrize("shape", [(1, 1, 4, 4), (3, 3, 4, 4), (3, 3, 2, 5), (5, 5, 3, 3),
                                   (3, 5, 3, 2)])
def test_conv_norm_bound_is_at_least_the_operator_norm(shape):
  for seed in range(3):
    kernel = _normal(jax.random.fold_in(KEY, seed), shape)
    if shape[0] == shape[1] and shape[2] == shape[3] and seed == 2:
      kernel = soc.skew_symmetric_filter(kernel)
    bound = soc.conv_norm_bound(kernel)
    for image in [(1, 6, 6, shape[2]), (1, 2, 3, shape[2])]:
      exact = _singular_values(_conv_matrix(kernel, image)).max()
      assert bound >= exact * (1 - 1e-12)
    if shape[:2] == (1, 1):
      np.testing.assert_allclose(bound, exact, rtol=1e-12)


def test_scaled_skew_filter_has_about_the_scale_as_norm_bound():
  kernel = _normal(KEY, (3, 3, 8, 8))
  scaled = soc.scaled_skew_filter(kernel, 0.3)
  np.testing.assert_allclose(soc.conv_norm_estimate(scaled), 0.3, rtol=1e-12)
  # Power iteration approaches each spectral norm from below, and closely.
  bound = float(soc.conv_norm_bound(scaled))
  assert 0.3 * (1 - 1e-12) <= bound <= 0.3 * 1.05
  np.testing.assert_array_equal(soc.scaled_skew_filter(jnp.zeros((3, 3, 4, 4))), 0)


@pytest.mark.parametrize("s", [0.0, 1e-3, 0.3, 0.7, 1.0, 2.0])
@pytest.mark.parametrize("terms", [0, 1, 6, 15])
def test_exponential_tail_matches_the_series(s, terms):
  tail = soc.exponential_tail(s, terms)
  assert tail >= 0
  np.testing.assert_allclose(tail, _exact_tail(s, terms), rtol=1e-13, atol=0)


def test_exponential_tail_is_exact_for_zero_terms_and_differentiable():
  s = jnp.linspace(0, 2, 7)
  np.testing.assert_allclose(soc.exponential_tail(s, 0), jnp.expm1(s), rtol=1e-14)
  np.testing.assert_allclose(jax.vmap(jax.grad(lambda t: soc.exponential_tail(t, 3)))(s),
                             soc.exponential_tail(s, 2), rtol=1e-13, atol=1e-300)


def test_taylor_exponential_is_the_truncated_series():
  keys = jax.random.split(KEY)
  M, x = _normal(keys[0], (5, 5)), _normal(keys[1], (5,))
  for terms in [0, 1, 4]:
    series = sum(jnp.linalg.matrix_power(M, j) @ x / math.factorial(j) for j in range(terms + 1))
    np.testing.assert_allclose(soc.taylor_exponential(lambda z: M @ z, x, terms), series,
                               rtol=1e-12)


def test_space_to_channel_is_a_permutation_and_an_isometry():
  x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float64).reshape(2, 4, 6, 3)
  y = soc.space_to_channel(x, 2)
  assert y.shape == (2, 2, 3, 12)
  np.testing.assert_array_equal(jnp.sort(y.ravel()), x.ravel())
  # Channel (a·2 + b)·3 + k of pixel (i, j) is channel k of pixel (2i + a, 2j + b).
  assert y[1, 1, 2, (1 * 2 + 0) * 3 + 2] == x[1, 3, 4, 2]
  z = _normal(KEY, (2, 6, 6, 3))
  np.testing.assert_allclose(jnp.linalg.norm(soc.space_to_channel(z, 3)), jnp.linalg.norm(z),
                             rtol=1e-14)


def test_max_min_preserves_norms_and_gradient_norms():
  keys = jax.random.split(KEY)
  x = _normal(keys[0], (3, 4, 4, 6)).at[0].set(1.0)
  y, pullback = jax.vjp(soc.max_min, x)
  np.testing.assert_allclose(jnp.linalg.norm(y), jnp.linalg.norm(x), rtol=1e-14)
  np.testing.assert_array_equal(y[..., :3] >= y[..., 3:], True)
  cotangent = _normal(keys[1], x.shape)
  np.testing.assert_allclose(jnp.linalg.norm(pullback(cotangent)[0]), jnp.linalg.norm(cotangent),
                             rtol=1e-14)


@functools.cache
def _network(channels=4):
  """(params, images (6, 8, 8, channels) in [0, 1]) of MODEL with random, non-trivial weights."""
  keys = jax.random.split(jax.random.fold_in(KEY, channels), 2)
  images = jax.random.uniform(keys[0], (6, 8, 8, channels), jnp.float64)
  shapes = jax.eval_shape(MODEL.init, keys[1], images)["params"]
  return _random_params(shapes, keys[1]), images


@functools.partial(jax.jit, static_argnames="train")
def _features(params, images, train):
  return MODEL.apply({"params": params}, images, train, method=MODEL.features)


_lipschitz_bound = jax.jit(soc.lipschitz_bound, static_argnums=(0, 2))


@functools.partial(jax.jit, static_argnames="train")
def _logits(params, images, train):
  return MODEL.apply({"params": params}, images, train)


@functools.partial(jax.jit, static_argnames="train")
def _jacobian_norm_estimates(params, images, keys, train):
  features = lambda image: _features(params, image[None], train)[0]
  return jax.vmap(lambda image, key: soc.jacobian_norm_estimate(features, image, key))(images, keys)


def test_socnet_shapes_and_parameter_layout():
  params, images = _network()
  assert set(params) == {"backbone", "head"}
  assert set(params["head"]) == {"output"}
  assert set(params["backbone"]) == {"soc0_0", "soc0_1", "soc1_0", "soc1_1"}
  assert params["backbone"]["soc1_0"]["kernel"].shape == (3, 3, 8, 8)
  assert _features(params, images, False).shape == (6, 8)
  logits = _logits(params, images, False)
  assert logits.shape == (6, 3) and logits.dtype == jnp.float32


@pytest.mark.parametrize("train", [False, True])
def test_socnet_lipschitz_bound_is_never_exceeded(train):
  params, images = _network()
  bound = _lipschitz_bound(MODEL, params, train)
  assert 1 <= bound < (1 + 1e-14 if not train else 1 + 2e-4)
  keys = jax.random.split(jax.random.fold_in(KEY, 3), 3)
  others = jax.random.uniform(keys[0], (24, *IMAGE_SHAPE), jnp.float64)
  starts = jnp.tile(images, (4, 1, 1, 1))
  pairs = [(starts, others),
           (starts, starts + 0.1 * _normal(keys[1], starts.shape)),
           (starts, starts + 1e-6 * _normal(keys[2], starts.shape))]
  for x, x_other in pairs:
    ratios = (jnp.linalg.norm(_features(params, x, train) - _features(params, x_other, train),
                              axis=-1)
              / jnp.linalg.norm((x - x_other).reshape(len(x), -1), axis=-1))
    assert jnp.max(ratios) <= bound
    # Random directions see about ‖J‖_F/√256 ≈ 0.18 of the norm: the features are far from constant.
    assert jnp.min(ratios) > 0.01


@pytest.mark.parametrize("train", [False, True])
def test_jacobian_norm_estimate_reaches_the_lipschitz_bound(train):
  # With as many input channels as widths[0], the transposed Jacobian is an isometry up to the
  # series truncation, so the largest singular value is 1 and the bound is nearly tight.
  params, images = _network()
  bound = _lipschitz_bound(MODEL, params, train)
  estimates = _jacobian_norm_estimates(params, images, jax.random.split(KEY, len(images)), train)
  assert jnp.all(estimates <= bound + 1e-9)
  assert jnp.all(estimates >= bound - (1e-9 if not train else 2e-4))


def test_jacobian_norm_estimate_with_padded_channels():
  # Zero-padding 3 channels to 4 costs about a quarter of the input directions, not the top one.
  params, images = _network(channels=3)
  bound = _lipschitz_bound(MODEL, params, False)
  estimates = _jacobian_norm_estimates(params, images, jax.random.split(KEY, len(images)), False)
  assert jnp.all(estimates <= bound + 1e-9)
  assert jnp.all(estimates >= 0.9 * bound)


def test_jacobian_norm_estimate_of_a_matrix():
  M = _normal(KEY, (7, 5))
  estimate = soc.jacobian_norm_estimate(lambda x: M @ x, jnp.ones(5), KEY, iterations=200)
  largest = _singular_values(M).max()
  assert estimate <= largest * (1 + 1e-12)
  np.testing.assert_allclose(estimate, largest, rtol=1e-8)


def test_gradients_are_finite_at_zero_features():
  # Mid-grey images are zero after centring, and with zero biases every feature is pooled at 0.
  params, _ = _network()
  params = {**params, "backbone": {name: {**layer, "bias": jnp.zeros_like(layer["bias"])}
                                   for name, layer in params["backbone"].items()}}
  images = jnp.full((2, *IMAGE_SHAPE), 0.5)
  loss = lambda p, x: jnp.sum(_logits(p, x, True))
  gradients = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, images)
  assert all(jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(gradients))


def test_invalid_arguments_raise():
  images = jnp.zeros((1, *IMAGE_SHAPE))
  init = lambda model, x: jax.eval_shape(model.init, KEY, x)
  with pytest.raises(ValueError, match="kernel_size"):
    init(soc.SOC(4, kernel_size=2), images)
  with pytest.raises(ValueError, match="features"):
    init(soc.SOC(5), images)
  with pytest.raises(ValueError, match="widths"):
    init(SOCNet(widths=(4, 20)), images)
  with pytest.raises(ValueError, match="widths"):
    init(SOCNet(widths=(4, 7)), images)
  with pytest.raises(ValueError, match="x must have at most"):
    init(SOCNet(widths=(2, 4)), images)
  with pytest.raises(ValueError, match="divisible by 16"):
    init(SOCNet(widths=(4, 8, 16, 32, 64)), images)
  with pytest.raises(ValueError, match="depth"):
    init(SOCNet(widths=(4, 8), depth=0), images)
  with pytest.raises(ValueError, match="kernel"):
    soc.skew_symmetric_filter(jnp.zeros((2, 2, 3, 3)))
  with pytest.raises(ValueError, match="kernel"):
    soc.skew_symmetric_filter(jnp.zeros((3, 3, 3, 4)))
  with pytest.raises(ValueError, match="divisible"):
    soc.space_to_channel(jnp.zeros((1, 5, 4, 3)))
  with pytest.raises(ValueError, match="even"):
    soc.max_min(jnp.zeros((1, 2, 2, 3)))
  with pytest.raises(ValueError, match="terms"):
    soc.exponential_tail(0.5, -1)
  with pytest.raises(ValueError, match="params"):
    soc.lipschitz_bound(MODEL, {"head": {}})
