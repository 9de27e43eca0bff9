"""The experiments' shared stage helpers (`experiments.common`): files written whole, rows
computed once per model and parameters, `stop_after` checked, stages timed."""

import json
import os

import numpy as np
import pytest

from experiments import common


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
