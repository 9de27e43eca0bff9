"""The solver protocol: a solver is a frozen dataclass of settings with init, step, terminate.

A problem is a pytree (its arrays are leaves, its hyperparameters static fields); a solver is a
hashable value whose fields are its settings, so both pass through `jax.jit` (the solver as a
static argument). `cvxjax.solvers.loop.run` drives any solver: it jits `prepare` and `init`,
runs chunks of `step` in a `lax.while_loop` until `terminate`, checkpoints between chunks and
stops early once the `summary` certifies the tolerance.
"""

import abc
import dataclasses
from typing import Any, ClassVar, NamedTuple, Optional

import jax.numpy as jnp


class Summary(NamedTuple):
  """What a state has reached, summed over its heads (or classes).

  Attributes:
    objective: () the exact objective of the solver's current solution.
    gap: () a certified upper bound on objective − optimum, or None where none exists.
    violation: () the largest constraint violation, or None where the iterates stay feasible.
    steps: () solver steps taken (iterations; the most over the heads).
  """

  objective: jnp.ndarray
  gap: Optional[jnp.ndarray]
  violation: Optional[jnp.ndarray]
  steps: jnp.ndarray


@dataclasses.dataclass(frozen=True)
class Solver(abc.ABC):
  """The protocol every solver implements; subclasses are frozen dataclasses of settings.

  Attributes:
    tol: the relative certified gap at which the solver stops (and its own residual test's
      tolerance, where it has one).
  """

  tol: float = 1e-6

  # The solver's name in messages ("barrier", "admm", ...).
  name: ClassVar[str] = ""
  # Iterations that one `step` takes (`Summary.steps` counts iterations).
  iterations_per_step: ClassVar[int] = 1
  # Whether `init` accepts a warm start.
  warm_start: ClassVar[bool] = True
  # Whether `loop.run` may jit the methods (False: steps that are host loops, e.g. streamed).
  jittable: ClassVar[bool] = True

  def prepare(self, problem: Any) -> Any:
    """What every step needs and no state carries (factorisations, step sizes): the problem the
    other methods receive. Recomputed on resume, never checkpointed. Default: `problem`."""
    return problem

  @abc.abstractmethod
  def init(self, problem: Any, start: Any = None) -> Any:
    """The initial state, from the solver's default start or from `start` (a warm start: the
    `params` of an earlier solution of a problem of the same shapes)."""

  @abc.abstractmethod
  def step(self, problem: Any, state: Any) -> Any:
    """The next state."""

  def terminate(self, problem: Any, state: Any) -> jnp.ndarray:
    """() bool: whether the state has converged by the solver's own cheap test, checked after
    every step inside the jitted loop. Default: never (the summary's gap decides)."""
    return jnp.asarray(False)

  @abc.abstractmethod
  def solution(self, problem: Any, state: Any) -> tuple[Any, Summary]:
    """(params, summary): the solution the state stands for (feasible, where the solver
    restores feasibility) and its summary."""

  def summary(self, problem: Any, state: Any) -> Summary:
    """The state's `Summary`, checked between chunks. Default: that of `solution`."""
    return self.solution(problem, state)[1]


def summed(upper: jnp.ndarray, lower: jnp.ndarray, steps: jnp.ndarray,
           violation: Optional[jnp.ndarray] = None) -> Summary:
  """The summary of heads with objectives `upper`, certified lower bounds `lower` and steps
  `steps`, each (C,): the objectives and bounds summed, the most steps."""
  objective = jnp.sum(upper)
  return Summary(objective, jnp.maximum(objective - jnp.sum(lower), 0.0), violation,
                 jnp.max(steps))
