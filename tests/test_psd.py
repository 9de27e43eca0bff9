"""Π_PSD, Π_K and the trust-region solver against properties and brute force."""

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from scipy import optimize

from cvxjax.core import psd

# Jitted once: eager calls would recompile the root-finding loops on every call.
project_k = jax.jit(psd.project_trace_psd)
project_batch = jax.jit(jax.vmap(psd.project_trace_psd))


def _random_symmetric(rng, m):
  A = rng.normal(size=(m, m))
  return A + A.T


def _random_in_k(rng, m, count):
  return np.asarray(project_batch(jnp.asarray(np.stack(
      [_random_symmetric(rng, m) for _ in range(count)]))))


@pytest.mark.parametrize("seed", range(4))
def test_project_psd_is_the_projection(seed):
  rng = np.random.default_rng(seed)
  Y = rng.normal(size=(6, 6))
  P = np.asarray(psd.project_psd(jnp.asarray(Y)))
  assert np.linalg.eigvalsh(P).min() >= -1e-12
  np.testing.assert_allclose(psd.project_psd(jnp.asarray(P)), P, atol=1e-12)
  # Variational inequality of the projection onto a convex set: ⟨Y − P, Q − P⟩ ≤ 0.
  for _ in range(20):
    B = rng.normal(size=(6, 6))
    Q = B @ B.T
    assert np.sum((Y - P) * (Q - P)) <= 1e-9


@pytest.mark.parametrize("seed", range(4))
def test_project_trace_psd_lands_in_k_and_is_idempotent(seed):
  rng = np.random.default_rng(seed)
  Y = 3.0 * rng.normal(size=(7, 7))
  P = np.asarray(project_k(jnp.asarray(Y)))
  scale = np.abs(P).max()
  assert abs(np.trace(P[:-1, :-1]) - P[-1, -1]) <= 1e-10 * scale
  assert np.linalg.eigvalsh(P).min() >= -1e-10 * scale
  np.testing.assert_allclose(project_k(jnp.asarray(P)), P, atol=1e-9 * scale)
  Ys = 0.5 * (Y + Y.T)
  for Q in _random_in_k(rng, 7, 20):
    assert np.sum((Ys - P) * (Q - P)) <= 1e-8 * (1 + np.abs(Q).max())


@pytest.mark.parametrize("seed", range(3))
def test_project_trace_psd_equals_the_cvxpy_projection(seed):
  cp = pytest.importorskip("cvxpy")
  rng = np.random.default_rng(seed)
  Y = 2.0 * _random_symmetric(rng, 5)
  Z = cp.Variable((5, 5), symmetric=True)
  problem = cp.Problem(cp.Minimize(cp.sum_squares(Z - Y)),
                       [Z >> 0, cp.trace(Z[:-1, :-1]) == Z[-1, -1]])
  problem.solve(solver="CLARABEL")
  np.testing.assert_allclose(project_k(jnp.asarray(Y)), Z.value, atol=1e-5 * np.abs(Y).max())


@pytest.mark.parametrize("guess", [-50.0, -1.0, 0.3, 2.0, 80.0])
def test_warm_started_projection_equals_the_cold_one(guess):
  rng = np.random.default_rng(7)
  Y = jnp.asarray(3.0 * rng.normal(size=(6, 6)))
  project = jax.jit(psd.trace_psd_projection)
  cold, warm = project(Y, 0.0), project(Y, guess)
  np.testing.assert_allclose(warm.point, cold.point, atol=1e-10)
  np.testing.assert_allclose(warm.multiplier, cold.multiplier, rtol=1e-8)
  # From its own multiplier the search ends at once: one `eigh`, the projection's.
  assert int(project(Y, cold.multiplier).eighs) == 1 < int(cold.eighs)


def test_project_trace_psd_batches_with_vmap():
  rng = np.random.default_rng(0)
  Y = jnp.asarray(rng.normal(size=(3, 5, 5)))
  batched = project_batch(Y)
  for k in range(3):
    np.testing.assert_allclose(batched[k], project_k(Y[k]), atol=1e-12)


def _brute_force_trs(A, g, r, rng, samples=20000):
  """min over the ball by sampling plus local polish from the best samples."""
  d = len(g)
  u = rng.normal(size=(samples, d))
  u /= np.linalg.norm(u, axis=1, keepdims=True)
  points = np.vstack([r * u, r * u * rng.uniform(size=(samples, 1)) ** (1 / d)])
  values = np.einsum("nd,de,ne->n", points, A, points) + points @ g
  best = np.inf
  cons = {"type": "ineq", "fun": lambda x: r**2 - x @ x, "jac": lambda x: -2 * x}
  for start in points[np.argsort(values)[:5]]:
    res = optimize.minimize(lambda x: x @ A @ x + g @ x, start, jac=lambda x: 2 * A @ x + g,
                            constraints=[cons], method="SLSQP", options={"ftol": 1e-14})
    if res.x @ res.x <= r**2 * (1 + 1e-9):
      best = min(best, res.fun)
  return min(best, values.min())


def _solve(A, g, r, with_multiplier=False):
  mu, Q = np.linalg.eigh(A)
  sol = psd.trust_region(jnp.asarray(mu), jnp.asarray(Q.T @ g), jnp.asarray(r))
  out = float(sol.value), Q @ np.asarray(sol.delta)
  return (*out, float(sol.lam)) if with_multiplier else out


@pytest.mark.parametrize("case", ["indefinite", "convex_interior", "convex_boundary", "hard",
                                  "hard_repeated", "negative_definite"])
def test_trust_region_matches_brute_force(case):
  rng = np.random.default_rng(hash(case) % 2**32)
  d, r = 3, 0.7
  A = _random_symmetric(rng, d)
  g = rng.normal(size=d)
  if case == "convex_interior":
    A, g = A @ A.T + np.eye(d), 0.01 * g
  elif case == "convex_boundary":
    A = A @ A.T + 0.1 * np.eye(d)
  elif case == "hard":
    mu, Q = np.linalg.eigh(A)
    g = Q[:, 1:] @ (0.05 * rng.normal(size=d - 1))  # no weight on the bottom eigenvector
  elif case == "hard_repeated":
    d = 4
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    A = Q @ np.diag([-1.0, -1.0, 0.5, 2.0]) @ Q.T  # a two-dimensional bottom eigenspace
    g = Q[:, 2:] @ (0.05 * rng.normal(size=2))
  elif case == "negative_definite":
    A = -(A @ A.T) - np.eye(d)
  value, delta, lam = _solve(A, g, r, with_multiplier=True)
  assert np.linalg.norm(delta) <= r * (1 + 1e-12)
  np.testing.assert_allclose(delta @ A @ delta + g @ delta, value, atol=1e-12)
  # Moré–Sorensen: δ is a global minimiser iff 2(A + λI)δ = −g, A + λI ⪰ 0, λ(r − ‖δ‖) = 0.
  np.testing.assert_allclose(2 * (A + lam * np.eye(d)) @ delta, -g, atol=1e-9)
  assert np.linalg.eigvalsh(A + lam * np.eye(d)).min() >= -1e-9
  assert lam >= 0 and lam * (r - np.linalg.norm(delta)) <= 1e-9
  brute = _brute_force_trs(A, g, r, rng)
  assert value <= brute + 1e-9 * (1 + abs(brute))
  assert value >= brute - 1e-3 * (1 + abs(brute))


def test_trust_region_never_above_projected_gradient():
  rng = np.random.default_rng(5)
  for _ in range(10):
    d, r = 4, 1.3
    A, g = _random_symmetric(rng, d), rng.normal(size=d)
    value, _ = _solve(A, g, r)
    x = rng.normal(size=d)
    for _ in range(2000):  # projected gradient descent on the ball
      x = x - 0.01 * (2 * A @ x + g)
      x *= min(1.0, r / np.linalg.norm(x))
    assert value <= x @ A @ x + g @ x + 1e-12


def test_trust_region_radius_zero():
  sol = psd.trust_region(jnp.asarray([-1.0, 2.0]), jnp.asarray([1.0, 1.0]), jnp.asarray(0.0))
  assert float(sol.value) == 0.0
  np.testing.assert_array_equal(sol.delta, 0.0)


def _mp_trust_region(mu, g, r, digits=50):
  """min_{‖δ‖ ≤ r} Σ μ_k δ_k² + g_k δ_k at `digits` digits (mpmath), from the float inputs.

  The secular equation Σ g_k²/(4(μ_k − μ_min + σ)²) = r² is solved for σ = λ − max(0, −μ_min) by
  bisection (geometric once the lower end is positive) to the working precision; the hard case
  (no weight on the bottom eigenspace, S(0) ≤ r²) steps along it to the sphere.

  Returns:
    (value, δ): an mpf and a list of mpf.
  """
  with mpmath.workdps(digits):
    mu, g, r = ([mpmath.mpf(float(v)) for v in mu], [mpmath.mpf(float(v)) for v in g],
                mpmath.mpf(float(r)))
    lo = max(mpmath.mpf(0), -min(mu))
    nu = [m + lo for m in mu]
    bottom = [v == 0 for v in nu]
    b_sq = mpmath.fsum(gk**2 / 4 for gk, b in zip(g, bottom, strict=True) if b)
    s0 = mpmath.fsum((gk / (2 * v))**2 for gk, v, b in zip(g, nu, bottom, strict=True) if not b)
    if b_sq == 0 and s0 <= r**2:
      delta = [mpmath.mpf(0) if b else -gk / (2 * v)
               for gk, v, b in zip(g, nu, bottom, strict=True)]
      if lo > 0:
        delta[bottom.index(True)] = mpmath.sqrt(r**2 - s0)
    else:
      phi = lambda s: 1 / mpmath.sqrt(mpmath.fsum((gk / (2 * (v + s)))**2
                                                  for gk, v in zip(g, nu, strict=True))) - 1 / r
      a = mpmath.sqrt(b_sq) / r if b_sq > 0 else mpmath.mpf(0)
      b = mpmath.sqrt(mpmath.fsum(gk**2 for gk in g)) / (2 * r)
      for _ in range(8 * digits):
        c = mpmath.sqrt(a * b) if a > 0 else b / 2
        a, b = (c, b) if phi(c) < 0 else (a, c)
      sigma = (a + b) / 2
      delta = [-gk / (2 * (v + sigma)) for gk, v in zip(g, nu, strict=True)]
    value = mpmath.fsum(d * (m * d + gk) for d, m, gk in zip(delta, mu, g, strict=True))
  return value, delta


def _mp_objective(mu, g, delta):
  """Σ μ_k δ_k² + g_k δ_k at 50 digits, of float δ."""
  with mpmath.workdps(50):
    return mpmath.fsum(mpmath.mpf(float(d)) * (mpmath.mpf(float(m)) * mpmath.mpf(float(d))
                                                + mpmath.mpf(float(gk)))
                       for d, m, gk in zip(delta, mu, g, strict=True))


solve_batch = jax.jit(jax.vmap(psd.trust_region))


@pytest.mark.parametrize("d", range(2, 7))
def test_trust_region_near_the_hard_case_matches_extended_precision(d):
  # Instances that sweep ĝ's weight g_b on the bottom eigenvector from 0 (the hard case) to 1e-6,
  # in every regime: indefinite, convex interior, convex boundary, a repeated bottom eigenvalue.
  rng = np.random.default_rng(d)
  weights = [0.0, 1e-15, 1e-12, 1e-8, 1e-6]
  mus, gs, rs = [], [], []
  for g_b in weights:
    for kind in ["indefinite", "indefinite", "interior", "boundary", "repeated"]:
      mu, g, r = rng.normal(size=d), rng.normal(size=d), rng.uniform(0.1, 3.0)
      if kind in ("interior", "boundary"):
        mu = np.abs(mu) + 0.1
        g = 0.01 * g if kind == "interior" else g
      if kind == "repeated":
        mu[np.argsort(mu)[1]] = mu.min()
      g[mu == mu.min()] = g_b * rng.choice([-1.0, 1.0], size=np.sum(mu == mu.min()))
      mus.append(mu), gs.append(g), rs.append(r)
  sol = solve_batch(jnp.asarray(np.array(mus)), jnp.asarray(np.array(gs)), jnp.asarray(rs))
  for i, (mu, g, r) in enumerate(zip(mus, gs, rs, strict=True)):
    exact, _ = _mp_trust_region(mu, g, r)
    delta = np.asarray(sol.delta[i])
    scale = float(np.abs(mu).max() * r**2 + np.linalg.norm(g) * r)
    assert abs(float(sol.value[i]) - float(exact)) <= 1e-12 * max(abs(float(exact)), 1e-3 * scale)
    # The minimiser is in the ball and attains the value.
    assert np.linalg.norm(delta) <= r * (1 + 4 * np.finfo(np.float64).eps)
    assert abs(float(_mp_objective(mu, g, delta) - exact)) <= 1e-12 * scale


def test_trust_region_regression_near_the_hard_case():
  # ĝ with weight 1e-15 on the bottom eigenvector: forming μ_k + λ directly was 7% optimistic.
  mu, r = np.array([0.82660134, -1.22250272, 0.34887616]), 1.18797545
  for g_b in (1e-15, 1e-12, 1e-8):
    g = np.array([0.78621491, g_b, -0.07976981])
    sol = psd.trust_region(jnp.asarray(mu), jnp.asarray(g), jnp.asarray(r))
    exact, _ = _mp_trust_region(mu, g, r)
    np.testing.assert_allclose(float(sol.value), float(exact), rtol=1e-12)
    assert np.linalg.norm(np.asarray(sol.delta)) <= r * (1 + 4 * np.finfo(np.float64).eps)
  assert abs(float(exact) - (-1.8017)) < 1e-4


def test_trust_region_float32_near_the_hard_case():
  mu, r = np.array([0.82660134, -1.22250272, 0.34887616]), 1.18797545
  for g_b in (0.0, 1e-12, 1e-8, 1e-6, 1e-3):
    g = np.array([0.78621491, g_b, -0.07976981])
    sol = psd.trust_region(jnp.asarray(mu, jnp.float32), jnp.asarray(g, jnp.float32),
                           jnp.asarray(r, jnp.float32))
    assert sol.value.dtype == jnp.float32
    exact, _ = _mp_trust_region(mu.astype(np.float32), g.astype(np.float32), np.float32(r))
    np.testing.assert_allclose(float(sol.value), float(exact), rtol=1e-5)
    assert np.linalg.norm(np.asarray(sol.delta, np.float64)) <= r * (1 + 1e-6)


def test_min_eigenvalues_match_numpys_eigvalsh():
  rng = np.random.default_rng(0)
  blocks = [rng.normal(size=(9, 9)) for _ in range(6)]
  blocks = [b + b.T for b in blocks]
  v = rng.normal(size=9)
  blocks.append(np.outer(v, v))  # PSD, rank one: smallest eigenvalue 0
  blocks.append(np.diag(np.r_[1e-9, np.ones(8)]) - 2e-9 * np.outer(v, v) / (v @ v))
  blocks.append(1e6 * np.eye(9))
  A = np.stack(blocks)
  expected = np.linalg.eigvalsh(A)[:, 0]
  got = np.asarray(psd.min_eigenvalues(jnp.asarray(A)))
  scale = np.abs(np.linalg.eigvalsh(A)).max(axis=1)
  np.testing.assert_array_less(np.abs(got - expected), 1e-13 * scale + 1e-300)
