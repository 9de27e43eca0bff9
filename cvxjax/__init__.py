"""cvxjax: two-layer networks trained to global optimality by convex optimisation, in JAX.

The polynomial-activation heads live in `cvxjax.poly` (fit, exact_fit, decompose,
worst_case_margin, certified_radius), the convex ReLU and gated-ReLU heads in `cvxjax.relu`
(fit, exact_fit, recover, certified_radius); attacks and certificates of any model in
`cvxjax.attacks` and `cvxjax.certify`, reported by `robust_accuracy` and drawn by
`plot_robust_accuracy`. The mathematics the solvers share (the lift, K and its projections,
the trust-region subproblem, sign patterns and cones) is in `cvxjax.core`, which imports no
solver. The formulations are in the project's MATH.md.
"""

from cvxjax import attacks, certify, poly, relu
from cvxjax.attacks import robust_accuracy
from cvxjax.core import activations, psd
from cvxjax.core.activations import DEFAULT_ACTIVATION, Quadratic, relu_fit
from cvxjax.plotting import plot_robust_accuracy
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
    "plot_robust_accuracy",
    "poly",
    "psd",
    "relu",
    "relu_fit",
    "robust_accuracy",
]
