"""The mathematics of every family of heads, below the solvers (it imports none of them).

- `activations`: the polynomial activation σ and its fit of ReLU.
- `psd`: projections onto the PSD cone and onto K, and the exact trust-region subproblem.
- `poly`: the lift of polynomial heads, their exact worst case, objective and dual bound.
- `relu`: sign patterns, scores and their adjoints, cones, losses and dual norms of (gated)
  ReLU heads, and the validated `Problem` their solvers take.
- `numerics`: a backtracking line search, the smoothed hinge and soft-thresholding.
- `checks`: validation of arrays and numbers, raising ValueError naming the argument.

The public modules `cvxjax.poly` and `cvxjax.relu` re-export what users need.
"""
