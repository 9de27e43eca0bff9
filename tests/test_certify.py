"""Tests of `cvxjax.certify` against brute force over the ball (sampling polished by SLSQP)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from cvxjax import attacks, certify, poly
from cvxjax.certify import certified_accuracy, poly_certified_radius, poly_worst_case_margin
from cvxjax.train import head as network_head

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


def _first_crossings(D, x, y, angles):
  """Per direction u(θ) in the plane, the smallest t > 0 with y f(x + t u) = 0 (inf if none).

  Along a ray y f is the quadratic αt² + βt + γ, whose roots are exact; a dense sweep of θ
  gives the distance to the boundary {f = 0} to O(Δθ²).
  """
  a, b, _ = ACTIVATION
  u = np.stack([np.cos(angles), np.sin(angles)], axis=1)
  D1, d2 = D[:2, :2], D[:2, 2]
  alpha = y * a * np.einsum("ki,ij,kj->k", u, D1, u)
  beta = y * (2 * a * u @ (D1 @ x) + b * u @ d2)
  gamma = y * _predict(D, x[None])[0]
  disc = beta**2 - 4 * alpha * gamma
  root = np.sqrt(np.maximum(disc, 0.0))
  q = -0.5 * (beta + np.where(beta >= 0, root, -root))
  with np.errstate(divide="ignore", invalid="ignore"):
    roots = np.stack([q / alpha, gamma / q])
  roots = np.where((roots > 0) & (disc >= 0)[None], roots, np.inf)
  return roots.min(axis=0)


def test_certified_radius_near_the_hard_case_against_a_dense_search():
  # f(z) = a(z₁² − 2z₂²) + b z₁ + c at x = (0.5, x₂): ĝ's weight on the bottom eigenvector of
  # D₁ = diag(1, −2) is 4a|x₂|, from 0 (the hard case) to tiny (x₂ = 3e-14 over-claimed by 5e-4);
  # rotated copies add the weight that round-off in D₁'s eigenvectors puts there.
  D = np.array([[1.0, 0.0, 1.0], [0.0, -2.0, 0.0], [1.0, 0.0, 1.0]])
  offsets = np.array([0.0, 3e-14, 1e-12, 1e-8, 1e-6])
  X = np.stack([np.full_like(offsets, 0.5), offsets], axis=1)
  y = np.ones(len(offsets))
  angles = np.linspace(0.0, 2 * np.pi, 400_000, endpoint=False)
  for turn in (0.0, 0.3, 2.1):
    P = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    E = np.eye(3)
    E[:2, :2] = P
    D_turned, X_turned = E @ D @ E.T, X @ P.T
    radii = np.asarray(poly_certified_radius(D_turned[None], np.zeros((1, 3, 3)), X_turned, y,
                                             ACTIVATION, True))
    for i, x in enumerate(X_turned):
      distance = _first_crossings(D_turned, x, 1.0, angles).min()
      # No point strictly inside the radius reaches the boundary; one just outside it does.
      assert radii[i] <= distance * (1 + 1e-9)
      assert distance <= radii[i] * (1 + 1e-6)
      inside = x + 0.999999 * radii[i] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
      outside = x + 1.000001 * radii[i] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
      assert _predict(D_turned, inside).min() > 0 and _predict(D_turned, outside).min() <= 0


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


def test_lipschitz_radius_with_biases_is_never_beaten_by_pgd():
  rng = np.random.default_rng(9)
  n, d, H, C = 60, 5, 12, 4
  params = {"W1": jnp.asarray(rng.normal(size=(d, H))), "b1": jnp.asarray(rng.normal(size=H)),
            "W2": jnp.asarray(rng.normal(size=(H, C))), "b2": jnp.asarray(rng.normal(size=C))}
  X = jnp.asarray(rng.normal(size=(n, d)))
  y = jnp.argmax(network_head.scores(params, X), axis=1)
  radii = np.asarray(network_head.certified_radius(params, X, y))
  # Without the biases the margins, and so the radii, are other ones: the biases are used.
  unbiased = certify.lipschitz_certified_radius(params["W1"], params["W2"], X, y)
  assert not np.allclose(radii, unbiased)
  for eps in np.quantile(radii, [0.25, 0.5, 0.75]):
    X_adv = attacks.pgd(network_head.scores, params, X, y, float(eps), key=jax.random.key(1),
                        norm=2, steps=40, restarts=3)
    still = np.asarray(attacks.margin(network_head.scores(params, X_adv), y)) > 0
    assert np.all(still[radii > eps])


def test_linear_radius_is_the_exact_distance_to_the_decision_boundary():
  rng = np.random.default_rng(10)
  n, d, C = 40, 6, 5
  W, b = rng.normal(size=(d, C)), rng.normal(size=C)
  X = rng.normal(size=(n, d))
  y = np.argmax(X @ W + b, axis=1)
  radii = np.asarray(certify.linear_certified_radius(W, b, X, y))
  # The nearest point of another class's region lies along w_t − w_y for the minimising t.
  logits = X @ W + b
  for i in range(n):
    others = [t for t in range(C) if t != y[i]]
    dist = [(logits[i, y[i]] - logits[i, t]) / np.linalg.norm(W[:, y[i]] - W[:, t])
            for t in others]
    t = others[int(np.argmin(dist))]
    direction = (W[:, t] - W[:, y[i]]) / np.linalg.norm(W[:, t] - W[:, y[i]])
    beyond = X[i] + radii[i] * (1 + 1e-9) * direction
    inside = X[i] + radii[i] * (1 - 1e-9) * direction
    assert np.argmax(beyond @ W + b) != y[i]
    assert np.argmax(inside @ W + b) == y[i]
  # Orthonormal columns give Singla & Feizi's margin / √2 for the top two classes.
  Q = np.linalg.qr(rng.normal(size=(d, C)))[0]
  top = np.sort(X @ Q, axis=1)
  np.testing.assert_allclose(
      certify.linear_certified_radius(Q, None, X, np.argmax(X @ Q, axis=1)),
      (top[:, -1] - top[:, -2]) / np.sqrt(2), rtol=1e-12)
  np.testing.assert_allclose(
      certify.linear_certified_radius(W, b, X, y, backbone_lipschitz=3.0), radii / 3, rtol=1e-12)


def _gated_model(classes, seed=0, n=50, d=4, P=6):
  rng = np.random.default_rng(seed)
  U, G = rng.normal(size=(P, d, classes)), rng.normal(size=(d, P))
  X = rng.normal(size=(n, d))
  # f_c(x) = Σ_k 1[xᵀh_k ≥ 0] xᵀu_{k,c}, written out independently of cvxjax.relu.
  apply = lambda params, x: jnp.einsum("np,nd,pdc->nc", x @ params[1] >= 0, x, params[0])
  f = np.asarray(apply((U, G), X))
  keep = np.abs(f).max(axis=1) > 0  # an example with every gate off has f = 0: no label
  X, f = X[keep], f[keep]
  y = np.sign(f[:, 0]) if classes == 1 else np.argmax(f, axis=1)
  scores = (lambda params, x: apply(params, x)[:, 0]) if classes == 1 else apply
  return scores, (jnp.asarray(U), jnp.asarray(G)), X, y


@pytest.mark.parametrize("classes", [1, 3])
def test_gated_radius_is_never_beaten_by_sampling_or_pgd(classes):
  apply, (U, G), X, y = _gated_model(classes)
  radii = np.asarray(certify.gated_certified_radius(U, G, X, y))
  assert np.all(radii > 0) and np.all(np.isfinite(radii))
  rng = np.random.default_rng(1)
  for eps in np.quantile(radii, [0.25, 0.5, 0.75]):
    safe = radii > eps
    # The gates make the model discontinuous: sample the sphere and the ball, then run PGD.
    for _ in range(20):
      step = rng.normal(size=X.shape)
      step *= eps / np.linalg.norm(step, axis=1, keepdims=True)
      step *= rng.random((len(X), 1)) ** np.where(rng.random() < 0.5, 0.0, 0.25)
      assert np.all(np.asarray(attacks.margin(apply((U, G), X + step), y))[safe] > 0)
    X_adv = attacks.pgd(apply, (U, G), X, y, float(eps), key=jax.random.key(2), norm=2,
                        steps=30, restarts=2)
    assert np.all(np.asarray(attacks.margin(apply((U, G), X_adv), y))[safe] > 0)


def test_gated_radius_is_exact_where_no_gate_can_flip():
  apply, (U, G), X, y = _gated_model(1, seed=3)
  radii = np.asarray(certify.gated_certified_radius(U, G, X, y))
  dist = np.abs(X @ np.asarray(G)) / np.linalg.norm(np.asarray(G), axis=0)  # (n, P)
  on = X @ np.asarray(G) >= 0
  # With every gate fixed the margin is linear, y xᵀa with a = Σ_on u_k: its distance to 0 is
  # y xᵀa / ‖a‖, and the certificate must equal it when that is below every gate distance.
  a = np.einsum("np,pd->nd", on, np.asarray(U)[:, :, 0]) * y[:, None]
  linear = np.einsum("nd,nd->n", X, a) / np.linalg.norm(a, axis=1)
  inside = linear < dist.min(axis=1)
  assert inside.sum() >= 5
  np.testing.assert_allclose(radii[inside], linear[inside], rtol=1e-9)
  assert np.all(radii <= np.maximum(linear, 0) + 1e-12)  # never more than the linear piece's
  np.testing.assert_allclose(certify.gated_certified_radius(U, G, X, y, backbone_lipschitz=4.0),
                             radii / 4, rtol=1e-12)


def test_certified_accuracy_never_exceeds_pgd_accuracy_for_every_head():
  rho = [0.05, 0.2, 0.5]
  key = jax.random.key(4)
  Z, Zp, X, y = _head(4, binary=False)
  head = poly.PolyHead(Z=jnp.asarray(Z), Zp=jnp.asarray(Zp), objective=jnp.zeros(()),
                       gap=jnp.inf, steps=jnp.zeros((), int), binary=False)
  gated, gated_params, Xg, yg = _gated_model(3, seed=5)
  rng = np.random.default_rng(6)
  W1, w2 = jnp.asarray(rng.normal(size=(D_IN, 8))), jnp.asarray(rng.normal(size=(8, CLASSES)))
  network = lambda params, x: jax.nn.relu(x @ params[0]) @ params[1]
  yr = np.asarray(jnp.argmax(network((W1, w2), jnp.asarray(X)), axis=1))
  cases = [
      (poly.PolyHead.scores, head, X, y, poly.certified_radius(head, X, y)),
      (network, (W1, w2), X, yr, certify.lipschitz_certified_radius(W1, w2, X, yr)),
      (gated, gated_params, Xg, yg, certify.gated_certified_radius(*gated_params, Xg, yg)),
  ]
  for apply, params, Xc, yc, radii in cases:
    pgd = {"pgd": functools.partial(attacks.pgd, norm=2, key=key, steps=30, restarts=2)}
    robust = attacks.robust_accuracy(apply, params, Xc, yc, rho, pgd)["attacks"]["pgd"]
    assert np.all(certified_accuracy(radii, rho) <= np.asarray(robust))


def test_poly_radius_composes_with_a_lipschitz_backbone():
  Z, Zp, X, y = _head(7, binary=True)
  head = poly.PolyHead(Z=jnp.asarray(Z), Zp=jnp.asarray(Zp), objective=jnp.zeros(()),
                       gap=jnp.inf, steps=jnp.zeros((), int))
  M = np.random.default_rng(7).normal(size=(D_IN, D_IN))  # a linear backbone x -> M x
  L = np.linalg.norm(M, 2)
  inputs = np.linalg.solve(M, X.T).T  # the inputs whose features are X
  radii = np.asarray(poly.certified_radius(head, X, y, backbone_lipschitz=L))
  np.testing.assert_allclose(radii, np.asarray(poly.certified_radius(head, X, y)) / L)
  composed = lambda params, x: poly.PolyHead.scores(params[0], x @ params[1].T)
  for eps in np.quantile(radii[radii > 0], [0.3, 0.9]):
    X_adv = attacks.pgd(composed, (head, jnp.asarray(M)), inputs, y, float(eps),
                        key=jax.random.key(8), norm=2, steps=40, restarts=3)
    margins = np.asarray(attacks.margin(composed((head, jnp.asarray(M)), X_adv), y))
    assert np.all(margins[radii > eps] > 0)
  with pytest.raises(ValueError, match="backbone_lipschitz"):
    poly.certified_radius(head, X, y, backbone_lipschitz=0.0)
