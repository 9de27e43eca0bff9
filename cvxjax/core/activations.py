"""Polynomial activation σ(t) = a t² + b t + c and its least-squares fit of ReLU (MATH.md §1)."""

from typing import NamedTuple

import jax.numpy as jnp


class Quadratic(NamedTuple):
  """Coefficients of σ(t) = a t² + b t + c."""

  a: float
  b: float
  c: float


# The paper's rounding of `relu_fit(5.0)` = (0.09375, 0.5, 0.46875).
DEFAULT_ACTIVATION = Quadratic(0.09, 0.5, 0.47)


def relu_fit(bound: float) -> Quadratic:
  """Least-squares quadratic fit of ReLU on [-bound, bound] under the uniform weight.

  From |t| ≈ (15/16) t² + 3/16 on [-1, 1] and ReLU(t) = (t + |t|) / 2, rescaled to [-L, L].

  Args:
    bound: the half-width L > 0 of the fitting interval.

  Returns:
    `Quadratic(a=15/(32 L), b=1/2, c=3 L/32)`.
  """
  if not bound > 0:
    raise ValueError(f"bound must be positive, got {bound}")
  return Quadratic(15.0 / (32.0 * bound), 0.5, 3.0 * bound / 32.0)


def polynomial(t: jnp.ndarray, activation: Quadratic = DEFAULT_ACTIVATION) -> jnp.ndarray:
  """Applies σ elementwise; any shape in, same shape out."""
  a, b, c = activation
  return (a * t + b) * t + c
