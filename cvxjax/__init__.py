"""cvxjax: two-layer networks trained to global optimality by convex optimisation, in JAX.

The polynomial-activation heads live in `cvxjax.poly` (fit, exact_fit, decompose,
worst_case_margin, certified_radius); the formulations are in the project's MATH.md.
"""

from cvxjax import activations, attacks, certify, poly, psd
from cvxjax.activations import DEFAULT_ACTIVATION, Quadratic, relu_fit
from cvxjax.poly import PolyHead

__all__ = [
    "DEFAULT_ACTIVATION",
    "PolyHead",
    "Quadratic",
    "activations",
    "attacks",
    "certify",
    "poly",
    "psd",
    "relu_fit",
]
