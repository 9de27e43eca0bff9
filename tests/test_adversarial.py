"""Adversarial training (PGD-AT, SSDS) of the nonconvex head and of a whole network."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from cvxjax import attacks
from cvxjax.models import PreActResNet18
from cvxjax.train import adversarial, backbone, head


@pytest.fixture(scope="module")
def cancer():
  X, y = load_breast_cancer(return_X_y=True)
  X = (X - X.mean(0)) / X.std(0)
  order = np.random.default_rng(0).permutation(len(y))
  X, y = X[order].astype(np.float32), y[order]
  return (X[:400], y[:400]), (X[400:], y[400:])


def _fit(train, adversary, **kwargs):
  settings = dict(hidden=32, steps=400, learning_rate=1e-2, weight_decay=1e-4,
                  key=jax.random.key(0), batch_size=64, adversary=adversary)
  return head.fit(*train, **dict(settings, **kwargs))


def _pgd_accuracy(params, X, y, eps):
  X_adv = attacks.pgd(head.scores, params, X, y, eps, key=jax.random.key(1), norm=2, steps=20,
                      restarts=2, loss="ce")
  return float(jnp.mean(jnp.argmax(head.scores(params, X_adv), -1) == y))


def test_adversarial_training_raises_pgd_robust_accuracy(cancer):
  train, (X, y) = cancer
  eps = 1.0  # normal training keeps about 0.78 here, PGD-AT and SSDS about 0.87
  robust = {method: _pgd_accuracy(_fit(train, adversarial.Adversary(method, eps=eps, norm=2)),
                                  X, y, eps)
            for method in ("pgd", "ssds")}
  standard = _pgd_accuracy(_fit(train, adversarial.STANDARD), X, y, eps)
  assert robust["pgd"] >= standard + 0.05, (robust, standard)
  assert robust["ssds"] >= standard + 0.05, (robust, standard)


@pytest.mark.parametrize("norm", ["inf", 2])
def test_ssds_keeps_perturbations_in_the_ball_and_multipliers_nonnegative(norm):
  adversary = adversarial.Adversary("ssds", eps=0.1, norm=norm, alpha=2.0, v0=1.0)
  n, dim = 12, 5
  state = adversarial.init_state(adversary, (n, dim))
  key = jax.random.key(0)
  x = jax.random.uniform(key, (n, dim), jnp.float32)
  update = jax.jit(adversarial.ssds_update, static_argnums=0)
  for step in range(30):
    index = jax.random.permutation(jax.random.fold_in(key, step), n)[:4]
    # Large gradients push δ far outside the ball and the loss drives λ in both directions.
    grad = 10.0 * jax.random.normal(jax.random.fold_in(key, 1000 + step), (4, dim))
    loss = jnp.asarray(5.0 if step % 3 else 0.0)
    state = update(adversary, state, index, x[index], grad, loss, (0.0, 1.0))
    norms = attacks.norm_of(state.delta, norm)
    assert float(norms.max()) <= np.float32(0.1)  # ε as the float32 state holds it
    # δ = x_adv − x is stored, so x + δ may round an ulp past the bounds x_adv kept.
    assert float(jnp.min(x + state.delta)) >= -1e-7 and float(jnp.max(x + state.delta)) <= 1 + 1e-7
    assert float(state.multiplier.min()) >= 0 and float(state.weight) >= 0
  assert float(norms.max()) > 0.09  # the perturbations did move, up to the boundary


def test_ssds_ascent_follows_each_examples_own_loss_gradient():
  """One SSDS step on a linear model against per-example gradients computed separately."""
  adversary = adversarial.Adversary("ssds", eps=0.05, norm="inf", alpha=0.01, c1=100.0)
  params = {"W": jax.random.normal(jax.random.key(0), (4, 3))}
  logits_fn = lambda p, x: x @ p["W"]
  x = jax.random.normal(jax.random.key(1), (6, 4))
  y = jnp.array([0, 1, 2, 0, 1, 2])
  index = jnp.array([5, 0, 2, 3, 1, 4])
  state = adversarial.init_state(adversary, (8, 4), x.dtype)
  state = state.replace(delta=state.delta.at[index].set(
      0.01 * jax.random.normal(jax.random.key(2), (6, 4))))

  def loss_fn(p, xs):
    loss = jnp.mean(jax.nn.logsumexp(logits_fn(p, xs), -1)
                    - jnp.take_along_axis(logits_fn(p, xs), y[:, None], 1)[:, 0])
    return loss, None

  out = adversarial.training_gradients(adversary, loss_fn, logits_fn, params, x, y, index=index,
                                       state=state, key=jax.random.key(3))
  delta0 = state.delta[index]
  own = jax.vmap(jax.grad(lambda xi, yi: jax.nn.logsumexp(xi @ params["W"])
                          - (xi @ params["W"])[yi]))(x + delta0, y)
  expected = jnp.clip(delta0 + 0.01 * (own - 1.0 * jnp.sign(delta0) / 100.0), -0.05, 0.05)
  np.testing.assert_allclose(out.state.delta[index], expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(out.inputs, x + delta0, rtol=1e-6)
  # λ's update: λ₀ + (α/c₂)L − t with t = t₀ + α(λ₀ − 1) and Σ vᵢ(‖δᵢ‖ − ε) added back.
  slack = jnp.max(jnp.abs(out.state.delta[index]), -1) - 0.05
  v = jnp.maximum(1.0 + 0.01 * slack, 0.0)
  t = 1.0 + 0.01 * 3.0
  np.testing.assert_allclose(out.weight, 4.0 + 0.01 / 100 * out.loss - t - jnp.sum(v * slack),
                             rtol=1e-6)


def test_head_training_resumes_to_the_uninterrupted_result(cancer, tmp_path, monkeypatch):
  train, _ = cancer
  adversary = adversarial.Adversary("ssds", eps=0.5, norm=2)
  settings = dict(steps=60, checkpoint_every=20)
  whole = _fit(train, adversary, checkpoint_dir=str(tmp_path / "whole"), **settings)
  chunk, calls = head._train_chunk, []

  def interrupted(*args, **kwargs):
    if len(calls) == 2:
      raise KeyboardInterrupt
    calls.append(1)
    return chunk(*args, **kwargs)

  monkeypatch.setattr(head, "_train_chunk", interrupted)
  with pytest.raises(KeyboardInterrupt):
    _fit(train, adversary, checkpoint_dir=str(tmp_path / "cut"), **settings)
  monkeypatch.setattr(head, "_train_chunk", chunk)
  resumed = _fit(train, adversary, checkpoint_dir=str(tmp_path / "cut"), **settings)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               whole, resumed)


@pytest.mark.parametrize("field,value", [("method", "fgsm"), ("eps", -0.1), ("norm", "l1"),
                                         ("pgd_steps", 0), ("alpha", 0.0), ("eps", 0.0)])
def test_bad_adversary_is_refused_naming_the_field(field, value):
  config = adversarial.default_config()
  config.method = "pgd"
  config.eps = 0.1
  config[field] = value
  with pytest.raises(ValueError, match=f"adversary.{field}"):
    adversarial.from_config(config)


def _tiny_run(tmp_path, method, name="run"):
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 1, (16, 32, 32, 3)).astype(np.float32)
  labels = np.arange(16) % 2
  config = backbone.default_config()
  config.epochs, config.batch_size, config.warmup_epochs = 2, 8, 0
  config.adversary.method, config.adversary.eps, config.adversary.pgd_steps = method, 4 / 255, 2
  model = PreActResNet18(num_classes=2, width=2, head_width=4)
  state = backbone.train_backbone(model, config, (images, labels),
                                  checkpoint_dir=str(tmp_path / name), key=jax.random.key(0),
                                  progress=False)
  return model, config, state


@pytest.mark.parametrize("method", ["pgd", "ssds"])
def test_whole_network_trains_adversarially_and_reloads(tmp_path, method):
  model, config, state = _tiny_run(tmp_path, method)
  assert int(state.step) == 4 and bool(jax.tree.reduce(
      lambda ok, a: ok and bool(jnp.all(jnp.isfinite(a))), state.params, True))
  if method == "ssds":
    delta = state.adversarial.delta
    assert float(jnp.max(jnp.abs(delta))) <= np.float32(4 / 255)
    assert float(jnp.max(jnp.abs(delta))) > 0  # every example was visited and perturbed
    assert float(state.adversarial.multiplier.min()) >= 0
  loaded = backbone.load_backbone(str(tmp_path / "run"), model)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               state, loaded)
  other = ml_collections.ConfigDict(config.to_dict())
  other.adversary.method = "standard"
  with pytest.raises(ValueError, match="adversary.method"):
    backbone.train_backbone(model, other, (np.zeros((16, 32, 32, 3), np.float32),
                                           np.arange(16) % 2),
                            checkpoint_dir=str(tmp_path / "run"), key=jax.random.key(0))
