"""Tests of `cvxjax.certify` against brute force over the ball (sampling polished by SLSQP)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from cvxjax import attacks, certify
from cvxjax.certify import certified_accuracy, poly_certified_radius, poly_worst_case_margin

ACTIVATION = (0.09, 0.5, 0.47)
# One shape for every head below keeps the number of JIT compilations small.
N, D_IN, CLASSES = 6, 2, 3


def _predict(D, X):
  """f_D(x) = a xᵀD₁x + b xᵀd₂ + c d₄ for each row of X, in numpy: (k, d) -> (k,)."""
  a, b, c = ACTIVATION
  d = X.shape[1]
  return a * np.einsum("ki,ij,kj->k", X, D[:d, :d], X) + b * X @ D[:d, d] + c * D[d, d]


def _brute_min(functions, x, r, rng):
  """min over ‖δ‖ ≤ r and over the functions of fun(x + δ), each fun (k, d) -> (k,).

  Returns (sampled minimum, polished minimum): dense sampling of the sphere and ball, then
  SLSQP from the three best samples of each function, its result pulled back into the ball.
  """
  d = x.shape[0]
  directions = rng.normal(size=(20000, d))
  directions /= np.linalg.norm(directions, axis=1, keepdims=True)
  deltas = (np.linspace(0.0, 1.0, 41)[:, None, None] * r * directions[None]).reshape(-1, d)
  sampled, polished = np.inf, np.inf
  for fun in functions:
    values = fun(x + deltas)
    sampled = min(sampled, values.min())
    polished = min(polished, values.min())
    if r == 0:
      continue
    ball = {"type": "ineq", "fun": lambda delta: r**2 - delta @ delta}
    for start in deltas[np.argsort(values)[:3]]:
      result = optimize.minimize(lambda delta, fun=fun: fun((x + delta)[None])[0], start,
                                 method="SLSQP", constraints=[ball],
                                 options={"ftol": 1e-15, "maxiter": 500})
      delta = result.x * min(1.0, r / max(np.linalg.norm(result.x), 1e-300))
      polished = min(polished, fun((x + delta)[None])[0])
  return sampled, polished


def _margin_functions(Z, Zp, x, y, binary):
  """The functions whose minimum is the margin: [y f] or [f_y − f_c for c ≠ y]."""
  D = np.asarray(Z) - np.asarray(Zp)
  if binary:
    return [lambda X: y * _predict(D[0], X)]
  return [lambda X, c=c: _predict(D[y], X) - _predict(D[c], X) for c in range(len(D)) if c != y]


def _sym(A):
  return 0.5 * (A + np.swapaxes(A, -1, -2))


def _head(seed, binary):
  """Random indefinite head (C, d+1, d+1) and inputs labelled by it, the first one wrongly."""
  rng = np.random.default_rng(seed)
  heads = 1 if binary else CLASSES
  Z = _sym(rng.normal(size=(heads, D_IN + 1, D_IN + 1)))
  Zp = _sym(rng.normal(size=(heads, D_IN + 1, D_IN + 1)))
  X = rng.normal(size=(N, D_IN))
  F = np.stack([_predict(Z[c] - Zp[c], X) for c in range(heads)], axis=1)
  if binary:
    y = np.where(F[:, 0] >= 0, 1, -1)
    y[0] = -y[0]
  else:
    y = np.argmax(F, axis=1)
    y[0] = (y[0] + 1) % CLASSES
  return Z, Zp, X, y


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("r", [0.0, 0.3, 1.5])
def test_worst_case_margin_matches_brute_force(binary, r):
  Z, Zp, X, y = _head(1, binary)
  margins = np.asarray(poly_worst_case_margin(Z, Zp, X, y, r, ACTIVATION, binary))
  assert margins.shape == (N,)
  rng = np.random.default_rng(2)
  for i in range(N):
    functions = _margin_functions(Z, Zp, X[i], y[i], binary)
    sampled, polished = _brute_min(functions, X[i], r, rng)
    scale = 1.0 + abs(sampled)
    assert margins[i] <= sampled + 1e-12 * scale
    assert margins[i] <= polished + 1e-12 * scale
    assert abs(margins[i] - polished) <= 1e-6 * scale


def _check_radius_against_brute_force(Z, Zp, X, y, binary):
  radii = np.asarray(poly_certified_radius(Z, Zp, X, y, ACTIVATION, binary))
  assert radii.shape == (N,)
  rng = np.random.default_rng(3)
  checked = 0
  for i in range(N):
    functions = _margin_functions(Z, Zp, X[i], y[i], binary)
    at_zero = min(fun(X[i][None])[0] for fun in functions)
    if at_zero <= 0:
      assert radii[i] == 0
      continue
    assert 0 < radii[i] < np.inf
    _, inside = _brute_min(functions, X[i], radii[i] * (1 - 1e-6), rng)
    assert inside > 0
    sampled, outside = _brute_min(functions, X[i], radii[i] * (1 + 1e-3), rng)
    exact = poly_worst_case_margin(Z, Zp, X, y, radii[i] * (1 + 1e-3), ACTIVATION, binary)[i]
    assert min(sampled, outside) <= 0 or exact < 0
    checked += 1
  # The first example is misclassified; the others must be certified (not a vacuous test).
  assert radii[0] == 0 and checked == N - 1
  return radii


@pytest.mark.parametrize("binary", [True, False])
def test_certified_radius_is_the_distance_to_the_boundary(binary):
  Z, Zp, X, y = _head(4, binary)
  radii = _check_radius_against_brute_force(Z, Zp, X, y, binary)
  # Sharper, with the exact margin: its sign flips within 1e-8 relative of the radius.
  for i in np.flatnonzero(radii > 0):
    inside, outside = (
        float(poly_worst_case_margin(Z, Zp, X, y, radii[i] * (1 + e), ACTIVATION, binary)[i])
        for e in (-1e-8, 1e-8))
    assert inside > 0 > outside


def test_infinite_radius_for_a_convex_head_with_positive_minimum():
  # f(x) = a‖x‖² + c·d > 0 everywhere: Z = diag(1, .., 1, d) is in K and Z′ = 0.
  Z = np.diag(np.r_[np.ones(D_IN), D_IN])[None]
  X = np.random.default_rng(5).normal(size=(N, D_IN))
  y = np.where(np.arange(N) % 2 == 0, 1, -1)
  radii = np.asarray(poly_certified_radius(Z, np.zeros_like(Z), X, y, ACTIVATION, True))
  np.testing.assert_array_equal(radii, np.where(y > 0, np.inf, 0.0))
  # One-vs-all: class 0 beats the others by the same positive convex quadratic.
  Zs = np.stack([2 * Z[0], Z[0], Z[0]])
  labels = np.arange(N) % CLASSES
  radii = np.asarray(poly_certified_radius(Zs, np.zeros_like(Zs), X, labels, ACTIVATION, False))
  np.testing.assert_array_equal(radii, np.where(labels == 0, np.inf, 0.0))


def test_certified_accuracy_counts_radii_strictly_above_each_threshold():
  radii = np.array([0.0, 0.5, 1.0, np.inf])
  np.testing.assert_allclose(certified_accuracy(radii, [0.0, 0.5, 2.0]), [0.75, 0.5, 0.25])
  np.testing.assert_allclose(
      certified_accuracy(radii, [0.0], correct=[True, True, False, True]), [0.5])


_Z1 = np.zeros((1, D_IN + 1, D_IN + 1))
_Z3 = np.zeros((CLASSES, D_IN + 1, D_IN + 1))
_X = np.zeros((N, D_IN))
_Y = np.ones(N)


@pytest.mark.parametrize("args, match", [
    ((_Z1, _Z1, _X[0], _Y, 0.1, True), "X must"),
    ((_Z1, _Z1, np.full((N, D_IN), np.nan), _Y, 0.1, True), "X must hold finite"),
    ((_Z1, _Z1, np.zeros((N, D_IN + 1)), _Y, 0.1, True), "X must"),
    ((_Z1, _Z1, _X, _Y[:-1], 0.1, True), "y must have shape"),
    ((_Z1, _Z1, _X, 0 * _Y, 0.1, True), "y must hold labels"),
    ((_Z3, _Z3, _X, 3 * _Y, 0.1, False), "y must hold integer labels"),
    ((_Z3, _Z3, _X, 0.5 * _Y, 0.1, False), "y must hold integer labels"),
    ((_Z1, _Z1, _X, _Y, -0.1, True), "r must"),
    ((_Z1, _Z1, _X, _Y, np.inf, True), "r must"),
    ((_Z3, _Z3, _X, _Y, 0.1, True), "binary"),
    ((_Z1, _Z1, _X, _Y, 0.1, False), "one-vs-all"),
    ((_Z1, _Z3, _X, _Y, 0.1, True), "Zp must"),
])
def test_malformed_inputs_raise(args, match):
  Z, Zp, X, y, r, binary = args
  with pytest.raises(ValueError, match=match):
    poly_worst_case_margin(Z, Zp, X, y, r, ACTIVATION, binary)
  if "r must" not in match:
    with pytest.raises(ValueError, match=match):
      poly_certified_radius(Z, Zp, X, y, ACTIVATION, binary)


def test_certified_accuracy_rejects_bad_radii():
  with pytest.raises(ValueError, match="radii"):
    certified_accuracy(np.zeros((2, 2)), [0.0])
  with pytest.raises(ValueError, match="correct"):
    certified_accuracy(np.zeros(3), [0.0], correct=[True])


@pytest.mark.parametrize("classes", [1, 4])
def test_lipschitz_radius_is_never_beaten_by_pgd(classes):
  rng = np.random.default_rng(0)
  n, d, H = 60, 5, 12
  W1 = jnp.asarray(rng.normal(size=(d, H)))
  w2 = jnp.asarray(rng.normal(size=(H,) if classes == 1 else (H, classes)))
  X = jnp.asarray(rng.normal(size=(n, d)))
  apply = lambda params, x: jax.nn.relu(x @ params[0]) @ params[1]
  f = apply((W1, w2), X)
  y = jnp.sign(f) if classes == 1 else jnp.argmax(f, axis=1)  # all correct at the clean point
  radii = certify.lipschitz_certified_radius(W1, w2, X, y)
  assert np.all(np.asarray(radii) > 0)
  for eps in np.quantile(np.asarray(radii), [0.25, 0.5, 0.75]):
    X_adv = attacks.pgd(apply, (W1, w2), X, y, float(eps), key=jax.random.key(1), norm=2,
                        steps=40, restarts=3)
    still = np.asarray(attacks.margin(apply((W1, w2), X_adv), y)) > 0
    assert np.all(still[np.asarray(radii) > eps])
  # Scaling the input map by L divides the radii by L.
  halved = certify.lipschitz_certified_radius(W1, w2, X, y, backbone_lipschitz=2.0)
  np.testing.assert_allclose(halved, radii / 2.0, rtol=1e-12)
