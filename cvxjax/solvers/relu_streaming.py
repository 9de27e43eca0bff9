"""Full passes over a ReLU problem whose examples stay on the host, one chunk at a time.

The streamed ReLU solvers (`proximal.Streamed`, `penalty.Streamed`) take a
`cvxjax.core.relu.Instance` whose X, D and targets are host arrays (NumPy arrays or memory
maps). Every quantity they need is a sum (gradients, the objective) or a max (the feasibility
shift, the violation) over examples, so it is assembled here from chunks of `chunk_size`
examples on the device (`cvxjax.streaming`).
"""

import functools

import jax
import jax.numpy as jnp

from cvxjax import streaming
from cvxjax.core import relu, relu_dual
from cvxjax.solvers import base


def pass_sum(fn, problem: relu.Instance, chunk_size: int):
  """Σ over chunks of fn(first, X, D, labels, onehot, pairs) (`streaming.pass_sum`)."""
  arrays, dtypes = _arrays(problem)
  return streaming.pass_sum(fn, arrays, chunk_size, dtypes)


def _chunks(problem: relu.Instance, chunk_size: int):
  """(X, D, labels, onehot, pairs) of each chunk, on the device."""
  arrays, dtypes = _arrays(problem)
  return streaming.chunks(arrays, chunk_size, dtypes)


def _arrays(problem: relu.Instance) -> tuple:
  """(host arrays, their device dtypes): labels stay integers for a multi-class head."""
  t = problem.targets
  dtype = jnp.result_type(float)
  return ((problem.X, problem.D, t.labels, t.onehot, t.pairs),
          (dtype, dtype, dtype if problem.binary else jnp.int32, dtype, dtype))


@functools.partial(jax.jit, static_argnames=("loss", "eps", "q"))
def _chunk_objective(W, X, D, labels, onehot, pairs, beta, *, loss, eps, q):
  return relu.objective(W, X, D, relu.Targets(labels, onehot, pairs), loss=loss, eps=eps, q=q,
                        beta=beta)


@functools.partial(jax.jit, static_argnames=("eps", "q"))
def _chunk_violation(W, X, D, *, eps, q):
  return relu.constraint_violation(W, X, D, eps, q)


_chunk_shift = jax.jit(relu_dual.feasibility_shift, static_argnames=("eps", "q"))


@functools.partial(jax.jit, static_argnames=("loss", "eps", "q"))
def _chunk_ray_terms(W, X, D, labels, onehot, pairs, *, loss, eps, q):
  return relu.ray_terms(W, X, D, relu.Targets(labels, onehot, pairs), loss=loss, eps=eps, q=q)


def objective(W, problem: relu.Instance, chunk_size: int) -> jnp.ndarray:
  """() `relu.objective` at W (S, P, d, C) from one pass (β counted in the first chunk)."""
  measures = dict(loss=problem.loss, eps=problem.eps, q=problem.q)
  return pass_sum(lambda first, *chunk: _chunk_objective(
      W, *chunk, jnp.asarray(problem.beta if first else 0.0, W.dtype), **measures),
      problem, chunk_size)


def violation(W, problem: relu.Instance, chunk_size: int) -> jnp.ndarray:
  """() `relu.constraint_violation` at W, the largest over the chunks (0 for a gated head)."""
  if W.shape[0] == 1:
    return jnp.zeros((), W.dtype)
  return max((_chunk_violation(W, X, D, eps=problem.eps, q=problem.q)
              for X, D, *_ in _chunks(problem, chunk_size)), key=float)


def feasible(W, problem: relu.Instance, chunk_size: int) -> jnp.ndarray:
  """`relu_dual.restore_feasibility` of ReLU weights W (2, P, d, C), the shifts' max and the
  blocked neurons' or taken over the chunks."""
  t = blocked = None
  directions = jnp.asarray(problem.directions, W.dtype)
  for X, D, labels, onehot, pairs in _chunks(problem, chunk_size):
    counted = relu.counted(relu.Targets(labels, onehot, pairs))
    t_c, blocked_c = _chunk_shift(W, X, D, directions, counted, eps=problem.eps, q=problem.q)
    t = t_c if t is None else jnp.maximum(t, t_c)
    blocked = blocked_c if blocked is None else blocked | blocked_c
  return relu_dual.shifted(W, t, blocked, directions)


def best_scale(W, problem: relu.Instance, chunk_size: int) -> jnp.ndarray:
  """`relu.best_scale` at W from one pass: the squared loss's terms add up over the chunks, the
  hinge pairs' slopes are gathered."""
  measures = dict(loss=problem.loss, eps=problem.eps, q=problem.q)
  terms = [_chunk_ray_terms(W, *chunk, **measures) for chunk in _chunks(problem, chunk_size)]
  terms = sum(terms) if problem.loss == "squared" else jnp.concatenate(terms)
  return relu.best_scale_on_ray(terms, problem.beta * jnp.sum(relu.group_norms(W)), problem.loss)


def iterate_summary(W, problem: relu.Instance, chunk_size: int, steps) -> base.Summary:
  """The summary between chunks: the objective of the iterate W (one pass), no gap."""
  return base.Summary(objective(W, problem, chunk_size), None, None, steps)


def solution(W, problem: relu.Instance, chunk_size: int, steps) -> tuple[jnp.ndarray,
                                                                          base.Summary]:
  """(weights, summary): W moved into its cones (ReLU heads) and scaled along its ray as in
  memory (`relu_certificate.certificate`), with the objective and violation of the moved
  weights; no gap (the certificate needs the whole problem in memory)."""
  if not problem.gated:
    W = feasible(W, problem, chunk_size)
  W = W * best_scale(W, problem, chunk_size)
  return W, base.Summary(objective(W, problem, chunk_size), None,
                         violation(W, problem, chunk_size), steps)
