"""cvxjax: two-layer networks trained to global optimality by convex optimisation, in JAX.

The polynomial-activation heads live in `cvxjax.poly` (fit, exact_fit, decompose,
worst_case_margin, certified_radius), the convex ReLU and gated-ReLU heads in `cvxjax.relu`
(fit, exact_fit, recover, certified_radius); every head, with the nonconvex and linear ones of
`cvxjax.heads`, offers the `Head` interface and is saved by `save_head` / `load_head`. Attacks
and certificates of any model are in `cvxjax.attacks` and `cvxjax.certify`, reported by
`robust_accuracy` and drawn by `plot_robust_accuracy`. The formulations are in the project's
MATH.md.
"""

import os

# XLA's concurrency-optimised CPU scheduler deadlocks (every thread idle in a futex) on programs
# that run batched LAPACK calls side by side, as the ReLU barrier's Newton step does; the flag
# must be set before jax starts its backend.
if "xla_cpu_enable_concurrency_optimized_scheduler" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_enable_concurrency_optimized_scheduler=false").strip()

from cvxjax import activations, attacks, certify, heads, poly, psd, relu  # noqa: E402
from cvxjax.activations import DEFAULT_ACTIVATION, Quadratic, relu_fit  # noqa: E402
from cvxjax.attacks import robust_accuracy  # noqa: E402
from cvxjax.heads import Head, LinearHead, NetworkHead, load_head, save_head  # noqa: E402
from cvxjax.poly import PolyHead  # noqa: E402
from cvxjax.relu import ReluHead  # noqa: E402
from cvxjax.report import plot_robust_accuracy  # noqa: E402

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
