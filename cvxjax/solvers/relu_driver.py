"""Runs the ReLU-head solvers on a validated problem: jitted chunks, checkpoints, progress."""

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cvxjax import relu
from cvxjax.solvers import admm, penalty, proximal
from cvxjax.solvers.driver import blas_limited, run_chunks

SOLVERS = ("auto", "admm", "apg", "al", "penalty")
_DEFAULT_STEPS = {"admm": 20000, "apg": 20000, "al": 50000, "penalty": 5000}
_AL_DELTA = 1e3  # augmented-Lagrangian penalty on the summed loss (measured best of 1e1–1e3)


def check_solver(solver: str, problem: relu.Problem) -> str:
  """Resolves "auto" and rejects a solver outside its domain (with the reason)."""
  if solver not in SOLVERS:
    raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
  if solver == "auto":
    return "admm"
  if solver in ("apg", "al"):
    needs = "gated=True" if solver == "apg" else "gated=False"
    if problem.loss != "squared" or problem.eps > 0 or problem.gated != (solver == "apg"):
      raise ValueError(f"solver={solver!r} solves the plain squared-loss problem with {needs} "
                       "(eps=0, loss='squared'); use solver='admm' for the others")
  return solver


@functools.partial(jax.jit, static_argnames=("gated", "robust", "linear_solver", "nystrom_rank"))
def _admm_setup(X, D, targets, key, *, gated, robust, linear_solver, nystrom_rank):
  return admm.build_setup(X, D, targets, gated=gated, robust=robust,
                          linear_solver=linear_solver, nystrom_rank=nystrom_rank, key=key)


_ADMM_STATIC = ("gated", "loss", "eps", "q", "beta", "linear_solver", "cg_tol", "tol")


@functools.partial(jax.jit, static_argnames=_ADMM_STATIC)
def _admm_run(state, setup, num_steps, **problem):
  return admm.run(state, setup, num_steps=num_steps, **problem)


_PROX_STATIC = ("beta", "delta", "tol", "constraint_tol")


@functools.partial(jax.jit, static_argnames=_PROX_STATIC)
def _prox_run(state, X, D, targets, L, num_steps, **problem):
  return proximal.run(state, X, D, targets, num_steps=num_steps, L=L, **problem)


@functools.partial(jax.jit, static_argnames=("num_blocks", "C", "delta"))
def _lipschitz(X, D, key, *, num_blocks, C, delta):
  return proximal.lipschitz(X, D, num_blocks, C, key, delta=delta)


_PENALTY_STATIC = ("loss", "eps", "q", "beta", "rho", "optimizer")


@functools.partial(jax.jit, static_argnames=_PENALTY_STATIC)
def _penalty_run(state, X, D, targets, num_steps, **problem):
  return penalty.run(state, X, D, targets, num_steps=num_steps, **problem)


@functools.partial(jax.jit, static_argnames=("loss", "eps", "q", "beta"))
def _evaluate(W, X, D, targets, *, loss, eps, q, beta):
  return (relu.objective(W, X, D, targets, loss=loss, eps=eps, q=q, beta=beta),
          relu.constraint_violation(W, X, D, eps, q) if W.shape[0] == 2 else jnp.zeros(()))


def fit_relu(problem: relu.Problem, *, solver: str, tol: float, max_steps: Optional[int],
             linear_solver: str, nystrom_rank: int, optimizer, penalty_rho: float, key,
             checkpoint_dir: Optional[str], checkpoint_every: int,
             progress: bool) -> relu.ReluHead:
  """Runs a ReLU-head solver on a validated problem; see `cvxjax.relu.fit`."""
  X, D, targets = _on_device(problem)
  dtype = X.dtype
  S = 1 if problem.gated else 2
  P, C = D.shape[1], targets.onehot.shape[1]
  measures = dict(loss=problem.loss, eps=problem.eps, q=problem.q, beta=problem.beta)
  objective_of = lambda W: float(_evaluate(W, X, D, targets, **measures)[0])
  max_steps = _DEFAULT_STEPS[solver] if max_steps is None else int(max_steps)
  chunk = dict(max_steps=max_steps, chunk=checkpoint_every, checkpoint_dir=checkpoint_dir,
               progress=progress, steps_of=lambda st: int(st.step))
  with blas_limited():
    if solver == "admm":
      robust = problem.eps > 0
      setup = _admm_setup(X, D, targets, key, gated=problem.gated, robust=robust,
                          linear_solver=linear_solver, nystrom_rank=nystrom_rank)
      state = admm.init(setup, num_blocks=S, num_patterns=P, gated=problem.gated, robust=robust)
      settings = dict(gated=problem.gated, loss=problem.loss, eps=problem.eps, q=problem.q,
                      beta=problem.beta, linear_solver=linear_solver, cg_tol=tol * 1e-2, tol=tol)
      state = run_chunks(
          state, lambda st, k: _admm_run(st, setup, k, **settings),
          finished=lambda st: bool((st.primal <= tol) & (st.dual <= tol)),
          describe=lambda st: {"objective": f"{objective_of(st.Z):.8g}",
                               "primal": f"{float(st.primal):.2e}",
                               "dual": f"{float(st.dual):.2e}"}, **chunk)
      W = state.Z
    elif solver in ("apg", "al"):
      delta = _AL_DELTA if solver == "al" else 0.0
      L = _lipschitz(X, D, key, num_blocks=S, C=C, delta=delta)
      state = proximal.init(X, D, targets, num_blocks=S, augmented=solver == "al")
      settings = dict(beta=problem.beta, delta=delta, tol=tol, constraint_tol=tol)
      state = run_chunks(
          state, lambda st, k: _prox_run(st, X, D, targets, L, k, **settings),
          finished=lambda st: bool((st.residual <= tol) & (st.violation <= tol)),
          describe=lambda st: {"objective": f"{objective_of(st.W):.8g}",
                               "residual": f"{float(st.residual):.2e}"}, **chunk)
      W = state.W
    else:
      optimizer = optax.adam(1e-2) if optimizer is None else optimizer
      W0 = 1e-3 * jax.random.normal(key, (S, P, X.shape[1], C), dtype)  # ‖·‖ is not
      state = penalty.init(W0, optimizer)                                # differentiable at 0
      settings = dict(optimizer=optimizer, rho=penalty_rho, **measures)
      state = run_chunks(
          state, lambda st, k: _penalty_run(st, X, D, targets, k, **settings),
          finished=lambda st: False,
          describe=lambda st: {"objective": f"{objective_of(st.W):.8g}"}, **chunk)
      W = state.W
  return _head(problem, W, state.step)


def _on_device(problem: relu.Problem):
  """(X, D, targets) as arrays of the default float type (labels stay integers if multi-class)."""
  dtype = jnp.result_type(float)
  t = problem.targets
  labels = jnp.asarray(t.labels, dtype if problem.binary else jnp.int32)
  targets = relu.Targets(labels, jnp.asarray(t.onehot, dtype), jnp.asarray(t.pairs, dtype))
  return jnp.asarray(problem.X, dtype), jnp.asarray(problem.D, dtype), targets


def _head(problem: relu.Problem, W, steps) -> relu.ReluHead:
  """The head holding W, with its exact objective and constraint violation."""
  X, D, targets = _on_device(problem)
  W = jnp.asarray(W, X.dtype)
  value, violation = _evaluate(W, X, D, targets, loss=problem.loss, eps=problem.eps, q=problem.q,
                               beta=problem.beta)
  p = next(k for k, v in relu.NORMS.items() if v == problem.q)
  return relu.ReluHead(gates=jnp.asarray(problem.gates, X.dtype), weights=W, objective=value,
                       violation=violation, steps=jnp.asarray(steps), eps=problem.eps, p=p,
                       loss=problem.loss, binary=problem.binary)


def head_from_weights(problem: relu.Problem, W: np.ndarray) -> relu.ReluHead:
  """A head holding given weights (from the CVXPY oracle), with its exact objective."""
  return _head(problem, W, 0)
