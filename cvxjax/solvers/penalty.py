"""The penalty method with optax: the reference code's approach, kept as a baseline (MATH.md §4).

Minimises objective(W) + ρ Σ (ε‖W[s, k, :, c]‖_q − (2D_ik − 1) x_iᵀW[s, k, :, c])₊ with any optax
optimiser on the (sub)gradient. It handles every loss and ball, but as a subgradient method it
only approaches the optimum (and feasibility) slowly; the ADMM solver is the exact one.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from cvxjax.core import relu


class State(NamedTuple):
  """Attributes: W (S, P, d, C) weights; opt_state: the optax state; step: steps taken."""

  W: jnp.ndarray
  opt_state: optax.OptState
  step: jnp.ndarray


def penalised_objective(W, X, D, targets, *, loss, eps, q, beta, rho):
  """objective(W) + ρ Σ (constraint violation)₊ (no constraints for gated heads)."""
  value = relu.objective(W, X, D, targets, loss=loss, eps=eps, q=q, beta=beta)
  if W.shape[0] == 1:
    return value
  need = eps * relu.dual_norm(W, q)[:, :, None, :]
  excess = jnp.maximum(need - relu.cone_slacks(W, X, D), 0.0)
  return value + rho * jnp.sum(jnp.where(relu.counted(targets)[:, None], excess, 0.0))


def init(W0, optimizer: optax.GradientTransformation) -> State:
  return State(W=W0, opt_state=optimizer.init(W0), step=jnp.asarray(0))


def apply_gradient(state: State, grad, optimizer: optax.GradientTransformation) -> State:
  """One optimiser step with `grad`, the gradient of the penalised objective at state.W (summed
  over the examples: a full pass, or its chunks added, `cvxjax.streaming`)."""
  updates, opt_state = optimizer.update(grad, state.opt_state, state.W)
  return State(W=optax.apply_updates(state.W, updates), opt_state=opt_state, step=state.step + 1)


def run(state: State, X, D, targets, *, num_steps, optimizer, **problem) -> State:
  """`num_steps` optimiser steps."""
  grad_fn = jax.grad(penalised_objective)
  def body(_, st):
    return apply_gradient(st, grad_fn(st.W, X, D, targets, **problem), optimizer)
  return jax.lax.fori_loop(0, num_steps, body, state)
