"""The deep pipeline on the smoke config: TFDS (mocked) data to the features, a generated CIFAR-10
binary archive end to end with resumption after the backbone stage, the feature cache, and
early errors."""

import json
import os
import shutil

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cvxjax import data, features
from cvxjax.train import backbone
from experiments import cifar_train
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


def _members(config):
  """The heads' labels a run of `config` reports, from the config alone."""
  labels = ["poly"] + ["poly robust"] * any(r > 0 for r in config.heads.poly.radii)
  labels += ["relu"] + ["relu robust"] * any(eps > 0 for eps in config.heads.relu.eps)
  return labels + ["gated", "network head", "PGD-AT head ℓ₂", "SSDS head ℓ₂"]


def _check_results(config, results, workdir):
  models = results["model"]
  assert models == ["standard (SGD)", "SAM"] + _members(config)
  eps = [k / 255 for k in config.eval.eps_k]
  assert results["linf_eps"] == eps and results["linf_eps_k"] == list(config.eval.eps_k)
  clean = np.asarray(results["clean_accuracy"])
  worst = np.asarray(results["worst_linf_accuracy"])
  assert worst.shape == (len(models), len(eps))
  assert np.all(worst <= clean[:, None]) and np.all(worst[:, 0] == clean)
  names = [attack.replace("-", "_") for attack in config.eval.attacks]
  if config.eval.per_attack:
    for attack in names:
      accuracy = np.asarray(results[f"{attack}_linf_accuracy"])
      assert np.all(accuracy <= clean[:, None]) and np.all(accuracy[:, 0] == clean)
      assert np.all(worst <= accuracy)
  else:  # survivor mode: the examples each attack broke first add up to clean − worst of all
    broken = sum(np.asarray(results[f"{attack}_linf_broken_first"]) for attack in names)
    assert np.all(broken >= 0) and np.all(broken[:, 0] == 0)
    np.testing.assert_allclose(broken, clean[:, None] - worst, atol=1e-12)
  # Every head states the settings it chose on validation, from its family's grid.
  grids = {"poly": config.heads.poly.radii, "relu": config.heads.relu.eps, "gated": (0.0,),
           "PGD-AT": config.heads.pgd.radii, "SSDS": config.heads.ssds.radii,
           "network": (0.0,)}
  for i, model in enumerate(models[2:], start=2):
    radius, chosen = results["train_radius"][i], results["selection"][i]
    assert radius in (0.0, *grids[model.split()[0]])
    assert radius == 0 or "robust" in model or model.startswith(("PGD-AT", "SSDS"))
    assert {(c["train_radius"], c["beta"]) for c in chosen} >= {(radius, results["beta"][i])}
    best = max((c["val_robust_accuracy"], c["val_accuracy"]) for c in chosen)
    assert (results["val_robust_accuracy"][i], results["val_accuracy"][i]) == best
  assert set(results["timings"]) == {"data", *cifar_train.STAGES}
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["model"] == models
  with open(os.path.join(workdir, "accuracy_vs_eps.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_tfds_data_reach_the_features(tmp_path):
  # Past the features every source is the same arrays: the archive run and the notebook (the
  # digits source) take the later stages.
  tfds = pytest.importorskip("tensorflow_datasets")
  config = _config(**{"data.source": "tfds", "stop_after": "features"})
  with tfds.testing.mock_data(num_examples=80, policy=tfds.testing.MockPolicy.USE_CODE):
    splits = cifar_train.load_splits(config)
    results = cifar_train.train_and_evaluate(config, str(tmp_path))
  assert set(results["timings"]) == {"data", "backbones", "features"}
  assert splits.train.X.shape[1:] == (32, 32, 3) and splits.num_classes == 10
  width = 8 * config.model.width
  for name, split in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
    path, = (tmp_path / "features").glob(f"sgd-{name}-*.npy")
    assert np.load(path).shape == (len(split.y), width), name


def _archive(directory, seed=0):
  # Enough images that the smoke config's caps give every split the digits source's shape: a
  # later run on digits (the notebook's) can read this run's compilations back from the cache.
  rng = np.random.default_rng(seed)
  images = lambda n: rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
  labels = lambda n: np.arange(n) % 10
  data.write_cifar10_archive(str(directory), (images(400), labels(400)), (images(40), labels(40)))


def _no_training(*args, **kwargs):
  raise AssertionError("the resumed run retrained a backbone")


@pytest.fixture(scope="module")
def archive_run(tmp_path_factory):
  """A run on a generated archive, "killed" after the backbones and resumed to the end."""
  root = tmp_path_factory.mktemp("archive")
  _archive(root / "cifar")
  workdir = str(root / "run")
  source = {"data.source": "archive", "data.data_dir": str(root / "cifar")}
  stopped = cifar_train.train_and_evaluate(_config(**source, stop_after="backbones"), workdir)
  features_after_stop = os.path.exists(os.path.join(workdir, "features"))
  config = _config(**source)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(backbone, "train_step", _no_training)
    results = cifar_train.train_and_evaluate(config, workdir)
  return config, workdir, (stopped, features_after_stop), results


@pytest.mark.slow
def test_archive_run_resumes_after_the_backbones_without_retraining(archive_run):
  config, workdir, (stopped, features_after_stop), results = archive_run
  assert set(stopped["timings"]) == {"data", "backbones"} and not features_after_stop
  _check_results(config, results, workdir)


@pytest.mark.slow
def test_poisoned_test_labels_change_no_chosen_setting(archive_run, tmp_path, monkeypatch):
  config, workdir, _, results = archive_run
  # The same backbones (trained on the training split alone); every head is fitted anew.
  for name in config.backbones:
    shutil.copytree(os.path.join(workdir, f"backbone_{name}"), tmp_path / f"backbone_{name}")
  splits = cifar_train.load_splits(config)
  poisoned = splits._replace(test=data.Split(splits.test.X, (splits.test.y + 1) % 10))
  monkeypatch.setattr(cifar_train, "load_splits", lambda config: poisoned)
  chosen = []
  fit_heads = cifar_train.fit_heads

  def recorded_fit_heads(*args, **kwargs):
    chosen.append(fit_heads(*args, **kwargs))
    return chosen[-1]

  monkeypatch.setattr(cifar_train, "fit_heads", recorded_fit_heads)
  cifar_train.train_and_evaluate(_config(**{"data.source": "archive",
                                            "data.data_dir": config.data.data_dir,
                                            "stop_after": "heads"}), str(tmp_path))
  (fitted, _), = chosen
  assert list(fitted) == results["model"][2:]
  validation = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]
  for i, (label, (_, info)) in enumerate(fitted.items(), start=2):
    assert (info["train_radius"], info["beta"]) == (results["train_radius"][i],
                                                    results["beta"][i]), label
    assert validation(info["selection"]) == validation(results["selection"][i]), label


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
  with pytest.raises(ValueError, match="num_seeds"):
    cifar_train.train_and_evaluate(_config(num_seeds=0), str(tmp_path / "run"))
  # A checkpoint of another width in the workdir is refused before training resumes.
  workdir = str(tmp_path / "arch")
  cifar_train.train_and_evaluate(_config(stop_after="backbones"), workdir)
  with pytest.raises(ValueError, match="width"):
    cifar_train.train_and_evaluate(_config(**{"stop_after": "backbones", "model.width": 4}),
                                   workdir)
