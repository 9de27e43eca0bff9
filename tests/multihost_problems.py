"""The fits that test_multihost.py runs both in one process and over two (multihost_worker.py)."""

import jax
import numpy as np

from cvxjax import poly, relu

# n = 30 over 4 example shards: two padding rows, on the second process.
FITS = ("poly-barrier", "poly-projected", "relu-robust-admm", "relu-gated-apg")


def data(n: int = 30, d: int = 4, classes: int = 2, seed: int = 0):
  """(X, y): n points with labels ±1 (classes = 2) or 0..classes−1 (test_sharding.py's too)."""
  rng = np.random.default_rng(seed)
  X = rng.normal(size=(n, d))
  score = X[:, 0] - 0.6 * X[:, 1] ** 2 + 0.4 + 0.3 * rng.normal(size=n)
  if classes == 2:
    return X, np.where(score > 0, 1.0, -1.0)
  return X, np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]))


def fit(name: str, mesh=None):
  """(objective, weights) of one named fit, on `mesh` or on one device."""
  key = jax.random.key(1)
  if name.startswith("poly"):
    solver = name.split("-")[1]
    X, y = data(classes=2 if solver == "barrier" else 3)
    head = poly.fit(X, y, r=0.3, beta=1e-2, solver=solver, max_steps=60 if solver == "barrier"
                    else 30, mesh=mesh)
    return head.objective, head.Z
  # Few ADMM steps: each all-reduces (and sorts the robust slacks) across the processes.
  settings = (dict(eps=0.1, solver="admm", classes=2, max_steps=10) if name == "relu-robust-admm"
              else dict(gated=True, loss="squared", solver="apg", classes=3, max_steps=100))
  X, y = data(classes=settings.pop("classes"))
  head = relu.fit(X, y, num_patterns=8, key=key, mesh=mesh, **settings)
  return head.objective, head.weights
