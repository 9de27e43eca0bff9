"""Runs the polynomial-head solvers on validated inputs: placement, streaming, the head's arrays."""

import functools
import warnings
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cvxjax import sharding, streaming
from cvxjax.core import poly
from cvxjax.solvers import barrier, base, loop, primal_dual, projected

_DEFAULT_STEPS = {"barrier": 300, "projected": 1000, "primal_dual": 20000}
SOLVERS = {"barrier": barrier.Solver, "projected": projected.Solver,
           "primal_dual": primal_dual.Solver}
# Largest svec size for which the barrier solver is the default (its KKT system is 2N).
_BARRIER_MAX_SVEC = 1300


def resolve_solver(solver, d: int, streamed: bool) -> base.Solver:
  """A polynomial solver value from `solver`: a name ("auto" picks by d) or a solver value.

  Raises:
    ValueError: naming `solver` if it is neither.
  """
  if isinstance(solver, base.Solver) and isinstance(solver, tuple(SOLVERS.values())):
    return solver
  if not (isinstance(solver, str) and solver in ("auto", *SOLVERS)):
    raise ValueError(f"solver must be one of {('auto', *SOLVERS)} or a barrier, projected or "
                     f"primal_dual Solver value, got {solver!r}")
  if solver == "auto":
    small = (d + 1) * (d + 2) // 2 <= _BARRIER_MAX_SVEC and not streamed
    solver = "barrier" if small else "projected"
  return SOLVERS[solver]()


class PolySolution(NamedTuple):
  """A solved polynomial problem, the arrays of a `cvxjax.poly.PolyHead`.

  Attributes:
    Z, Zp: (C, d+1, d+1) matrices of K, one pair per head.
    objective: the objective summed over the heads, exact.
    gap: a certified upper bound on objective − global optimum.
    steps: solver steps taken (the most over the heads).
  """

  Z: jnp.ndarray
  Zp: jnp.ndarray
  objective: jnp.ndarray
  gap: jnp.ndarray
  steps: jnp.ndarray


# Heads one after another (lax.map), as `projected.Solver` runs them.
@functools.partial(jax.jit, static_argnames=("r", "activation"))
def _projected_gradient(Z, Zp, X, S, beta, *, r, activation):
  return jax.lax.map(lambda a: projected.gradient(a[0], a[1], X, a[2], r=r, beta=beta,
                                                  activation=activation), (Z, Zp, S))


@functools.partial(jax.jit, static_argnames=("optimizer",))
def _projected_update(state, grads, optimizer):
  return jax.lax.map(lambda a: projected.update(a[0], a[1], optimizer=optimizer), (state, grads))


@functools.partial(jax.jit, static_argnames=("r", "activation"))
def _certificate_sums(Z, Zp, X, S, *, r, activation):
  return jax.lax.map(lambda a: projected.certificate_sums(a[0], a[1], X, a[2], r=r,
                                                          activation=activation), (Z, Zp, S))


@functools.partial(jax.jit, static_argnames=("beta",))
def _certificate_of_sums(Z, Zp, sums, *, beta):
  return jax.lax.map(lambda a: projected.certificate_of_sums(a[0], a[1], a[2], beta=beta),
                     (Z, Zp, sums))


def _streamed_chunk_gradient(state, beta, r, activation, first, X, St):
  beta = jnp.asarray(beta if first else 0.0, X.dtype)  # the regulariser counts once per pass
  return _projected_gradient(state.Z, state.Zp, X, St.T, beta, r=r, activation=activation)


def _streamed_projected_run(state, X, S, num_steps, *, chunk_size, r, beta, activation,
                            optimizer):
  """`num_steps` projected steps, each a full pass over host (X, S) in chunks."""
  dtypes = (state.Z.dtype,) * 2
  for _ in range(num_steps):
    gradient = functools.partial(_streamed_chunk_gradient, state, beta, r, activation)
    grads = streaming.pass_sum(gradient, (X, S.T), chunk_size, dtypes)
    state = _projected_update(state, grads, optimizer)
  return state


def _streamed_certificate(state, X, S, *, chunk_size, r, beta, activation):
  """(objectives, lower bounds) of every head, from one chunked pass over host (X, S)."""
  sums = streaming.pass_sum(
      lambda _, X, St: _certificate_sums(state.Z, state.Zp, X, St.T, r=r, activation=activation),
      (X, S.T), chunk_size, (state.Z.dtype,) * 2)
  return _certificate_of_sums(state.Z, state.Zp, sums, beta=beta)


def fit_poly(X: np.ndarray, S: np.ndarray, *, r: float, beta: float, activation,
             solver: base.Solver, max_steps: Optional[int], checkpoint_dir: Optional[str],
             checkpoint_every: int, progress: bool, mesh=None, chunk_size: Optional[int] = None,
             start=None) -> PolySolution:
  """Runs a polynomial-head solver on validated inputs; see `cvxjax.poly.fit`.

  Args:
    X, S: (n, d) inputs and (C, n) labels per head, on the host.
    r, beta, activation: the problem.
    solver: a `barrier`, `projected` or `primal_dual` `Solver`.
    max_steps: iteration budget (None: the solver's default).
    checkpoint_dir, checkpoint_every, progress: see `loop.run`.
    mesh: a `cvxjax.sharding` mesh, or None.
    chunk_size: stream X in chunks of this many examples (projected solver), or None.
    start: (Z, Z′), each (C, d+1, d+1), to warm-start from, or None.
  """
  max_steps = _DEFAULT_STEPS[solver.name] if max_steps is None else int(max_steps)
  settings = dict(max_steps=max_steps, checkpoint_dir=checkpoint_dir, progress=progress)
  if chunk_size is not None:
    return _fit_streamed(X, S, r=r, beta=beta, activation=activation, solver=solver,
                         chunk=checkpoint_every, chunk_size=chunk_size, start=start, **settings)
  dtype = jnp.result_type(float)
  if rows := sharding.padding(X.shape[0], mesh):  # label 0: rows that count nowhere
    X, S = sharding.pad(X, rows), sharding.pad(S, rows, axis=1)
  # Examples over the mesh's first axis, heads over its second (states follow the heads).
  put = functools.partial(sharding.place, mesh=mesh, examples=X.shape[0], model=S.shape[0])
  problem = poly.Problem(put(jnp.asarray(X, dtype), model=None), put(jnp.asarray(S, dtype)),
                         r=r, beta=beta, activation=activation)
  if isinstance(solver, barrier.Solver) and dtype != jnp.float64:
    warnings.warn("the barrier solver is built for float64 (jax.config.update('jax_enable_x64', "
                  "True)); in float32 it stops at gaps of 1e-4 to 1e-1", stacklevel=3)
  with loop.blas_limited():
    result = loop.run(solver, problem, chunk=checkpoint_every, start=start, place=put,
                      **settings)
  # The barrier's usual cause is a worst case in the TRS hard case, where the margin has a kink
  # that Newton's method cannot cross (see its docstring).
  loop.warn_above_tol(solver.name, result.summary, solver.tol)
  return PolySolution(*result.params, objective=result.summary.objective,
                      gap=result.summary.gap, steps=result.summary.steps)


def _fit_streamed(X: np.ndarray, S: np.ndarray, *, r: float, beta: float, activation,
                  solver: projected.Solver, max_steps: int, chunk: int, chunk_size: int,
                  checkpoint_dir: Optional[str], progress: bool, start) -> PolySolution:
  """The projected solver with X and S on the host, streamed in chunks of `chunk_size` examples:
  each step a full pass, run by `loop.run_chunks` as `loop.run` runs in-memory solvers."""
  dtype = jnp.result_type(float)
  problem = dict(r=r, beta=beta, activation=activation, chunk_size=chunk_size)
  shapes = poly.Problem(jnp.zeros((1, X.shape[1]), dtype), jnp.zeros((S.shape[0], 1), dtype),
                        r=r, beta=beta, activation=activation)

  def report(state) -> loop.Progress:
    summary = base.summed(*_streamed_certificate(state, X, S, **problem), state.step)
    return loop.Progress(int(summary.steps), loop.certified(summary, solver.tol),
                         loop.describe(summary))

  with loop.blas_limited():
    state = loop.init(solver, shapes, start)
    state, _ = loop.run_chunks(
        state, lambda st, k: _streamed_projected_run(st, X, S, k, optimizer=solver.optimizer,
                                                     **problem),
        report, max_steps=max_steps, chunk=chunk, checkpoint_dir=checkpoint_dir,
        progress=progress)
    summary = base.summed(*_streamed_certificate(state, X, S, **problem), state.step)
  loop.warn_above_tol(solver.name, summary, solver.tol)
  return PolySolution(state.Z, state.Zp, objective=summary.objective, gap=summary.gap,
                      steps=summary.steps)
