"""Validation of the arrays and numbers the public functions take, before any compute.

Each check raises ValueError naming the argument.
"""

import numpy as np


def check_array(X, name: str) -> np.ndarray:
  """Validates a 2-D finite numeric array without copying it (a memory map stays one)."""
  X = np.asarray(X)
  if X.ndim != 2 or 0 in X.shape:
    raise ValueError(f"{name} must be a non-empty 2-D array (n, d), got shape {X.shape}")
  if not np.issubdtype(X.dtype, np.number):
    raise ValueError(f"{name} must be numeric, got dtype {X.dtype}")
  rows = max(1, 2**24 // X.shape[1])  # blocks of 16M entries bound the check's memory
  if not all(np.isfinite(X[i:i + rows]).all() for i in range(0, X.shape[0], rows)):
    raise ValueError(f"{name} must be finite; it holds NaN or inf")
  return X


def check_labels(y, n: int) -> tuple[np.ndarray, bool]:
  """Validates labels: ±1 → (float ±1, binary=True); integers ≥ 0 → (int class indices, False)."""
  y = np.asarray(y)
  if y.ndim != 1 or y.shape[0] != n:
    raise ValueError(f"y must have shape ({n},) to match X, got shape {y.shape}")
  if not (np.issubdtype(y.dtype, np.number) and np.all(np.isfinite(y))):
    raise ValueError("y must hold finite numbers")
  values = np.unique(y)
  if np.all(np.isin(values, (-1, 1))):
    return y.astype(np.float64), True
  if np.all(values == np.round(values)) and values.min() >= 0:
    return y.astype(np.int64), False
  raise ValueError(
      f"y must hold labels in {{-1, +1}} (binary) or integers 0..C-1 (multi-class); got {values}")


def check_nonnegative(value, name: str) -> None:
  """Validates a finite number ≥ 0 (a radius)."""
  if not (np.isscalar(value) and np.isfinite(value) and value >= 0):
    raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_positive(value, name: str) -> None:
  """Validates a finite number > 0 (a regularisation weight)."""
  if not (np.isscalar(value) and np.isfinite(value) and value > 0):
    raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_count(value, name: str) -> None:
  """Raises ValueError naming `name` unless value is an integer >= 1."""
  if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
    raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
