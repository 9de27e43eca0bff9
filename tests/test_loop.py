"""The solver protocol and its one loop: resumption, stopping at tol, bad settings, warm starts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvxjax import poly, relu
from cvxjax.core import activations
from cvxjax.core import poly as poly_core
from cvxjax.solvers import admm, barrier, base, loop, penalty, primal_dual, projected

pytest.importorskip("cvxpy")

ACT = activations.DEFAULT_ACTIVATION
KEY = jax.random.key(3)


def _poly_problem(seed=0, n=16, d=2, r=0.3, beta=0.05):
  rng = np.random.default_rng(seed)
  X = rng.normal(size=(n, d))
  y = np.where(X[:, 0] * X[:, 1] + 0.2 * rng.normal(size=n) > 0, 1.0, -1.0)
  problem = poly_core.Problem(jnp.asarray(X), jnp.asarray(y[None, :]), r=r, beta=beta,
                              activation=ACT)
  return X, y, problem


def _relu_data(seed=0, n=30, d=3):
  rng = np.random.default_rng(seed)
  X = rng.normal(size=(n, d))
  return X, np.where(X[:, 0] + 0.5 * X[:, 1] ** 2 - 0.3 + 0.3 * rng.normal(size=n) > 0, 1.0, -1.0)


@pytest.mark.parametrize("solver", [projected.Solver(), primal_dual.Solver(check_every=8)])
def test_a_run_resumed_after_an_interruption_ends_where_an_uninterrupted_one_does(tmp_path,
                                                                                   solver):
  _, _, problem = _poly_problem()
  settings = dict(tol=1e-12, chunk=3)  # no stop at tol: both runs spend their budget
  whole = loop.run(solver, problem, max_steps=48, **settings)
  loop.run(solver, problem, max_steps=24, checkpoint_dir=str(tmp_path), **settings)
  resumed = loop.run(solver, problem, max_steps=48, checkpoint_dir=str(tmp_path), **settings)
  assert int(resumed.summary.steps) == int(whole.summary.steps) == 48
  for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(whole.state), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert float(resumed.summary.objective) == float(whole.summary.objective)


def test_the_run_stops_at_tol_with_a_gap_that_brackets_the_cvxpy_optimum():
  X, y, problem = _poly_problem()
  optimum = float(poly.exact_fit(X, y, r=0.3, beta=0.05).objective)
  loose = loop.run(barrier.Solver(), problem, max_steps=300, tol=1e-3)
  tight = loop.run(barrier.Solver(), problem, max_steps=300, tol=1e-8)
  for result, tol in ((loose, 1e-3), (tight, 1e-8)):
    objective, gap = float(result.summary.objective), float(result.summary.gap)
    assert bool(jnp.all(result.state.done))  # terminate, not the budget, ended the run
    assert int(result.summary.steps) < 300
    assert gap <= tol * objective
    assert objective - gap <= optimum * (1 + 1e-7) and optimum <= objective * (1 + 1e-7)
  assert int(loose.summary.steps) < int(tight.summary.steps)


def test_the_gap_stops_a_solver_without_its_own_test_between_chunks():
  X, y = _relu_data()
  kw = dict(beta=0.1, num_patterns=8, key=KEY)
  optimum = float(relu.exact_fit(X, y, **kw).objective)
  # The penalty method never terminates by itself; a loose tol is certified within the budget.
  head = relu.fit(X, y, solver=penalty.Solver(), tol=0.5, max_steps=5000, checkpoint_every=50,
                  **kw)
  assert int(head.steps) < 5000
  assert float(head.gap) <= 0.5 * float(head.objective)
  assert float(head.objective) - float(head.gap) <= optimum * (1 + 1e-9)


BAD_SETTINGS = [
    (lambda: projected.Solver(head_batch_size=0), "head_batch_size"),
    (lambda: primal_dual.Solver(check_every=0), "check_every"),
    (lambda: admm.Solver(linear_solver="lu"), "linear_solver"),
    (lambda: admm.Solver(nystrom_rank=-1), "nystrom_rank"),
    (lambda: penalty.Solver(rho=0.0), "rho"),
]


@pytest.mark.parametrize("make,name", BAD_SETTINGS)
def test_a_bad_solver_setting_raises_a_value_error_naming_it(make, name):
  with pytest.raises(ValueError, match=rf"^{name}\b"):
    make()


@pytest.mark.parametrize("kwargs,name", [
    (dict(solver="barrier"), "solver"),
    (dict(max_steps=-1), "max_steps"),
    (dict(chunk=0), "chunk"),
    (dict(tol=0.0), "tol"),
    (dict(start=(jnp.zeros((1, 3, 3)),) * 2), "start"),
])
def test_a_bad_run_argument_raises_a_value_error_naming_it(kwargs, name):
  _, _, problem = _poly_problem()
  args = dict(solver=barrier.Solver(), max_steps=5, **kwargs)
  with pytest.raises(ValueError, match=rf"^{name}\b"):
    loop.run(args.pop("solver"), problem, **args)


def test_fit_refuses_a_start_its_solver_cannot_take_or_of_another_shape():
  X, y, _ = _poly_problem()
  head = poly.fit(X, y, r=0.3, beta=0.05, solver="projected", max_steps=2, tol=1.0)
  with pytest.raises(ValueError, match="^start"):
    poly.fit(X, y, r=0.3, beta=0.05, solver="barrier", start=head)
  with pytest.raises(ValueError, match="^start"):
    poly.fit(X[:, :1], y, r=0.3, beta=0.05, solver="projected", start=head)
  Xr, yr = _relu_data()
  relu_head = relu.fit(Xr, yr, num_patterns=8, key=KEY, max_steps=2, tol=1.0)
  with pytest.raises(ValueError, match="^start"):
    relu.fit(Xr, yr, num_patterns=8, key=KEY, solver="barrier", start=relu_head)
  with pytest.raises(ValueError, match="^start"):
    relu.fit(Xr, yr, gated=True, start=relu_head)


def test_a_warm_started_beta_path_reaches_the_cvxpy_optimum_in_fewer_steps():
  X, y = _relu_data()
  first = relu.fit(X, y, beta=0.1, num_patterns=8, key=KEY, tol=1e-7, max_steps=60000,
                   checkpoint_every=50)
  kw = dict(beta=0.12, gates=first.gates, tol=1e-7, max_steps=60000, checkpoint_every=50)
  optimum = float(relu.exact_fit(X, y, beta=0.12, gates=first.gates).objective)
  cold = relu.fit(X, y, **kw)
  warm = relu.fit(X, y, start=first, **kw)
  for head in (cold, warm):
    objective, gap = float(head.objective), float(head.gap)
    assert gap <= 1e-7 * objective
    assert objective - gap <= optimum * (1 + 1e-9) and optimum <= objective * (1 + 1e-9)
  assert abs(float(warm.objective) - float(cold.objective)) <= 1e-7 * float(cold.objective)
  assert int(warm.steps) < int(cold.steps)


def test_every_solver_is_a_hashable_protocol_value():
  solvers = [barrier.Solver(), projected.Solver(), primal_dual.Solver(), admm.Solver(),
             penalty.Solver()]
  for solver in solvers:
    assert isinstance(solver, base.Solver) and hash(solver) == hash(type(solver)())
