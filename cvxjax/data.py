"""Datasets and splits: scikit-learn's breast-cancer data (tabular, standardised), and images
(CIFAR-10 from TFDS or its binary archive, scikit-learn's digits).

Pure numpy: the arrays go to JAX only inside the solvers and models.
"""

import glob
import numbers
import os
import tarfile
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


# Image part: CIFAR-10 (from TFDS or the official binary archive) and scikit-learn's digits.

CIFAR10_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
# One CIFAR-10 binary record: a label byte, then the image channel-major (R, G, B planes of 32×32).
_CIFAR10_RECORD = 1 + 32 * 32 * 3
_CIFAR10_TEST_FILE = "test_batch.bin"
_CIFAR10_FOLDER = "cifar-10-batches-bin"
_DIGITS_TEST_FRACTION = 0.2
IMAGE_SOURCES = ("tfds", "archive", "digits")
_IMAGE_CLASSES = 10  # CIFAR-10 and digits alike


class ImageSplits(NamedTuple):
  """Train/validation/test splits of an image dataset.

  Attributes:
    train, val, test: the splits; each X is (n, H, W, 3) float32 with pixels in [0, 1]
      ((n, 32, 32, 3) for CIFAR-10 and for digits at the default size), each y is (n,) int32
      class labels in 0..num_classes−1.
    num_classes: the number of classes.
    source: the `source` argument of `image_splits` that produced them.
  """

  train: Split
  val: Split
  test: Split
  num_classes: int
  source: str


def _tfds_hint(data_dir: str) -> str:
  return (f"No CIFAR-10 prepared in array_record format in {data_dir}. Prepare it once (this "
          f"needs TensorFlow and a download): pip install -e \".[tfds]\", then "
          f"`tfds build cifar10 --data_dir={data_dir} --file_format=array_record` or "
          f"`python -c \"import tensorflow_datasets as tfds; tfds.builder('cifar10', "
          f"data_dir='{data_dir}', file_format='array_record').download_and_prepare()\"`.")


def _check_tfds_dir(data_dir: str) -> None:
  # Random access (tfds.data_source) cannot read TFDS's default tfrecord files: need array_record.
  if not glob.glob(os.path.join(glob.escape(data_dir), "cifar10", "*", "*.array_record*")):
    raise ValueError(_tfds_hint(data_dir))


def _read_data_source(source) -> tuple:
  """All examples of a TFDS CIFAR-10 data source as arrays.

  Args:
    source: a `tfds.data_source` split with 'image' (32, 32, 3) uint8 and 'label' features.

  Returns:
    (images (n, 32, 32, 3) uint8, labels (n,) int32).
  """
  images = np.empty((len(source), *IMAGE_SHAPE), dtype=np.uint8)
  labels = np.empty(len(source), dtype=np.int32)
  # One at a time: `__getitems__` fails under tfds.testing.mock_data (tfds 4.9.10).
  for i in range(len(source)):
    example = source[i]
    images[i] = example["image"]
    labels[i] = example["label"]
  return images, labels


def cifar10_tfds(data_dir: Optional[str] = None) -> tuple:
  """CIFAR-10's official train and test sets from a prepared TFDS directory, without TensorFlow.

  Args:
    data_dir: the TFDS data directory holding cifar10 in array_record format (~ is expanded);
      None uses TFDS's default (TFDS_DATA_DIR or ~/tensorflow_datasets).

  Returns:
    ((train_images (50000, 32, 32, 3) uint8, train_labels (50000,) int32),
     (test_images (10000, 32, 32, 3) uint8, test_labels (10000,) int32)).

  Raises:
    ValueError: if the data is not prepared there; the message says how to prepare it.
  """
  if data_dir is not None:
    data_dir = os.path.expanduser(os.fspath(data_dir))
    _check_tfds_dir(data_dir)  # only an explicit directory: tfds.testing.mock_data replaces it
  import tensorflow_datasets as tfds  # slow to import: only when CIFAR-10 comes from TFDS

  try:
    train, test = tfds.data_source("cifar10", split=["train", "test"], data_dir=data_dir,
                                   download=False)
  except (KeyError, NotImplementedError) as e:  # not prepared, or prepared as tfrecord
    default = os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))
    raise ValueError(_tfds_hint(data_dir or default)) from e
  return _read_data_source(train), _read_data_source(test)


def _cifar10_names(path: str, present) -> list:
  """The batch files to read: data_batch_1.bin … data_batch_K.bin (K >= 1), then test_batch.bin.

  Args:
    path: the directory or archive, for error messages.
    present: the names of the files there.

  Raises:
    ValueError: if test_batch.bin is missing or the training batches are not numbered 1..K.
  """
  if _CIFAR10_TEST_FILE not in present:
    raise ValueError(f"CIFAR-10 path {path} has no {_CIFAR10_TEST_FILE}")
  stems = [n[len("data_batch_"):-len(".bin")] for n in present
           if n.startswith("data_batch_") and n.endswith(".bin")]
  found = sorted(int(stem) for stem in stems if stem.isdigit())
  if not found or found != list(range(1, len(found) + 1)):
    raise ValueError(f"CIFAR-10 path {path} has training batches numbered {found}; expected "
                     f"data_batch_1.bin … data_batch_K.bin (K = 5 officially)")
  return [f"data_batch_{k}.bin" for k in found] + [_CIFAR10_TEST_FILE]


def _cifar10_bytes(path: str) -> dict:
  """The raw bytes of the CIFAR-10 binary batch files under `path`.

  Args:
    path: the cifar-10-batches-bin directory, its parent, or the .tar(.gz) archive.

  Returns:
    {file name: (size,) uint8 array} for data_batch_1.bin … data_batch_K.bin and test_batch.bin.
  """
  if os.path.isdir(path):
    inner = os.path.join(path, _CIFAR10_FOLDER)
    folder = inner if os.path.isdir(inner) else path
    present = [n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n))]
    return {name: np.fromfile(os.path.join(folder, name), dtype=np.uint8)
            for name in _cifar10_names(path, present)}
  if os.path.isfile(path) and tarfile.is_tarfile(path):
    with tarfile.open(path) as tar:
      members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
      return {name: np.frombuffer(tar.extractfile(members[name]).read(), dtype=np.uint8)
              for name in _cifar10_names(path, members)}
  raise ValueError(f"CIFAR-10 path {path} is neither a directory nor a tar archive"
                   f"{'' if os.path.exists(path) else ' (it does not exist)'}; download "
                   f"cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html")


def _decode_cifar10(raw: np.ndarray, where: str) -> tuple:
  """Images and labels of one CIFAR-10 binary batch file.

  Args:
    raw: (size,) uint8, the file's bytes.
    where: the file, for error messages.

  Returns:
    (images (n, 32, 32, 3) uint8, labels (n,) int32).
  """
  if raw.size == 0 or raw.size % _CIFAR10_RECORD:
    raise ValueError(f"{where}: {raw.size} bytes is not a positive multiple of the record size "
                     f"{_CIFAR10_RECORD} (1 label byte + 3072 image bytes): truncated, or not "
                     f"CIFAR-10's binary version")
  records = raw.reshape(-1, _CIFAR10_RECORD)
  labels = records[:, 0].astype(np.int32)
  if labels.max() >= CIFAR10_CLASSES:
    raise ValueError(f"{where}: label {labels.max()} is not in 0..{CIFAR10_CLASSES - 1}")
  images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels


def cifar10_archive(path: str) -> tuple:
  """CIFAR-10's official train and test sets from its binary version.

  The format (https://www.cs.toronto.edu/~kriz/cifar.html): files data_batch_1.bin …
  data_batch_5.bin and test_batch.bin, each a sequence of 3073-byte records: the label byte,
  then the 1024 red, 1024 green and 1024 blue bytes of the image, each plane row-major.

  Args:
    path: the cifar-10-batches-bin directory, its parent, or cifar-10-binary.tar.gz itself
      (read in memory, nothing is extracted); ~ is expanded. Any number K >= 1 of training
      batch files is read, so that data written by `write_cifar10_archive` with other
      `batches` reads back.

  Returns:
    ((train_images (n, 32, 32, 3) uint8, train_labels (n,) int32),
     (test_images (m, 32, 32, 3) uint8, test_labels (m,) int32)); n = 50000, m = 10000 for
    the official data.

  Raises:
    ValueError: naming the path and the problem if it does not exist, lacks batch files, or a
      file's size is not a multiple of 3073 or it holds a label above 9.
  """
  path = os.path.expanduser(os.fspath(path))
  raw = _cifar10_bytes(path)
  decoded = {name: _decode_cifar10(data, f"{name} in {path}") for name, data in raw.items()}
  test = decoded.pop(_CIFAR10_TEST_FILE)
  train = tuple(np.concatenate(parts) for parts in zip(*decoded.values(), strict=True))
  return train, test


def _cifar10_records(images: np.ndarray, labels: np.ndarray) -> bytes:
  """(n, 32, 32, 3) uint8 images and (n,) labels in 0..9 as CIFAR-10 binary records."""
  images, labels = np.asarray(images), np.asarray(labels)
  if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE or images.shape[0] == 0:
    raise ValueError(f"images must be (n >= 1, 32, 32, 3) uint8, got {images.shape} "
                     f"{images.dtype}")
  if labels.shape != images.shape[:1] or not np.all((labels >= 0) & (labels < CIFAR10_CLASSES)):
    raise ValueError(f"labels must be ({len(images)},) in 0..{CIFAR10_CLASSES - 1}")
  planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
  return np.concatenate([labels.astype(np.uint8)[:, None], planes], axis=1).tobytes()


def write_cifar10_archive(directory: str, train: tuple, test: tuple, batches: int = 5) -> None:
  """Writes images in CIFAR-10's binary format (the inverse of `cifar10_archive`).

  Args:
    directory: where to write data_batch_1.bin … data_batch_{batches}.bin and test_batch.bin
      (created if missing; name it cifar-10-batches-bin to mirror the official archive).
    train: (images (n, 32, 32, 3) uint8, labels (n,) integers in 0..9); split in order into
      `batches` files of nearly equal size.
    test: (images (m, 32, 32, 3) uint8, labels (m,)), written to test_batch.bin.
    batches: the number of training files, in 1..n.

  Raises:
    ValueError: if the arrays have the wrong shape, dtype or labels, or batches is out of range.
  """
  n = len(train[0])
  if not (isinstance(batches, numbers.Integral) and 1 <= batches <= n):
    raise ValueError(f"batches must be an integer in 1..{n} (the training images), got "
                     f"{batches!r}")
  os.makedirs(directory, exist_ok=True)
  for k, part in enumerate(np.array_split(np.arange(n), batches), start=1):
    with open(os.path.join(directory, f"data_batch_{k}.bin"), "wb") as f:
      f.write(_cifar10_records(np.asarray(train[0])[part], np.asarray(train[1])[part]))
  with open(os.path.join(directory, _CIFAR10_TEST_FILE), "wb") as f:
    f.write(_cifar10_records(*test))


def digits_images(size: int = 32) -> tuple:
  """scikit-learn's handwritten digits (1797 images of 8×8, bundled: no download) as RGB images.

  Each pixel becomes a size/8 × size/8 block (nearest-neighbour upsampling): unlike bilinear
  resizing it adds no intensities and no edge blur, so block means give back the 8×8 original
  exactly, and it stays in numpy.

  Args:
    size: the side of the output images, a positive multiple of 8.

  Returns:
    (images (1797, size, size, 3) float32 in [0, 1] (the 0..16 values / 16, the same in all
     three channels), labels (1797,) int32 in 0..9).

  Raises:
    ValueError: if size is not a positive multiple of 8.
  """
  from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

  if not (isinstance(size, numbers.Integral) and size >= 8 and size % 8 == 0):
    raise ValueError(f"size must be a positive multiple of 8, got {size!r}")
  digits = load_digits()
  factor = size // 8
  images = (digits.images / 16).astype(np.float32)
  images = images.repeat(factor, axis=1).repeat(factor, axis=2)
  return np.repeat(images[..., None], 3, axis=-1), digits.target.astype(np.int32)


def _check_cap(value, name: str) -> Optional[int]:
  if value is not None and not (isinstance(value, numbers.Integral) and value >= 1):
    raise ValueError(f"{name} must be None or a positive integer, got {value!r}")
  return value


def stratified_subsample(y: np.ndarray, size: Optional[int], seed: int) -> np.ndarray:
  """Sorted indices of min(size, n) rows of y, drawn without replacement, with y's class balance.

  Each class's members, shuffled, are spread evenly over (0, 1); the `size` lowest positions
  are kept, so every class gets its share of `size` to within one.

  Args:
    y: (n,) labels.
    size: how many to keep; None keeps all.
    seed: seed of the shuffle (numpy's default generator).

  Returns:
    (min(size, n),) int indices into y, increasing.
  """
  if size is None or size >= len(y):
    return np.arange(len(y))
  rng = np.random.default_rng(seed)
  position = np.empty(len(y))
  for label in np.unique(y):
    members = rng.permutation(np.flatnonzero(y == label))
    position[members] = (np.arange(len(members)) + 0.5) / len(members)
  return np.sort(np.argsort(position, kind="stable")[:size])


def _image_split(images: np.ndarray, labels: np.ndarray, index: np.ndarray) -> Split:
  """The rows `index` as a Split: uint8 pixels scaled by 1/255, float pixels kept; float32."""
  X = images[index]
  X = X.astype(np.float32) / np.float32(255) if X.dtype == np.uint8 else X.astype(np.float32)
  return Split(X, labels[index].astype(np.int32))


def image_splits(source: str, *, data_dir: Optional[str] = None, val_fraction: float = 0.1,
                 seed: int = 0, max_train: Optional[int] = None,
                 max_test: Optional[int] = None, max_val: Optional[int] = None) -> ImageSplits:
  """Image classification data, split into train/validation/test.

  CIFAR-10 ("tfds": a prepared TFDS directory; "archive": the official binary version): the
  validation split is carved out of the official training set, stratified and fixed by `seed`,
  and the official test set is the test split. "digits": scikit-learn's digits resized to
  32×32 (`digits_images`), split stratified into train/val/test with 20% for test.

  Args:
    source: one of "tfds", "archive", "digits".
    data_dir: the TFDS data directory for "tfds" (None: TFDS's default); the
      cifar-10-batches-bin directory, its parent or the archive for "archive" (required);
      ignored for "digits".
    val_fraction: fraction of the training data (for digits: of all data) in the validation
      split, in [0, 1).
    seed: seed of the split and of the subsampling.
    max_train: keep at most this many training images (a stratified, seeded subsample);
      None keeps all.
    max_test: likewise for the test split.
    max_val: likewise for the validation split.

  Returns:
    `ImageSplits` with X (n, 32, 32, 3) float32 in [0, 1] and y (n,) int32 in 0..9.

  Raises:
    ValueError: naming the argument, if source is unknown, a fraction or cap is out of range,
      data_dir is missing for "archive", or the data is not where data_dir says.
  """
  if source not in IMAGE_SOURCES:
    raise ValueError(f"source must be one of {IMAGE_SOURCES}, got {source!r}")
  val_fraction = _check_fraction(val_fraction, "val_fraction")
  max_train, max_test = _check_cap(max_train, "max_train"), _check_cap(max_test, "max_test")
  max_val = _check_cap(max_val, "max_val")
  if source == "digits":
    if val_fraction + _DIGITS_TEST_FRACTION >= 1:
      raise ValueError(f"val_fraction must be < {1 - _DIGITS_TEST_FRACTION} for digits (20% is "
                       f"the test split), got {val_fraction}")
    images, labels = digits_images()
    train, val, test = stratified_split(labels, (val_fraction, _DIGITS_TEST_FRACTION), seed)
    train_images = test_images = images
    train_labels = test_labels = labels
  else:
    if source == "archive" and data_dir is None:
      raise ValueError("data_dir is required for source='archive': the cifar-10-batches-bin "
                       "directory, its parent, or cifar-10-binary.tar.gz")
    load = cifar10_archive if source == "archive" else cifar10_tfds
    (train_images, train_labels), (test_images, test_labels) = load(data_dir)
    train, val = stratified_split(train_labels, (val_fraction,), seed)
    test = np.arange(len(test_labels))
  train = train[stratified_subsample(train_labels[train], max_train, seed)]
  test = test[stratified_subsample(test_labels[test], max_test, seed)]
  val = val[stratified_subsample(train_labels[val], max_val, seed)]
  return ImageSplits(_image_split(train_images, train_labels, train),
                     _image_split(train_images, train_labels, val),
                     _image_split(test_images, test_labels, test), _IMAGE_CLASSES, source)
