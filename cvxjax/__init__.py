"""cvxjax: two-layer networks trained to global optimality by convex optimisation, in JAX.

The polynomial-activation heads live in `cvxjax.poly` (fit, exact_fit, decompose,
worst_case_margin, certified_radius), the convex ReLU and gated-ReLU heads in `cvxjax.relu`
(fit, exact_fit, recover); the formulations are in the project's MATH.md.
"""

from cvxjax import activations, attacks, certify, poly, psd, relu
from cvxjax.activations import DEFAULT_ACTIVATION, Quadratic, relu_fit
from cvxjax.poly import PolyHead
from cvxjax.relu import ReluHead

__all__ = [
    "DEFAULT_ACTIVATION",
    "PolyHead",
    "Quadratic",
    "ReluHead",
    "activations",
    "attacks",
    "certify",
    "poly",
    "psd",
    "relu",
    "relu_fit",
]
