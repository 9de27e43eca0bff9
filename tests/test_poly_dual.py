"""Feasible dual points and the primal–dual solver against CVXPY's optima."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest

from cvxjax import activations, poly, psd
from cvxjax.core import poly_dual

cp = pytest.importorskip("cvxpy")

ACT = activations.DEFAULT_ACTIVATION


def _cvxpy_cone_max(M):
  """max ⟨M, Z⟩ over Z ∈ K with z₄ = 1, by Clarabel."""
  m = M.shape[0]
  Z = cp.Variable((m, m), PSD=True)
  G = np.diag([1.0] * (m - 1) + [-1.0])
  problem = cp.Problem(cp.Maximize(cp.trace(M @ Z)), [cp.trace(G @ Z) == 0, Z[-1, -1] == 1])
  problem.solve(solver="CLARABEL")
  return problem.value


@pytest.mark.parametrize("seed,hard", [(0, False), (1, False), (2, True)])
def test_dual_cone_margin_is_cvxpys_maximum(seed, hard):
  rng = np.random.default_rng(seed)
  A = rng.normal(size=(5, 5))
  M = A + A.T
  if hard:  # m₂ without weight on the top eigenvector of M₁ (the hard case)
    top = np.linalg.eigh(M[:-1, :-1])[1][:, -1]
    M[:-1, -1] -= top * (top @ M[:-1, -1])
    M[-1, :-1] = M[:-1, -1]
  plus, minus = poly_dual.dual_cone_margins(jnp.asarray(M))
  assert float(plus.value) == pytest.approx(_cvxpy_cone_max(M), rel=1e-6, abs=1e-7)
  assert float(minus.value) == pytest.approx(_cvxpy_cone_max(-M), rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("seed", [0, 1])
def test_feasible_scale_makes_both_lmis_hold(seed):
  rng = np.random.default_rng(seed)
  A = rng.normal(size=(6, 6))
  M, beta = jnp.asarray(A + A.T), 0.3
  theta, mu = poly_dual.feasible_scale(M, beta)
  assert 0 < float(theta) < 1  # a random M violates them at θ = 1
  G = psd.lorentz_form(6, M.dtype)
  E = jnp.zeros((6, 6)).at[-1, -1].set(beta)
  for sign, multiplier in ((-1, mu[0]), (1, mu[1])):
    lowest = np.linalg.eigvalsh(E + sign * theta * M - multiplier * G)[0]
    assert lowest >= -1e-12 * float(jnp.abs(M).max())
  # θ is the largest such scale: just above it one LMI fails for every μ.
  bigger = 1.001 * theta * M
  margins = (float(poly.max_min_eigenvalue(E - bigger)), float(poly.max_min_eigenvalue(E + bigger)))
  assert min(margins) < 0


def _problem(kind):
  rng = np.random.default_rng(11)
  if kind == "one-vs-all":
    centres = 2.0 * rng.normal(size=(3, 3))
    y = np.repeat(np.arange(3), 6)
    return centres[y] + 0.7 * rng.normal(size=(18, 3)), y
  X = rng.normal(size=(16, 3))
  return X, np.where(X[:, 0] + 0.7 * rng.normal(size=16) > 0, 1.0, -1.0)


CASES = {"plain": ("binary", 0.0), "adversarial": ("binary", 0.5),
         "one-vs-all-adversarial": ("one-vs-all", 0.3)}


@functools.cache
def _oracle(name):
  kind, r = CASES[name]
  X, y = _problem(kind)
  return X, y, r, poly.exact_fit(X, y, r=r, beta=1e-2)


@pytest.mark.parametrize("name", sorted(CASES))
def test_projected_certificate_is_valid_at_every_iterate(name):
  X, y, r, oracle = _oracle(name)
  optimum = float(oracle.objective)
  for steps in (1, 10, 60):
    with pytest.warns(UserWarning, match="certified gap"):
      head = poly.fit(X, y, r=r, beta=1e-2, solver="projected", max_steps=steps, tol=1e-9)
    objective, gap = float(head.objective), float(head.gap)
    assert objective >= optimum - 1e-7
    assert gap >= objective - optimum - 1e-7  # the lower bound is below the optimum
    assert gap <= objective  # not a trace bound's 10⁷: the restored α are feasible


@pytest.mark.parametrize("name", sorted(CASES))
def test_any_multipliers_bound_the_optimum_from_below(name):
  X, y, r, oracle = _oracle(name)
  S = np.stack([y]) if oracle.binary else np.where(np.arange(3)[:, None] == y[None, :], 1.0, -1.0)
  rng = np.random.default_rng(3)
  Xj = jnp.asarray(X)
  for scale in (0.0, 0.5, 1.0):  # the oracle's own point, and two points away from it
    total_lower = 0.0
    for c, s in enumerate(S):
      Z, Zp = (psd.project_trace_psd(W[c] + scale * rng.normal(size=W[c].shape))
               for W in (oracle.Z, oracle.Zp))
      for alpha in (None, jnp.asarray(rng.uniform(size=len(s)))):
        lower = poly_dual.certificate(Z, Zp, Xj, jnp.asarray(s), alpha, r=r, beta=1e-2,
                                         activation=ACT).lower
        assert np.isfinite(float(lower))
      total_lower += float(lower)
    assert total_lower <= float(oracle.objective) + 1e-7


# The adversarial head certifies 1.3% in 20000 iterations: the averaged dual converges like 1/k.
@pytest.mark.parametrize("name,tol", [("plain", 1e-3), ("adversarial", 2e-2)])
def test_primal_dual_solver_certifies_the_cvxpy_optimum(name, tol):
  X, y, r, oracle = _oracle(name)
  optimum = float(oracle.objective)
  head = poly.fit(X, y, r=r, beta=1e-2, solver="primal_dual", tol=tol, max_steps=20000)
  objective, gap = float(head.objective), float(head.gap)
  assert gap <= tol * objective
  assert gap >= objective - optimum - 1e-7
  assert objective - optimum <= tol * optimum
  for Z in (head.Z[0], head.Zp[0]):
    assert np.linalg.eigvalsh(Z).min() >= -1e-9 * np.abs(Z).max()
    assert abs(float(psd.trace_residual(Z))) <= 1e-9 * (1 + np.abs(Z).max())


def test_primal_dual_stopped_early_warns_with_a_valid_gap():
  X, y, r, oracle = _oracle("adversarial")
  with pytest.warns(UserWarning, match=r"primal_dual solver stopped after 64 steps"):
    head = poly.fit(X, y, r=r, beta=1e-2, solver="primal_dual", tol=1e-6, max_steps=64)
  assert float(head.gap) >= float(head.objective) - float(oracle.objective) - 1e-7


def test_primal_dual_refuses_chunks():
  X, y = _problem("binary")
  with pytest.raises(ValueError, match="^chunk_size"):
    poly.fit(X, y, solver="primal_dual", chunk_size=4)
