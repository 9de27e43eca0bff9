"""The certified solution of a ReLU-head iterate: the feasibility step, its objective and a lower
bound (`cvxjax.core.relu_dual`), shared by the first-order ReLU solvers' `solution`."""

from typing import Optional

import jax.numpy as jnp

from cvxjax.core import relu, relu_dual
from cvxjax.solvers import base

_REFINE_STEPS = 50  # projected-gradient steps on the cone multipliers per certificate


def certificate(W, nu: Optional[jnp.ndarray], lam: Optional[jnp.ndarray],
                problem: relu.Instance):
  """(feasible weights, their objective, a lower bound on the optimum): see `relu_dual`.

  The weights are the iterate made feasible, then scaled by the best factor along their ray
  (`relu.best_scale`: an iterate far from the optimum may sit above W = 0 until it is).

  Args:
    W: (S, P, d, C) the iterate.
    nu: the loss map's multipliers, or None for the loss's gradient at W.
    lam: the cone multipliers, or None (gated heads; for ReLU heads, refined from zero).
    problem: the problem.
  """
  X, D, targets = problem.X, problem.D, problem.targets
  if nu is None:
    nu = relu_dual.loss_gradient(W, X, D, targets, loss=problem.loss, eps=problem.eps,
                                 q=problem.q)
  if W.shape[0] == 2:
    W = relu_dual.restore_feasibility(W, X, D, problem.directions, relu.counted(targets),
                                      problem.eps, problem.q)
    lam = jnp.zeros(W.shape[:2] + D.shape[:1] + W.shape[3:], W.dtype) if lam is None else lam
  W = W * relu.best_scale(W, X, D, targets, **problem.measures)
  bound = relu_dual.lower_bound(nu, lam, X, D, targets, num_blocks=W.shape[0],
                                refine_steps=0 if lam is None else _REFINE_STEPS,
                                **problem.measures)
  return W, relu.objective(W, X, D, targets, **problem.measures), bound


def violation(W, problem: relu.Instance) -> jnp.ndarray:
  """() the largest violation of the (robust) cone constraints at W (0 for a gated head)."""
  if W.shape[0] == 1:
    return jnp.zeros((), W.dtype)
  return relu.constraint_violation(W, problem.X, problem.D, problem.eps, problem.q)


def solution(W, nu, lam, problem: relu.Instance, steps) -> tuple[jnp.ndarray, base.Summary]:
  """(feasible weights, their summary): the objective and gap of the feasible weights, and the
  cone violation of the iterate W before the feasibility step."""
  feasible, objective, bound = certificate(W, nu, lam, problem)
  return feasible, base.Summary(objective, jnp.maximum(objective - bound, 0.0),
                                violation(W, problem), steps)
