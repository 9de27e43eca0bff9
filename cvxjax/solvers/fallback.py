"""The interior-point solver on the exact margins, then the S-lemma SDP for heads it leaves open.

At r > 0 the two interior-point methods have opposite strengths (docs/solvers.md): on the exact
margins (`interior`) the path is short and certifies to 1e-6 in 20–40 steps while the worst cases
stay smooth, but it wanders where a margin has a kink (the trust-region hard case) or bends
sharply; the S-lemma SDP (`sdp`) has no kinks and certifies those heads, in more steps and with
an endgame that stalls near relative gaps of 1e-6 to 1e-3. Each head therefore runs `interior`
until it certifies, fails, or has taken `switch_after` steps, and then `sdp` from its own start.
Both methods' best points and bounds are valid for the head, so the head reports the better of
each: the lowest objective and the highest bound seen by either.
"""

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from cvxjax.core import checks
from cvxjax.solvers import barrier, interior, sdp


class FallbackState(NamedTuple):
  """One head's state: both methods' states and the better of their certificates.

  Attributes:
    first: the `interior.InteriorState`.
    second: the `sdp.SdpState` (at its start until the head switches).
    upper: () the lowest exact objective seen by either.
    lower: () the highest certified bound of either.
    step: () steps taken by both.
    done: () whether the gap tolerance was met (or the SDP stopped).
  """

  first: interior.InteriorState
  second: sdp.SdpState
  upper: jnp.ndarray
  lower: jnp.ndarray
  step: jnp.ndarray
  done: jnp.ndarray


@dataclasses.dataclass(frozen=True)
class Solver(barrier.HeadwiseSolver):
  """`interior`, then `sdp` where it stops above `tol`, head by head (r > 0).

  Attributes:
    switch_after: interior-point steps after which an uncertified head moves to the SDP.
    tol: the relative certified gap at which a head is done.
  """

  switch_after: int = 60

  name: ClassVar[str] = "interior+sdp"

  def __post_init__(self):
    checks.check_count(self.switch_after, "switch_after")

  def init_head(self, X, s, **settings) -> FallbackState:
    first = interior.init(X, s, **settings)
    second = sdp.init(X, s, **settings)
    return FallbackState(first, second, jnp.minimum(first.upper, second.upper), first.lower,
                         jnp.asarray(0), jnp.asarray(False))

  def step_head(self, state: FallbackState, X, s, **settings) -> FallbackState:
    on_first = ~state.first.done & (state.first.step < self.switch_after)
    first, second = jax.lax.cond(
        on_first,
        lambda: (interior.step(state.first, X, s, tol=self.tol, **settings), state.second),
        lambda: (state.first, sdp.step(state.second, X, s, tol=self.tol, **settings)))
    upper = jnp.minimum(first.upper, second.upper)
    lower = jnp.maximum(first.lower, second.lower)
    done = (upper - lower <= self.tol * jnp.abs(upper)) | second.done
    return FallbackState(first, second, upper, lower, state.step + 1, done)

  def primal(self, state: FallbackState):
    pick = (state.first.upper <= state.second.upper)[..., None, None]
    return (jnp.where(pick, state.first.best_Z, state.second.best_Z),
            jnp.where(pick, state.first.best_Zp, state.second.best_Zp))
