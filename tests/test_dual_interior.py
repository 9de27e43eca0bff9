"""The fixed-cut dual by the interior-point method in the multipliers' space, against CVXPY's
optima and the dense lifts."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvxjax import activations, poly, psd
from cvxjax.core import poly as core_poly
from cvxjax.core import poly_dual
from cvxjax.solvers import dual_interior

cp = pytest.importorskip("cvxpy")

ACT = activations.DEFAULT_ACTIVATION
BETA = 1e-2


@pytest.mark.parametrize("seed", [0, 1])
def test_lift_products_equal_the_dense_traces(seed):
  rng = np.random.default_rng(seed)
  U, w = rng.normal(size=(7, 4)), rng.normal(size=7)
  P, T = (A @ A.T for A in rng.normal(size=(2, 5, 5)))
  lifts = np.stack([np.asarray(core_poly.lift(jnp.asarray(u), ACT)) for u in U]) * w[:, None, None]
  dense = np.einsum("ipq,qr,jrs,sp->ij", lifts, P, lifts, T)
  products = poly_dual.lift_products(jnp.asarray(P), jnp.asarray(T), jnp.asarray(U),
                                     jnp.asarray(w), ACT)
  np.testing.assert_allclose(products, dense, rtol=1e-12, atol=1e-12 * np.abs(dense).max())


@functools.cache
def _oracle(r: float):
  rng = np.random.default_rng(3)
  X = rng.normal(size=(24, 3))
  y = np.where(X[:, 0] * X[:, 1] + 0.3 * rng.normal(size=24) > 0, 1.0, -1.0)
  return jnp.asarray(X), jnp.asarray(y), poly.exact_fit(X, y, r=r, beta=BETA)


def _certify(Z, Zp, r, **settings):
  X, y, _ = _oracle(r)
  return dual_interior.certify(jnp.asarray(Z), jnp.asarray(Zp), X, y, r=r, beta=BETA,
                               activation=ACT, **settings)


def test_from_zero_at_r0_it_finds_the_optimum_and_certifies_it():
  """At r = 0 the fixed-cut problem is the head's own: from (0, 0) the dual's primal blocks
  are the optimum, on K, and the bound meets them."""
  optimum = float(_oracle(0.0)[2].objective)
  zero = np.zeros((4, 4))
  head = _certify(zero, zero, 0.0)
  assert float(head.lower) <= optimum + 1e-9
  assert optimum - float(head.lower) <= 1e-6 * optimum
  assert float(head.objective) <= optimum * (1 + 1e-6)
  for Z in (head.Z, head.Zp):
    assert np.linalg.eigvalsh(Z).min() >= 0
    assert abs(float(psd.trace_residual(Z))) <= 1e-12 * np.abs(Z).max()


@pytest.mark.parametrize("r", [0.0, 0.4])
def test_at_cvxpys_optimum_the_bound_is_tight(r):
  oracle = _oracle(r)[2]
  optimum = float(oracle.objective)
  head = _certify(oracle.Z[0], oracle.Zp[0], r)
  assert float(head.lower) <= optimum + 1e-9
  assert optimum - float(head.lower) <= 1e-6 * optimum
  assert float(head.objective) <= optimum + 1e-9  # the given point, or a better one


@pytest.mark.parametrize("free", [1, 5])
def test_a_restricted_dual_still_bounds(free):
  """Too few free multipliers (the others fixed from a crude point's margins) loosen the bound;
  it stays below the optimum."""
  optimum = float(_oracle(0.4)[2].objective)
  rng = np.random.default_rng(0)
  A = rng.normal(size=(3, 2))
  crude = np.block([[A @ A.T, np.zeros((3, 1))], [np.zeros((1, 3)), np.trace(A @ A.T)]])
  head = _certify(crude, np.zeros((4, 4)), 0.4, max_free=free)
  assert 0 < float(head.lower) <= optimum + 1e-9


def test_every_iterate_is_dual_feasible_and_bounds_the_optimum():
  X, y, oracle = _oracle(0.4)
  optimum = float(oracle.objective)
  wc = core_poly.worst_case(oracle.Z[0] - oracle.Zp[0], X, y, 0.4, ACT)
  U = core_poly.cut_points(X, wc.delta, 0.4)
  cuts = dual_interior.Cuts(U[:, None], y, jnp.zeros((4, 4)), jnp.asarray(0))
  state = dual_interior.init(cuts, beta=BETA, activation=ACT)
  step = jax.jit(functools.partial(dual_interior.step, beta=BETA, activation=ACT))
  bounds = []
  for _ in range(30):
    S, Sp, low, high = dual_interior.slacks(cuts, state.y, beta=BETA, activation=ACT)
    assert min(np.linalg.eigvalsh(S)[0], np.linalg.eigvalsh(Sp)[0]) > 0
    assert float(low.min()) > 0 and float(high.min()) > 0
    bounds.append(float(dual_interior.bound(cuts, state)))
    assert bounds[-1] <= optimum + 1e-9
    state = step(cuts, state)
  assert optimum - bounds[-1] <= 1e-6 * optimum  # and the path reaches it


def test_low_rank_fit_certifies_at_r0():
  X, y, oracle = _oracle(0.0)
  head = poly.fit(np.asarray(X), np.asarray(y), beta=BETA, solver="low_rank", tol=1e-5)
  optimum = float(oracle.objective)
  assert float(head.objective) - float(head.gap) <= optimum + 1e-9
  assert float(head.gap) <= 1e-5 * float(head.objective)


def test_free_multipliers_must_be_a_count():
  from cvxjax.solvers import low_rank
  with pytest.raises(ValueError, match="^free_multipliers"):
    low_rank.Solver(free_multipliers=-1)
