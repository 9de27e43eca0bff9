"""Runs the polynomial-head solvers on validated inputs: placement, streaming, the head's arrays."""

import functools
import warnings
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cvxjax import sharding
from cvxjax.core import poly
from cvxjax.solvers import (
  barrier,
  base,
  dual_interior,
  interior,
  loop,
  low_rank,
  primal_dual,
  projected,
  sdp,
  working_set,
)

_DEFAULT_STEPS = {"interior": 150, "sdp": 150, "interior+sdp": 450, "barrier": 300,
                  "projected": 1000, "primal_dual": 20000, "low_rank": 4000}
SOLVERS = {"interior": interior.Solver, "sdp": sdp.Solver, "interior+sdp": working_set.Solver,
           "barrier": barrier.Solver, "projected": projected.Solver,
           "primal_dual": primal_dual.Solver, "low_rank": low_rank.Solver}
# Solvers of the S-lemma SDP, which has no LMI at r = 0.
_NEEDS_RADIUS = (sdp.Solver, working_set.Solver)
# Largest svec size for which the interior-point solver is the default (its KKT system is 2N).
_NEWTON_MAX_SVEC = 1300


def resolve_solver(solver, d: int, streamed: bool, r: float = 0.0):
  """A polynomial solver value from `solver`: a name ("auto" picks by d and r) or a solver value.

  "auto" takes the interior-point solver for plain heads (r = 0) and, for adversarial ones, the
  interior-point solver followed by the S-lemma SDP, on the examples near their margin, for the
  heads it leaves uncertified (`working_set`), while the Newton systems are small (d ≤ 49);
  else the low-rank solver (the projected one when streamed). The interior-point method
  certifies in 20–40 steps where the margins are smooth; where a worst case has a kink its path
  wanders, and the SDP, which has no kinks, certifies (docs/solvers.md). Above d = 49 the
  low-rank solver reaches objectives that the projected baseline stays orders of magnitude above.

  Raises:
    ValueError: naming `solver` if it is neither, or if it solves the S-lemma SDP and r = 0.
  """
  if isinstance(solver, tuple(SOLVERS.values())):
    value = solver
  elif isinstance(solver, str) and solver in ("auto", *SOLVERS):
    if solver == "auto":
      small = (d + 1) * (d + 2) // 2 <= _NEWTON_MAX_SVEC and not streamed
      large = "projected" if streamed else "low_rank"
      solver = ("interior" if r == 0 else "interior+sdp") if small else large
    value = SOLVERS[solver]()
  else:
    raise ValueError(f"solver must be one of {('auto', *SOLVERS)} or a Solver value of one of "
                     f"them, got {solver!r}")
  if r == 0 and isinstance(value, _NEEDS_RADIUS):
    raise ValueError(f"solver={value.name!r} solves the S-lemma SDP of r > 0; at r = 0 use "
                     "'interior' (or 'auto')")
  return value


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


def fit_poly(X: np.ndarray, S: np.ndarray, *, r: float, beta: float, activation,
             solver: base.Solver, max_steps: Optional[int], checkpoint_dir: Optional[str],
             checkpoint_every: int, progress: bool, mesh=None, chunk_size: Optional[int] = None,
             start=None) -> PolySolution:
  """Runs a polynomial-head solver on validated inputs; see `cvxjax.poly.fit`.

  Args:
    X, S: (n, d) inputs and (C, n) labels per head, on the host.
    r, beta, activation: the problem.
    solver: a `Solver` of `SOLVERS`.
    max_steps: iteration budget (None: the solver's default).
    checkpoint_dir, checkpoint_every, progress: see `loop.run`.
    mesh: a `cvxjax.sharding` mesh, or None.
    chunk_size: stream X in chunks of this many examples (projected solver), or None.
    start: (Z, Z′), each (C, d+1, d+1), to warm-start from, or None.
  """
  max_steps = _DEFAULT_STEPS[solver.name] if max_steps is None else int(max_steps)
  dtype = jnp.result_type(float)
  settings = dict(r=r, beta=beta, activation=activation)
  if isinstance(solver, (barrier.HeadwiseSolver, working_set.Solver)) and dtype != jnp.float64:
    warnings.warn(f"the {solver.name} solver is built for float64 (jax.config.update("
                  "'jax_enable_x64', True)); in float32 it stops at gaps of 1e-4 to 1e-1",
                  stacklevel=3)

  def run(stage: base.Solver, problem, put, steps: int, directory: Optional[str]):
    return loop.run(stage, problem, max_steps=steps, chunk=checkpoint_every,
                    checkpoint_dir=directory, progress=progress, start=start, place=put)

  with loop.blas_limited():
    if isinstance(solver, working_set.Solver):
      (Z, Zp), summary = solver.run(
          X, S, max_steps=max_steps, checkpoint_dir=checkpoint_dir, **settings,
          solve=lambda stage, X, S, steps, directory: run(
              stage, *_placed(X, S, mesh, dtype, **settings), steps, directory))
      loop.warn_above_tol(solver.name, summary, solver.tol)
      return PolySolution(Z, Zp, objective=summary.objective, gap=summary.gap,
                          steps=summary.steps)
    if chunk_size is not None:  # X and S stay on the host
      solver = projected.Streamed(**{**vars(solver), "chunk_size": chunk_size})
      problem, put = poly.Problem(X, S, **settings), None
    else:
      problem, put = _placed(X, S, mesh, dtype, **settings)
    result = run(solver, problem, put, max_steps, checkpoint_dir)
  (Z, Zp), summary = result.params, result.summary
  if isinstance(solver, low_rank.Solver) and solver.free_multipliers > 0:
    Z, Zp, summary = _certified(problem, result, solver.free_multipliers)
    if bool(jnp.any(jax.vmap(low_rank.fills_its_rank)(result.state.best))):
      warnings.warn(f"the low_rank solver's factors use all their rank={solver.rank} columns: "
                    "an optimum of higher rank is out of their reach; pass "
                    "solver=low_rank.Solver(rank=...) with a larger rank", stacklevel=3)
  # The barrier's usual cause is a worst case in the TRS hard case, where the margin has a kink
  # that Newton's method cannot cross (see its docstring).
  loop.warn_above_tol(solver.name, summary, solver.tol)
  return PolySolution(Z, Zp, objective=summary.objective, gap=summary.gap, steps=summary.steps)


def _placed(X: np.ndarray, S: np.ndarray, mesh, dtype, **settings):
  """(the `poly.Problem` of X (n, d) and S (C, n) on the mesh, the placement of states):
  examples padded by rows that count nowhere (label 0) and split over the mesh's first axis,
  heads over its second (states follow the heads)."""
  if rows := sharding.padding(X.shape[0], mesh):
    X, S = sharding.pad(X, rows), sharding.pad(S, rows, axis=1)
  put = functools.partial(sharding.place, mesh=mesh, examples=X.shape[0], model=S.shape[0])
  return poly.Problem(put(jnp.asarray(X, dtype), model=None), put(jnp.asarray(S, dtype)),
                      **settings), put


def _certified(problem: poly.Problem, result: loop.Result, free: int):
  """Each head of the low-rank solver through `dual_interior.certify`: its fixed-cut dual at
  the head's worst cases (the bound kept where it beats the solver's own) and the dual's primal
  blocks where their exact objective is lower (at r = 0 they are the optimum).

  Returns:
    Z, Z′ (C, d+1, d+1) and the `base.Summary` of the heads.
  """
  heads = [dual_interior.certify(Z, Zp, problem.X, s, max_free=free, **problem.settings)
           for Z, Zp, s in zip(*result.params, problem.S, strict=True)]
  lower = jnp.maximum(result.state.lower, jnp.stack([h.lower for h in heads]))
  summary = base.summed(jnp.stack([h.objective for h in heads]), lower,
                        result.state.step + jnp.stack([h.iteration for h in heads]))
  return jnp.stack([h.Z for h in heads]), jnp.stack([h.Zp for h in heads]), summary
