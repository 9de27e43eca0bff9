"""Adversarial training (PGD-AT, SSDS) of the nonconvex head and of a whole network."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
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
  eps, alpha, c1, c2 = 0.02, 0.01, 100.0, 100.0
  adversary = adversarial.Adversary("ssds", eps=eps, norm="inf", alpha=alpha, c1=c1, c2=c2)
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
  delta0 = np.asarray(state.delta[index], np.float64)
  own = np.asarray(jax.vmap(jax.grad(lambda xi, yi: jax.nn.logsumexp(xi @ params["W"])
                                     - (xi @ params["W"])[yi]))(x + delta0, y), np.float64)
  ascent = delta0 + alpha * own
  # The ℓ∞ ball's residual, scaled to unit ℓ₁ norm: the multiplier's pull.
  residual = ascent - np.clip(ascent, -eps, eps)
  l1 = np.abs(residual).sum(-1, keepdims=True)
  pushed = l1[:, 0] > 0
  assert pushed.any() and not pushed.all()  # both cases: pulled back, and inside the ball
  pulled = ascent - alpha / c1 * residual / np.where(l1 > 0, l1, 1.0)
  v = np.maximum(1.0 + alpha * (np.abs(pulled).max(-1) - eps), 0.0)
  # The violation before the projection raises the multipliers of the examples pushed out.
  assert np.all(v[pushed] > 1.0) and np.all(v[~pushed] < 1.0), v
  delta = np.clip(pulled, -eps, eps)
  np.testing.assert_allclose(out.state.delta[index], delta, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(out.state.multiplier[index], v, rtol=1e-6)
  np.testing.assert_allclose(out.inputs, x + delta0, rtol=1e-6)
  # λ, t: t⁺ = t₀ + α(λ⁺ − 1), λ⁺ = λ₀ + u − t⁺, u = (α/c₂)(L − mean vᵢ(‖δᵢ‖ − ε)/c₁).
  u = alpha / c2 * (float(out.loss) - np.mean(v / c1 * (np.abs(delta).max(-1) - eps)))
  weight = (4.0 - 1.0 + alpha + u) / (1.0 + alpha)
  np.testing.assert_allclose(out.weight, weight, rtol=1e-6)
  np.testing.assert_allclose(out.state.level, 1.0 + alpha * (weight - 1.0), rtol=1e-6)
  np.testing.assert_allclose(out.weight, 4.0 + u - out.state.level, rtol=1e-6)


def _weight_and_level_jacobian(scheme: str) -> np.ndarray:
  """∂(λ⁺, t⁺)/∂(λ, t) of a whole `ssds_update` at the default settings, by autodiff."""
  adversary = adversarial.Adversary("ssds", eps=0.1, norm=2, lambda_scheme=scheme)
  state = adversarial.init_state(adversary, (5, 3))
  key = jax.random.key(0)
  x = jax.random.normal(key, (5, 3))
  grad = jax.random.normal(jax.random.fold_in(key, 1), (5, 3))
  index = jnp.arange(5)

  def step(pair):
    # (λ, t) near their fixed point (1, u), where λ⁺ > 0 and the map is smooth.
    out = adversarial.ssds_update(adversary, state.replace(weight=pair[0], level=pair[1]),
                                  index, x, grad, jnp.asarray(0.7))
    return jnp.stack([out.weight, out.level])

  return np.asarray(jax.jacobian(step)(jnp.array([1.2, 0.1])), np.float64)


def test_ssds_weight_and_level_linearisation_is_contractive_at_the_defaults():
  moduli = np.abs(np.linalg.eigvals(_weight_and_level_jacobian("implicit")))
  assert moduli.max() < 1.0, moduli
  # The derivation in `adversarial.weight_and_level`: modulus 1/√(1 + α), α = 2.
  np.testing.assert_allclose(moduli, 1 / np.sqrt(3.0), rtol=1e-5)
  # The public code's explicit step: determinant 1, eigenvalues ±i, a cycle that never decays.
  explicit = np.linalg.eigvals(_weight_and_level_jacobian("explicit"))
  np.testing.assert_allclose(np.sort(explicit.imag), [-1.0, 1.0], atol=1e-5)
  np.testing.assert_allclose(explicit.real, 0.0, atol=1e-5)


def _margin_saddle(norm, eps: float):
  """min_θ mean_i max_{‖δᵢ‖ ≤ ε} ½‖θ‖² − yᵢ θ·(xᵢ + δᵢ): convex in θ, linear in δ.

  The inner maximum is ε‖θ‖_* (dual norm), so θ* = argmin ½‖θ‖² − θ·m + ε‖θ‖_*, m = mean yᵢxᵢ:
  m shrunk by ε (ℓ₂) or soft-thresholded by ε (ℓ∞, dual ℓ₁); δᵢ* = −ε yᵢ ∂‖θ*‖_*, and each
  constraint's KKT multiplier is ‖∇_δᵢ‖_* = ‖θ*‖_*.
  """
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(8, 3)) + [1.0, -1.0, 0.5]).astype(np.float32)
  y = np.where(rng.uniform(size=8) < 0.8, 1.0, -1.0).astype(np.float32)
  m = (y[:, None] * x).mean(0)
  if norm == 2:
    theta = (1 - eps / np.linalg.norm(m)) * m
    direction, multiplier = theta / np.linalg.norm(theta), np.linalg.norm(theta)
  else:
    assert np.abs(m).min() > eps  # every coordinate of θ* nonzero: δ* is unique
    theta = np.sign(m) * (np.abs(m) - eps)
    direction, multiplier = np.sign(theta), np.abs(theta).sum()
  return x, y, theta, -eps * y[:, None] * direction, multiplier


@pytest.mark.parametrize("norm", ["inf", 2])
@pytest.mark.parametrize("scheme", ["implicit", "explicit"])
def test_ssds_converges_to_the_saddle_of_a_convex_concave_problem(norm, scheme):
  eps, steps = 0.2, 300
  x, y, theta_star, delta_star, multiplier = _margin_saddle(norm, eps)
  adversary = adversarial.Adversary("ssds", eps=eps, norm=norm, lambda_scheme=scheme)
  optimizer = optax.sgd(0.1)

  def loss_fn(theta, xs):
    return jnp.mean(0.5 * theta @ theta - y * (xs @ theta)), None

  @jax.jit
  def step(carry, _):
    theta, opt_state, state = carry
    out = adversarial.training_gradients(adversary, loss_fn, None, theta, jnp.asarray(x),
                                         jnp.asarray(y), index=jnp.arange(8), state=state,
                                         key=jax.random.key(0))
    updates, opt_state = optimizer.update(out.grads, opt_state, theta)
    theta = optax.apply_updates(theta, adversarial.scale_updates(updates, out.weight))
    return (theta, opt_state, out.state), out.weight

  theta = jnp.zeros(3)
  carry = (theta, optimizer.init(theta), adversarial.init_state(adversary, x.shape))
  (theta, _, state), weights = jax.lax.scan(step, carry, None, length=steps)
  # Both schemes reach the saddle in (θ, δ) and the multipliers: vᵢ/c₁ grows from v₀/c₁ = 0.01.
  np.testing.assert_allclose(theta, theta_star, atol=1e-5)
  np.testing.assert_allclose(state.delta, delta_star, atol=1e-5)
  np.testing.assert_allclose(state.multiplier / adversary.c1, multiplier, rtol=1e-3)
  swing = np.abs(np.asarray(weights) - 1.0).reshape(15, 20).max(-1)  # per 20 steps
  if scheme == "explicit":
    assert swing[-1] > 0.5, swing  # the public code's λ still cycles through 0 and 2
    return
  # λ's swing about 1 decays monotonically to rounding, then λ = 1.
  assert np.all(np.diff(swing[swing > 1e-6]) < 0), swing
  assert swing[-1] < 1e-6 and abs(float(state.weight) - 1.0) < 1e-6, swing


def test_ssds_perturbs_the_image_before_its_augmentation():
  """With a flip as the augmentation, SSDS on (W, flip) equals SSDS on (flipped W, no flip)."""
  adversary = adversarial.Adversary("ssds", eps=0.05, norm="inf", alpha=0.05)
  W = jax.random.normal(jax.random.key(0), (4, 3))
  x = jax.random.uniform(jax.random.key(1), (6, 4))
  y = jnp.array([0, 1, 2, 0, 1, 2])
  index = jnp.array([5, 0, 2, 3, 1, 4])
  state = adversarial.init_state(adversary, (6, 4))
  state = state.replace(delta=0.03 * jax.random.normal(jax.random.key(2), (6, 4)))

  def run(weights, augment):
    logits_fn = lambda p, xs: xs @ p
    loss_fn = lambda p, xs: (optax.softmax_cross_entropy_with_integer_labels(
        logits_fn(p, xs), y).mean(), None)
    return adversarial.training_gradients(adversary, loss_fn, logits_fn, weights, x, y,
                                          index=index, state=state, key=jax.random.key(3),
                                          bounds=(0.0, 1.0), augment=augment)

  flip = lambda batch: batch[:, ::-1]
  augmented, plain = run(W, flip), run(W[::-1], None)
  np.testing.assert_allclose(augmented.inputs, flip(x + state.delta[index]), rtol=1e-6)
  np.testing.assert_allclose(augmented.loss, plain.loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               augmented.state, plain.state)


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
  settings = dict(method="pgd", eps=0.1)
  settings[field] = value
  with pytest.raises(ValueError, match=f"adversary.{field}"):
    adversarial.Adversary(**settings)


def _tiny_run(tmp_path, method, name="run"):
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 1, (16, 32, 32, 3)).astype(np.float32)
  labels = np.arange(16) % 2
  settings = backbone.TrainSettings(epochs=2, batch_size=8, warmup_epochs=0,
                                    adversary=adversarial.Adversary(method, eps=4 / 255,
                                                                    pgd_steps=2))
  model = PreActResNet18(num_classes=2, width=2, head_width=4)
  state = backbone.train_backbone(model, settings, (images, labels),
                                  checkpoint_dir=str(tmp_path / name), key=jax.random.key(0),
                                  progress=False)
  return model, settings, state


@pytest.mark.parametrize("method", ["pgd", "ssds"])
def test_whole_network_trains_adversarially_and_reloads(tmp_path, method):
  model, settings, state = _tiny_run(tmp_path, method)
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
  other = dataclasses.replace(settings, adversary=adversarial.STANDARD)
  with pytest.raises(ValueError, match="adversary.method"):
    backbone.train_backbone(model, other, (np.zeros((16, 32, 32, 3), np.float32),
                                           np.arange(16) % 2),
                            checkpoint_dir=str(tmp_path / "run"), key=jax.random.key(0))
