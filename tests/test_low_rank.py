"""The low-rank polynomial solver against CVXPY's optima, its factored margins against the dense
ones, and its smoothed hinge against finite differences."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvxjax import activations, poly, psd
from cvxjax.core import numerics
from cvxjax.core import poly as core_poly
from cvxjax.solvers import loop, low_rank

cp = pytest.importorskip("cvxpy")

ACT = activations.DEFAULT_ACTIVATION


@functools.cache
def _oracle(kind: str, r: float):
  rng = np.random.default_rng(5)
  if kind == "one-vs-all":
    centres = 2.0 * rng.normal(size=(3, 3))
    y = np.repeat(np.arange(3), 8)
    X = centres[y] + 0.7 * rng.normal(size=(24, 3))
  else:
    X = rng.normal(size=(30, 3))
    y = np.where(X[:, 0] * X[:, 1] + 0.3 * rng.normal(size=30) > 0, 1.0, -1.0)
  return X, y, float(poly.exact_fit(X, y, r=r, beta=1e-2).objective)


@pytest.mark.parametrize("kind,r", [("binary", 0.0), ("binary", 0.4), ("one-vs-all", 0.3)])
def test_low_rank_reaches_the_cvxpy_optimum_with_a_valid_gap(kind, r):
  X, y, optimum = _oracle(kind, r)
  with pytest.warns(UserWarning, match="low_rank solver stopped"):  # above tol = 1e-9
    head = poly.fit(X, y, r=r, beta=1e-2, solver=low_rank.Solver(inner_steps=200), tol=1e-9,
                    max_steps=1600)
  objective, gap = float(head.objective), float(head.gap)
  assert optimum - 1e-7 <= objective <= optimum * (1 + 1e-3)
  assert objective - gap <= optimum + 1e-7  # the certified bound lies below the optimum
  assert gap <= 1e-5 * objective  # and the final certificate (dual_interior) is tight
  for Z in np.concatenate([head.Z, head.Zp]):  # every point of K, exactly
    assert np.linalg.eigvalsh(Z).min() >= -1e-12 * np.abs(Z).max()
    assert abs(float(psd.trace_residual(jnp.asarray(Z)))) <= 1e-12 * (1 + np.abs(Z).max())


def test_every_rounds_bound_lies_below_the_optimum():
  X, y, optimum = _oracle("binary", 0.4)
  problem = core_poly.Problem(jnp.asarray(X), jnp.asarray(y)[None], r=0.4, beta=1e-2,
                              activation=ACT)
  seen = []
  loop.run(low_rank.Solver(inner_steps=25), problem, max_steps=400, chunk=1,
           callback=lambda state, summary: seen.append(summary) and False)
  assert len(seen) == 17
  for summary in seen:
    assert float(summary.objective) - float(summary.gap) <= optimum + 1e-7
  assert float(seen[-1].gap) < float(seen[0].gap)


@pytest.mark.parametrize("seed,d,k,r", [(0, 4, 3, 0.0), (1, 4, 3, 0.7), (2, 9, 2, 0.3),
                                         (3, 9, 2, 3.0)])
def test_factored_margins_and_gradients_equal_those_of_the_dense_matrices(seed, d, k, r):
  """At r > 0 the attacks solve each TRS in the factors' 2k-dimensional range (2k > d in the
  first cases: the whole space); the dense path solves it in all d coordinates."""
  rng = np.random.default_rng(seed)
  X, s = jnp.asarray(rng.normal(size=(12, d))), jnp.asarray(rng.choice([-1.0, 1.0], 12))
  factors = tuple(jnp.asarray(rng.normal(size=shape)) for shape in ((d, k), (k,), (d, k), (k,)))
  dense = lambda f: core_poly.margins(low_rank.point(*f[:2]) - low_rank.point(*f[2:]), X, s, r,
                                      ACT)
  factored = lambda f: low_rank.margins(f, X, s, r=r, activation=ACT)
  np.testing.assert_allclose(factored(factors), dense(factors), rtol=1e-12, atol=1e-12)
  weights = jnp.asarray(rng.normal(size=12))
  grads = [jax.grad(lambda f, m=m: weights @ m(f))(factors) for m in (factored, dense)]
  for a, b in zip(*grads, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_smooth_plus_bounds_the_hinge_and_its_derivative_matches_finite_differences():
  t = jnp.asarray(np.r_[-np.logspace(-8, 3, 12), 0.0, np.logspace(-8, 3, 12)])
  for delta in (1.0, 1e-3, 1e-9):
    value = numerics.smooth_plus(t, delta)
    assert bool(jnp.all(value >= jnp.maximum(t, 0.0)))
    assert bool(jnp.all(value <= jnp.maximum(t, 0.0) + delta / 2 * (1 + 1e-12)))
    step = 1e-6 * jnp.maximum(jnp.abs(t), delta)
    difference = (numerics.smooth_plus(t + step, delta) - numerics.smooth_plus(t - step, delta))
    np.testing.assert_allclose(numerics.smooth_plus_derivative(t, delta), difference / (2 * step),
                               rtol=1e-5, atol=1e-9)


def test_a_rank_that_the_optimum_fills_warns():
  X, y, _ = _oracle("binary", 0.0)
  with pytest.warns(UserWarning, match="use all their rank=1 columns"):
    poly.fit(X, y, r=0.0, beta=1e-2, solver=low_rank.Solver(rank=1), tol=1e-9, max_steps=400)


def test_auto_takes_the_low_rank_solver_above_the_newton_size():
  from cvxjax.solvers import driver
  assert driver.resolve_solver("auto", 50, streamed=False).name == "low_rank"
  assert driver.resolve_solver("auto", 50, streamed=True).name == "projected"
  assert driver.resolve_solver("auto", 49, streamed=False).name == "interior"


@pytest.mark.parametrize("field,value", [("rank", 0), ("inner_steps", 2.5),
                                         ("head_batch_size", 0), ("first_smoothing", 0.0)])
def test_bad_settings_are_refused(field, value):
  with pytest.raises(ValueError, match=field):
    low_rank.Solver(**{field: value})


def test_a_warm_start_from_a_fitted_head_keeps_its_objective():
  X, y, optimum = _oracle("binary", 0.0)
  exact = poly.exact_fit(X, y, r=0.0, beta=1e-2)
  state = low_rank.init(jnp.asarray(X), 8, (exact.Z[0], exact.Zp[0]))
  A, c, Ap, cp_ = state.factors
  value = core_poly.objective(low_rank.point(A, c), low_rank.point(Ap, cp_), jnp.asarray(X),
                              jnp.asarray(y), 0.0, 1e-2, ACT)
  assert float(value) == pytest.approx(optimum, rel=1e-6)


@pytest.mark.parametrize("r", [0.0, 0.4])
def test_a_warm_start_is_never_returned_worse(r):
  X, y, optimum = _oracle("binary", r)
  exact = poly.exact_fit(X, y, r=r, beta=1e-2)
  # One round at δ = 1 moves far from the start; the start still counts as the best point.
  solver = low_rank.Solver(inner_steps=50, free_multipliers=0)
  with pytest.warns(UserWarning, match="low_rank solver stopped"):
    head = poly.fit(X, y, r=r, beta=1e-2, solver=solver, start=exact, max_steps=50, tol=1e-12)
  assert float(head.objective) <= optimum * (1 + 1e-6)
  assert float(head.objective) - float(head.gap) <= optimum + 1e-7
