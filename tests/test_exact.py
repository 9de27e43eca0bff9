"""The exact CVXPY oracle `cvxjax.exact.solve_poly_sdp` against independent computations."""

import numpy as np
import pytest

pytest.importorskip("cvxpy")
from scipy import optimize

from cvxjax.exact import solve_poly_sdp

ACTIVATION = (0.09, 0.5, 0.47)


def _problem(seed, n, d):
  """Random inputs (n, d) with labels (n,) from a quadratic rule, so that some are misfit."""
  rng = np.random.default_rng(seed)
  X = rng.normal(size=(n, d))
  y = np.where(X[:, 0] * X[:, 1] + 0.3 * X[:, -1] + 0.1 * rng.normal(size=n) >= 0, 1.0, -1.0)
  return X, y


def _predict(D, X, activation):
  """f_D(x) = a xᵀD₁x + b xᵀd₂ + c d₄ for each row of X: (k, d) -> (k,)."""
  a, b, c = activation
  d = X.shape[-1]
  return (a * np.einsum("kj,jl,kl->k", X, D[:d, :d], X) + b * X @ D[:d, d] + c * D[d, d])


def _worst_margin(D, x, y, r, activation, rng):
  """min_{‖δ‖ ≤ r} y f_D(x + δ) by dense sampling of the ball, polished by SLSQP; x is (d,)."""
  d = x.shape[0]
  directions = rng.normal(size=(4000, d))
  directions /= np.linalg.norm(directions, axis=1, keepdims=True)
  radii = r * np.linspace(0.0, 1.0, 21)
  deltas = (radii[:, None, None] * directions[None]).reshape(-1, d)
  values = y * _predict(D, x + deltas, activation)
  best = values.min()
  if r == 0:
    return best

  def objective(delta):
    return y * _predict(D, (x + delta)[None], activation)[0]

  ball = {"type": "ineq", "fun": lambda delta: r**2 - delta @ delta}
  for start in deltas[np.argsort(values)[:3]]:
    result = optimize.minimize(objective, start, method="SLSQP", constraints=[ball],
                               options={"ftol": 1e-14, "maxiter": 500})
    if result.success and result.x @ result.x <= r**2 * (1 + 1e-9):
      best = min(best, result.fun)
  return best


@pytest.mark.parametrize("r", [0.0, 0.3])
def test_clarabel_and_scs_agree(r):
  X, y = _problem(0, 25, 4)
  _, _, value_clarabel = solve_poly_sdp(X, y, r=r, beta=0.1, activation=ACTIVATION,
                                        solver="CLARABEL")
  _, _, value_scs = solve_poly_sdp(X, y, r=r, beta=0.1, activation=ACTIVATION, solver="SCS",
                                   eps=1e-8)
  np.testing.assert_allclose(value_scs, value_clarabel, rtol=1e-4)


@pytest.mark.parametrize("r", [0.0, 0.4])
def test_value_matches_brute_force_objective(r):
  X, y = _problem(1, 20, 3)
  beta = 0.05
  Z, Zp, value = solve_poly_sdp(X, y, r=r, beta=beta, activation=ACTIVATION)
  D = Z - Zp
  rng = np.random.default_rng(2)
  margins = np.array(
      [_worst_margin(D, x, t, r, ACTIVATION, rng) for x, t in zip(X, y, strict=True)])
  objective = np.maximum(0.0, 1.0 - margins).sum() + beta * (Z[-1, -1] + Zp[-1, -1])
  np.testing.assert_allclose(objective, value, rtol=1e-5)
  # The problem must not be trivial: some examples sit on or inside the hinge.
  assert np.any(margins < 1.0 + 1e-6)


@pytest.mark.parametrize("r", [0.0, 0.3])
def test_solution_is_in_the_cone(r):
  X, y = _problem(3, 25, 4)
  Z, Zp, _ = solve_poly_sdp(X, y, r=r, beta=0.1, activation=ACTIVATION)
  d = X.shape[1]
  for matrix in (Z, Zp):
    assert matrix.shape == (d + 1, d + 1) and matrix.dtype == np.float64
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-12)
    assert np.linalg.eigvalsh(matrix).min() >= -1e-7
    assert abs(np.trace(matrix[:d, :d]) - matrix[d, d]) <= 1e-7


def test_robustness_never_lowers_the_optimum():
  X, y = _problem(4, 25, 4)
  _, _, plain = solve_poly_sdp(X, y, r=0.0, beta=0.1, activation=ACTIVATION)
  _, _, robust = solve_poly_sdp(X, y, r=0.3, beta=0.1, activation=ACTIVATION)
  assert robust >= plain - 1e-6 * abs(plain)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"r": -0.1}, "r must be"),
        ({"beta": 0.0}, "beta must be"),
        ({"beta": -1.0}, "beta must be"),
        ({"y": np.array([0.0, 1.0, 1.0, 0.0])}, "y must take values"),
        ({"y": np.array([1.0, -1.0, 1.0])}, "y must have shape"),
        ({"solver": "MOSEK_PLEASE"}, "solver must be"),
        ({"eps": 0.0}, "eps must be"),
    ],
)
def test_invalid_arguments_raise(overrides, match):
  X, y = _problem(5, 4, 2)
  kwargs = {"X": X, "y": y, "r": 0.1, "beta": 0.1, "activation": ACTIVATION, "solver": "CLARABEL"}
  kwargs.update(overrides)
  with pytest.raises(ValueError, match=match):
    solve_poly_sdp(kwargs.pop("X"), kwargs.pop("y"), **kwargs)
