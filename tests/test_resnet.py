"""The PreAct ResNet-18 and its training loop: shapes, learning with SGD and SAM, augmentation,
exact resumption, and the checks on checkpoints and settings. Tiny widths: compiling the
network, not running it, is what these tests spend their time on."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvxjax import checkpoint
from cvxjax.models import PreActResNet18
from cvxjax.train import backbone

# rbg keys: XLA:CPU takes ~0.3 s to compile each threefry draw, and init makes dozens of them.
KEY = jax.random.key(0, impl="rbg")
MODEL = PreActResNet18(num_classes=2, width=4, head_width=16)


def _data(n=128, seed=0):
  """Two classes told apart by their mean colour (reddish or bluish), with pixel noise."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, n)
  colours = np.array([[0.8, 0.5, 0.2], [0.2, 0.5, 0.8]])
  X = colours[y][:, None, None, :] + 0.1 * rng.normal(size=(n, 32, 32, 3))
  return np.clip(X, 0, 1).astype(np.float32), y


def _config(optimizer="sgd", **settings):
  return backbone.TrainSettings(**dict(dict(optimizer=optimizer, epochs=2, batch_size=32,
                                            warmup_epochs=0), **settings))


class Killed(Exception):
  """The process dying mid-run."""


def _assert_same(a, b):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-6,
                                                       atol=1e-7), a, b)


@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory):
  """(checkpoint directory, final state) of 2 SGD epochs (8 steps) on `_data()`."""
  directory = str(tmp_path_factory.mktemp("sgd"))
  state = backbone.train_backbone(MODEL, _config(), _data(), checkpoint_dir=directory, key=KEY,
                                  progress=False)
  return directory, state


def test_shapes_and_parameter_count():
  x = jax.ShapeDtypeStruct((5, 32, 32, 3), jnp.float32)
  full = jax.eval_shape(PreActResNet18().init, KEY, x)
  counts = {part: sum(leaf.size for leaf in jax.tree.leaves(tree))
            for part, tree in full["params"].items()}
  # The 11.17M-parameter backbone (with the final BN) and the head 512·256+256 + 256·10+10.
  assert counts == {"backbone": 11_167_040, "head": 133_898}
  head = full["params"]["head"]
  assert head["hidden"]["kernel"].shape == (512, 256)
  assert head["output"]["kernel"].shape == (256, 10)

  for dtype in (jnp.float32, jnp.bfloat16):
    model = PreActResNet18(width=4, head_width=16, dtype=dtype)
    variables = jax.eval_shape(model.init, KEY, x)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    logits = jax.eval_shape(model.apply, variables, x)
    features = jax.eval_shape(functools.partial(model.apply, method=PreActResNet18.features),
                              variables, x)
    assert (logits.shape, logits.dtype) == ((5, 10), jnp.float32)
    assert (features.shape, features.dtype) == ((5, 32), jnp.float32)


def test_sgd_learns(sgd_run):
  directory, state = sgd_run
  X, y = _data()
  assert int(state.step) == 8
  assert backbone.accuracy(MODEL, state.variables, X, y, batch_size=32) >= 0.85  # chance: 0.5
  with open(os.path.join(directory, backbone.ARCHITECTURE_FILE)) as f:
    assert json.load(f) == {"model": "PreActResNet18", "num_classes": 2, "width": 4,
                            "head_width": 16}
  _assert_same(backbone.load_backbone(directory, MODEL), state)


def test_sam_learns(tmp_path):
  X, y = _data()
  state = backbone.train_backbone(MODEL, _config("sam"), (X, y), checkpoint_dir=str(tmp_path),
                                  key=KEY, progress=False)
  assert backbone.accuracy(MODEL, state.variables, X, y, batch_size=32) >= 0.85
  _assert_same(backbone.load_backbone(str(tmp_path), MODEL), state)


def test_augment_crops_and_flips_within_the_padded_image():
  X = np.random.default_rng(1).random((32, 32, 32, 3)).astype(np.float32)
  out = np.asarray(jax.jit(backbone.augment)(KEY, X))
  assert out.shape == X.shape and out.dtype == X.dtype
  assert out.min() >= 0 and out.max() <= 1
  padded = np.pad(X, ((0, 0), (4, 4), (4, 4), (0, 0)))
  flips = []
  for image, result in zip(padded, out, strict=True):
    # Every output is one of the 9·9 crops of the padded image, flipped or not.
    found = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)
             if np.array_equal((lambda c: c[:, ::-1] if flip else c)(image[dy:dy + 32, dx:dx + 32]),
                               result)]
    assert len(found) == 1
    flips.append(found[0][2])
  assert 0 < sum(flips) < len(flips)
  assert np.mean([np.array_equal(a, b) for a, b in zip(X, out, strict=True)]) < 0.2


# Killed at the first checkpoint: the end of epoch 1 (step 4 of 8), or mid-epoch at step 3.
@pytest.mark.parametrize("every,killed_at", [(0, 4), (3, 3)])
def test_resumed_run_equals_uninterrupted_run(sgd_run, tmp_path, monkeypatch, every, killed_at):
  directory, uninterrupted = sgd_run
  config = _config(checkpoint_every_steps=every)
  save = checkpoint.save

  def save_then_die(mgr, step, state):
    save(mgr, step, state)
    raise Killed

  monkeypatch.setattr(checkpoint, "save", save_then_die)
  with pytest.raises(Killed):
    backbone.train_backbone(MODEL, config, _data(), checkpoint_dir=str(tmp_path), key=KEY,
                            progress=False)
  monkeypatch.setattr(checkpoint, "save", save)
  assert int(backbone.load_backbone(str(tmp_path), MODEL).step) == killed_at
  resumed = backbone.train_backbone(MODEL, config, _data(), checkpoint_dir=str(tmp_path),
                                    key=KEY, progress=False)
  _assert_same(resumed, uninterrupted)

  # A finished run is restored, not trained further.
  def no_training(*args):
    raise AssertionError("train_step called on a finished run")

  monkeypatch.setattr(backbone, "train_step", no_training)
  finished = backbone.train_backbone(MODEL, _config(), _data(), checkpoint_dir=directory, key=KEY,
                                     progress=False)
  _assert_same(finished, uninterrupted)


def test_architecture_mismatch_is_refused_before_training(sgd_run, monkeypatch):
  directory, _ = sgd_run
  wider = PreActResNet18(width=8, head_width=16)
  monkeypatch.setattr(backbone, "train_step", None)  # any training would fail differently
  with pytest.raises(ValueError, match="width"):
    backbone.train_backbone(wider, _config(), _data(), checkpoint_dir=directory, key=KEY,
                            progress=False)
  with pytest.raises(ValueError, match="width"):
    backbone.load_backbone(directory, wider)
  with pytest.raises(ValueError, match="optimizer"):
    backbone.train_backbone(MODEL, _config("sam"), _data(), checkpoint_dir=directory, key=KEY,
                            progress=False)


def test_load_without_checkpoint_names_the_directory(tmp_path):
  with pytest.raises(ValueError, match="nowhere"):
    backbone.load_backbone(str(tmp_path / "nowhere"), MODEL)
  assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("key,value", [("optimizer", "adam"), ("epochs", 0), ("batch_size", -1),
                                       ("batch_size", 129), ("learning_rate", 0.0),
                                       ("momentum", 1.0), ("warmup_epochs", 2),
                                       ("dtype", "float16"), ("adversary", "pgd")])
def test_bad_settings_are_refused_naming_the_field(tmp_path, key, value):
  with pytest.raises(ValueError, match=f"^{key} must be"):
    backbone.train_backbone(MODEL, _config(**{key: value}), _data(),
                            checkpoint_dir=str(tmp_path), key=KEY, progress=False)
  assert not os.listdir(tmp_path)  # refused before writing anything
