"""The interior-point method on every example, then the S-lemma SDP on each open head's working set.

At r > 0 the two interior-point methods have opposite strengths (docs/solvers.md): on the exact
margins (`interior`) the path is short and certifies to 1e-6 in 20–40 steps while the worst cases
stay smooth, but it wanders where a margin has a kink (the trust-region hard case); the S-lemma
SDP (`sdp`) has no kinks, but pays O(m⁴) a step for every example. Only the examples whose
worst-case margin is at most 1 at the optimum shape it: the others add nothing to the objective
near the optimum, so dropping them leaves the optimum where it is. So each head first runs
`interior` on every example for at most `switch_after` steps, and a head it leaves uncertified
runs `sdp` on its working set: the examples whose margin at the interior-point method's best
point is below 1 + `slack`, filled up with the next smallest margins to a multiple of `bucket`
rows (one compilation per size). Then

- the subset's certified bound bounds the full optimum (each hinge term is ≥ 0, so dropping terms
  lowers the objective everywhere), and its point, evaluated exactly on every example, is a point
  of the full problem: the head keeps the lowest objective and the highest bound seen;
- if an example outside the set has a margin below 1 at the SDP's point, it joins the set
  (filled up as before) and the SDP runs again (at most `max_rounds` times); if none has, the
  subset's optimum is the full one, and another round would solve the same problem.
"""

import dataclasses
import functools
import os
from typing import Callable, ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cvxjax.core import checks, poly
from cvxjax.solvers import base, interior, loop, sdp

# solve(solver, X, S, max_steps, checkpoint_dir) -> loop.Result: runs a head-wise solver on the
# heads S (C, n) of the inputs X (n, d), host arrays, placed as the fit places them.
Solve = Callable[[base.Solver, np.ndarray, np.ndarray, int, Optional[str]], loop.Result]


@functools.partial(jax.jit, static_argnames=("r", "beta", "activation"))
def _exact(Z, Zp, X, s, *, r, beta, activation):
  """(objective, margins (n,)) of one head on every example."""
  margins = poly.margins(Z - Zp, X, s, r, activation)
  return poly.hinge_sum(margins, s) + beta * (Z[-1, -1] + Zp[-1, -1]), margins


def _subdirectory(directory: Optional[str], name: str) -> Optional[str]:
  return None if directory is None else os.path.join(directory, name)


@dataclasses.dataclass(frozen=True)
class Solver:
  """`interior` on every example, then `sdp` on working sets where it stops above `tol` (r > 0).

  Attributes:
    tol: the relative certified gap at which a head is done.
    switch_after: interior-point steps after which an uncertified head moves to the SDP.
    slack: examples whose worst-case margin at the interior-point method's best point is below
      1 + slack start a head's working set.
    max_rounds: SDP solves per head at most (each on a grown working set).
    bucket: working sets are filled up to a multiple of this many examples.
  """

  tol: float = 1e-6
  switch_after: int = 60
  slack: float = 0.5
  max_rounds: int = 4
  bucket: int = 128

  name: ClassVar[str] = "interior+sdp"
  warm_start: ClassVar[bool] = False

  def __post_init__(self):
    for name in ("switch_after", "max_rounds", "bucket"):
      checks.check_count(getattr(self, name), name)
    checks.check_nonnegative(self.slack, "slack")

  def working_set(self, margins: np.ndarray, members: np.ndarray, below: float) -> np.ndarray:
    """(n,) bool: `members`, the examples with margin below `below`, and the next smallest
    margins up to a multiple of `bucket` (all n when that reaches n)."""
    wanted = int(np.sum(members | (margins < below)))
    size = min(margins.size, -(-max(wanted, 1) // self.bucket) * self.bucket)
    priority = np.where(members, -np.inf, margins)
    grown = np.zeros(margins.size, bool)
    grown[np.argsort(priority, kind="stable")[:size]] = True
    return grown

  def run(self, X: np.ndarray, S: np.ndarray, *, r: float, beta: float, activation,
          max_steps: int, checkpoint_dir: Optional[str], solve: Solve):
    """Solves every head; see the module docstring.

    Args:
      X: (n, d) inputs; S: (C, n) labels per head in {−1, +1}; host arrays.
      r, beta, activation: the problem, r > 0.
      max_steps: the steps each head may take in all its stages.
      checkpoint_dir: each stage checkpoints (and resumes) in its own folder below it, or None.
      solve: runs a head-wise solver on a subproblem (`Solve`).

    Returns:
      ((Z, Z′) each (C, d+1, d+1), the `base.Summary` of the heads).
    """
    first = solve(interior.Solver(tol=self.tol), X, S, min(self.switch_after, max_steps),
                  _subdirectory(checkpoint_dir, "interior"))
    Z, Zp = (np.array(A) for A in first.params)
    lower = np.array(first.state.lower)
    steps = np.array(first.state.step)
    exact = functools.partial(_exact, X=jnp.asarray(X), r=r, beta=beta, activation=activation)
    heads = []
    for c, s in enumerate(S):
      upper, margins = (np.asarray(v) for v in exact(Z[c], Zp[c], s=jnp.asarray(s)))
      members = np.zeros(s.size, bool)
      for rounds in range(self.max_rounds):
        if upper - lower[c] <= self.tol * abs(upper) or steps[c] >= max_steps:
          break
        if rounds and not np.any(~members & (margins < 1)):
          break  # the SDP has solved this set: no example outside it costs anything
        members = self.working_set(margins, members, 1 if rounds else 1 + self.slack)
        rows = np.flatnonzero(members)
        result = solve(sdp.Solver(tol=self.tol), X[rows], s[None, rows],
                       int(max_steps - steps[c]), _subdirectory(checkpoint_dir, f"{c}-{rounds}"))
        lower[c] = max(lower[c], float(result.state.lower[0]))
        steps[c] += int(result.state.step[0])
        point = tuple(np.array(A[0]) for A in result.params)
        objective, margins = (np.asarray(v) for v in exact(*point, s=jnp.asarray(s)))
        if objective < upper:
          upper, (Z[c], Zp[c]) = objective, point
      heads.append(upper)
    summary = base.summed(jnp.asarray(np.array(heads)), jnp.asarray(lower), jnp.asarray(steps))
    return (jnp.asarray(Z), jnp.asarray(Zp)), summary
