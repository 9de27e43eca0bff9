"""The certified-accuracy experiment end to end on its smoke config: an SOC backbone with its
linear layer and convex and nonconvex heads, certified and attacked at ℓ₂ radii k/255."""

import json
import os

import numpy as np
import pytest

from cvxjax.train import backbone
from experiments import certified_train
from experiments.configs import certified as certified_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("certified"))
  config = certified_config.get_config("smoke")
  return config, workdir, certified_train.train_and_certify(config, workdir)


@pytest.mark.slow
def test_every_certificate_is_reported_below_the_attacks(run):
  config, workdir, results = run
  radii = [k / 255 for k in config.eval.radii_k]
  assert results["l2_radii"] == radii
  assert results["model"][0] == "SOC (linear layer)"
  kinds = results["kind"]
  assert {"linear", "poly", "relu", "network"} <= set(kinds)
  certified = np.asarray(results["certified_l2_accuracy"])
  attacked = np.asarray(results["worst_l2_accuracy"])
  assert certified.shape == attacked.shape == (len(kinds), len(radii))
  assert np.all(certified <= attacked)
  assert np.all(np.diff(certified, axis=1) <= 0)  # larger balls certify fewer examples
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["model"] == results["model"]
  with open(os.path.join(workdir, "certified_vs_attacked.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_heads_are_chosen_on_validation_certificates(run):
  config, _, results = run
  # Every head states the radius and β it chose, the most certified on validation.
  for i, model in enumerate(results["model"][1:], start=1):
    candidates = results["selection"][i]
    assert (results["train_radius"][i], results["beta"][i]) in {
        (c["train_radius"], c["beta"]) for c in candidates}
    assert results["val_robust_accuracy"][i] == max(c["val_robust_accuracy"] for c in candidates)
    # Certified examples are correctly classified ones.
    assert 0 <= results["val_robust_accuracy"][i] <= results["val_accuracy"][i], model


@pytest.mark.slow
def test_lipschitz_bound_is_computed_and_never_exceeded(run):
  _, _, results = run
  bound, estimates = results["lipschitz"]["bound"], results["lipschitz"]["power_iteration"]
  assert 1.0 <= bound < 1.0 + 1e-6  # orthogonal layers, up to the series' tail
  assert all(0.5 * bound < e <= bound * (1 + 1e-6) for e in estimates)


@pytest.mark.slow
def test_rerun_resumes_from_every_stage(run, monkeypatch):
  config, workdir, results = run

  def no_training(*args, **kwargs):
    raise AssertionError("train_step called on a finished run")

  monkeypatch.setattr(backbone, "train_step", no_training)
  monkeypatch.setattr(certified_train.report, "evaluate_attacks", no_training)
  again = certified_train.train_and_certify(config, workdir)
  assert again["model"] == results["model"]
  assert again["certified_l2_accuracy"] == results["certified_l2_accuracy"]


def test_bad_settings_are_refused_before_training(tmp_path):
  config = certified_config.get_config("smoke").unlock()
  config.features.isotropic = False
  with pytest.raises(ValueError, match="isotropic"):
    certified_train.train_and_certify(config, str(tmp_path))
  config.features.isotropic = True
  config.eval.radii_k = (0, 36)
  with pytest.raises(ValueError, match="radii_k"):
    certified_train.train_and_certify(config, str(tmp_path))
