"""The host-side loop shared by the solvers: chunks of jitted steps, checkpoints, progress."""

import contextlib
import functools
import warnings
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from cvxjax import checkpoint, sharding, streaming
from cvxjax.core import poly, psd
from cvxjax.core.activations import Quadratic
from cvxjax.solvers import barrier, projected

_DEFAULT_STEPS = {"barrier": 300, "projected": 1000}


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


def blas_limited():
  """One BLAS thread on CPU: XLA's own thread pool and OpenBLAS's threads otherwise contend
  (measured on 2 cores: a 1000² Cholesky took 1.3 s instead of 15 ms)."""
  if jax.default_backend() == "cpu":
    import threadpoolctl  # sets KMP_DUPLICATE_LIB_OK when imported: a fit may, `import cvxjax` not
    return threadpoolctl.threadpool_limits(1, user_api="blas")
  return contextlib.nullcontext()


def run_chunks(state, advance: Callable, *, max_steps: int, chunk: int,
               steps_of: Callable, finished: Callable, describe: Callable,
               checkpoint_dir: Optional[str], progress: bool):
  """Advances `state` by `chunk` steps at a time until `finished(state)` or `max_steps`.

  With `checkpoint_dir`, resumes from the latest checkpoint there and saves after each
  chunk; chunks are deterministic, so a resumed run ends exactly where an uninterrupted one
  does.

  Args:
    state: the initial solver state (a pytree).
    advance: jitted (state, num_steps) -> state.
    max_steps: total step budget.
    chunk: steps per call of `advance` (and between checkpoints).
    steps_of: state -> steps taken so far (int).
    finished: state -> bool.
    describe: state -> dict of numbers for the progress line.
    checkpoint_dir: directory for orbax checkpoints, or None.
    progress: show a progress bar.

  Returns:
    The final state.
  """
  mgr = checkpoint.manager(checkpoint_dir) if checkpoint_dir else None
  if mgr is not None:
    restored = checkpoint.restore_latest(mgr, state)
    state = state if restored is None else restored
  bar = tqdm.tqdm(total=max_steps, initial=steps_of(state), disable=not progress,
                  unit="step", dynamic_ncols=True)
  with bar:
    while steps_of(state) < max_steps and not finished(state):
      before = steps_of(state)
      state = advance(state, min(chunk, max_steps - before))
      if mgr is not None:
        checkpoint.save(mgr, steps_of(state), state)
      bar.update(steps_of(state) - before)
      bar.set_postfix(describe(state))
  return state


# Jitted once per problem shape and static settings, so repeated fits do not recompile.
_STATIC = ("r", "beta", "activation")
_ADAM = optax.adam(1e-2)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _barrier_init(X, S, *, r, beta, activation):
  return jax.vmap(lambda s: barrier.init(X, s, r=r, beta=beta, activation=activation))(S)


@functools.partial(jax.jit, static_argnames=(*_STATIC, "tol"))
def _barrier_run(state, X, S, num_steps, *, r, beta, activation, tol):
  return barrier.run(state, X, S, r=r, beta=beta, activation=activation, tol=tol,
                     num_steps=num_steps)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _barrier_polish(state, X, S, *, r, beta, activation):
  state = state._replace(Z=jax.vmap(psd.project_trace_psd)(state.Z),
                         Zp=jax.vmap(psd.project_trace_psd)(state.Zp))
  return state, _poly_objective(state.Z, state.Zp, X, S, r=r, beta=beta, activation=activation)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _poly_objective(Z, Zp, X, S, *, r, beta, activation):
  return jax.vmap(lambda Z, Zp, s: poly.objective(Z, Zp, X, s, r, beta, activation))(Z, Zp, S)


@functools.partial(jax.jit, static_argnames=("optimizer",))
def _projected_init(X, S, optimizer):
  return jax.vmap(lambda _: projected.init(X, optimizer))(S)


@functools.partial(jax.jit, static_argnames=(*_STATIC, "optimizer", "head_batch_size"))
def _projected_run(state, X, S, num_steps, *, r, beta, activation, optimizer, head_batch_size):
  return projected.run(state, X, S, r=r, beta=beta, activation=activation, optimizer=optimizer,
                       num_steps=num_steps, head_batch_size=head_batch_size)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _projected_certificate(Z, Zp, X, S, *, r, beta, activation):
  return jax.vmap(lambda Z, Zp, s: projected.certificate(Z, Zp, X, s, r=r, beta=beta,
                                                         activation=activation))(Z, Zp, S)


# Heads one after another (lax.map), as `projected.run` does: with the heads vmapped, their
# batched eighs inside while loops left XLA's CPU runtime deadlocked (idle in a futex).
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


def fit_poly(X: np.ndarray, S: np.ndarray, *, r: float, beta: float,
             activation: Quadratic, solver: str, tol: float, max_steps: Optional[int],
             optimizer, head_batch_size: Optional[int], checkpoint_dir: Optional[str],
             checkpoint_every: int, progress: bool, mesh=None,
             chunk_size: Optional[int] = None) -> PolySolution:
  """Runs a polynomial-head solver on validated inputs; see `cvxjax.poly.fit`."""
  dtype = jnp.result_type(float)
  if chunk_size is not None:
    return _fit_streamed(X, S, r=r, beta=beta, activation=activation,
                         max_steps=max_steps, optimizer=optimizer, checkpoint_dir=checkpoint_dir,
                         checkpoint_every=checkpoint_every, progress=progress,
                         chunk_size=chunk_size)
  if rows := sharding.padding(X.shape[0], mesh):  # label 0: rows that count nowhere
    X, S = sharding.pad(X, rows), sharding.pad(S, rows, axis=1)
  # Examples over the mesh's first axis, heads over its second (states follow the heads).
  put = functools.partial(sharding.place, mesh=mesh, examples=X.shape[0], model=S.shape[0])
  X = put(jnp.asarray(X, dtype), model=None)
  S = put(jnp.asarray(S, dtype))
  if solver == "barrier" and dtype != jnp.float64:
    warnings.warn("the barrier solver is built for float64 (jax.config.update('jax_enable_x64', "
                  "True)); in float32 it stops at gaps of 1e-4 to 1e-1", stacklevel=3)
  problem = dict(r=r, beta=beta, activation=activation)
  max_steps = _DEFAULT_STEPS[solver] if max_steps is None else int(max_steps)
  with blas_limited():
    if solver == "barrier":
      state = put(_barrier_init(X, S, **problem))
      advance = lambda st, k: _barrier_run(st, X, S, k, tol=tol, **problem)
      state = run_chunks(
          state, advance, max_steps=max_steps, chunk=checkpoint_every,
          steps_of=lambda st: int(jnp.max(st.step)), finished=lambda st: bool(jnp.all(st.done)),
          describe=lambda st: {"objective": f"{float(jnp.sum(st.upper)):.6g}",
                               "gap": f"{float(jnp.sum(st.upper - st.lower)):.3g}"},
          checkpoint_dir=checkpoint_dir, progress=progress)
      # Remove the round-off drift of ⟨G, Z⟩ so that the reported objective is a feasible one.
      state, upper = _barrier_polish(state, X, S, **problem)
      lower = state.lower
    else:
      optimizer = _ADAM if optimizer is None else optimizer
      state = put(_projected_init(X, S, optimizer))
      advance = lambda st, k: _projected_run(st, X, S, k, optimizer=optimizer,
                                             head_batch_size=head_batch_size, **problem)
      evaluate = lambda st: _projected_certificate(st.Z, st.Zp, X, S, **problem)
      objective_of = lambda st: _poly_objective(st.Z, st.Zp, X, S, **problem)
      state = run_chunks(
          state, advance, max_steps=max_steps, chunk=checkpoint_every,
          steps_of=lambda st: int(jnp.max(st.step)), finished=lambda st: False,
          describe=lambda st: {"objective": f"{float(jnp.sum(objective_of(st))):.6g}"},
          checkpoint_dir=checkpoint_dir, progress=progress)
      upper, lower = evaluate(state)
  objective = jnp.sum(upper)
  gap = jnp.maximum(objective - jnp.sum(lower), 0.0)
  if solver == "barrier" and float(gap) > tol * float(objective):
    # The bound stays valid; the usual cause is a worst case in the TRS hard case, where the
    # margin has a kink that Newton's method cannot cross (see the solver's docstring).
    warnings.warn(f"barrier solver stopped after {int(jnp.max(state.step))} steps at relative "
                  f"gap {float(gap) / float(objective):.2e} > tol={tol:g}", stacklevel=3)
  return PolySolution(Z=state.Z, Zp=state.Zp, objective=objective, gap=gap,
                      steps=jnp.max(state.step))


def _fit_streamed(X: np.ndarray, S: np.ndarray, *, r: float, beta: float,
                  activation: Quadratic, max_steps: Optional[int], optimizer,
                  checkpoint_dir: Optional[str], checkpoint_every: int, progress: bool,
                  chunk_size: int) -> PolySolution:
  """The projected solver with X and S on the host, streamed in chunks of `chunk_size` examples."""
  dtype = jnp.result_type(float)
  problem = dict(r=r, beta=beta, activation=activation, chunk_size=chunk_size)
  optimizer = _ADAM if optimizer is None else optimizer
  max_steps = _DEFAULT_STEPS["projected"] if max_steps is None else int(max_steps)
  evaluate = lambda st: _streamed_certificate(st, X, S, **problem)
  with blas_limited():
    state = _projected_init(jnp.zeros((1, X.shape[1]), dtype), jnp.zeros((S.shape[0], 1), dtype),
                            optimizer)
    state = run_chunks(
        state, lambda st, k: _streamed_projected_run(st, X, S, k, optimizer=optimizer, **problem),
        max_steps=max_steps, chunk=checkpoint_every, steps_of=lambda st: int(jnp.max(st.step)),
        finished=lambda st: False,
        describe=lambda st: {"objective": f"{float(jnp.sum(evaluate(st)[0])):.6g}"},
        checkpoint_dir=checkpoint_dir, progress=progress)
    upper, lower = evaluate(state)
  objective = jnp.sum(upper)
  return PolySolution(Z=state.Z, Zp=state.Zp, objective=objective,
                      gap=jnp.maximum(objective - jnp.sum(lower), 0.0), steps=jnp.max(state.step))
