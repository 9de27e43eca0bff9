"""Polynomial heads: the lift, Danskin gradients, the barrier solver against the CVXPY oracle."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from cvxjax import poly
from cvxjax.core import activations, psd
from cvxjax.core import poly as poly_core
from cvxjax.solvers import barrier, interior, loop, sdp, working_set

pytest.importorskip("cvxpy")

ACT = activations.DEFAULT_ACTIVATION
# Compiled once per shape: run eagerly, the solvers' mathematics compiles primitive by primitive.
_worst_case = jax.jit(poly.worst_case, static_argnames=("r", "activation", "block_rows"))
_objective = jax.jit(poly.objective, static_argnames=("r", "beta", "activation"))


def _random_problem(seed, n=24, d=3):
  rng = np.random.default_rng(seed)
  X = rng.normal(size=(n, d))
  y = np.where(X[:, 0] + 0.7 * rng.normal(size=n) > 0, 1.0, -1.0)
  return X, y


def _breast_cancer(n=30, d=5):
  X, y = load_breast_cancer(return_X_y=True)
  X = X[:n, :d]
  return (X - X.mean(0)) / X.std(0), 2.0 * y[:n] - 1.0


def test_relu_fit_reproduces_the_papers_rounding():
  fit = activations.relu_fit(5.0)
  np.testing.assert_allclose(fit, (0.09375, 0.5, 0.46875))
  np.testing.assert_allclose(ACT, np.round(fit, 2))


def test_lift_of_a_neuron_is_the_neuron():
  rng = np.random.default_rng(0)
  u = rng.normal(size=4)
  u /= np.linalg.norm(u)
  alpha = 1.7
  v = np.append(u, 1.0)
  X = rng.normal(size=(9, 4))
  expected = alpha * activations.polynomial(jnp.asarray(X @ u), ACT)
  got = poly.lifted_predict(jnp.asarray(alpha * np.outer(v, v)), jnp.asarray(X), ACT)
  np.testing.assert_allclose(got, expected, rtol=1e-12)
  lifted = jax.vmap(poly.lift, in_axes=(0, None))(jnp.asarray(X), ACT)
  np.testing.assert_allclose(jnp.sum(lifted * alpha * np.outer(v, v), axis=(1, 2)), expected,
                             rtol=1e-12)


def test_danskin_gradient_matches_finite_differences():
  X, y = _random_problem(1, n=10, d=3)
  rng = np.random.default_rng(2)
  Z, Zp = (jnp.asarray(psd.project_trace_psd(jnp.asarray(rng.normal(size=(4, 4)))))
           for _ in range(2))
  Xj, yj = jnp.asarray(X), jnp.asarray(y)
  margin_sum = lambda Z: jnp.sum(poly.margins(Z - Zp, Xj, yj, 0.4, ACT))
  exact_sum = jax.jit(lambda Z: jnp.sum(poly.worst_case(Z - Zp, Xj, yj, 0.4, ACT).margin))
  grad = jax.jit(jax.grad(margin_sum))(Z)
  for _ in range(5):
    E = rng.normal(size=(4, 4))
    E = jnp.asarray(E + E.T)
    h = 1e-6
    fd = (exact_sum(Z + h * E) - exact_sum(Z - h * E)) / (2 * h)
    np.testing.assert_allclose(jnp.sum(grad * E), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("rows", [5, 8, 20])
def test_worst_case_in_row_blocks_equals_one_batch(rows):
  X, y = _random_problem(3, n=20, d=3)
  rng = np.random.default_rng(4)
  D = jnp.asarray(psd.symmetrize(rng.normal(size=(4, 4))))
  one, blocked = (_worst_case(D, jnp.asarray(X), jnp.asarray(y), r=0.4, activation=ACT,
                               block_rows=block_rows) for block_rows in (None, rows))
  for field in one._fields:
    np.testing.assert_allclose(getattr(blocked, field), getattr(one, field), atol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_cut_points_lie_in_the_ball(dtype):
  # Worst cases on the sphere, rotated out of D₁'s eigenbasis, and points a few ulps outside.
  X, y = _random_problem(5, n=200, d=6)
  rng = np.random.default_rng(6)
  D = jnp.asarray(psd.symmetrize(rng.normal(size=(7, 7))), dtype)
  X, y, r = jnp.asarray(X, dtype), jnp.asarray(y, dtype), 0.7
  wc = _worst_case(D, X, y, r=r, activation=ACT)
  outside = wc.delta * (1 + 3 * jnp.finfo(dtype).eps)
  inside = 0.5 * wc.delta
  for delta in (wc.delta, outside, inside):
    U = poly.cut_points(X, delta, jnp.asarray(r, dtype))
    # ‖u_i − x_i‖ in float64, where the subtraction of the float32 points is exact.
    norms = np.linalg.norm(np.asarray(U, np.float64) - np.asarray(X, np.float64), axis=1)
    assert np.all(norms <= r)
  # Points well inside the ball are kept; the sphere's move by a few ulps at most.
  np.testing.assert_array_equal(poly.cut_points(X, inside, r), X + inside)
  np.testing.assert_allclose(poly.cut_points(X, wc.delta, r), X + wc.delta,
                             rtol=0, atol=16 * float(jnp.finfo(dtype).eps))


def test_barrier_newton_model_matches_finite_differences():
  rng = np.random.default_rng(0)
  n, d, r, beta, t = 12, 3, 0.4, 0.05, 3.0
  X, s = jnp.asarray(rng.normal(size=(n, d))), jnp.asarray(np.sign(rng.normal(size=n)))
  m = d + 1
  lay = barrier.layout(m)
  N = len(lay.rows)
  A = rng.normal(size=(2, m, m))
  Z, Zp = (jnp.asarray(a @ a.T + 0.5 * np.eye(m)) for a in A)
  local = jax.jit(lambda Z, Zp: barrier._local_model(Z, Zp, t, X, s, r, beta, ACT, lay))(Z, Zp)
  hessian = np.eye(2 * N) + local.curvature + local.V.T @ (local.weight[:, None] * local.V)

  @jax.jit
  def value(x):  # Φ_t along scaled directions dZ = L dZ̃ Lᵀ
    dZ, dZp = barrier.smat(x[:N], lay, m), barrier.smat(x[N:], lay, m)
    return barrier._barrier_value(Z + local.L @ dZ @ local.L.T, Zp + local.Lp @ dZp @ local.Lp.T,
                                  t, X, s, r, beta, ACT)

  @jax.jit
  def fd_grad(x, h=1e-6):
    basis = jnp.eye(2 * N)
    return jax.vmap(lambda e: (value(x + h * e) - value(x - h * e)) / (2 * h))(basis)

  x0 = jnp.zeros(2 * N)
  np.testing.assert_allclose(local.grad, fd_grad(x0), atol=1e-6 * np.abs(local.grad).max())
  h = 1e-4
  fd_hessian = jax.vmap(lambda e: (fd_grad(x0 + h * e) - fd_grad(x0 - h * e)) / (2 * h),
                        out_axes=1)(jnp.eye(2 * N))
  np.testing.assert_allclose(hessian, fd_hessian, atol=1e-4 * np.abs(hessian).max())


def test_curvature_times_is_the_derivative_of_the_worst_case_lift_sum():
  # −Σ α_i ∂(s_iΦ(x_i + δ_i(D)))/∂D [dD] by central differences of the exact worst cases.
  rng = np.random.default_rng(1)
  n, d, r = 10, 3, 0.4
  X, s = jnp.asarray(rng.normal(size=(n, d))), jnp.asarray(np.sign(rng.normal(size=n)))
  alpha = jnp.asarray(rng.uniform(size=n))
  D, dD = (jnp.asarray(psd.symmetrize(a)) for a in rng.normal(size=(2, d + 1, d + 1)))
  wc = _worst_case(D, X, s, r=r, activation=ACT)
  curvature = barrier.worst_case_curvature(wc, s, r, ACT)
  expected = interior._curvature_times(curvature, alpha, X + wc.delta, ACT, dD)
  lift_sum = lambda D: poly.weighted_lift_sum(X + _worst_case(D, X, s, r=r, activation=ACT).delta,
                                              alpha * s, ACT)
  h = 1e-6
  fd = -(lift_sum(D + h * dD) - lift_sum(D - h * dD)) / (2 * h)
  np.testing.assert_allclose(expected, fd, atol=1e-6 * np.abs(fd).max())


def test_nt_scaling_maps_both_points_to_one_diagonal():
  rng = np.random.default_rng(2)
  A, B = rng.normal(size=(2, 5, 5))
  Z, S = jnp.asarray(A @ A.T + 0.1 * np.eye(5)), jnp.asarray(B @ B.T + 0.1 * np.eye(5))
  R, lam = interior.nt_scaling(Z, S)
  W = R @ R.T
  np.testing.assert_allclose(W @ S @ W, Z, rtol=1e-9, atol=1e-9 * np.abs(Z).max())
  np.testing.assert_allclose(R.T @ S @ R, np.diag(lam), atol=1e-9 * lam.max())
  np.testing.assert_allclose(np.linalg.solve(R, np.linalg.solve(R, Z).T), np.diag(lam),
                             atol=1e-9 * lam.max())


PROBLEMS = {
    "random-plain": (lambda: _random_problem(3), 0.0, 1e-2),
    "random-adversarial": (lambda: _random_problem(4), 0.5, 1e-2),
    "breast-cancer-plain": (_breast_cancer, 0.0, 1e-2),
    "breast-cancer-adversarial": (_breast_cancer, 0.3, 1e-2),
}


@functools.cache
def _oracle(name):
  data, r, beta = PROBLEMS[name]
  X, y = data()
  return X, y, r, beta, poly.exact_fit(X, y, r=r, beta=beta, solver="CLARABEL")


@functools.cache
def _solved(name, solver="auto"):
  X, y, r, beta, oracle = _oracle(name)
  head = poly.fit(X, y, r=r, beta=beta, tol=1e-8, solver=solver)
  return X, y, r, beta, head, oracle


@pytest.mark.parametrize("solver", ["interior", "barrier"])
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_fit_reaches_the_cvxpy_optimum(name, solver):
  X, y, r, beta, head, oracle = _solved(name, solver)
  assert abs(float(head.objective) - float(oracle.objective)) <= 1e-4 * float(oracle.objective)
  # The certificate: gap ≥ objective − optimum (the oracle is accurate to ~1e-7 here) …
  assert float(head.gap) >= float(head.objective) - float(oracle.objective) - 1e-6
  # … and it fell under the tolerance.
  assert float(head.gap) <= 1e-8 * float(head.objective)
  for Z in (head.Z[0], head.Zp[0]):
    scale = np.abs(Z).max()
    assert np.linalg.eigvalsh(Z).min() >= -1e-6 * scale
    assert abs(float(psd.trace_residual(Z))) <= 1e-6 * scale
  assert float(_objective(head.Z[0], head.Zp[0], jnp.asarray(X), jnp.asarray(y), r=r, beta=beta,
                          activation=ACT)) == pytest.approx(float(head.objective), rel=1e-12)


def test_interior_certifies_in_fewer_steps_than_the_barrier():
  for name in sorted(PROBLEMS):
    assert int(_solved(name, "interior")[4].steps) < int(_solved(name, "barrier")[4].steps), name


@pytest.mark.parametrize("solver", ["interior", "barrier"])
def test_gap_is_valid_before_convergence(solver):
  X, y, r, beta, oracle = _oracle("breast-cancer-adversarial")
  for steps in (5, 15, 30):
    head = poly.fit(X, y, r=r, beta=beta, tol=1e-8, max_steps=steps, solver=solver)
    assert float(head.gap) >= float(head.objective) - float(oracle.objective) - 1e-6
    assert float(head.objective) >= float(oracle.objective) - 1e-6


def test_interior_gap_stays_valid_where_worst_cases_have_kinks():
  # r = 2 puts worst cases in the trust-region hard case, where the Newton model misses a kink:
  # whatever the path does, the best point and the bound it reports hold.
  X, y = _random_problem(4)
  oracle = poly.exact_fit(X, y, r=2.0, beta=1e-2, solver="CLARABEL")
  head = poly.fit(X, y, r=2.0, beta=1e-2, tol=1e-8, max_steps=60, solver="interior")
  assert float(head.objective) >= float(oracle.objective) - 1e-6
  assert float(head.gap) >= float(head.objective) - float(oracle.objective) - 1e-6
  assert float(head.objective) <= 1.01 * float(oracle.objective)


def test_sdp_reaches_the_cvxpy_optimum():
  # The breast-cancer problems reach the SDP through the kink test and the validity test.
  X, y, r, beta, oracle = _oracle("random-adversarial")
  head = poly.fit(X, y, r=r, beta=beta, tol=1e-5, solver="sdp")
  assert abs(float(head.objective) - float(oracle.objective)) <= 1e-5 * float(oracle.objective)
  assert float(head.gap) >= float(head.objective) - float(oracle.objective) - 1e-6
  assert float(head.gap) <= 1e-5 * float(head.objective)
  for Z in (head.Z[0], head.Zp[0]):
    assert np.linalg.eigvalsh(Z).min() >= -1e-6 * np.abs(Z).max()


def test_auto_certifies_where_worst_cases_have_kinks():
  # At r = 1 worst cases sit in the trust-region hard case: the interior-point path on the exact
  # margins stalls far above the optimum, and "auto" hands the head to the S-lemma SDP.
  X, y = _breast_cancer()
  oracle = poly.exact_fit(X, y, r=1.0, beta=1e-2, solver="CLARABEL")
  stalled = poly.fit(X, y, r=1.0, beta=1e-2, tol=1e-5, solver="interior", max_steps=20)
  assert float(stalled.objective) > 1.1 * float(oracle.objective)
  head = poly.fit(X, y, r=1.0, beta=1e-2, tol=1e-5)
  assert float(head.gap) <= 1e-5 * float(head.objective)
  assert float(head.gap) >= float(head.objective) - float(oracle.objective) - 1e-6
  assert float(head.objective) == pytest.approx(float(oracle.objective), rel=1e-5)


def _recorded_working_sets(solver, X, S, r, beta, max_steps=450):
  """`solver.run` on one device, with the examples each stage solved (its row count) recorded."""
  rows = []

  def solve(stage, X, S, steps, directory):
    rows.append(X.shape[0])
    problem = poly_core.Problem(jnp.asarray(X), jnp.asarray(S), r=r, beta=beta, activation=ACT)
    return loop.run(stage, problem, max_steps=steps, checkpoint_dir=directory)

  (Z, Zp), summary = solver.run(X, S, r=r, beta=beta, activation=ACT, max_steps=max_steps,
                                checkpoint_dir=None, solve=solve)
  return Z, Zp, summary, rows


def _separated_problem(seed, n=96, d=3):
  """Labels by the first coordinate, which spreads 3× the others: most margins clear 1."""
  rng = np.random.default_rng(seed)
  X = rng.normal(size=(n, d)) * np.r_[3.0, np.ones(d - 1)]
  return X, np.sign(X[:, 0] + 0.3 * rng.normal(size=n))


def test_sdp_on_working_sets_reaches_the_cvxpy_optimum_on_a_fraction_of_the_examples():
  # The interior-point method stops after 15 steps, short of the optimum, and the SDP runs on
  # the examples near their margin; its point and bound hold for the full problem.
  X, y, r = *_separated_problem(0), 1.0
  oracle = poly.exact_fit(X, y, r=r, beta=1e-2)
  solver = working_set.Solver(tol=1e-6, switch_after=15, bucket=8)
  Z, Zp, summary, rows = _recorded_working_sets(solver, X, y[None], r, 1e-2)
  assert rows[0] == 96 and len(rows) >= 2 and max(rows[1:]) < 96
  objective, gap = float(summary.objective), float(summary.gap)
  assert objective == pytest.approx(float(oracle.objective), rel=1e-5)
  assert gap <= 1e-6 * objective
  assert gap >= objective - float(oracle.objective) - 1e-6
  assert float(_objective(Z[0], Zp[0], jnp.asarray(X), jnp.asarray(y), r=r, beta=1e-2,
                          activation=ACT)) == pytest.approx(objective, rel=1e-12)


def test_working_set_grows_by_the_examples_it_left_out_that_cost():
  solver = working_set.Solver(slack=0.5, bucket=4)
  margins = np.array([3.0, 0.2, 1.4, 2.0, 1.6, 0.9, 5.0, 1.7, 4.0])
  first = solver.working_set(margins, np.zeros(9, bool), 1.5)
  # Below 1.5: examples 1, 2, 5; filled to 4 with the next smallest margin (4: 1.6).
  np.testing.assert_array_equal(np.flatnonzero(first), [1, 2, 4, 5])
  # Later rounds keep the set, add the examples below 1 it left out (6), then fill up to 8 with
  # the smallest other margins (7, 3, 0; example 8's 4.0 is left out).
  margins = np.array([3.0, 0.2, 1.4, 2.0, 1.6, 0.9, 0.5, 1.7, 4.0])
  grown = solver.working_set(margins, first, 1.0)
  np.testing.assert_array_equal(np.flatnonzero(grown), [0, 1, 2, 3, 4, 5, 6, 7])
  margins[8] = 0.1  # one more: the next multiple of 4 passes n, so every example
  assert solver.working_set(margins, grown, 1.0).all()


def test_interior_and_sdp_resume_where_an_uninterrupted_run_ends(tmp_path):
  X, y = _separated_problem(0)  # the problem above: the same compilations
  kwargs = dict(r=1.0, beta=1e-2, tol=1e-6, checkpoint_every=7,
                solver=working_set.Solver(tol=1e-6, switch_after=15, bucket=8))
  whole = poly.fit(X, y, **kwargs)
  assert int(whole.steps) > 22  # the SDP ran
  with pytest.warns(UserWarning, match="stopped after 22 steps"):
    halfway = poly.fit(X, y, max_steps=22, checkpoint_dir=str(tmp_path), **kwargs)
  # Stopped inside the SDP stage, the gap still bounds the distance to CVXPY's optimum.
  optimum = float(poly.exact_fit(X, y, r=1.0, beta=1e-2).objective)
  assert float(halfway.gap) >= float(halfway.objective) - optimum - 1e-6
  resumed = poly.fit(X, y, checkpoint_dir=str(tmp_path), **kwargs)
  assert int(resumed.steps) == int(whole.steps)
  np.testing.assert_array_equal(resumed.Z, whole.Z)
  assert float(resumed.gap) == float(whole.gap)


def test_sdp_gap_is_valid_before_convergence():
  X, y, r, beta, oracle = _oracle("breast-cancer-adversarial")
  for steps in (5, 15, 25):
    head = poly.fit(X, y, r=r, beta=beta, tol=1e-8, max_steps=steps, solver="sdp")
    assert float(head.gap) >= float(head.objective) - float(oracle.objective) - 1e-6
    assert float(head.objective) >= float(oracle.objective) - 1e-6


def test_lmi_map_is_the_margin_form_and_its_adjoint_the_lift_sum():
  rng = np.random.default_rng(0)
  n, d = 6, 3
  X, s = rng.normal(size=(n, d)), np.where(rng.normal(size=n) > 0, 1.0, -1.0)
  D = psd.symmetrize(jnp.asarray(rng.normal(size=(d + 1, d + 1))))
  delta = rng.normal(size=(n, d))
  T, scale = sdp.shifts(jnp.asarray(X)), sdp.activation_scale(d + 1, ACT, jnp.float64)
  B = sdp.lmi_map(D, T, jnp.asarray(s), scale)
  v = np.concatenate([delta, np.ones((n, 1))], axis=1)
  np.testing.assert_allclose(np.einsum("ia,iab,ib->i", v, B, v),
                             s * poly.lifted_predict(D, jnp.asarray(X + delta), ACT), rtol=1e-12)
  # Y_i = α_i v_i v_iᵀ gives the cut dual's lift sum Σ α_i s_i Φ(x_i + δ_i).
  alpha = rng.uniform(size=n)
  Y = alpha[:, None, None] * v[:, :, None] * v[:, None, :]
  np.testing.assert_allclose(
      sdp.lmi_adjoint_sum(jnp.asarray(Y), T, jnp.asarray(s), scale),
      poly_core.weighted_lift_sum(jnp.asarray(X + delta), jnp.asarray(alpha * s), ACT),
      rtol=1e-12, atol=1e-12)


def test_certified_block_multipliers_bound_every_worst_case_margin():
  # The certificate's premise: Y_i pulled into the dual's set satisfies
  # ⟨B_i(D), Y_i⟩ ≥ α_i m_i(D) for every D, checked against the exact worst cases.
  rng = np.random.default_rng(1)
  n, d, r = 8, 3, 0.7
  X = jnp.asarray(rng.normal(size=(n, d)))
  s = jnp.asarray(np.where(rng.normal(size=n) > 0, 1.0, -1.0))
  A = rng.normal(size=(n, d + 1, d + 1))
  Y = sdp._certified_multipliers(jnp.asarray(A @ np.swapaxes(A, 1, 2)), r, jnp.ones(n, bool))
  alpha = np.asarray(Y[:, -1, -1])
  assert np.all(alpha <= 1 + 1e-12)
  assert np.all(np.trace(np.asarray(Y)[:, :-1, :-1], axis1=1, axis2=2) <= r**2 * alpha + 1e-12)
  assert np.linalg.eigvalsh(np.asarray(Y)).min() >= -1e-12
  T, scale = sdp.shifts(X), sdp.activation_scale(d + 1, ACT, jnp.float64)
  for _ in range(5):
    D = psd.symmetrize(jnp.asarray(rng.normal(size=(d + 1, d + 1))))
    margins = _worst_case(D, X, s, r=r, activation=ACT).margin
    value = jnp.einsum("iab,iab->i", sdp.lmi_map(D, T, s, scale), Y)
    assert np.all(np.asarray(value) >= alpha * np.asarray(margins) - 1e-10)


def test_congruence_form_and_matrix_match_their_definitions():
  rng = np.random.default_rng(2)
  m = 4
  lay = barrier.layout(m)
  V = psd.symmetrize(jnp.asarray(rng.normal(size=(3, m, m))))
  R = jnp.asarray(rng.normal(size=(m, m)))
  form, matrix = sdp.congruence_form(V, lay, m), sdp.congruence_matrix(R, lay, m)
  for k in range(len(lay.rows)):
    basis = barrier.smat(jnp.eye(len(lay.rows))[k], lay, m)
    expected = barrier.svec(jnp.einsum("iab,bc,icd->ad", V, basis, V), lay)
    np.testing.assert_allclose(form[:, k], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(matrix[:, k], barrier.svec(R @ basis @ R.T, lay), atol=1e-12)


def test_projected_baseline_is_feasible_and_its_gap_valid():
  X, y, r, beta, oracle = _oracle("random-adversarial")
  head = poly.fit(X, y, r=r, beta=beta, solver="projected", max_steps=50)
  assert float(head.objective) >= float(oracle.objective) - 1e-6
  assert float(head.gap) >= float(head.objective) - float(oracle.objective) - 1e-6
  for Z in (head.Z[0], head.Zp[0]):
    assert abs(float(psd.trace_residual(Z))) <= 1e-8 * (1 + np.abs(Z).max())


@pytest.mark.parametrize("solver", ["interior", "barrier"])
def test_one_vs_all_heads_classify_three_classes(solver):
  rng = np.random.default_rng(7)
  centres = 2.5 * rng.normal(size=(3, 3))
  y = np.repeat(np.arange(3), 10)
  X = centres[y] + 0.5 * rng.normal(size=(30, 3))
  head = poly.fit(X, y, r=0.2, beta=1e-2, tol=1e-8, solver=solver)
  assert head.Z.shape == (3, 4, 4) and not head.binary
  assert float(np.mean(head.predict(X) == y)) >= 0.95
  oracle = poly.exact_fit(X, y, r=0.2, beta=1e-2)
  assert float(head.objective) == pytest.approx(float(oracle.objective), rel=1e-4)
  X_new = centres[y] + 0.5 * rng.normal(size=(30, 3))
  assert float(np.mean(head.predict(X_new) == y)) >= 0.8


@pytest.mark.parametrize("solver", ["interior", "barrier", "sdp"])
def test_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, solver):
  X, y = _random_problem(4)
  kwargs = dict(r=0.5, beta=1e-2, tol=1e-8, checkpoint_every=7, solver=solver)
  whole = poly.fit(X, y, **kwargs)
  halfway = poly.fit(X, y, max_steps=int(whole.steps) // 2, checkpoint_dir=str(tmp_path), **kwargs)
  assert int(halfway.steps) < int(whole.steps)
  resumed = poly.fit(X, y, checkpoint_dir=str(tmp_path), **kwargs)
  assert int(resumed.steps) == int(whole.steps)
  np.testing.assert_array_equal(resumed.Z, whole.Z)
  assert float(resumed.objective) == float(whole.objective)


def test_barrier_step_is_vmappable_over_heads():
  X, y = _random_problem(5, n=12, d=2)
  X, S = jnp.asarray(X), jnp.asarray(np.stack([y, -y]))
  problem = poly_core.Problem(X, S, r=0.3, beta=0.1, activation=ACT)
  state = loop.run(barrier.Solver(tol=1e-6), problem, max_steps=3).state
  assert state.Z.shape == (2, 3, 3) and np.all(np.asarray(state.step) == 3)


BAD_INPUTS = [
    (dict(X=np.ones((5, 2)), y=np.ones(4)), "y"),
    (dict(X=np.array([[0.0, np.nan]] * 3), y=np.ones(3)), "X"),
    (dict(X=np.array([[0.0, np.inf]] * 3), y=np.ones(3)), "X"),
    (dict(X=np.ones((3, 2)), y=np.array([1.0, -1.0, 2.0])), "y"),
    (dict(X=np.ones((3, 2)), y=np.array([0.0, 0.5, 1.0])), "y"),
    (dict(X=np.ones(3), y=np.ones(3)), "X"),
    (dict(X=np.ones((3, 2)), y=np.ones(3), r=-0.1), "r"),
    (dict(X=np.ones((3, 2)), y=np.ones(3), beta=0.0), "beta"),
    (dict(X=np.ones((3, 2)), y=np.ones(3), beta=-1.0), "beta"),
    (dict(X=np.ones((3, 2)), y=np.ones(3), solver="newton"), "solver"),
    (dict(X=np.ones((3, 2)), y=np.ones(3), solver="sdp"), "solver"),  # r = 0: no S-lemma LMI
]


@pytest.mark.parametrize("kwargs,name", BAD_INPUTS)
def test_bad_input_raises_value_error_naming_the_argument(kwargs, name):
  with pytest.raises(ValueError, match=rf"^{name}\b"):
    poly.fit(**kwargs)


def test_projected_resume_restores_the_optimiser_state(tmp_path):
  X, y = _random_problem(4)
  kwargs = dict(r=0.5, beta=1e-2, solver="projected", checkpoint_every=5)
  whole = poly.fit(X, y, max_steps=20, **kwargs)
  poly.fit(X, y, max_steps=10, checkpoint_dir=str(tmp_path), **kwargs)
  resumed = poly.fit(X, y, max_steps=20, checkpoint_dir=str(tmp_path), **kwargs)
  assert int(resumed.steps) == 20
  np.testing.assert_array_equal(resumed.Z, whole.Z)
  assert float(resumed.objective) == float(whole.objective)
