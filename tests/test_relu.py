"""Convex ReLU / gated-ReLU heads: patterns, solvers against CVXPY, recovery, robustness."""

import fractions
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

from cvxjax import attacks, heads, relu
from cvxjax.core import relu_dual
from cvxjax.solvers import admm, penalty, relu_barrier, relu_driver, relu_robust_barrier

pytest.importorskip("cvxpy")

KEY = jax.random.key(3)


def _data(seed=0, n=30, d=3, classes=2):
  rng = np.random.default_rng(seed)
  X = rng.normal(size=(n, d))
  score = X[:, 0] + 0.5 * X[:, 1] ** 2 - 0.3 + 0.3 * rng.normal(size=n)
  if classes == 2:
    return X, np.where(score > 0, 1.0, -1.0)
  return X, np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]))


def _rel(a, b):
  return abs(float(a) - float(b)) / abs(float(b))


def test_patterns_are_unique_nonempty_and_reproducible_from_the_key():
  X, _ = _data()
  gates = relu.unique_gates(X, np.asarray(relu.sample_gates(KEY, 3, 40)))
  D = np.asarray(relu.sign_patterns(jnp.asarray(X), jnp.asarray(gates)))
  assert np.unique(D, axis=1).shape[1] == D.shape[1] and D.any(axis=0).all()
  again = relu.unique_gates(X, np.asarray(relu.sample_gates(KEY, 3, 40)))
  np.testing.assert_array_equal(gates, again)
  head = relu.fit(X, np.sign(X[:, 0]), num_patterns=40, key=KEY, max_steps=5)
  np.testing.assert_array_equal(np.asarray(head.gates), gates)
  reused = relu.fit(X, np.sign(X[:, 0]), gates=head.gates, max_steps=5)
  np.testing.assert_array_equal(np.asarray(reused.gates), gates)


CASES = [  # (classes, gated, loss, eps, p)
    (2, False, "hinge", 0.0, "inf"),
    (2, True, "hinge", 0.0, "inf"),
    (2, False, "squared", 0.0, "inf"),
    (2, True, "squared", 0.0, "inf"),
    (2, False, "hinge", 0.05, "inf"),
    (2, False, "hinge", 0.05, 2),
    (3, False, "hinge", 0.0, "inf"),
    (3, True, "hinge", 0.0, "inf"),
    (3, False, "squared", 0.0, "inf"),
    (3, False, "hinge", 0.03, "inf"),
]


@pytest.mark.parametrize("classes,gated,loss,eps,p", CASES)
def test_admm_reaches_the_cvxpy_optimum(classes, gated, loss, eps, p):
  X, y = _data(classes=classes)
  kw = dict(eps=eps, p=p, beta=0.1, num_patterns=8, gated=gated, loss=loss, key=KEY)
  oracle = relu.exact_fit(X, y, **kw)
  head = relu.fit(X, y, solver="admm", tol=1e-8, max_steps=60000, **kw)
  assert _rel(head.objective, oracle.objective) < 1e-4
  # The certificate brackets CVXPY's optimum, and it closes.
  assert float(head.objective) - float(head.gap) <= float(oracle.objective) * (1 + 1e-7)
  assert 0.0 <= float(head.gap) <= 1e-4 * float(head.objective)
  # Feasible: the robust cone constraints hold on the returned weights.
  assert float(head.violation) <= 1e-6
  if not gated:
    D = relu.sign_patterns(jnp.asarray(X), head.gates)
    q = relu.NORMS[p]
    assert float(relu.constraint_violation(head.weights, jnp.asarray(X), D, eps, q)) <= 1e-6


def test_biases_open_robust_cones_that_no_pattern_through_the_origin_has():
  X, y = _data()
  X = X - X.mean(axis=0)  # centred, as standardised features are
  kw = dict(eps=0.5, p=2, beta=0.1, num_patterns=8, key=KEY)
  gates = relu.unique_gates(X, np.asarray(relu.sample_gates(KEY, 3, 8), np.float64))
  assert not relu.robust_cone_has_interior(X, gates, 0.5, 2).any()
  oracle = relu.exact_fit(X, y, bias=True, **kw)
  assert oracle.bias and oracle.gates.shape[0] == 4
  # The all-active gate (a linear neuron with its bias) is kept, and it is used.
  np.testing.assert_array_equal(np.asarray(oracle.gates)[:, 0], [0.0, 0.0, 0.0, 1.0])
  assert float(jnp.max(relu.group_norms(oracle.weights))) > 1e-3
  plain = relu.exact_fit(X, y, bias=False, **kw)
  assert float(oracle.objective) < 0.9 * float(plain.objective)
  head = relu.fit(X, y, bias=True, tol=1e-8, max_steps=60000, **kw)
  assert _rel(head.objective, oracle.objective) < 1e-4
  assert float(head.objective) - float(head.gap) <= float(oracle.objective) * (1 + 1e-7)
  Xb = relu.with_intercept(jnp.asarray(X))
  D = relu.sign_patterns(Xb, head.gates)
  assert float(relu.constraint_violation(head.weights, Xb, D, 0.5, 2)) <= 1e-6
  # The head is the network of its weights on (x, 1), the bias the last row of W1.
  W1, w2 = relu.recover(head)
  np.testing.assert_allclose(head.scores(X), relu.network_scores(W1, w2, Xb), atol=1e-10)


@pytest.mark.parametrize("p,eps", [("inf", 0.05), (2, 0.15)])
def test_dropping_patterns_without_robust_interior_keeps_the_optimum(p, eps):
  X, y = _data()
  kw = dict(eps=eps, p=p, beta=0.1, num_patterns=12, key=KEY)
  kept = relu.exact_fit(X, y, **kw)
  every = relu.exact_fit(X, y, drop_empty_cones=False, **kw)
  assert 0 < kept.gates.shape[1] < every.gates.shape[1]  # the check does drop patterns here
  assert _rel(kept.objective, every.objective) < 1e-6
  # The dropped patterns' cones are {0}: CVXPY leaves their neurons at zero.
  dropped = ~np.any(np.all(np.asarray(every.gates)[:, :, None]
                           == np.asarray(kept.gates)[:, None, :], axis=0), axis=1)
  assert float(jnp.max(relu.group_norms(every.weights)[:, dropped])) < 1e-6


@pytest.mark.parametrize("classes", [2, 3])
def test_apg_and_al_reach_the_cvxpy_optimum(classes):
  X, y = _data(classes=classes)
  for gated, solver in ((True, "apg"), (False, "al")):
    kw = dict(beta=0.1, num_patterns=8, gated=gated, loss="squared", key=KEY)
    oracle = relu.exact_fit(X, y, **kw)
    head = relu.fit(X, y, solver=solver, tol=1e-9, max_steps=100000, **kw)
    assert _rel(head.objective, oracle.objective) < 1e-4, solver
    assert float(head.objective) - float(head.gap) <= float(oracle.objective) * (1 + 1e-7)
    assert float(head.gap) <= 1e-3 * float(head.objective), solver
    assert float(head.violation) <= 1e-6


# The hinge's curvature (τ²) swamps the Newton system near τ ~ 1e8: its gaps stop near 1e-5.
@pytest.mark.parametrize("classes,loss,tol", [(2, "squared", 1e-7), (3, "squared", 1e-7),
                                              (2, "hinge", 1e-4)])
@pytest.mark.parametrize("gated", [False, True])
def test_the_barrier_reaches_the_cvxpy_optimum_feasibly_and_certifies_it(classes, loss, tol,
                                                                         gated):
  X, y = _data(classes=classes)
  kw = dict(beta=0.1, num_patterns=8, loss=loss, gated=gated, key=KEY)
  oracle = relu.exact_fit(X, y, **kw)
  head = relu.fit(X, y, solver="barrier", tol=tol, **kw)
  assert _rel(head.objective, oracle.objective) < max(10 * tol, 1e-6)
  # Strictly feasible: no cone constraint is violated at all, not merely by less than 1e-6.
  D = relu.sign_patterns(jnp.asarray(X), head.gates)
  if not gated:
    assert float(jnp.min(relu.cone_slacks(head.weights, jnp.asarray(X), D))) >= 0.0
  # The certificate brackets CVXPY's optimum and is as tight as asked.
  assert float(head.objective) - float(head.gap) <= float(oracle.objective) * (1 + 1e-7)
  assert 0.0 <= float(head.gap) <= tol * float(head.objective)


@pytest.mark.parametrize("loss,gated", [("squared", False), ("hinge", False), ("hinge", True)])
def test_the_barriers_network_has_the_neurons_of_the_optimum(loss, gated):
  # An interior point leaves every neuron slightly off 0; the fit zeroes those that vanish at
  # the optimum and adds what that costs to the gap.
  X, y = _data(n=40)
  kw = dict(beta=0.1, num_patterns=8, loss=loss, gated=gated, key=KEY)
  oracle = relu.exact_fit(X, y, **kw)
  head = relu.fit(X, y, solver="barrier", tol=1e-6, **kw)
  norms = np.linalg.norm(np.asarray(oracle.weights), axis=2)
  assert head.summary()["width"] == np.sum(norms > 1e-4 * norms.max()) < norms.size
  assert float(head.objective) - float(head.gap) <= float(oracle.objective) * (1 + 1e-7)
  assert float(head.gap) <= 1e-5 * float(head.objective)  # the hinge stops near 1e-6


@pytest.mark.parametrize("loss,gated", [("squared", False), ("hinge", False), ("hinge", True)])
def test_the_barrier_newton_step_solves_the_dense_newton_system(loss, gated):
  X, y = _data(n=25, d=3)
  problem = relu.check_problem(X, y, eps=0.0, p=2, beta=0.3, num_patterns=4, gates=None,
                               gated=gated, loss=loss, key=KEY)
  setup = relu_barrier.build_setup(*(jnp.asarray(a) for a in (problem.X, problem.D,
                                                                problem.gates)), gated)
  targets = relu.Targets(*(jnp.asarray(a) for a in problem.targets))
  yc = relu_barrier.class_targets(targets, loss)[0]
  # Each piece compiled whole: run eagerly, they compile primitive by primitive.
  static = ("loss", "beta")
  init = jax.jit(relu_barrier.init, static_argnames=static)
  step = jax.jit(relu_barrier.step, static_argnames=(*static, "tol"))
  state = init(setup, yc, loss=loss, beta=0.3)
  for _ in range(3):  # a strictly feasible point off the start's symmetries
    state = step(state, setup, yc, loss=loss, beta=0.3, tol=1e-12)
  N, d = state.W.shape
  # The oracle: autodiff's dense Hessian and gradient of Φ_τ, solved directly.
  phi = lambda w: relu_barrier._barrier_value(w.reshape(N, d), setup, yc, state.tau,
                                              loss=loss, beta=0.3)
  grad, hessian = jax.jit(lambda w: (jax.grad(phi)(w), jax.hessian(phi)(w)))(state.W.ravel())
  expected = -jnp.linalg.solve(hessian, grad)
  newton = jax.jit(relu_barrier._newton, static_argnames=static)
  direction, _, decrement, _, _ = newton(state, setup, yc, loss=loss, beta=0.3)
  np.testing.assert_allclose(np.asarray(direction).ravel(), np.asarray(expected), rtol=1e-8,
                             atol=1e-10 * float(jnp.max(jnp.abs(expected))))
  np.testing.assert_allclose(float(decrement), float(-grad @ expected), rtol=1e-8)


@pytest.mark.parametrize("p,eps", [("inf", 0.05), (2, 0.1)])
def test_the_robust_barrier_reaches_the_cvxpy_optimum_strictly_feasibly_and_certifies_it(p, eps):
  X, y = _data(n=40)
  kw = dict(eps=eps, p=p, beta=0.05, num_patterns=8, key=KEY)
  oracle = relu.exact_fit(X, y, **kw)
  head = relu.fit(X, y, solver="barrier", tol=1e-5, **kw)
  assert _rel(head.objective, oracle.objective) < 1e-5
  # The robust cones hold exactly: ε‖w‖_q ≤ a_iᵀw with no tolerance.
  q = 1 if p == "inf" else 2
  D = relu.sign_patterns(jnp.asarray(X), head.gates)
  need = eps * relu.dual_norm(head.weights, q)[:, :, None, :]
  assert float(jnp.min(relu.cone_slacks(head.weights, jnp.asarray(X), D) - need)) > 0.0
  assert float(head.objective) - float(head.gap) <= float(oracle.objective) * (1 + 1e-7)
  assert 0.0 <= float(head.gap) <= 1e-5 * float(head.objective)
  # Asked for more than float64 allows, it runs into round-off, and its bound stays a bound.
  with pytest.warns(UserWarning, match="stopped after"):
    tight = relu.fit(X, y, solver="barrier", tol=1e-14, **kw)
  assert float(tight.objective) - float(tight.gap) <= float(oracle.objective) * (1 + 1e-7)


def test_the_robust_barrier_certifies_where_its_multipliers_need_a_tight_centre():
  # A small β makes ‖Aᵀν − z_j‖ ≤ β a cancellation of terms far larger than β: multipliers read
  # off a loosely centred point missed it, and this head stopped at a relative gap of 1.8e-5.
  rng = np.random.default_rng(0)
  X = rng.normal(size=(60, 2))
  y = np.where(X[:, 0] + 0.3 * X[:, 1] > 0, 1.0, -1.0)
  gates = np.array([[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]])  # every row active; the sign of x₁
  kw = dict(eps=0.05, p=2, beta=1e-3, gates=gates, bias=True, loss="hinge")
  oracle = relu.exact_fit(X, y, **kw)
  head = relu.fit(X, y, solver="barrier", tol=1e-6, max_steps=400, **kw)
  assert _rel(head.objective, oracle.objective) < 1e-5
  assert float(head.objective) - float(head.gap) <= float(oracle.objective) * (1 + 1e-7)
  assert 0.0 <= float(head.gap) <= 1e-5 * float(head.objective)


@pytest.mark.parametrize("p,eps", [("inf", 0.05), (2, 0.1)])
def test_the_robust_barrier_newton_step_solves_the_dense_newton_system(p, eps):
  X, y = _data(n=25, d=3)
  q = 1 if p == "inf" else 2
  problem = relu.check_problem(X, y, eps=eps, p=p, beta=0.3, num_patterns=4, gates=None,
                               gated=False, loss="hinge", key=KEY)
  D = jnp.asarray(problem.D, jnp.float64)
  targets = relu.Targets(*(jnp.asarray(a) for a in problem.targets))
  directions = relu_dual.interior_directions(problem.X, problem.gates, eps, q)
  setup = relu_robust_barrier.build_setup(jnp.asarray(problem.X), targets.labels, D,
                                          jnp.asarray(directions))
  settings = dict(eps=eps, q=q, beta=0.3)
  step = jax.jit(lambda s: relu_robust_barrier.step(s, setup, D, targets, tol=1e-12, **settings))
  state = relu_robust_barrier.init(setup, D, targets, **settings)
  for _ in range(4):  # a strictly feasible point off the start's symmetries
    state = step(state)
  # The oracle: autodiff's dense Hessian and gradient of Φ_τ in every variable, solved directly.
  shapes = [a.shape for a in (state.W, state.U, state.E)]
  splits = np.cumsum([int(np.prod(s)) for s in shapes])[:-1]
  unflatten = lambda z: state._replace(**{k: a.reshape(s) for k, a, s in zip(
      ("W", "U", "E"), jnp.split(z, splits), shapes, strict=True)})
  phi = lambda z: relu_robust_barrier.barrier_value(unflatten(z), setup, state.tau, **settings)
  z = jnp.concatenate([state.W.ravel(), state.U.ravel(), state.E.ravel()])
  grad, hessian = jax.jit(lambda z: (jax.grad(phi)(z), jax.hessian(phi)(z)))(z)
  expected = -jnp.linalg.solve(hessian, grad)
  newton = jax.jit(lambda s: relu_robust_barrier._newton(s, setup, s.tau, **settings))
  (dW, dU, dE), decrement, _, _ = newton(state)
  direction = jnp.concatenate([dW[..., 0].ravel(), dU[..., 0].ravel(), dE[..., 0].ravel()])
  np.testing.assert_allclose(np.asarray(direction), np.asarray(expected), rtol=1e-7,
                             atol=1e-10 * float(jnp.max(jnp.abs(expected))))
  np.testing.assert_allclose(float(decrement), float(-grad @ expected), rtol=1e-8)


def _exact_example_curvature(xi, zeta, x, eps):
  """The ℓ₂ example block's Schur complement in rational arithmetic, from the Hessian of
  −log ζ − log s, s = c² − ε²‖ξ‖², c = ζ − 1 + xᵀξ, at the floats' exact values."""
  F = fractions.Fraction
  xi, x, zeta, e2 = [F(float(a)) for a in xi], [F(float(a)) for a in x], F(zeta), F(eps) ** 2
  d = len(x)
  c = zeta - 1 + sum(a * b for a, b in zip(x, xi, strict=True))
  s = c * c - e2 * sum(a * a for a in xi)
  grad = [2 * c * x[k] - 2 * e2 * xi[k] for k in range(d)] + [2 * c]  # ∇s in (ξ, ζ)
  curvature = [[2 * x[a] * x[b] - (2 * e2 if a == b else 0) for b in range(d)] + [2 * x[a]]
               for a in range(d)] + [[2 * x[b] for b in range(d)] + [F(2)]]  # ∇²s
  K = [[grad[a] * grad[b] / s ** 2 - curvature[a][b] / s for b in range(d + 1)]
       for a in range(d + 1)]
  K[d][d] += 1 / zeta ** 2
  return np.array([[float(K[a][b] - K[a][d] * K[d][b] / K[d][d]) for b in range(d)]
                   for a in range(d)])


@pytest.mark.parametrize("zeta,relative_slack", [(4e-5, 1e-8), (4e-5, 1e-12), (1e-6, 1e-10)])
def test_the_robust_barrier_example_curvature_is_exact_near_the_cone_boundary(zeta, relative_slack):
  # The digits head whose Newton system broke: ‖ξ‖ ≈ 100, the robust margin c ≈ ε‖ξ‖ within a
  # relative 1e-10, ζ ≈ 1/τ. Eliminating ζ from autodiff's Hessian (entries ~ c²/s²) left an
  # eigenvalue of −116 where the exact one is +2.9; here it errs by 0.16–44 in this metric.
  eps = 0.1
  x = np.array([1.3, -0.4, 0.7])
  along, across = x / np.linalg.norm(x), np.array([0.4, 1.0, -0.2])
  across = across - (across @ along) * along
  cosine = (eps + 0.01) / np.linalg.norm(x)  # xᵀu = ε + 0.01 for the unit direction u
  direction = cosine * along + np.sqrt(1 - cosine ** 2) * across / np.linalg.norm(across)
  # ξ = k·u with xᵀξ − ε‖ξ‖(1 + slack) = 1 − ζ: the robust margin c − ε‖ξ‖ ≈ slack·c.
  xi = (1 - zeta) / (x @ direction - eps * (1 + relative_slack)) * direction
  exact = _exact_example_curvature(xi, zeta, x, eps)
  got = np.asarray(relu_robust_barrier.example_curvature(jnp.append(jnp.asarray(xi), zeta),
                                                         jnp.asarray(x), eps=eps))
  # Compared in exact's metric, every direction's curvature to 1e-3 (its condition number
  # reaches 1e12: storing it in float64 costs 1e-4 here).
  L = np.linalg.cholesky(exact)
  whitened = np.linalg.solve(L, np.linalg.solve(L, got).T)
  assert np.linalg.norm(whitened - np.eye(3), 2) < 1e-3


def test_the_robust_barrier_centred_hinges_minimise_each_example_block():
  rng = np.random.default_rng(0)
  X, xi = rng.normal(size=(40, 3)), 3.0 * rng.normal(size=(40, 3))
  eps, tau = 0.3, 50.0
  got = np.asarray(relu_robust_barrier.centred_hinges(jnp.asarray(xi), jnp.asarray(X), tau,
                                                      eps=eps))
  block = lambda zeta, x, v: float(relu_robust_barrier._example_barrier(
      jnp.append(jnp.asarray(v), zeta), jnp.asarray(x), tau, eps=eps, q=2))
  for x, v, zeta in zip(X, xi, got, strict=True):
    # The oracle: scipy's bounded scalar minimiser over the block's whole domain in ζ.
    floor = max(0.0, eps * np.linalg.norm(v) - (x @ v - 1.0))
    oracle = scipy.optimize.minimize_scalar(lambda z, x=x, v=v: block(z, x, v),
                                            bounds=(floor, floor + 100.0 / tau),
                                            method="bounded", options=dict(xatol=1e-12))
    assert block(zeta, x, v) <= oracle.fun + 1e-9
    assert zeta - floor >= 1.0 / tau * (1 - 1e-9)  # both slacks ≥ 1/τ


def test_the_robust_barrier_damps_a_newton_matrix_that_round_off_breaks():
  rng = np.random.default_rng(1)
  v = rng.normal(size=(6, 1))
  H = jnp.asarray(v @ v.T + 1e-30 * np.eye(6))  # positive definite; cond 1e31 in float64
  assert not np.all(np.isfinite(np.asarray(jnp.linalg.cholesky(H))))  # the plain factor fails
  L = np.asarray(relu_robust_barrier._damped_cholesky(H))
  assert np.all(np.isfinite(L))
  # L Lᵀ = H + δ·diag(H) for one δ of the ladder 1e-12·100ᵏ, and its direction descends.
  delta = np.diag(L @ L.T - np.asarray(H)) / np.diag(np.asarray(H))
  assert 1e-12 * 0.99 <= delta[0] <= 1.0 and np.allclose(delta, delta[0], rtol=1e-6)
  g = rng.normal(size=6)
  assert g @ np.asarray(jax.scipy.linalg.cho_solve((jnp.asarray(L), True), jnp.asarray(g))) > 0
  healthy = jnp.asarray(np.eye(6) + v @ v.T)  # a matrix that factors is factored undamped
  np.testing.assert_array_equal(np.asarray(relu_robust_barrier._damped_cholesky(healthy)),
                                np.asarray(jnp.linalg.cholesky(healthy)))


def test_auto_takes_the_barrier_only_for_small_heads_it_solves_fitted_afresh():
  X, y = _data(n=40)
  kw = dict(eps=0.05, p=2, beta=0.05, num_patterns=8, key=KEY)
  for eps in (0.0, 0.05):  # plain and robust (the warm start below)
    auto, barrier = (relu.fit(X, y, **{**kw, "eps": eps}, **solver)
                     for solver in ({}, dict(solver="barrier")))
    np.testing.assert_array_equal(np.asarray(auto.weights), np.asarray(barrier.weights))
  problem = lambda **changes: relu.check_problem(X, changes.pop("y", y), **{
      **dict(eps=0.05, p=2, beta=0.05, num_patterns=8, gates=None, gated=False, loss="hinge",
             key=KEY), **changes})
  fits = relu_driver.barrier_fits
  assert fits(problem()) and fits(problem(eps=0.0))
  assert fits(problem(eps=0.0, y=np.arange(40) % 3, loss="squared"))  # one class at a time
  assert fits(problem(eps=0.0, gated=True))
  assert not fits(problem(y=np.arange(40) % 3))  # the multi-class hinge, robust or plain
  assert not fits(problem(eps=0.0, y=np.arange(40) % 3))
  # A kept pattern whose largest-margin direction is 0 (no interior by the LP): ADMM.
  assert not fits(problem(eps=0.1, p="inf", num_patterns=12))
  P = problem().D.shape[1]  # the patterns kept
  assert not fits(problem()._replace(X=np.ones((40, 4096 // (2 * P) + 1))))  # 2P·d > 4096
  tall = problem(eps=0.0)
  assert not fits(tall._replace(X=np.ones((2049, 3)), D=np.ones((2049, tall.D.shape[1]))))
  # A warm start is ADMM's (the barrier follows its own central path and refuses one).
  with pytest.warns(UserWarning, match="admm solver stopped after 50 steps"):
    relu.fit(X, y, start=auto, max_steps=50, **kw)


GAP_CASES = [  # (classes, gated, loss, eps, p): every family with a certificate
    (2, True, "hinge", 0.0, "inf"),
    (3, True, "squared", 0.0, "inf"),
    (2, False, "hinge", 0.0, "inf"),
    (3, False, "squared", 0.0, "inf"),
    (2, False, "hinge", 0.05, "inf"),
    (3, False, "hinge", 0.05, 2),
]


@pytest.mark.parametrize("classes,gated,loss,eps,p", GAP_CASES)
def test_the_gap_brackets_the_cvxpy_optimum_at_every_iterate_on_feasible_weights(
    classes, gated, loss, eps, p):
  X, y = _data(classes=classes)
  kw = dict(eps=eps, p=p, beta=0.1, num_patterns=8, gated=gated, loss=loss, key=KEY)
  optimum = float(relu.exact_fit(X, y, **kw).objective)
  q, Xj = relu.NORMS[p], jnp.asarray(X)
  for steps in (3, 300):
    with warnings.catch_warnings():  # most of these runs stop above tol, which warns
      warnings.simplefilter("ignore", UserWarning)
      head = relu.fit(X, y, solver="admm", tol=1e-12, max_steps=steps, **kw)
    upper, gap = float(head.objective), float(head.gap)
    assert upper - gap <= optimum * (1 + 1e-9) and optimum <= upper * (1 + 1e-9), steps
    # The weights the gap speaks of are feasible (the feasibility step), not merely nearly.
    D = relu.sign_patterns(Xj, head.gates)
    assert gated or float(relu.constraint_violation(head.weights, Xj, D, eps, q)) <= 1e-12 * max(
        1.0, float(jnp.max(relu.group_norms(head.weights))))
  for solver in ("penalty",) if eps > 0 else ("apg",) if gated and loss == "squared" else ():
    head = relu.fit(X, y, solver=solver, max_steps=200, **kw)  # multipliers from the gradient
    assert float(head.objective) - float(head.gap) <= optimum * (1 + 1e-9), solver


@pytest.mark.parametrize("eps,p", [(0.0, "inf"), (0.05, "inf"), (0.05, 2)])
def test_non_finite_multipliers_bound_nothing(eps, p):
  X, y = _data()
  problem = relu.check_problem(X, y, eps=eps, p=p, beta=0.1, num_patterns=8, gates=None,
                               gated=False, loss="hinge", key=KEY)
  targets = relu.Targets(*(jnp.asarray(a) for a in problem.targets))
  Xj, D = jnp.asarray(problem.X), jnp.asarray(problem.D, jnp.float64)
  n, d = Xj.shape
  nu = jnp.zeros((n, d, 1) if eps > 0 else (n, 1))
  lam = jnp.zeros((2, D.shape[1], n, 1))
  bound = lambda nu, lam: float(relu_dual.lower_bound(
      nu, lam, Xj, D, targets, loss="hinge", eps=eps, q=relu.NORMS[p], beta=0.1, num_blocks=2))
  assert bound(nu, lam) == pytest.approx(0.0, abs=1e-12)  # (0, 0): dual feasible, value 0
  # NaN reads as a zero residual in the norms: without the guard this bound was n = 30.
  assert bound(nu.at[0].set(jnp.nan), lam) == -np.inf
  assert bound(nu, lam.at[0, 0, 0, 0].set(jnp.inf)) == -np.inf


def test_admm_stopped_above_its_tolerance_warns_with_the_gap_and_the_violation():
  X, y = _data()  # n = 30, d = 3, 8 gates, beta = 1e-2, eps = 0.05: the slow case
  for p in ("inf", 2):
    with pytest.warns(UserWarning, match=r"stopped after 300 steps .* relative gap .* > tol=1e-06"
                      r"; its weights violated the cones by"):
      head = relu.fit(X, y, eps=0.05, p=p, beta=1e-2, num_patterns=8, key=KEY, max_steps=300,
                      solver="admm")
    assert float(head.gap) > 1e-6 * float(head.objective)


def test_feasibility_restoration_makes_random_weights_feasible():
  X, y = _data()
  for eps, q, p in ((0.0, 2, 2), (0.05, 1, "inf"), (0.05, 2, 2)):
    problem = relu.check_problem(X, y, eps=eps, p=p, beta=0.1, num_patterns=8, gates=None,
                                 gated=False, loss="hinge", key=KEY)
    directions = relu_dual.interior_directions(problem.X, problem.gates, eps, q)
    Xj, D = jnp.asarray(problem.X), jnp.asarray(problem.D)
    # The directions lie strictly inside every kept pattern's cone.
    C = jnp.asarray(directions)[None, :, :, None]
    margin = relu.cone_slacks(C, Xj, D) - eps * relu.dual_norm(C, q)[:, :, None, :]
    assert float(jnp.min(margin)) > 0
    rng = np.random.default_rng(1)
    W = jnp.asarray(rng.normal(size=(2, D.shape[1], 3, 1)))
    assert float(relu.constraint_violation(W, Xj, D, eps, q)) > 0.1
    fixed = relu_dual.restore_feasibility(W, Xj, D, jnp.asarray(directions),
                                          jnp.ones(30, bool), eps, q)
    assert float(relu.constraint_violation(fixed, Xj, D, eps, q)) <= 1e-12
    assert float(jnp.max(relu.group_norms(fixed))) > 0  # shifted, not all zeroed


def test_min_norm_hull_point_by_row_generation_is_cvxpys():
  cp = pytest.importorskip("cvxpy")
  rng = np.random.default_rng(2)
  X = rng.normal(size=(400, 3))  # n ≫ 2d: the working set starts at 6 rows and grows
  A = np.where((X @ np.array([1.0, -0.5, 0.2]) >= 0)[:, None], X, -X)
  lam = cp.Variable(400, nonneg=True)
  best = cp.Problem(cp.Minimize(cp.norm(A.T @ lam)), [cp.sum(lam) == 1]).solve()
  core = relu_dual.relu  # core mathematics, not re-exported
  start = core.margin_directions(X, np.array([[1.0], [-0.5], [0.2]]))[0]
  assert np.min(A @ start) > 0  # the ascent's direction is inside the cone
  for point in (core.min_norm_hull_point(A), core.min_norm_hull_point(A, start)):
    assert abs(np.linalg.norm(point) - best) <= 1e-7  # CVXPY (Clarabel) is the less exact here
    assert np.min(A @ point) >= point @ point - 1e-10  # the optimality condition on every row


def test_interior_directions_have_the_largest_margin_cvxpy_finds():
  cp = pytest.importorskip("cvxpy")
  X, y = _data()
  for eps, q, p in ((0.0, 2, 2), (0.05, 2, 2), (0.05, 1, "inf")):
    problem = relu.check_problem(X, y, eps=eps, p=p, beta=0.1, num_patterns=8, gates=None,
                                 gated=False, loss="hinge", key=KEY)
    directions = relu_dual.interior_directions(problem.X, problem.gates, eps, q)
    for k in range(problem.gates.shape[1]):
      A = np.where(problem.D[:, k:k + 1] > 0, problem.X, -problem.X)
      v = cp.Variable(3)
      # The same ball the directions are normalised in: ℓ₂ for plain and q = 2, ℓ∞ for q = 1.
      ball = cp.norm(v, 2) <= 1 if q == 2 else cp.norm(v, "inf") <= 1
      best = cp.Problem(cp.Maximize(cp.min(A @ v) - eps * cp.norm(v, q)), [ball]).solve()
      c = directions[k]
      assert np.min(A @ c) - eps * np.linalg.norm(c, q) >= best - 1e-6


def test_robust_cones_have_an_interior_exactly_where_cvxpys_best_robust_margin_is_positive():
  cp = pytest.importorskip("cvxpy")
  X, _ = _data(n=60)
  gates = relu.unique_gates(X, np.asarray(relu.sample_gates(KEY, 3, 12), np.float64))
  D = X @ gates >= 0
  for p, q in ((2, 2), ("inf", 1)):
    best = []  # max over ‖v‖_q ≤ 1 of min_i a_iᵀv: the cone has an interior iff it exceeds ε
    for k in range(gates.shape[1]):
      A = np.where(D[:, k:k + 1], X, -X)
      v = cp.Variable(3)
      best.append(cp.Problem(cp.Maximize(cp.min(A @ v)), [cp.norm(v, q) <= 1]).solve())
    best = np.array(best)
    assert best.max() > 0  # some cones open, so the ascent's quick accept is exercised
    # Radii between and around the margins, none within CVXPY's accuracy of one.
    edges = np.sort(np.r_[0.0, best[best > 0], 2 * best.max()])
    for eps in 0.5 * (edges[1:] + edges[:-1]):
      np.testing.assert_array_equal(relu.robust_cone_has_interior(X, gates, eps, p), best > eps)


@pytest.mark.parametrize("classes,loss,eps,q", [(2, "hinge", 0.0, 2), (3, "hinge", 0.0, 2),
                                                (3, "hinge", 0.3, 2), (3, "hinge", 0.3, 1),
                                                (3, "squared", 0.0, 2)])
def test_best_scale_is_the_minimum_along_the_ray_a_dense_search_finds(classes, loss, eps, q):
  core = relu_dual.relu  # core mathematics, not re-exported
  X, y = _data(classes=classes)
  targets, _ = core.encode_targets(y, 30)
  targets = jax.tree.map(jnp.asarray, targets)
  gates = np.asarray(relu.sample_gates(KEY, 3, 6), np.float64)
  D = jnp.asarray(X @ gates >= 0, jnp.float64)
  measures = dict(loss=loss, eps=eps, q=q, beta=0.1)
  along = jax.jit(jax.vmap(lambda s, W: core.objective(s * W, jnp.asarray(X), D, targets,
                                                       **measures), (0, None)))
  rng = np.random.default_rng(1)
  for scale in (0.01, 0.3, 3.0):  # the minimum inside, near 0, and far down the ray
    W = jnp.asarray(scale * rng.normal(size=(2, 6, 3, targets.onehot.shape[1])))
    s = float(core.best_scale(W, jnp.asarray(X), D, targets, **measures))
    grid = np.linspace(0.0, 4.0 * max(s, 1.0), 4001)
    values = np.asarray(along(jnp.asarray(grid), W))
    assert s >= 0 and float(along(jnp.asarray([s]), W)[0]) <= values.min() + 1e-9
    k = int(np.argmin(values))  # the ray's function is convex: s lies in the grid's best cell
    assert grid[max(k - 1, 0)] - 1e-12 <= s <= grid[min(k + 1, grid.size - 1)] + 1e-12


def test_the_penalty_baseline_approaches_the_optimum():
  X, y = _data()
  kw = dict(beta=0.1, num_patterns=8, loss="hinge", key=KEY)
  oracle = relu.exact_fit(X, y, **kw)
  optimizer = optax.adam(optax.cosine_decay_schedule(1e-2, 4000))
  head = relu.fit(X, y, solver=penalty.Solver(optimizer=optimizer), max_steps=4000, **kw)
  # A subgradient method: it gets near the optimum, nearly feasible, not exact (a baseline;
  # measured: 15% above the optimum after 4000 Adam steps here).
  assert _rel(head.objective, oracle.objective) < 0.25
  assert float(head.violation) < 1e-2


def test_robust_objective_gradient_is_finite_at_zero_vectors_and_matches_differences():
  X, y = _data(classes=3)
  problem = relu.check_problem(X, y, eps=0.2, p=2, beta=0.1, num_patterns=6, gates=None,
                               gated=False, loss="hinge", key=KEY, drop_empty_cones=False)
  rng = np.random.default_rng(1)
  W = rng.normal(size=(2, problem.D.shape[1], 3, 3))
  W[0, 1] = 0.0  # a zero neuron; the pairs (y_i, y_i) compare a class with itself (zero too)
  args = (jnp.asarray(X), jnp.asarray(problem.D, W.dtype),
          jax.tree.map(jnp.asarray, problem.targets))
  f = jax.jit(lambda W: relu.objective(W, *args, loss="hinge", eps=0.2, q=2, beta=0.1))
  grad = np.asarray(jax.jit(jax.grad(f))(jnp.asarray(W)))
  assert np.isfinite(grad).all()
  E = rng.normal(size=W.shape)
  E[0, 1] = 0.0  # along which f is differentiable
  h = 1e-6
  fd = (f(jnp.asarray(W + h * E)) - f(jnp.asarray(W - h * E))) / (2 * h)
  np.testing.assert_allclose(np.sum(grad * E), fd, rtol=1e-6)


def test_the_cg_paths_agree_with_the_cholesky_path():
  X, y = _data(n=40)
  kw = dict(beta=0.1, num_patterns=8, loss="squared", key=KEY, tol=1e-9, max_steps=20000)
  ref = relu.fit(X, y, **kw)
  for rank in (0, 5):
    head = relu.fit(X, y, solver=admm.Solver(linear_solver="cg", nystrom_rank=rank), **kw)
    assert _rel(head.objective, ref.objective) < 1e-6


def test_recovered_network_equals_the_convex_model_on_the_training_data():
  X, y = _data(classes=3)
  head = relu.fit(X, y, beta=0.05, num_patterns=10, key=KEY, tol=1e-9, max_steps=30000)
  Xj = jnp.asarray(X)
  convex = relu.scores(head.weights, Xj, relu.sign_patterns(Xj, head.gates))
  W1, w2 = relu.recover(head)
  np.testing.assert_allclose(relu.network_scores(W1, w2, Xj), convex, atol=1e-5)
  np.testing.assert_allclose(head.scores(Xj), convex, atol=1e-5)
  gated = relu.fit(X, y, beta=0.05, num_patterns=10, gated=True, key=KEY, max_steps=3000)
  W1, w2, G = relu.recover(gated)
  rng = np.random.default_rng(1)
  fresh = jnp.asarray(rng.normal(size=(20, 3)))  # gated heads are exact on any input
  np.testing.assert_allclose(relu.network_scores(W1, w2, fresh, gates=G), gated.scores(fresh),
                             atol=1e-10)


@pytest.mark.parametrize("p", ["inf", 2])
def test_robust_hinge_bounds_the_hinge_pgd_finds_on_the_recovered_network(p):
  X, y = _data(n=40)
  eps = 0.1
  head = relu.fit(X, y, eps=eps, p=p, beta=0.05, num_patterns=12, key=KEY, tol=1e-9,
                  max_steps=30000)
  W1, w2 = relu.recover(head)
  Xj, yj = jnp.asarray(X), jnp.asarray(y)
  apply = lambda params, x: relu.network_scores(params[0], params[1], x)
  X_adv = attacks.pgd(apply, (W1, w2), Xj, yj, eps, key=KEY, norm=p, steps=50, restarts=3)
  attacked = jnp.maximum(1.0 - yj * apply((W1, w2), X_adv), 0.0)
  theta = relu.example_weights(head.weights, relu.sign_patterns(Xj, head.gates))[:, :, 0]
  q = relu.NORMS[p]
  bound = jnp.maximum(1.0 - yj * jnp.sum(Xj * theta, 1) + eps * relu.dual_norm(theta, q, 1), 0.0)
  assert np.all(np.asarray(attacked) <= np.asarray(bound) + 1e-6)
  assert float(jnp.sum(attacked)) > 0  # the attack did find losses to bound


@pytest.mark.parametrize("solver,gated", [("admm", False), ("admm", True), ("al", False),
                                          ("barrier", False)])
def test_resume_from_checkpoint_equals_an_uninterrupted_run(tmp_path, solver, gated):
  X, y = _data()
  loss = "squared" if solver == "al" else "hinge"  # none converges within its budget
  total, cut, every = (30, 18, 6) if solver == "barrier" else (200, 120, 40)
  kw = dict(beta=0.1, num_patterns=8, gated=gated, loss=loss, key=KEY, solver=solver,
            tol=1e-12, checkpoint_every=every)
  full = relu.fit(X, y, max_steps=total, **kw)
  relu.fit(X, y, max_steps=cut, checkpoint_dir=str(tmp_path), **kw)
  resumed = relu.fit(X, y, max_steps=total, checkpoint_dir=str(tmp_path), **kw)
  assert int(resumed.steps) == int(full.steps) == total
  np.testing.assert_array_equal(np.asarray(resumed.weights), np.asarray(full.weights))


def test_proximal_maps_are_exact():
  import cvxpy as cp
  rng = np.random.default_rng(0)
  n, d = 6, 4
  X = rng.normal(size=(n, d))
  A, Bv = rng.normal(size=(1, 1, n, 1)), 3 * rng.normal(size=(1, 1, d, 1))
  for q, eps in ((1, 0.3), (2, 0.5)):
    T, R = admm.project_robust_cone(jnp.asarray(A), jnp.asarray(Bv), eps, q)
    t, r = cp.Variable(n), cp.Variable(d)
    cp.Problem(cp.Minimize(cp.sum_squares(t - A[0, 0, :, 0]) + cp.sum_squares(r - Bv[0, 0, :, 0])),
               [t >= eps * cp.norm(r, q)]).solve()
    np.testing.assert_allclose(np.asarray(T)[0, 0, :, 0], t.value, atol=1e-6)
    np.testing.assert_allclose(np.asarray(R)[0, 0, :, 0], r.value, atol=1e-6)
    Z = rng.normal(size=(n, d, 1))
    for step in (0.05, 3.0):
      Xi = np.asarray(admm.prox_robust_hinge(jnp.asarray(Z), jnp.asarray(X), jnp.ones((n, 1)),
                                             eps, q, step))
      for i in range(n):
        v = cp.Variable(d)
        def prox(v, x=X[i], z=Z[i, :, 0], step=step, eps=eps, q=q):
          return step * cp.pos(1 - x @ v + eps * cp.norm(v, q)) + 0.5 * cp.sum_squares(v - z)
        best = cp.Problem(cp.Minimize(prox(v))).solve()
        # 1-strongly convex: a value within 1e-9 of the optimum pins the point to 4.5e-5.
        assert prox(Xi[i, :, 0]).value <= best + 1e-9
  labels = rng.integers(0, 4, size=n)
  t = relu.Targets(jnp.asarray(labels), jax.nn.one_hot(labels, 4), 1.0 - jax.nn.one_hot(labels, 4))
  Aa = rng.normal(size=(n, 4))
  M = np.asarray(admm.prox_loss_scores(jnp.asarray(Aa), t, "hinge", 0.7))
  for i in range(n):
    m = cp.Variable(4)
    others = [c for c in range(4) if c != labels[i]]
    def prox(m, label=labels[i], others=others, a=Aa[i]):
      return 0.7 * cp.sum(cp.pos(1 - m[label] + m[others])) + 0.5 * cp.sum_squares(m - a)
    best = cp.Problem(cp.Minimize(prox(m))).solve()
    # The prox objective is 1-strongly convex: a value within 1e-9 of the optimum pins the point
    # to within 4.5e-5, tighter than the conic solver's own point.
    assert prox(M[i]).value <= best + 1e-9


@pytest.mark.parametrize("settings", [dict(), dict(gated=True), dict(eps=0.05, p=2)])
def test_one_vs_all_heads_reach_the_cvxpy_optimum_class_by_class(settings, tmp_path):
  X, y = _data(classes=3, n=40)
  kw = dict(beta=0.1, num_patterns=8, loss=relu.ONE_VS_ALL, key=KEY, **settings)
  oracle = relu.exact_fit(X, y, **kw)
  head = relu.fit(X, y, tol=1e-6, **kw)
  assert head.weights.shape[-1] == 3 and head.scores(X).shape == (40, 3)
  assert _rel(head.objective, oracle.objective) < 1e-5
  assert float(head.objective) - float(head.gap) <= float(oracle.objective) * (1 + 1e-7)
  assert float(head.violation) == 0.0  # the barriers' iterates are strictly feasible
  # Its objective is the sum of the binary hinge objectives of class c against the rest.
  Xj = jnp.asarray(X)
  D = relu.sign_patterns(Xj, head.gates)
  per_class = [relu.objective(head.weights[..., c:c + 1], Xj, D,
                              relu.encode_targets(np.where(y == c, 1.0, -1.0), 40)[0],
                              loss="hinge", eps=head.eps, q=relu.NORMS[head.p], beta=0.1)
               for c in range(3)]
  np.testing.assert_allclose(float(sum(per_class)), float(head.objective), rtol=1e-10)
  loaded = heads.load_head(heads.save_head(str(tmp_path / "ova.head"), head))
  assert loaded.loss == relu.ONE_VS_ALL
  np.testing.assert_array_equal(np.asarray(loaded.scores(X)), np.asarray(head.scores(X)))
  # A warm start goes to every class (ADMM; the barriers take none), its gap still valid.
  with pytest.warns(UserWarning, match="class 0 of 3: admm solver stopped after 20 steps"):
    warm = relu.fit(X, y, start=head, solver="admm", max_steps=20, **kw)
  assert warm.weights.shape == head.weights.shape
  assert float(warm.objective) - float(warm.gap) <= float(oracle.objective) * (1 + 1e-7)


@pytest.mark.parametrize("kwargs,match", [
    (dict(p=1), "p must be"),
    (dict(p="l2"), "p must be"),
    (dict(num_patterns=0), "num_patterns"),
    (dict(gates=np.ones((4, 5))), "gates must have shape"),
    (dict(gates=np.ones(3)), "gates must have shape"),
    (dict(eps=-0.1), "eps must be"),
    (dict(beta=0.0), "beta must be"),
    (dict(loss="logistic"), "loss must be"),
    (dict(eps=0.1, loss="squared"), "robust training"),
    (dict(eps=0.1, gated=True), "gated=True with eps > 0 is refused"),
    (dict(solver="apg"), "solver='apg'"),
    (dict(solver="newton"), "solver must be"),
    (dict(solver="barrier", eps=0.1, y=np.arange(30) % 3), "multi-class robust hinge"),
    (dict(solver="barrier", y=np.arange(30) % 3), "solver='barrier'"),
    (dict(solver="barrier", gates=np.array([[1.0], [0.0], [0.0]]),
          X=np.array([[0.0, 1.0, 0.0]] * 15 + [[1.0, 0.0, 0.0]] * 15)), "orthogonal"),
    (dict(key=None), "key must be"),
    (dict(loss="ova_hinge"), "needs multi-class labels"),
    (dict(loss="ova_hinge", y=np.arange(30) % 3, solver="apg"), "solver='apg'"),
])
def test_bad_arguments_raise_a_value_error_naming_them(kwargs, match):
  X, y = _data()
  args = dict(key=KEY, num_patterns=4)
  args.update(kwargs)
  X, y = args.pop("X", X), args.pop("y", y)
  with pytest.raises(ValueError, match=match):
    relu.fit(X, y, **args)


def test_bad_solver_settings_raise_a_value_error_naming_them():
  X, y = _data()
  with pytest.raises(ValueError, match="linear_solver"):
    relu.fit(X, y, key=KEY, num_patterns=4, solver=admm.Solver(linear_solver="lu"))
  with pytest.raises(ValueError, match="nystrom_rank"):
    relu.fit(X, y, key=KEY, num_patterns=4, solver=admm.Solver(linear_solver="cg",
                                                               nystrom_rank=31))


def test_bad_data_raise_a_value_error_naming_them():
  X, y = _data()
  with pytest.raises(ValueError, match="X must"):
    relu.fit(np.where(X > 1, np.nan, X), y, key=KEY)
  with pytest.raises(ValueError, match="y must"):
    relu.fit(X, y[:-1], key=KEY)
  with pytest.raises(ValueError, match="y must"):
    relu.fit(X, y + 0.5, key=KEY)
