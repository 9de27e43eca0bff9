"""The breast-cancer experiment end to end on its smoke config (tiny: 60 points, six convex
heads and the nonconvex one trained normally, by PGD-AT and by SSDS)."""

import json
import os

import numpy as np
import pytest

from experiments import wbc
from experiments.configs import wbc as wbc_config

pytestmark = pytest.mark.slow  # end to end: minutes on 2 cores

# The attacks run on every (binary) head, and the worst of them.
ATTACKS = ("fgsm", "pgd", "apgd_ce", "worst")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("wbc"))
  config = wbc_config.get_config("smoke")
  returned = wbc.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "results.json")) as f:
    return config, workdir, returned, json.load(f)


def test_results_have_one_entry_per_model_and_radius(run):
  config, _, returned, results = run
  assert set(returned) == set(results)
  heads = config.heads
  relu_families = ["relu"] * len(heads.relu.eps) + ["gated"]  # gated heads train plain only
  networks = ["network"] * (1 + len(heads.pgd.radii) + len(heads.ssds.radii))
  n_models = len(heads.poly.radii) + len(relu_families) + len(networks)
  n_linf, n_l2 = len(config.linf_eps), len(config.l2_radii)
  assert results["train_radius"][:len(heads.poly.radii)] == list(heads.poly.radii)
  assert results["family"] == ["poly"] * len(heads.poly.radii) + relu_families + networks
  assert results["model"] == ["poly r=0", "poly r=0.5", "relu ε=0", "relu ε=0.2", "gated ε=0",
                              "network head", "PGD-AT head ℓ₂ ε=0.5", "SSDS head ℓ₂ ε=0.5"]
  assert all(s > 0 for s in results["seconds"])  # every method's fit is timed
  assert len(set(results["model"])) == n_models
  assert results["n_train"] == config.n_train
  for key in ("objective", "gap", "width", "clean_accuracy", "val_accuracy", "beta"):
    assert np.shape(results[key]) == (n_models,), key
  for attack in ATTACKS:
    for ball, size in (("linf", n_linf), ("l2", n_l2)):
      assert np.shape(results[f"{attack}_{ball}_accuracy"]) == (n_models, size), attack
  assert np.shape(results["certified_l2_accuracy"]) == (n_models, n_l2)
  poly_gaps = [g for g, f in zip(results["gap"], results["family"], strict=True) if f == "poly"]
  assert np.all(np.asarray(poly_gaps) >= 0)
  assert np.all(np.asarray(results["width"]) >= 1)


def test_accuracies_are_ordered(run):
  _, _, _, results = run
  clean = np.asarray(results["clean_accuracy"])[:, None]
  assert np.all((clean >= 0) & (clean <= 1))
  for ball in ("linf", "l2"):
    curves = {a: np.asarray(results[f"{a}_{ball}_accuracy"]) for a in ATTACKS}
    for attack, accuracy in curves.items():
      assert np.all((accuracy >= 0) & (accuracy <= clean)), (attack, ball)
      # The worst of all counts an example only if every attack failed on it.
      assert np.all(curves["worst"] <= accuracy), (attack, ball)
    # Every attack keeps the clean point as a candidate: at ε = 0 it is clean accuracy.
    zero = np.asarray(results["linf_eps" if ball == "linf" else "l2_radii"]) == 0
    for accuracy in curves.values():
      np.testing.assert_array_equal(accuracy[:, zero], np.broadcast_to(clean, accuracy.shape)[:,
                                                                                            zero])
  # Certified examples survive every attack in the ball.
  assert np.all(np.asarray(results["certified_l2_accuracy"]) <= results["worst_l2_accuracy"])


def test_plots_and_config_are_written(run):
  _, workdir, _, _ = run
  for name in ("accuracy_vs_eps.png", "config.json"):
    path = os.path.join(workdir, name)
    assert os.path.getsize(path) > 0, name
  with open(os.path.join(workdir, "accuracy_vs_eps.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
