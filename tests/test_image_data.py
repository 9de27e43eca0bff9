"""Image datasets: CIFAR-10 from (mocked) TFDS and from its binary format, and the digits."""

import os
import tarfile

import numpy as np
import pytest

from cvxjax import data


def _rows(X: np.ndarray) -> list:
  """Each image as bytes, to compare splits as sets of images."""
  return [x.tobytes() for x in X]


def _random_cifar(n: int, seed: int) -> tuple:
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
  return images, np.arange(n, dtype=np.int32) % 10


def _check_image_split(split: data.Split) -> None:
  assert split.X.dtype == np.float32 and split.X.shape[1:] == (32, 32, 3)
  assert split.y.dtype == np.int32 and split.y.shape == split.X.shape[:1]
  assert 0 <= split.X.min() and split.X.max() <= 1
  assert 0 <= split.y.min() and split.y.max() <= 9


# The layout, by hand: pixel (row r, column c, channel ch) holds a value that tells all three apart.
def _known_pixel(r: int, c: int, ch: int) -> int:
  return (100 * ch + 3 * r + c) % 256


KNOWN_LABEL = 7
# One record as the format page describes it: label byte, then the R, G, B planes, rows of 32.
KNOWN_RECORD = bytes([KNOWN_LABEL] + [_known_pixel(r, c, ch) for ch in range(3)
                                      for r in range(32) for c in range(32)])


def _known_image() -> np.ndarray:
  return np.array([[[_known_pixel(r, c, ch) for ch in range(3)] for c in range(32)]
                   for r in range(32)], dtype=np.uint8)


# --- TFDS (mocked: random examples, no files) ---


@pytest.fixture(scope="module")
def tfds():
  return pytest.importorskip("tensorflow_datasets")


def test_tfds_splits_under_mock_data(tfds):
  with tfds.testing.mock_data(num_examples=60, policy=tfds.testing.MockPolicy.USE_CODE):
    (train_images, train_labels), (test_images, test_labels) = data.cifar10_tfds()
    splits = data.image_splits("tfds", val_fraction=0.2, seed=1, max_train=30, max_test=25)
  assert train_images.shape == test_images.shape == (60, 32, 32, 3)
  assert train_images.dtype == np.uint8 and train_labels.dtype == np.int32
  assert train_labels.shape == test_labels.shape == (60,)
  assert splits.num_classes == 10 and splits.source == "tfds"
  for split in splits[:3]:
    _check_image_split(split)
  assert (len(splits.train.y), len(splits.test.y)) == (30, 25)
  # Validation: 20% of each class of the 60 training examples, rounded per class.
  expected_val = sum(round(0.2 * np.sum(train_labels == k)) for k in np.unique(train_labels))
  assert len(splits.val.y) == expected_val
  assert not set(_rows(splits.train.X)) & set(_rows(splits.val.X))
  train_rows = set(_rows(train_images.astype(np.float32) / 255))
  assert set(_rows(splits.train.X)) | set(_rows(splits.val.X)) <= train_rows


def test_tfds_missing_or_unprepared_data_dir_is_named(tfds, tmp_path):
  for data_dir in (tmp_path / "absent", tmp_path):
    with pytest.raises(ValueError, match="tfds build cifar10") as info:
      data.cifar10_tfds(data_dir)
    assert str(data_dir) in str(info.value)
  with pytest.raises(ValueError, match=str(tmp_path / "absent")):
    data.image_splits("tfds", data_dir=str(tmp_path / "absent"))


# --- The binary archive ---


@pytest.fixture
def archive(tmp_path):
  """A small archive: 5 training batches of 6 images and a test batch of 8, and the arrays."""
  train, test = _random_cifar(30, seed=0), _random_cifar(8, seed=1)
  data.write_cifar10_archive(tmp_path / "cifar-10-batches-bin", train, test)
  return tmp_path, train, test


def _assert_same(read: tuple, written: tuple) -> None:
  for got, want in zip(read, written, strict=True):
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[0].dtype == np.uint8 and got[1].dtype == np.int32


def test_archive_round_trip_from_folder_and_parent(archive):
  root, train, test = archive
  folder = root / "cifar-10-batches-bin"
  assert sorted(os.listdir(folder)) == [f"data_batch_{k}.bin" for k in range(1, 6)] + [
    "test_batch.bin"]
  assert all(os.path.getsize(folder / f"data_batch_{k}.bin") == 6 * 3073 for k in range(1, 6))
  _assert_same(data.cifar10_archive(folder), (train, test))
  _assert_same(data.cifar10_archive(str(root)), (train, test))


def test_archive_round_trip_from_tar_gz(archive):
  root, train, test = archive
  path = root / "cifar-10-binary.tar.gz"
  with tarfile.open(path, "w:gz") as tar:
    tar.add(root / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
  _assert_same(data.cifar10_archive(path), (train, test))


def test_archive_layout_matches_the_format_by_hand(tmp_path):
  # Writing: one image, one batch, must give exactly the hand-built record.
  image, labels = _known_image()[None], np.array([KNOWN_LABEL])
  data.write_cifar10_archive(tmp_path / "written", (image, labels), (image, labels), batches=1)
  assert (tmp_path / "written" / "data_batch_1.bin").read_bytes() == KNOWN_RECORD
  # Reading: hand-written files must give back the known image and label.
  (tmp_path / "by_hand").mkdir()
  for name in ("data_batch_1.bin", "test_batch.bin"):
    (tmp_path / "by_hand" / name).write_bytes(KNOWN_RECORD * 2)
  (train_images, train_labels), _ = data.cifar10_archive(tmp_path / "by_hand")
  np.testing.assert_array_equal(train_images, np.stack([_known_image()] * 2))
  np.testing.assert_array_equal(train_labels, [KNOWN_LABEL] * 2)
  assert train_images[0, 0, 1, 0] == 1 and train_images[0, 1, 0, 0] == 3  # column, then row
  assert train_images[0, 0, 0, 1] == 100  # G plane starts 1024 bytes after R


def test_archive_image_splits_are_the_written_pixels(archive):
  root, (train_images, _), (test_images, test_labels) = archive
  splits = data.image_splits("archive", data_dir=str(root), val_fraction=0.2, seed=3)
  for split in splits[:3]:
    _check_image_split(split)
  assert (len(splits.train.y), len(splits.val.y), len(splits.test.y)) == (20, 10, 8)
  # Val is 2 of each class's 3 images × 0.2, rounded: 1 per class.
  np.testing.assert_array_equal(np.bincount(splits.val.y, minlength=10), np.ones(10))
  train_rows = _rows(train_images.astype(np.float32) / np.float32(255))
  assert sorted(_rows(splits.train.X) + _rows(splits.val.X)) == sorted(train_rows)
  # The official test set, in order, exactly uint8 / 255.
  np.testing.assert_array_equal(splits.test.X, test_images.astype(np.float32) / 255)
  np.testing.assert_array_equal(splits.test.y, test_labels)
  capped = data.image_splits("archive", data_dir=str(root), val_fraction=0.2, seed=3,
                             max_train=10, max_test=5)
  assert (len(capped.train.y), len(capped.val.y), len(capped.test.y)) == (10, 10, 5)
  assert set(_rows(capped.train.X)) <= set(_rows(splits.train.X))


def test_archive_errors_name_the_path_and_problem(archive):
  root, _, _ = archive
  folder = root / "cifar-10-batches-bin"
  with pytest.raises(ValueError, match="data_dir"):
    data.image_splits("archive")
  with pytest.raises(ValueError, match=f"{root / 'absent'}.*does not exist"):
    data.image_splits("archive", data_dir=str(root / "absent"))
  first = folder / "data_batch_1.bin"
  first.write_bytes(first.read_bytes()[:-1])  # one byte short
  with pytest.raises(ValueError, match=f"data_batch_1.bin in {folder}.*3073"):
    data.cifar10_archive(folder)
  first.unlink()
  with pytest.raises(ValueError, match=f"{folder}.*numbered \\[2, 3, 4, 5\\]"):
    data.cifar10_archive(folder)
  (folder / "test_batch.bin").unlink()
  with pytest.raises(ValueError, match=f"{folder} has no test_batch.bin"):
    data.cifar10_archive(folder)


# --- Digits ---


def test_digits_images_are_the_8x8_digits_upsampled():
  from sklearn.datasets import load_digits

  images, labels = data.digits_images()
  assert images.shape == (1797, 32, 32, 3) and images.dtype == np.float32
  assert labels.shape == (1797,) and labels.dtype == np.int32
  assert images.min() == 0 and images.max() == 1
  np.testing.assert_array_equal(images[..., 0], images[..., 2])
  block_means = images[..., 0].reshape(1797, 8, 4, 8, 4).mean(axis=(2, 4))
  digits = load_digits()
  np.testing.assert_allclose(block_means, digits.images / 16, atol=1e-6)
  np.testing.assert_array_equal(labels, digits.target)
  with pytest.raises(ValueError, match="size"):
    data.digits_images(12)


def test_digits_splits_are_stratified_and_partition_the_data():
  images, labels = data.digits_images()
  splits = data.image_splits("digits", val_fraction=0.1, seed=0)
  assert splits.num_classes == 10 and splits.source == "digits"
  sizes = [len(s.y) for s in splits[:3]]
  assert sum(sizes) == 1797 and abs(sizes[1] - 180) <= 5 and abs(sizes[2] - 359) <= 5
  shares = np.bincount(labels, minlength=10) / len(labels)
  for split in splits[:3]:
    _check_image_split(split)
    np.testing.assert_allclose(np.bincount(split.y, minlength=10) / len(split.y), shares,
                               atol=0.02)
  # Together the splits hold every image once (as a multiset: some digits repeat).
  assert sorted(_rows(np.concatenate([s.X for s in splits[:3]]))) == sorted(_rows(images))
  again = data.image_splits("digits", val_fraction=0.1, seed=0, max_train=100, max_test=50)
  assert (len(again.train.y), len(again.test.y)) == (100, 50)
  assert np.all(np.abs(np.bincount(again.train.y, minlength=10) - 10) <= 1)
  np.testing.assert_array_equal(again.val.X, splits.val.X)  # the same seed, the same split
  capped = data.image_splits("digits", val_fraction=0.1, seed=0, max_val=30).val
  assert len(capped.y) == 30 and np.all(np.abs(np.bincount(capped.y, minlength=10) - 3) <= 1)
  assert set(_rows(capped.X)) <= set(_rows(splits.val.X))


def test_stratified_subsample_keeps_each_class_share():
  y = np.repeat(np.arange(3), [50, 30, 20])
  keep = data.stratified_subsample(y, 10, seed=0)
  assert len(keep) == 10 and len(set(keep)) == 10
  np.testing.assert_array_equal(np.bincount(y[keep]), [5, 3, 2])
  np.testing.assert_array_equal(data.stratified_subsample(y, None, seed=0), np.arange(100))


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="source"):
    data.image_splits("mnist")
  with pytest.raises(ValueError, match="val_fraction"):
    data.image_splits("digits", val_fraction=1.5)
  with pytest.raises(ValueError, match="val_fraction"):
    data.image_splits("digits", val_fraction=0.85)
  with pytest.raises(ValueError, match="max_train"):
    data.image_splits("digits", max_train=0)
  with pytest.raises(ValueError, match="max_val"):
    data.image_splits("digits", max_val=0)
  with pytest.raises(ValueError, match="batches"):
    data.write_cifar10_archive("unused", _random_cifar(3, 0), _random_cifar(1, 0), batches=5)
