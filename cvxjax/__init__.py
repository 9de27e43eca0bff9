"""cvxjax: two-layer networks trained to global optimality by convex optimisation, in JAX.

The polynomial-activation heads live in `cvxjax.poly` (fit, exact_fit, decompose,
worst_case_margin, certified_radius), the convex ReLU and gated-ReLU heads in `cvxjax.relu`
(fit, exact_fit, recover, certified_radius); every head, with the nonconvex and linear ones of
`cvxjax.heads`, offers the `Head` interface and is saved by `save_head` / `load_head`. Attacks
and certificates of any model are in `cvxjax.attacks` and `cvxjax.certify`, reported by
`robust_accuracy` and drawn by `plot_robust_accuracy`. The mathematics the solvers share (the
lift, K and its projections, the trust-region subproblem, sign patterns and cones) is in
`cvxjax.core`, which imports no solver. The formulations are in docs/math.md.
"""

from cvxjax import attacks, certify, heads, poly, relu
from cvxjax.attacks import robust_accuracy
from cvxjax.core import activations, psd
from cvxjax.core.activations import DEFAULT_ACTIVATION, Quadratic, relu_fit
from cvxjax.heads import Head, LinearHead, NetworkHead, load_head, save_head
from cvxjax.plotting import plot_robust_accuracy
from cvxjax.poly import PolyHead
from cvxjax.relu import ReluHead

__all__ = [
    "DEFAULT_ACTIVATION",
    "Head",
    "LinearHead",
    "NetworkHead",
    "PolyHead",
    "Quadratic",
    "ReluHead",
    "activations",
    "attacks",
    "certify",
    "heads",
    "load_head",
    "plot_robust_accuracy",
    "poly",
    "psd",
    "relu",
    "relu_fit",
    "robust_accuracy",
    "save_head",
]
