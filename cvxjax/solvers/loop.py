"""The one loop that runs every solver: jitted chunks of steps, checkpoints, progress, warm starts.

`run(solver, problem, ...)` takes any `cvxjax.solvers.base.Solver` and a problem pytree. It jits
`prepare` and `init` once per problem shape and solver, advances the state by `chunk` steps at a
time in a `lax.while_loop` that stops at `terminate`, saves an orbax checkpoint after every chunk
(and resumes from the latest one: chunks are deterministic, so a resumed run ends exactly where
an uninterrupted one does), shows a progress bar, and stops once the summary's certified gap is
at most `tol` times the objective, or when an optional callback, shown each state it checks,
says so. A solver whose steps are host loops (`jittable = False`: the streamed solvers) runs
through the same loop, unjitted.
"""

import contextlib
import dataclasses
import functools
import math
import warnings
from typing import Any, Callable, NamedTuple, Optional

import jax
import numpy as np
import tqdm

from cvxjax import checkpoint
from cvxjax.solvers import base


class Result(NamedTuple):
  """What `run` returns.

  Attributes:
    state: the final solver state.
    params: the solution it stands for (`Solver.solution`), e.g. (Z, Z′) or the weights W.
    summary: the `base.Summary` of `params`.
  """

  state: Any
  params: Any
  summary: base.Summary


def blas_limited():
  """One BLAS thread on CPU: XLA's own thread pool and OpenBLAS's threads otherwise contend
  (measured on 2 cores: a 1000² Cholesky took 1.3 s instead of 15 ms)."""
  if jax.default_backend() == "cpu":
    import threadpoolctl  # sets KMP_DUPLICATE_LIB_OK when imported: a fit may, `import cvxjax` not
    return threadpoolctl.threadpool_limits(1, user_api="blas")
  return contextlib.nullcontext()


@functools.partial(jax.jit, static_argnums=0)
def _prepare(solver: base.Solver, problem):
  return solver.prepare(problem)


@functools.partial(jax.jit, static_argnums=0)
def init(solver: base.Solver, problem, start=None):
  """`solver.init`, jitted once per solver and problem shape."""
  return solver.init(problem, start)


@functools.partial(jax.jit, static_argnums=0)
def _advance(solver: base.Solver, problem, state, num_steps):
  """Up to `num_steps` steps (traced: one compilation for every chunk length), until terminate."""
  cond = lambda c: (c[1] < num_steps) & ~solver.terminate(problem, c[0])
  body = lambda c: (solver.step(problem, c[0]), c[1] + 1)
  return jax.lax.while_loop(cond, body, (state, 0))[0]


@functools.partial(jax.jit, static_argnums=0)
def _status(solver: base.Solver, problem, state):
  return solver.summary(problem, state), solver.terminate(problem, state)


@functools.partial(jax.jit, static_argnums=0)
def _solution(solver: base.Solver, problem, state):
  return solver.solution(problem, state)


class _Calls(NamedTuple):
  """How `run` calls a solver's methods: jitted, or as they are (host loops)."""

  prepare: Callable
  init: Callable
  advance: Callable
  status: Callable
  solution: Callable


def _host_advance(solver: base.Solver, problem, state, num_steps: int):
  for _ in range(num_steps):
    if bool(solver.terminate(problem, state)):
      break
    state = solver.step(problem, state)
  return state


_JITTED = _Calls(_prepare, init, _advance, _status, _solution)
_HOST = _Calls(lambda s, p: s.prepare(p), lambda s, p, start: s.init(p, start), _host_advance,
               lambda s, p, st: (s.summary(p, st), s.terminate(p, st)),
               lambda s, p, st: s.solution(p, st))


def certified(summary: base.Summary, tol: float) -> bool:
  """Whether the summary's certified gap is at most tol times its objective."""
  return summary.gap is not None and float(summary.gap) <= tol * abs(float(summary.objective))


def describe(summary: base.Summary) -> dict:
  """The progress line's numbers."""
  line = {"objective": f"{float(summary.objective):.8g}"}
  if summary.gap is not None:
    line["gap"] = f"{float(summary.gap):.2e}"
  if summary.violation is not None:
    line["violation"] = f"{float(summary.violation):.1e}"
  return line


def _check_count(value, name: str, low: int) -> None:
  if not (isinstance(value, (int, np.integer)) and value >= low):
    raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def run(solver: base.Solver, problem, *, max_steps: int, tol: Optional[float] = None,
        chunk: Optional[int] = None, checkpoint_dir: Optional[str] = None,
        progress: bool = False, start=None, place: Optional[Callable] = None,
        callback: Optional[Callable[[Any, base.Summary], bool]] = None) -> Result:
  """Runs `solver` on `problem` until it terminates, certifies `tol`, or takes `max_steps`.

  Args:
    solver: a `base.Solver` value (its fields are its settings).
    problem: the problem pytree the solver takes.
    max_steps: iteration budget (`Summary.steps` counts iterations).
    tol: the relative certified gap to stop at; None keeps `solver.tol`.
    chunk: steps per jitted call, between checkpoints and progress updates (None: max_steps).
    checkpoint_dir: if given, the state is saved there after every chunk, and a run resumes
      from the latest checkpoint found there.
    progress: show a progress bar with the summary's numbers.
    start: a warm start for `solver.init` (the `params` of an earlier `Result`), or None.
    place: applied to the initial state before the first step (mesh placement), or None.
    callback: called as callback(state, summary) with the initial (or resumed) state and after
      every chunk, before that chunk's checkpoint; a true return stops the run (e.g. at a
      target objective or a time budget, or to record a trace with chunk=1). None: no call.

  Returns:
    A `Result`: the final state, its solution and that solution's summary.

  Raises:
    ValueError: if an argument is malformed (named in the message), before any compute.
  """
  if not isinstance(solver, base.Solver):
    raise ValueError(f"solver must be a cvxjax.solvers.base.Solver value, got {solver!r}")
  if start is not None and not solver.warm_start:
    raise ValueError(f"start: the {solver.name} solver takes no warm start")
  _check_count(max_steps, "max_steps", 0)
  if chunk is not None:
    _check_count(chunk, "chunk", 1)
  if callback is not None and not callable(callback):
    raise ValueError(f"callback must be None or callable as callback(state, summary), got "
                     f"{callback!r}")
  if tol is not None:
    if not (np.isscalar(tol) and tol > 0):
      raise ValueError(f"tol must be a number > 0, got {tol!r}")
    solver = dataclasses.replace(solver, tol=float(tol))
  per = solver.iterations_per_step
  chunk = max(max_steps, 1) if chunk is None else chunk
  jitted = _JITTED if solver.jittable else _HOST
  problem = jitted.prepare(solver, problem)
  state = jitted.init(solver, problem, start)
  state = state if place is None else place(state)

  def look(st) -> tuple[int, bool, dict]:
    """(steps, whether to stop, the progress line) of a state."""
    summary, terminated = jitted.status(solver, problem, st)
    stop = bool(terminated) or certified(summary, solver.tol)
    if callback is not None:
      stop = bool(callback(st, summary)) or stop
    return int(summary.steps), stop, describe(summary)

  mgr = checkpoint.manager(checkpoint_dir) if checkpoint_dir else None
  if mgr is not None:
    restored = checkpoint.restore_latest(mgr, state)
    state = state if restored is None else restored
  steps, stop, line = look(state)
  with tqdm.tqdm(total=max_steps, initial=steps, disable=not progress, unit="step",
                 dynamic_ncols=True) as bar:
    while steps < max_steps and not stop:
      # `chunk` steps, fewer at the budget's end (a step may take several iterations).
      state = jitted.advance(solver, problem, state, math.ceil(min(chunk * per,
                                                                   max_steps - steps) / per))
      before, (steps, stop, line) = steps, look(state)
      if mgr is not None:
        checkpoint.save(mgr, steps, state)
      bar.update(steps - before)
      bar.set_postfix(line)
  params, summary = jitted.solution(solver, problem, state)
  return Result(state, params, summary)


def warn_above_tol(name: str, summary: base.Summary, tol: float, detail: str = "") -> None:
  """A fit that stops above its tolerance says what it reached (the gap stays valid); so does one
  whose objective or gap is not finite (a diverged iterate)."""
  objective, gap = float(summary.objective), float(summary.gap)
  if not (np.isfinite(objective) and gap <= tol * abs(objective)):  # NaN gaps compare false
    relative = gap / max(abs(objective), float(np.finfo(np.float64).tiny))
    warnings.warn(f"{name} solver stopped after {int(summary.steps)} steps at objective "
                  f"{objective:.6g} with certified gap {gap:.3g}, relative gap {relative:.2e} > "
                  f"tol={tol:g}{detail}", stacklevel=4)
