"""The experiments' shared helpers: files written whole, rows computed once per model and
parameters, `stop_after` checked, stages timed (`experiments.common`); survivor-mode reports,
the choice on validation, radii printed as k/255 and the figures (`experiments.report`)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvxjax import plotting
from experiments import common, report


def test_atomic_write_leaves_the_whole_file_and_no_partial(tmp_path):
  path = str(tmp_path / "out.json")
  common.atomic_write(path, "first")
  common.atomic_write(path, b"second")
  assert open(path).read() == "second"
  assert os.listdir(tmp_path) == ["out.json"]


def test_cached_row_is_computed_once_per_label_and_parameters(tmp_path):
  calls = []

  def compute():
    calls.append(1)
    return {"accuracy": np.float32(0.5), "curve": np.array([1, 2])}

  params = {"w": np.ones(3)}
  first = common.cached_row(str(tmp_path), "poly r=0", params, {"beta": 0.1}, compute)
  again = common.cached_row(str(tmp_path), "poly r=0", params, {"beta": 0.1}, compute)
  assert len(calls) == 1 and first == again
  assert first["model"] == "poly r=0" and first["beta"] == 0.1 and first["curve"] == [1, 2]
  # The same head chosen from a larger grid: the numbers are reused, the info is this call's.
  wider = common.cached_row(str(tmp_path), "poly r=0", params, {"beta": 0.1, "grid": [0, 1]},
                            compute)
  assert len(calls) == 1 and wider["grid"] == [0, 1] and wider["accuracy"] == 0.5
  # Other parameters under the same label: computed anew.
  common.cached_row(str(tmp_path), "poly r=0", {"w": np.zeros(3)}, {}, compute)
  assert len(calls) == 2
  for name in os.listdir(tmp_path):
    with open(tmp_path / name) as f:
      assert json.load(f)["model"] == "poly r=0"


def test_results_hold_numbers_labels_and_none_only():
  assert common.to_builtin({"a": (np.int64(1), None, "x"), 2: np.eye(2)}) == {
      "a": [1, None, "x"], "2": [[1.0, 0.0], [0.0, 1.0]]}
  with pytest.raises(ValueError, match="numbers"):
    common.to_builtin({"a": object()})


def test_stop_after_must_name_a_stage_and_stages_are_timed():
  common.check_stop_after(None, ("a", "b"))
  common.check_stop_after("b", ("a", "b"))
  with pytest.raises(ValueError, match="stop_after"):
    common.check_stop_after("c", ("a", "b"))
  timings = common.Timings()
  with timings.stage("a"):
    pass
  assert list(timings) == ["a"] and timings["a"] >= 0
  assert common.fingerprint("x", "y") == common.fingerprint("x", "y")
  assert common.fingerprint("x", "y") != common.fingerprint("x", "z")
  assert common.file_name("PGD-AT head ℓ₂ ε=0.5") == "PGD_AT_head_ℓ₂_ε_0.5"


def _linear(params, X):
  w, b = params
  return X @ w + b


def test_survivor_mode_reports_the_same_worst_of_all_and_what_each_attack_broke_first():
  # A binary linear model: FGSM and PGD reach the same exact worst case, whatever the start.
  rng = np.random.default_rng(0)
  X, w = rng.random((24, 5)), rng.normal(size=5)
  params = (jnp.asarray(w), -float(np.median(X @ w)))
  y = np.sign(np.asarray(_linear(params, X)))
  y[:3] = -y[:3]  # a few misclassified: the clean accuracy is below 1
  settings = dict(linf_eps=[0.0, 0.05, 0.2], l2_radii=(), pgd_steps=5, apgd_steps=5, restarts=1,
                  key=jax.random.key(0), bounds=(0.0, 1.0), names=("fgsm", "pgd"),
                  square_queries=20)
  every = report.evaluate_attacks(_linear, params, X, y, per_attack=True, **settings)
  survivors = report.evaluate_attacks(_linear, params, X, y, per_attack=False, **settings)
  assert survivors["worst_linf_accuracy"] == every["worst_linf_accuracy"]
  assert survivors["clean_accuracy"] == every["clean_accuracy"] == 21 / 24
  assert every["worst_linf_accuracy"][-1] < every["clean_accuracy"]  # the radii matter
  broken = np.add(survivors["fgsm_linf_broken_first"], survivors["pgd_linf_broken_first"])
  np.testing.assert_allclose(broken, every["clean_accuracy"]
                             - np.asarray(every["worst_linf_accuracy"]), atol=1e-12)
  assert "fgsm_linf_accuracy" in every and "fgsm_linf_accuracy" not in survivors


def test_choose_takes_the_most_robust_then_the_most_accurate_then_the_first():
  candidates = [dict(val_robust_accuracy=0.4, val_accuracy=0.9),
                dict(val_robust_accuracy=0.5, val_accuracy=0.7),
                dict(val_robust_accuracy=0.5, val_accuracy=0.8),
                dict(val_robust_accuracy=0.5, val_accuracy=0.8)]
  assert report.choose(candidates) == 2
  assert report.choose(candidates[:2]) == 1
  with pytest.raises(ValueError, match="candidates"):
    report.choose([])


def test_beta_is_chosen_on_validation_robustness_and_one_beta_is_not_attacked():
  class Constant:  # a head that predicts one label: clean accuracy is that label's share
    def __init__(self, label):
      self.label = label

    def predict(self, X):
      return jnp.full(X.shape[0], self.label)

  X, y = np.zeros((4, 2)), np.array([0, 0, 0, 1])
  robust = {0: 0.1, 1: 0.6}  # the less accurate head is the more robust one
  fit = lambda X, y, beta: Constant(int(beta))
  head, beta, numbers = report.fit_and_select((X, y), (X, y), fit=fit, betas=(0.0, 1.0),
                                              robustness=lambda head: robust[head.label])
  assert (head.label, beta, numbers) == (1, 1.0, dict(val_accuracy=0.25,
                                                       val_robust_accuracy=0.6))
  attacked = []
  _, beta, numbers = report.fit_and_select((X, y), (X, y), fit=fit, betas=(0.0,),
                                           robustness=attacked.append)
  assert (beta, numbers["val_robust_accuracy"], attacked) == (0.0, None, [])


def test_pixel_radii_print_and_plot_as_k_over_255_and_certificates_get_their_figure(tmp_path):
  results = {"model": ["poly", "relu"], "clean_accuracy": [0.9, 0.8],
             "l2_radii": [36 / 255, 72 / 255], "l2_radii_k": [36, 72],
             "worst_l2_accuracy": [[0.6, 0.4], [0.5, 0.2]],
             "certified_l2_accuracy": [[0.5, 0.3], None]}
  assert report.radius_axis(results, "l2_radii") == ([36, 72], ["36/255", "72/255"])
  table = report.format_table(results)
  assert "ε=36/255" in table and "ε=72/255" in table and "0.600" in table
  assert report.plot_models(str(tmp_path), results).endswith("accuracy_vs_eps.png")
  path = report.plot_certified(str(tmp_path), results)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert report.plot_certified(str(tmp_path / "none"), dict(results, certified_l2_accuracy=[
      None, None])) is None
  # Radii that are not k/255 (standardised features) print as they are.
  del results["l2_radii_k"]
  assert "ε=0.141176" in report.format_table(results)


def test_every_line_has_its_own_colour_and_neighbours_differ_in_line_style():
  labels = [f"model {i}" for i in range(20)]
  looks = plotting.line_styles(labels + ["model 3"])
  assert list(looks) == labels
  assert len({look["color"] for look in looks.values()}) == 20
  for a, b in zip(labels, labels[1:], strict=False):
    assert looks[a]["linestyle"] != looks[b]["linestyle"]
    assert looks[a]["marker"] != looks[b]["marker"]


def test_survivor_mode_reports_are_drawn_by_their_worst_of_all(tmp_path):
  # mode="worst" reports hold no per-attack accuracies: one panel, the worst of all.
  survivors = {"eps": [0.0, 0.1], "clean": 0.9, "worst_of_all": [0.9, 0.4],
               "broken_first": {"fgsm": [0.0, 0.5]}}
  every = dict(survivors, attacks={"fgsm": [0.9, 0.4]})
  for reports in ({"a": survivors}, {"a": survivors, "b": every}):
    path = plotting.plot_robust_accuracy(str(tmp_path / f"{len(reports)}.png"), reports)
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_seeds_are_summarised_by_the_mean_and_the_sample_spread(tmp_path):
  def run(seed, worst):
    return {"model": ["sam", "poly robust"], "train_radius": [None, float(seed)],
            "beta": [None, 1e-3], "clean_accuracy": [0.9 + seed / 100, 0.8],
            "linf_eps": [0.0, 8 / 255], "linf_eps_k": [0, 8],
            "worst_linf_accuracy": [worst, [0.8, 0.5]], "timings": {"heads": 1.0}}

  runs = [run(0, [0.9, 0.4]), run(1, [0.91, 0.5]), run(2, [0.92, 0.45])]
  results = report.over_seeds(runs, [0, 1, 2])
  assert results["linf_eps_k"] == [0, 8] and results["seeds"] == [0, 1, 2]
  np.testing.assert_allclose(results["worst_linf_accuracy"][0], [0.91, 0.45])
  np.testing.assert_allclose(results["worst_linf_accuracy_std"][0],
                             [np.std([0.9, 0.91, 0.92], ddof=1), 0.05])
  np.testing.assert_allclose(results["clean_accuracy_std"], [0.01, 0.0], atol=1e-15)
  assert results["worst_linf_accuracy_per_seed"][1] == [[0.8, 0.5]] * 3
  assert results["train_radius_per_seed"] == [[None] * 3, [0.0, 1.0, 2.0]]
  table = report.format_table(results)
  assert "0.450 ± 0.050" in table and "0, 1, 2" in table and "ε=8/255" in table
  assert report.plot_models(str(tmp_path), results).endswith("accuracy_vs_eps.png")
  report.write_results(str(tmp_path), results)  # per-seed runs and spreads are plain JSON
  with pytest.raises(ValueError, match="models"):
    report.over_seeds([runs[0], dict(runs[1], model=["sam", "poly"])], [0, 1])
  with pytest.raises(ValueError, match="at least two"):
    report.over_seeds(runs[:1], [0])
