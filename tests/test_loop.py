"""The solver protocol and its one loop: resumption, stopping at tol, bad settings, warm starts."""

import dataclasses
import warnings
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvxjax import poly, relu
from cvxjax.core import activations
from cvxjax.core import poly as poly_core
from cvxjax.solvers import (
  admm,
  barrier,
  base,
  interior,
  loop,
  low_rank,
  penalty,
  primal_dual,
  projected,
  proximal,
  sdp,
  working_set,
)

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


@pytest.mark.parametrize("solver", [projected.Solver(), primal_dual.Solver(check_every=8),
                                    low_rank.Solver(inner_steps=4)])
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


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _Quadratic:
  """min_x (x − c)² + 1, whose optimum 1 is known: a problem for a toy solver."""

  c: jnp.ndarray


@dataclasses.dataclass(frozen=True)
class _GradientDescent(base.Solver):
  """Gradient descent with step 0.1 from 0 (or a warm start); no test of its own, and its gap
  objective − 1 exact."""

  name: ClassVar[str] = "gradient descent"

  def init(self, problem, start=None):
    return (jnp.zeros(()) if start is None else jnp.asarray(start, float), jnp.asarray(0))

  def step(self, problem, state):
    x, k = state
    return x - 0.1 * 2.0 * (x - problem.c), k + 1

  def solution(self, problem, state):
    x, k = state
    objective = (x - problem.c) ** 2 + 1.0
    return x, base.Summary(objective, objective - 1.0, None, k)


def test_the_certified_gap_stops_a_solver_without_its_own_test_at_the_first_chunk_that_reaches_it():
  problem, tol, chunk = _Quadratic(jnp.asarray(1.0)), 1e-3, 4
  result = loop.run(_GradientDescent(), problem, max_steps=1000, tol=tol, chunk=chunk)
  # Brute force: x_k = c(1 − 0.8^k); the gap 0.64^k is first within tol at a step k, and the
  # loop sees it at the end of that step's chunk.
  k = next(k for k in range(1000) if 0.64 ** k <= tol * (1.0 + 0.64 ** k))
  assert int(result.summary.steps) == -(-k // chunk) * chunk
  assert float(result.summary.gap) <= tol * float(result.summary.objective)
  warm = loop.run(_GradientDescent(), problem, max_steps=1000, tol=tol, chunk=1,
                  start=result.params)
  assert int(warm.summary.steps) == 0  # a start that is already certified takes no step


def test_a_callback_sees_every_state_and_stops_the_run_at_the_first_that_it_accepts():
  problem, target = _Quadratic(jnp.asarray(1.0)), 1.0 + 1e-2
  seen = []

  def reached(state, summary):
    seen.append((int(summary.steps), float(summary.objective)))
    return float(summary.objective) <= target

  result = loop.run(_GradientDescent(), problem, max_steps=1000, tol=1e-12, chunk=1,
                    callback=reached)
  # Brute force: the objective after k steps is 1 + 0.64^k; the first within the target ends it.
  k = next(k for k in range(1000) if 1.0 + 0.64 ** k <= target)
  assert [steps for steps, _ in seen] == list(range(k + 1))
  np.testing.assert_allclose([value for _, value in seen], 1.0 + 0.64 ** np.arange(k + 1),
                             rtol=1e-6)
  assert int(result.summary.steps) == k


BAD_SETTINGS = [
    (lambda: projected.Solver(head_batch_size=0), "head_batch_size"),
    (lambda: primal_dual.Solver(check_every=0), "check_every"),
    (lambda: admm.Solver(linear_solver="lu"), "linear_solver"),
    (lambda: admm.Solver(nystrom_rank=-1), "nystrom_rank"),
    (lambda: penalty.Solver(rho=0.0), "rho"),
    (lambda: penalty.Streamed(chunk_size=0), "chunk_size"),
    (lambda: proximal.Streamed(chunk_size=2.5), "chunk_size"),
    (lambda: proximal.Streamed(augmented=True), "augmented"),
    (lambda: working_set.Solver(switch_after=0), "switch_after"),
    (lambda: working_set.Solver(bucket=0), "bucket"),
    (lambda: working_set.Solver(slack=-0.5), "slack"),
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
    (dict(callback="stop"), "callback"),
    (dict(start=(jnp.zeros((1, 3, 3)),) * 2), "start"),
])
def test_a_bad_run_argument_raises_a_value_error_naming_it(kwargs, name):
  _, _, problem = _poly_problem()
  args = {"solver": barrier.Solver(), "max_steps": 5, **kwargs}
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
  kw = dict(gated=True, loss="squared", solver="apg", tol=1e-8, max_steps=20000,
            checkpoint_every=10)
  first = relu.fit(X, y, beta=0.1, num_patterns=8, key=KEY, **kw)
  kw.update(beta=0.12, gates=first.gates)
  optimum = float(relu.exact_fit(X, y, beta=0.12, gates=first.gates, gated=True,
                                 loss="squared").objective)
  cold = relu.fit(X, y, **kw)
  warm = relu.fit(X, y, start=first, **kw)
  for head in (cold, warm):
    objective, gap = float(head.objective), float(head.gap)
    assert gap <= 1e-8 * objective
    assert objective - gap <= optimum * (1 + 1e-9) and optimum <= objective * (1 + 1e-9)
  assert abs(float(warm.objective) - float(cold.objective)) <= 1e-8 * float(cold.objective)
  assert int(warm.steps) < int(cold.steps)  # measured: 540 against 570


def test_every_solver_is_a_hashable_protocol_value():
  solvers = [barrier.Solver(), interior.Solver(), sdp.Solver(),
             projected.Solver(), primal_dual.Solver(), low_rank.Solver(), admm.Solver(),
             penalty.Solver(), projected.Streamed(), proximal.Streamed(), penalty.Streamed()]
  for solver in solvers:
    assert isinstance(solver, base.Solver) and hash(solver) == hash(type(solver)())


@pytest.mark.parametrize("objective,gap", [(1.0, 0.5), (np.nan, np.nan), (np.inf, np.inf),
                                           (1.0, np.nan)])
def test_a_fit_above_tol_or_not_finite_warns_and_one_within_tol_does_not(objective, gap):
  summary = base.Summary(objective=jnp.asarray(objective), gap=jnp.asarray(gap), violation=None,
                         steps=jnp.asarray(7))
  with pytest.warns(UserWarning, match="admm solver stopped after 7 steps"):
    loop.warn_above_tol("admm", summary, 1e-3)
  within = summary._replace(objective=jnp.asarray(1.0), gap=jnp.asarray(1e-4))
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    loop.warn_above_tol("admm", within, 1e-3)
