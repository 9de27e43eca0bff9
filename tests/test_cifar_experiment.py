"""The deep pipeline end to end on the smoke config: TFDS (mocked) and a generated CIFAR-10
binary archive, resumption after the backbone stage, the feature cache, and early errors."""

import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cvxjax import data, features
from cvxjax.train import backbone
from experiments import cifar_train, common
from experiments.configs import cifar as cifar_config


def _config(**overrides) -> ml_collections.ConfigDict:
  config = cifar_config.get_config("smoke").unlock()
  for dotted, value in overrides.items():
    *parents, leaf = dotted.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config.lock()


def _check_results(config, results, workdir):
  models = results["model"]
  n_heads = (len(config.heads.poly.radii)
             + sum(len(common.relu_radii(f, config.heads.relu.eps))
                 for f in config.heads.relu.families)
             + len(config.heads.network.methods))
  assert len(models) == len(config.backbones) + n_heads and len(set(models)) == len(models)
  assert models[:2] == ["standard (SGD)", "SAM"]
  eps = [k / 255 for k in config.eval.eps_k]
  assert results["linf_eps"] == eps
  clean = np.asarray(results["clean_accuracy"])
  for attack in (*config.eval.attacks, "worst"):
    accuracy = np.asarray(results[f"{attack.replace('-', '_')}_linf_accuracy"])
    assert accuracy.shape == (len(models), len(eps))
    assert np.all(accuracy <= clean[:, None]) and np.all(accuracy[:, 0] == clean)
    assert np.all(np.asarray(results["worst_linf_accuracy"]) <= accuracy)
  assert set(results["timings"]) == {"data", *cifar_train.STAGES}
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["model"] == models
  with open(os.path.join(workdir, "accuracy_vs_eps.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_every_stage_on_tfds_data(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  config = _config(**{"data.source": "tfds"})
  with tfds.testing.mock_data(num_examples=80, policy=tfds.testing.MockPolicy.USE_CODE):
    results = cifar_train.train_and_evaluate(config, str(tmp_path))
  _check_results(config, results, str(tmp_path))


def _archive(directory, seed=0):
  rng = np.random.default_rng(seed)
  images = lambda n: rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
  labels = lambda n: np.arange(n) % 10
  data.write_cifar10_archive(str(directory), (images(100), labels(100)), (images(30), labels(30)))


@pytest.mark.slow
def test_archive_run_resumes_after_the_backbones_without_retraining(tmp_path, monkeypatch):
  _archive(tmp_path / "cifar")
  workdir = str(tmp_path / "run")
  config = _config(**{"data.source": "archive", "data.data_dir": str(tmp_path / "cifar")})
  # The "kill": the run ends after the backbones, as an interrupted one would.
  stopped = cifar_train.train_and_evaluate(_config(**{"data.source": "archive",
                                                      "data.data_dir": str(tmp_path / "cifar"),
                                                      "stop_after": "backbones"}), workdir)
  assert set(stopped["timings"]) == {"data", "backbones"}
  assert not os.path.exists(os.path.join(workdir, "features"))

  def no_training(*args, **kwargs):
    raise AssertionError("the resumed run retrained a backbone")

  monkeypatch.setattr(backbone, "train_step", no_training)
  results = cifar_train.train_and_evaluate(config, workdir)
  _check_results(config, results, workdir)


@pytest.mark.slow
def test_cached_features_are_reused_and_recomputed_when_the_checkpoint_changes(tmp_path,
                                                                               monkeypatch):
  calls = []
  extract = features.extract
  monkeypatch.setattr(features, "extract", lambda *a, **k: calls.append(1) or extract(*a, **k))
  feature_fn = lambda variables, x: jnp.tanh(x.reshape(x.shape[0], -1) @ variables["w"])
  images = np.random.default_rng(0).random((10, 4, 4, 3)).astype(np.float32)
  old = {"w": jnp.full((48, 5), 0.01)}
  first = features.cached(str(tmp_path), "train", feature_fn, old, images, batch_size=4)
  again = features.cached(str(tmp_path), "train", feature_fn, old, images, batch_size=4)
  assert len(calls) == 1
  np.testing.assert_array_equal(first, again)
  new = {"w": old["w"].at[0, 0].add(1e-3)}  # a checkpoint that differs in one weight
  changed = features.cached(str(tmp_path), "train", feature_fn, new, images, batch_size=4)
  assert len(calls) == 2 and not np.array_equal(first, changed)
  np.testing.assert_allclose(changed, np.asarray(feature_fn(new, images)), rtol=1e-6)
  assert len(os.listdir(tmp_path)) == 2


def test_errors_name_the_problem_before_any_compute(tmp_path):
  with pytest.raises(ValueError, match="does-not-exist"):
    cifar_train.train_and_evaluate(
        _config(**{"data.source": "archive", "data.data_dir": str(tmp_path / "does-not-exist")}),
        str(tmp_path / "run"))
  with pytest.raises(AttributeError, match="no_such_key"):
    cifar_config.get_config("smoke").no_such_key = 1  # locked: a misspelt override fails
  with pytest.raises(ValueError, match="stop_after"):
    cifar_train.train_and_evaluate(_config(stop_after="everything"), str(tmp_path / "run"))
  # A checkpoint of another width in the workdir is refused before training resumes.
  workdir = str(tmp_path / "arch")
  cifar_train.train_and_evaluate(_config(stop_after="backbones"), workdir)
  with pytest.raises(ValueError, match="width"):
    cifar_train.train_and_evaluate(_config(**{"stop_after": "backbones", "model.width": 4}),
                                   workdir)
