"""Sharded head training (examples over devices, heads or patterns over a model axis) equals
the single-device fit. The conftest gives the CPU 8 devices."""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from multihost_problems import data

from cvxjax import poly, relu, sharding

KEY = jax.random.key(1)


def _rel(a, b):
  return abs(float(a) - float(b)) / abs(float(b))


def _on(mesh, array):
  return isinstance(array.sharding, NamedSharding) and array.sharding.mesh.devices.size == 8


def test_the_suite_has_eight_devices():
  assert jax.device_count() >= 8


@pytest.mark.parametrize("solver, classes", [("interior", 2), ("barrier", 2), ("projected", 4)])
def test_sharded_poly_fit_equals_the_single_device_fit(solver, classes):
  X, y = data(n=64, classes=classes)
  mesh = sharding.make_mesh(examples=4, model=2)
  settings = dict(r=0.3, beta=1e-2, solver=solver, max_steps=60)
  alone = poly.fit(X, y, **settings)
  sharded = poly.fit(X, y, mesh=mesh, **settings)
  assert _on(mesh, sharded.Z)
  assert _rel(sharded.objective, alone.objective) < 1e-5
  np.testing.assert_allclose(np.asarray(sharded.Z), np.asarray(alone.Z), atol=1e-5)
  if solver != "projected":  # converged: both certify the same optimum
    assert float(alone.gap) <= 1e-6 * float(alone.objective)
    assert float(sharded.gap) <= 1e-6 * float(sharded.objective)


@pytest.mark.parametrize("settings", [
    dict(classes=2, eps=0.1, solver="admm"),
    dict(classes=3, gated=True, loss="squared", solver="apg"),
], ids=["robust-relu-admm", "gated-apg"])
def test_sharded_relu_fit_equals_the_single_device_fit(settings):
  settings = dict(settings)
  X, y = data(n=64, classes=settings.pop("classes"))
  mesh = sharding.make_mesh(examples=4, model=2)
  alone = relu.fit(X, y, num_patterns=8, key=KEY, max_steps=400, **settings)
  sharded = relu.fit(X, y, num_patterns=8, key=KEY, max_steps=400, mesh=mesh, **settings)
  assert _on(mesh, sharded.weights)
  assert _rel(sharded.objective, alone.objective) < 1e-5
  np.testing.assert_allclose(np.asarray(sharded.weights), np.asarray(alone.weights), atol=1e-5)


def test_placement_splits_examples_and_the_model_axis():
  mesh = sharding.make_mesh(examples=4, model=2)
  D = sharding.place(np.zeros((64, 6)), mesh, examples=64, model=6)
  assert D.sharding.spec == P("examples", "model")
  assert {s.data.shape for s in D.addressable_shards} == {(16, 3)}
  odd = sharding.place(np.zeros((64, 5)), mesh, examples=64, model=5)  # 5 patterns: replicated
  assert odd.sharding.spec == P("examples", None)


@pytest.mark.parametrize("solver, classes", [("interior", 2), ("barrier", 2), ("sdp", 2),
                                             ("projected", 3)])
def test_uneven_n_is_padded_by_rows_that_count_nowhere_poly(solver, classes):
  X, y = data(n=30, classes=classes)  # 8 example shards: two padding rows
  settings = dict(r=0.3, beta=1e-2, solver=solver, max_steps=60)
  alone = poly.fit(X, y, **settings)
  sharded = poly.fit(X, y, mesh=sharding.make_mesh(examples=8), **settings)
  assert _rel(sharded.objective, alone.objective) < 1e-5
  assert abs(float(sharded.gap) - float(alone.gap)) <= 1e-5 * float(alone.objective)
  # The SDP's endgame stops on round-off, which the sharded sums order differently: its best
  # points agree to the flatness of the objective there, not to 1e-5.
  np.testing.assert_allclose(np.asarray(sharded.Z), np.asarray(alone.Z),
                             atol=1e-2 if solver == "sdp" else 1e-5)


@pytest.mark.parametrize("settings", [
    dict(classes=2, eps=0.1, solver="admm"),
    dict(classes=3, eps=0.1, p=2, solver="admm"),
    dict(classes=3, solver="admm"),
    dict(classes=2, eps=0.1, solver="penalty"),
    dict(classes=3, loss="squared", solver="al"),
    dict(classes=3, gated=True, loss="squared", solver="apg"),
], ids=["robust-admm", "robust-l2-multiclass-admm", "multiclass-admm", "robust-penalty", "al",
        "gated-apg"])
def test_uneven_n_is_padded_by_rows_that_count_nowhere_relu(settings):
  settings = dict(settings)
  X, y = data(n=30, classes=settings.pop("classes"))
  fit = lambda **kw: relu.fit(X, y, num_patterns=8, key=KEY, max_steps=300, **settings, **kw)
  alone, sharded = fit(), fit(mesh=sharding.make_mesh(examples=4, model=2))
  assert _rel(sharded.objective, alone.objective) < 1e-5
  np.testing.assert_allclose(np.asarray(sharded.weights), np.asarray(alone.weights), atol=1e-5)


def test_padding_rows_would_bind_without_the_mask():
  """The check above can fail: an unmasked zero row closes the robust cones (ε‖w‖ ≤ 0)."""
  X, y = data(n=30)
  Xp, yp = np.vstack([X, np.zeros((2, 4))]), np.concatenate([y, [0.0, 0.0]])
  problem = relu.check_problem(X, y, eps=0.1, p="inf", beta=1e-3, num_patterns=8, gates=None,
                               gated=False, loss="hinge", key=KEY)
  W = relu.fit(X, y, eps=0.1, gates=problem.gates, max_steps=300).weights
  padded = relu.Targets(*(sharding.pad(a, 2) for a in problem.targets))
  D = sharding.pad(problem.D, 2)
  assert not np.asarray(relu.counted(padded))[-2:].any() and yp[-1] == 0
  assert float(relu.constraint_violation(W, Xp, D, 0.1, 1)) > 1e-3


def test_bad_meshes_are_refused_by_name():
  X, y = data(n=30)
  with pytest.raises(ValueError, match="solver='barrier' needs n divisible"):
    relu.fit(X, y, key=KEY, solver="barrier", mesh=sharding.make_mesh(examples=4))
  with pytest.raises(ValueError, match="mesh must be"):
    poly.fit(X, y, mesh=jax.make_mesh((2,), ("data",)))
  with pytest.raises(ValueError, match="needs 32 devices"):
    sharding.make_mesh(examples=16, model=2)
  with pytest.raises(ValueError, match="model must be"):
    sharding.make_mesh(model=0)
