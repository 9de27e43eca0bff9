"""Datasets and splits (tabular part): scikit-learn's breast-cancer data, standardised.

Pure numpy: the arrays go to JAX only inside the solvers and models.
"""

from typing import NamedTuple, Optional

import numpy as np


class Split(NamedTuple):
  """One split of a labelled dataset.

  Attributes:
    X: (n, d) float64 features.
    y: (n,) labels (±1 for binary data).
  """

  X: np.ndarray
  y: np.ndarray


class TabularSplits(NamedTuple):
  """Train/validation/test splits, standardised by the training split's statistics.

  Attributes:
    train, val, test: the splits.
    mean, std: (d,) the training split's per-feature mean and standard deviation, used for
      every split (apply them to new data the same way).
  """

  train: Split
  val: Split
  test: Split
  mean: np.ndarray
  std: np.ndarray


def _check_fraction(value, name: str) -> float:
  if not (np.isscalar(value) and 0 <= value < 1):
    raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
  return float(value)


def stratified_split(y: np.ndarray, fractions, seed: int) -> list:
  """Shuffled index sets with the given fractions, each with the class balance of y.

  Args:
    y: (n,) labels.
    fractions: fractions of the later parts (e.g. (val, test)); the first part gets the rest.
    seed: seed of the shuffle (numpy's default generator).

  Returns:
    len(fractions) + 1 index arrays, disjoint, covering 0..n−1, each shuffled.
  """
  rng = np.random.default_rng(seed)
  parts = [[] for _ in range(len(fractions) + 1)]
  for label in np.unique(y):
    members = rng.permutation(np.flatnonzero(y == label))
    sizes = [int(round(f * len(members))) for f in fractions]
    start = len(members) - sum(sizes)
    parts[0].append(members[:start])
    for k, size in enumerate(sizes):
      parts[k + 1].append(members[start:start + size])
      start += size
  return [rng.permutation(np.concatenate(p)) for p in parts]


def standardise(train: np.ndarray, *others: np.ndarray):
  """Centres and scales every array by train's per-column mean and standard deviation.

  Constant columns (std 0) are only centred.

  Args:
    train: (n, d) training features.
    *others: (m, d) arrays to transform the same way.

  Returns:
    (train_std, [others_std...], mean, std).
  """
  mean = train.mean(axis=0)
  std = train.std(axis=0)
  std = np.where(std > 0, std, 1.0)
  return (train - mean) / std, [(o - mean) / std for o in others], mean, std


def breast_cancer_splits(seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2,
                         *, max_train: Optional[int] = None,
                         num_features: Optional[int] = None) -> TabularSplits:
  """scikit-learn's Wisconsin breast-cancer data (569 × 30), split and standardised.

  Labels: +1 benign, −1 malignant. The split is stratified and fixed by `seed`; features are
  standardised by the mean and standard deviation of the training rows actually used.

  Args:
    seed: seed of the split.
    val_fraction: fraction of the data in the validation split, in [0, 1).
    test_fraction: fraction in the test split, in [0, 1); the training split gets the rest.
    max_train: keep at most this many training rows (the first of the shuffled split),
      for small experiments; None keeps all.
    num_features: keep the first this many of the 30 features (the first 10 are the
      per-image means); None keeps all.

  Returns:
    `TabularSplits` with float64 X and labels in {−1, +1}.

  Raises:
    ValueError: if a fraction or size is out of range.
  """
  from sklearn.datasets import load_breast_cancer  # bundled with scikit-learn: no download

  val_fraction = _check_fraction(val_fraction, "val_fraction")
  test_fraction = _check_fraction(test_fraction, "test_fraction")
  if val_fraction + test_fraction >= 1:
    raise ValueError(f"val_fraction + test_fraction must be < 1, got "
                     f"{val_fraction} + {test_fraction}")
  if max_train is not None and max_train < 2:
    raise ValueError(f"max_train must be None or >= 2, got {max_train!r}")
  X, target = load_breast_cancer(return_X_y=True)
  if num_features is not None and not 1 <= num_features <= X.shape[1]:
    raise ValueError(f"num_features must be None or in 1..{X.shape[1]}, got {num_features!r}")
  X = X[:, :num_features].astype(np.float64)
  y = np.where(target == 1, 1.0, -1.0)
  train, val, test = stratified_split(y, (val_fraction, test_fraction), seed)
  train = train[:max_train]
  X_train, (X_val, X_test), mean, std = standardise(X[train], X[val], X[test])
  return TabularSplits(Split(X_train, y[train]), Split(X_val, y[val]), Split(X_test, y[test]),
                       mean, std)
