"""The heads' config schema shared by the experiments (`experiments.families`): the members and
candidates each experiment's config gives, and invalid entries refused naming the setting."""

import os

import jax
import ml_collections
import numpy as np
import pytest

from experiments import cifar_train, families, wbc
from experiments.configs import certified as certified_config
from experiments.configs import cifar as cifar_config
from experiments.configs import wbc as wbc_config

KEY = jax.random.key(0)


def _members(config_heads):
  found = families.families(config_heads, key=KEY)
  return [m for f in found for m in (f.plain, f.robust) if m is not None]


def test_every_experiment_reads_the_same_schema_into_its_members():
  # The results' labels of the deep and certified experiments, in the order of their tables.
  assert _members(cifar_config.get_config().heads) == [
      "poly", "poly robust", "relu", "relu robust", "gated", "network head", "PGD-AT head ℓ₂",
      "SSDS head ℓ₂"]
  assert _members(certified_config.get_config("smoke").heads) == [
      "poly", "poly robust", "gated", "network head"]
  # The breast-cancer experiment reports every radius as its own model.
  found = families.families(wbc_config.get_config().heads, key=KEY)
  assert [n for f in found for n in f.names] == [
      "poly r=0", "poly r=0.1", "poly r=0.25", "poly r=0.5", "relu ε=0", "relu ε=0.05",
      "relu ε=0.1", "gated ε=0", "network head", "PGD-AT head ℓ₂ ε=0.5", "SSDS head ℓ₂ ε=0.5"]
  assert [f.type for f in found] == ["poly", "relu", "gated", "network", "network", "network"]


def test_candidates_are_the_plain_grid_then_the_robust_one():
  heads = cifar_config.get_config("smoke").heads
  grids = {f.label: [(c.label, c.radius, c.beta) for c in f.candidates()]
           for f in families.families(heads, key=KEY)}
  assert grids["poly"] == [("poly r=0 β=0.01", 0.0, 0.01), ("poly r=0.5 β=0.01", 0.5, 0.01)]
  # The robust ReLU member's grid holds no 0; the plain member still trains at 0.
  assert grids["relu"] == [("relu r=0 β=0.01", 0.0, 0.01), ("relu r=0.05 β=0.01", 0.05, 0.01)]
  assert grids["gated"] == [("gated r=0 β=0.01", 0.0, 0.01)]
  assert grids["network"] == [("network r=0 β=0.0001", 0.0, 1e-4)]
  assert grids["pgd"] == [("pgd r=0.5 β=0.0001", 0.5, 1e-4)]


def test_nonconvex_heads_take_signs_as_classes_and_convex_heads_labels_unchanged():
  found = {f.label: f for f in families.families(wbc_config.get_config().heads, key=KEY)}
  signs = np.array([-1, 1, 1, -1])
  np.testing.assert_array_equal(found["pgd"].labels(signs), [0, 1, 1, 0])
  np.testing.assert_array_equal(found["poly"].labels(signs), signs)
  np.testing.assert_array_equal(found["network"].labels(np.arange(10)), np.arange(10))


def test_a_relu_family_fits_the_loss_its_entry_names():
  config = cifar_config.get_config("smoke")
  config.heads.gated.loss = "ova_hinge"  # a locked config's own key: the flag can set it
  gated = next(f for f in families.families(config.heads, key=KEY) if f.label == "gated")
  rng = np.random.default_rng(0)
  X, y = rng.normal(size=(30, 3)), np.arange(30) % 3
  head = gated.fit(X, y, 0.0, 0.1)
  assert head.loss == "ova_hinge" and head.scores(X).shape == (30, 3) and head.gap is not None


def _heads(**entries):
  heads = ml_collections.ConfigDict()
  for label, entry in entries.items():
    heads[label] = ml_collections.ConfigDict(entry)
  return heads


_POLY = dict(type="poly", radii=(0.0, 0.5), betas=(1e-2,), solver="auto", tol=1e-4, max_steps=10)
_PGD = dict(type="network", method="pgd", radii=(0.5,), norm=2, pgd_steps=3, hidden=4, steps=5,
            learning_rate=1e-2, weight_decays=(1e-4,))


@pytest.mark.parametrize("label,entry,named", [
    ("poly", dict(_POLY, type="poyl"), "config.heads.poly.type"),
    ("poly", {k: v for k, v in _POLY.items() if k != "type"}, "config.heads.poly.type"),
    ("poly", dict(_POLY, eps=(0.1,)), r"config.heads.poly has settings \['eps'\]"),
    ("poly", {k: v for k, v in _POLY.items() if k != "tol"}, r"config.heads.poly lacks .*'tol'"),
    ("poly", dict(_POLY, radii=(0.0, -0.5)), "config.heads.poly.radii"),
    ("poly", dict(_POLY, betas=()), "config.heads.poly.betas"),
    ("poly", dict(_POLY, max_steps=0), "config.heads.poly.max_steps"),
    ("pgd", dict(_PGD, learning_rate=0.0), "config.heads.pgd.learning_rate"),
    ("pgd", dict(_PGD, norm="l1"), "config.heads.pgd.norm"),
    ("pgd", dict(_PGD, pgd_steps=0), "config.heads.pgd.pgd_steps"),
    ("pgd", dict(_PGD, radii=(0.0,)), "config.heads.pgd.radii"),
    ("pgd", dict(_PGD, method="fgsm"), "config.heads.pgd.method"),
    ("standard", dict(_PGD, method="standard"), "config.heads.standard.radii"),
])
def test_invalid_entries_are_refused_naming_the_setting(label, entry, named):
  with pytest.raises(ValueError, match=named):
    families.families(_heads(**{label: entry}), key=KEY)


def test_a_bad_head_type_stops_every_experiment_before_any_compute(tmp_path):
  for module, config in ((cifar_train.train_and_evaluate, cifar_config.get_config("smoke")),
                         (wbc.train_and_evaluate, wbc_config.get_config("smoke"))):
    config = config.unlock()
    config.heads.gated.type = "gate"
    with pytest.raises(ValueError, match="config.heads.gated.type"):
      module(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")
  with pytest.raises(ValueError, match="config.heads must hold"):
    families.families(ml_collections.ConfigDict(), key=KEY)
