"""Streaming fits (features on the host, one chunk on the device) equal the in-memory fits."""

import jax
import numpy as np
import pytest

from cvxjax import poly, relu

KEY = jax.random.key(2)


@pytest.fixture(scope="module")
def memmapped(tmp_path_factory):
  """90 examples of 5 features saved to disk and memory-mapped, with binary and 3-class labels."""
  rng = np.random.default_rng(0)
  X = rng.normal(size=(90, 5))
  score = X[:, 0] + 0.5 * X[:, 1] ** 2 - 0.4 + 0.3 * rng.normal(size=90)
  path = tmp_path_factory.mktemp("features") / "X.npy"
  np.save(path, X)
  labels = {2: np.where(score > 0, 1.0, -1.0),
            3: np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))}
  return X, np.load(path, mmap_mode="r"), labels


@pytest.mark.parametrize("classes", [2, 3])
def test_streamed_poly_fit_equals_the_in_memory_fit(memmapped, classes):
  X, Xm, labels = memmapped
  settings = dict(r=0.3, beta=1e-2, solver="projected", max_steps=25)
  in_memory = poly.fit(X, labels[classes], **settings)
  streamed = poly.fit(Xm, labels[classes], chunk_size=32, **settings)  # chunks of 32, 32, 26
  np.testing.assert_allclose(np.asarray(streamed.Z), np.asarray(in_memory.Z), atol=1e-10)
  np.testing.assert_allclose(float(streamed.objective), float(in_memory.objective), rtol=1e-10)
  np.testing.assert_allclose(float(streamed.gap), float(in_memory.gap), rtol=1e-8)


@pytest.mark.parametrize("classes", [2, 3])
def test_streamed_gated_apg_equals_the_in_memory_fit(memmapped, classes):
  X, Xm, labels = memmapped
  settings = dict(num_patterns=10, key=KEY, gated=True, loss="squared", solver="apg",
                  max_steps=200)
  in_memory = relu.fit(X, labels[classes], **settings)
  streamed = relu.fit(Xm, labels[classes], chunk_size=40, **settings)
  assert int(streamed.steps) == int(in_memory.steps)
  np.testing.assert_allclose(np.asarray(streamed.weights), np.asarray(in_memory.weights),
                             atol=1e-10)
  np.testing.assert_allclose(float(streamed.objective), float(in_memory.objective), rtol=1e-10)


@pytest.mark.parametrize("settings", [dict(eps=0.1, p="inf"), dict(eps=0.2, p=2, classes=3),
                                      dict(loss="squared", classes=3)])
def test_streamed_penalty_method_equals_the_in_memory_fit(memmapped, settings):
  X, Xm, labels = memmapped
  y = labels[settings.pop("classes", 2)]
  settings.update(num_patterns=10, key=KEY, solver="penalty", max_steps=60)
  in_memory = relu.fit(X, y, **settings)
  streamed = relu.fit(Xm, y, chunk_size=32, **settings)
  np.testing.assert_allclose(np.asarray(streamed.weights), np.asarray(in_memory.weights),
                             atol=1e-10)
  np.testing.assert_allclose(float(streamed.objective), float(in_memory.objective), rtol=1e-10)
  np.testing.assert_allclose(float(streamed.violation), float(in_memory.violation), atol=1e-12)
  assert np.isfinite(float(in_memory.objective))


def test_an_interrupted_streamed_fit_resumes_to_the_same_head(memmapped, tmp_path):
  X, Xm, labels = memmapped
  settings = dict(num_patterns=10, key=KEY, gated=True, loss="squared", solver="apg",
                  chunk_size=40, checkpoint_dir=str(tmp_path), checkpoint_every=10)
  relu.fit(Xm, labels[2], max_steps=20, **settings)  # "interrupted" after 20 steps
  resumed = relu.fit(Xm, labels[2], max_steps=60, **settings)
  straight = relu.fit(Xm, labels[2], max_steps=60, **{**settings, "checkpoint_dir": None})
  np.testing.assert_array_equal(np.asarray(resumed.weights), np.asarray(straight.weights))
  poly_settings = dict(r=0.3, solver="projected", chunk_size=32, checkpoint_every=5)
  poly.fit(Xm, labels[3], max_steps=5, checkpoint_dir=str(tmp_path / "poly"), **poly_settings)
  resumed = poly.fit(Xm, labels[3], max_steps=10, checkpoint_dir=str(tmp_path / "poly"),
                     **poly_settings)
  straight = poly.fit(Xm, labels[3], max_steps=10, **poly_settings)
  np.testing.assert_array_equal(np.asarray(resumed.Z), np.asarray(straight.Z))


def test_bad_streaming_arguments_are_refused_by_name(memmapped):
  X, _, labels = memmapped
  for bad in (0, 2.5, "8"):
    with pytest.raises(ValueError, match="chunk_size must be"):
      poly.fit(X, labels[2], solver="projected", chunk_size=bad)
  with pytest.raises(ValueError, match="solver='interior', 'barrier'"):
    poly.fit(X, labels[2], solver="barrier", chunk_size=8)
  with pytest.raises(ValueError, match="solver='apg' or solver='penalty'"):
    relu.fit(X, labels[2], key=KEY, chunk_size=8)
  bad = np.array(X)
  bad[70, 2] = np.nan
  with pytest.raises(ValueError, match="X must be finite"):
    poly.fit(bad, labels[2], solver="projected", chunk_size=8)
