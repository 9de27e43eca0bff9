"""Tests of `cvxjax.decomposition`: the recovered two-layer network must reproduce the head."""

import jax
import numpy as np
import pytest

from cvxjax import poly
from cvxjax.core import psd
from cvxjax.decomposition import decompose, network_predict, neural_decomposition

ACTIVATION = (0.09, 0.5, 0.47)

_project = jax.jit(psd.project_trace_psd)


def _lorentz(m):
  return np.diag(np.r_[np.ones(m - 1), -1.0])


def _random_cone_point(rng, m, rank, spread):
  """A point of K: a random PSD matrix of the given rank and eigenvalue spread, projected."""
  Q, _ = np.linalg.qr(rng.normal(size=(m, m)))
  spectrum = np.zeros(m)
  spectrum[:rank] = 10.0 ** rng.uniform(-spread, 0.0, size=rank)
  Z = np.asarray(_project((Q * spectrum) @ Q.T))
  # The projection must have moved Y by little, so that Z is well inside K's linear part.
  assert abs(np.trace(_lorentz(m) @ Z)) <= 1e-12 * np.trace(Z)
  return Z


@pytest.mark.parametrize("m, rank, spread", [(2, 2, 1), (4, 4, 6), (4, 2, 2), (6, 6, 8),
                                             (6, 1, 0)])
def test_rows_factor_z_and_lie_on_the_cone_boundary(m, rank, spread):
  rng = np.random.default_rng(m * 10 + rank)
  for _ in range(5):
    Z = _random_cone_point(rng, m, rank, spread)
    P = neural_decomposition(Z)
    assert P.shape[1] == m and P.shape[0] <= m
    np.testing.assert_allclose(P.T @ P, Z, rtol=0, atol=1e-13 * np.abs(Z).max())
    g = np.einsum("ki,ij,kj->k", P, _lorentz(m), P)
    assert np.all(np.abs(g) <= 1e-12 * np.sum(P**2, axis=1))


def test_known_neurons_are_recovered_as_the_same_function():
  # Oracle: the network is built from unit neurons first; its lift is Σ α [u; 1][u; 1]ᵀ.
  rng = np.random.default_rng(0)
  d, width = 3, 7
  U = rng.normal(size=(width, d))
  U /= np.linalg.norm(U, axis=1, keepdims=True)
  alpha = rng.normal(size=width)
  lifted = np.concatenate([U, np.ones((width, 1))], axis=1)
  Z = np.einsum("k,ki,kj->ij", np.maximum(alpha, 0), lifted, lifted)
  Zp = np.einsum("k,ki,kj->ij", np.maximum(-alpha, 0), lifted, lifted)
  V, beta = decompose(Z[None], Zp[None], binary=True)
  X = rng.normal(size=(40, d))
  expected = (ACTIVATION[0] * (X @ U.T) ** 2 + ACTIVATION[1] * X @ U.T + ACTIVATION[2]) @ alpha
  got = np.asarray(network_predict(V, beta, X, ACTIVATION))
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * np.abs(expected).max())
  np.testing.assert_allclose(np.linalg.norm(V, axis=1), 1.0, atol=1e-12)
  assert V.shape[0] <= 2 * (d + 1)


def test_zero_head_has_no_neurons():
  Z = np.zeros((2, 4, 4))
  assert neural_decomposition(Z[0]).shape == (0, 4)
  U, alpha = decompose(Z, Z, binary=False)
  assert U.shape == (0, 3) and alpha.shape == (0, 2)


def _fit(seed, classes, r, solver, max_steps):
  rng = np.random.default_rng(seed)
  X = rng.normal(size=(16, 3))
  if classes == 2:
    y = np.where(X[:, 0] * X[:, 1] + 0.3 * X[:, 2] >= 0, 1, -1)
  else:
    y = np.argmax(X @ rng.normal(size=(3, classes)) + 0.5 * X**2 @ rng.normal(size=(3, classes)),
                  axis=1)
  return poly.fit(X, y, r=r, beta=0.05, activation=ACTIVATION, solver=solver,
                  max_steps=max_steps)


# One barrier head (full rank, eigenvalues down to the interior-point residue) and projected
# heads (cheap to compile) for the other combinations.
@pytest.mark.parametrize("classes, r, solver, max_steps", [
    (2, 0.0, "barrier", 12), (2, 0.3, "projected", 40), (3, 0.0, "projected", 40),
    (3, 0.3, "projected", 40)])
def test_fitted_head_is_reproduced_on_fresh_inputs(classes, r, solver, max_steps):
  head = _fit(classes, classes, r, solver, max_steps)
  U, alpha = decompose(head.Z, head.Zp, binary=head.binary)
  heads, d = head.Z.shape[0], head.Z.shape[1] - 1
  assert alpha.shape == ((U.shape[0],) if head.binary else (U.shape[0], heads))
  assert 0 < U.shape[0] <= 2 * (d + 1) * heads
  np.testing.assert_allclose(np.linalg.norm(U, axis=1), 1.0, atol=1e-8)
  # Block sparsity: each neuron feeds one output.
  if not head.binary:
    assert np.all(np.count_nonzero(alpha, axis=1) == 1)
  X = np.random.default_rng(99).normal(size=(50, d)) * 2.0
  scores = np.asarray(head.scores(X))
  got = np.asarray(network_predict(U, alpha, X, head.activation))
  assert got.shape == scores.shape
  assert np.abs(got - scores).max() <= 1e-8 * np.abs(scores).max()
  # Σ α [u; 1][u; 1]ᵀ of each head's neurons is D_c = Z_c − Z′_c.
  lifted = np.concatenate([U, np.ones((U.shape[0], 1))], axis=1)
  columns = alpha[:, None] if head.binary else alpha
  D = np.asarray(head.Z - head.Zp)
  for c in range(heads):
    rebuilt = np.einsum("k,ki,kj->ij", columns[:, c], lifted, lifted)
    np.testing.assert_allclose(rebuilt, D[c], rtol=0, atol=1e-8 * np.abs(D[c]).max())


@pytest.mark.parametrize("call, match", [
    (lambda: neural_decomposition(np.zeros((3, 4))), "Z must be a square"),
    (lambda: neural_decomposition(np.full((3, 3), np.nan)), "Z must be finite"),
    (lambda: decompose(np.zeros((2, 3, 3)), np.zeros((2, 3, 3)), binary=True), "binary"),
    (lambda: decompose(np.zeros((1, 3, 3)), np.zeros((1, 4, 4)), binary=True), "Zp must"),
    (lambda: decompose(np.zeros((3, 3)), np.zeros((3, 3)), binary=True), "Z must have shape"),
    (lambda: decompose(np.zeros((1, 3, 3)), np.zeros((1, 3, 3)), binary=True, prune=-1.0),
     "prune"),
])
def test_malformed_inputs_raise(call, match):
  with pytest.raises(ValueError, match=match):
    call()
