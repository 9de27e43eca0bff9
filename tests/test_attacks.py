"""FGSM, PGD and APGD against analytic worst cases (linear models) and the exact TRS (poly
heads); the worst-of-all report; the validation of every argument."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cvxjax
from cvxjax import attacks, certify, poly

KEY = jax.random.PRNGKey(0)


def linear(params, x):
  """f(x) = xᵀw + b: (n,) scores for w (d,), (n, C) logits for w (d, C) and b (1, C)."""
  w, b = params
  return x @ w + b


def mlp(params, x):
  """A small tanh network with (n, C) logits, nonlinear enough to exercise the projections."""
  W1, W2 = params
  return jnp.tanh(x @ W1) @ W2


def _linear_problem(seed, n=16, d=5):
  rng = np.random.default_rng(seed)
  X = rng.normal(size=(n, d))
  w = rng.normal(size=d)
  y = np.where(rng.random(n) < 0.5, 1.0, -1.0)
  return X, y, (w, 0.3)


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "pgd_ce", "apgd_ce"])
def test_linf_reaches_the_analytic_worst_margin(attack):
  X, y, (w, b) = _linear_problem(0)
  eps = 0.2
  if attack == "fgsm":
    X_adv = attacks.fgsm(linear, (w, b), X, y, eps)
  elif attack == "apgd_ce":
    X_adv = attacks.apgd(linear, (w, b), X, y, eps, key=KEY, steps=10)
  else:
    X_adv = attacks.pgd(linear, (w, b), X, y, eps, key=KEY, steps=10,
                        loss="ce" if attack == "pgd_ce" else "margin")
  worst = y * (X @ w + b) - eps * np.abs(w).sum()
  # FGSM is exact for a linear model; PGD's 2.5ε and APGD's 2ε of travel reach the corner too.
  np.testing.assert_allclose(y * linear((w, b), X_adv), worst, atol=1e-12)


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "apgd"])
def test_l2_reaches_the_analytic_worst_margin(attack):
  X, y, (w, b) = _linear_problem(1)
  eps = 0.3
  if attack == "fgsm":
    X_adv = attacks.fgsm(linear, (w, b), X, y, eps, norm=2)
  elif attack == "apgd":
    X_adv = attacks.apgd(linear, (w, b), X, y, eps, key=KEY, norm=2, steps=100)
  else:
    X_adv = attacks.pgd(linear, (w, b), X, y, eps, key=KEY, norm=2, steps=50,
                        step_size=eps / 2)
  worst = y * (X @ w + b) - eps * np.linalg.norm(w)
  np.testing.assert_allclose(y * linear((w, b), X_adv), worst, atol=1e-6)


# Each dtype and norm is covered by one of the two ball tests (every case compiles anew).
@pytest.mark.parametrize("norm, dtype", [("inf", np.float32), (2, np.float64)])
def test_ball_and_bounds_hold_exactly(norm, dtype):
  rng = np.random.default_rng(2)
  X = rng.random(size=(64, 6)).astype(dtype)
  X[:8] = 0.0  # points on the bounds
  X[8:16] = 1.0
  params = (jnp.asarray(rng.normal(size=(6, 8)), dtype), jnp.asarray(rng.normal(size=(8, 3)),
                                                                     dtype))
  y = rng.integers(0, 3, size=64)
  for eps in (0.0, 0.1, 0.7):
    for X_adv in (attacks.fgsm(mlp, params, X, y, eps, norm=norm, bounds=(0.0, 1.0)),
                  attacks.pgd(mlp, params, X, y, eps, key=KEY, norm=norm, steps=5, restarts=2,
                              bounds=(0.0, 1.0)),
                  attacks.apgd(mlp, params, X, y, eps, key=KEY, norm=norm, steps=8, loss="dlr",
                               bounds=(0.0, 1.0))):
      assert X_adv.dtype == dtype
      assert np.all(np.asarray(attacks.norm_of(X_adv - X, norm)) <= dtype(eps))
      assert np.all((np.asarray(X_adv) >= 0) & (np.asarray(X_adv) <= 1))


@pytest.mark.parametrize("norm, dtype", [("inf", np.float64), (2, np.float32)])
def test_ball_holds_exactly_for_large_inputs_without_bounds(norm, dtype):
  # |x| ≫ ε: the rounding of x + δ alone can leave the ball, and the repair must catch it.
  rng = np.random.default_rng(3)
  X = (1e3 * rng.normal(size=(256, 10))).astype(dtype)
  X_adv = attacks.pgd(linear, (jnp.ones(10, dtype), 0.0), X, np.ones(256), 1e-3, key=KEY,
                      norm=norm, steps=3)
  assert X_adv.dtype == dtype
  assert np.all(np.asarray(attacks.norm_of(X_adv - X, norm)) <= dtype(1e-3))


def test_margin_of_logits():
  scores = jnp.array([[2.0, 1.0, -1.0], [0.0, 3.0, 1.0]])
  np.testing.assert_allclose(attacks.margin(scores, jnp.array([0, 2])), [1.0, -2.0])
  np.testing.assert_allclose(attacks.margin(jnp.array([0.5, -2.0]), jnp.array([1, 1])),
                             [0.5, -2.0])


def test_multiclass_linear_logits_reach_the_analytic_worst_margin():
  rng = np.random.default_rng(4)
  n, d, C, eps = 24, 4, 4, 0.25
  X = rng.normal(size=(n, d))
  W, b = rng.normal(size=(d, C)), rng.normal(size=(1, C))  # b as a row: no rank promotion
  y = rng.integers(0, C, size=n)
  # min over the cube of f_y − f_c is linear per c: its minimum is at a corner, in closed form.
  diff = W[:, y].T[:, None, :] - W.T[None, :, :]  # (n, C, d): w_y − w_c
  pair = np.einsum("ncd,nd->nc", diff, X) + (b[0, y][:, None] - b)
  pair = pair - eps * np.abs(diff).sum(-1)
  pair[np.arange(n), y] = np.inf
  worst = pair.min(axis=1)
  X_adv = attacks.pgd(linear, (W, b), X, y, eps, key=KEY, steps=20, restarts=4)
  found = np.asarray(attacks.margin(linear((W, b), X_adv), y))
  assert np.all(found >= worst - 1e-9)
  np.testing.assert_allclose(found, worst, atol=1e-6)
  # APGD-T tries the runner-up classes in turn. DLR's minimiser need not be the margin's, but
  # the attack finds a misclassifying point wherever one exists.
  X_apgd = attacks.apgd(linear, (W, b), X, y, eps, key=KEY, steps=50, loss="dlr", targets=9)
  found = np.asarray(attacks.margin(linear((W, b), X_apgd), y))
  assert np.all(found >= worst - 1e-9)
  np.testing.assert_array_equal(found <= 0, worst <= 0)
  assert 0 < np.sum(worst <= 0) < n
  # FGSM on the cross-entropy makes no example more robust than it was.
  X_fgsm = attacks.fgsm(linear, (W, b), X, y, eps, loss="ce")
  assert np.all(np.asarray(attacks.margin(linear((W, b), X_fgsm), y)) >= worst - 1e-9)


def _random_head(seed, d, width=3):
  """A head of 2·width random neurons: Σ α [u; 1][u; 1]ᵀ with ‖u‖ = 1 lies in K exactly."""
  rng = np.random.default_rng(seed)

  def neurons():
    U = rng.normal(size=(width, d))
    P = np.concatenate([U / np.linalg.norm(U, axis=1, keepdims=True), np.ones((width, 1))], 1)
    return np.einsum("k,ki,kj->ij", rng.random(width) + 0.5, P, P)

  return poly.PolyHead(Z=jnp.asarray(neurons())[None], Zp=jnp.asarray(neurons())[None],
                       objective=jnp.zeros(()), gap=jnp.inf, steps=jnp.zeros((), int))


@pytest.mark.parametrize("attack", ["pgd", "apgd"])
def test_attacks_on_a_polynomial_head_approach_the_exact_worst_case(attack):
  head = _random_head(5, d=4)
  rng = np.random.default_rng(5)
  X = rng.normal(size=(20, 4))
  y = np.where(np.asarray(head.scores(jnp.asarray(X))) >= 0, 1.0, -1.0)
  r = 0.5
  exact = np.asarray(jax.jit(poly.worst_case)(head.Z[0] - head.Zp[0], X, y, r).margin)
  if attack == "pgd":
    X_adv = attacks.pgd(poly.PolyHead.scores, head, X, y, r, key=KEY, norm=2, steps=100,
                        step_size=r / 10, restarts=3)
  else:
    X_adv = attacks.apgd(poly.PolyHead.scores, head, X, y, r, key=KEY, norm=2, loss="margin",
                         restarts=3)
  assert np.all(np.asarray(attacks.norm_of(X_adv - X, 2)) <= r)
  found = y * np.asarray(head.scores(X_adv))
  assert np.all(found >= exact - 1e-9)  # the TRS is the true minimum
  np.testing.assert_allclose(found, exact, atol=1e-3)


def test_robust_accuracy_matches_the_analytic_count_and_batches_agree():
  X, y, (w, b) = _linear_problem(6, n=40)
  eps_list = [0.0, 0.15, 0.3]
  clean = y * (X @ w + b)
  expected = [np.mean((clean > 0) & (clean - eps * np.abs(w).sum() > 0)) for eps in eps_list]
  suite = {"fgsm": attacks.fgsm, "pgd": functools.partial(attacks.pgd, key=KEY, steps=10)}
  whole = attacks.robust_accuracy(linear, (w, b), X, y, eps_list, suite)
  batched = attacks.robust_accuracy(linear, (w, b), X, y, eps_list, suite, batch_size=16,
                                    bounds=(-10.0, 10.0))  # loose bounds, padded batches
  assert whole == batched
  assert whole["clean"] == np.mean(clean > 0) and whole["eps"] == eps_list
  for accuracy in (*whole["attacks"].values(), whole["worst_of_all"]):
    np.testing.assert_array_equal(accuracy, expected)


def test_worst_of_all_counts_an_example_robust_only_if_every_attack_fails():
  X, y, (w, b) = _linear_problem(8, n=30)
  # Each fake attack moves a different third of the examples to the other side.
  def flip(part):
    def attack(apply, params, X, y, eps, bounds=None):
      far = 10 * jnp.sign(jnp.asarray(w)) * jnp.asarray(-y)[:, None]
      return jnp.where((jnp.arange(X.shape[0]) % 3 == part)[:, None], X + far, X)
    return attack
  report = attacks.robust_accuracy(linear, (w, b), X, y, [1.0], {str(k): flip(k) for k in
                                                                  range(3)})
  correct = y * (X @ w + b) > 0
  for k in range(3):
    assert report["attacks"][str(k)] == [np.mean(correct & (np.arange(30) % 3 != k))]
  assert report["worst_of_all"] == [0.0]


def _relu_logits(params, x):
  return jax.nn.relu(x.reshape(x.shape[0], -1) @ params[0]) @ params[1]


@pytest.mark.parametrize("model", ["linear", "relu", "poly"])
def test_stronger_attacks_never_report_higher_accuracy(model):
  rng = np.random.default_rng(9)
  if model == "poly":
    head = _random_head(9, d=6)
    apply, params, X = poly.PolyHead.scores, head, rng.normal(size=(60, 6))
    y = np.where(np.asarray(head.scores(jnp.asarray(X))) >= 0, 1.0, -1.0)
    eps_list, bounds = [0.0, 0.1, 0.3, 0.6], None
  else:
    C = 5
    X = rng.random(size=(60, 2, 3))  # image-shaped, within the pixel bounds
    if model == "linear":
      apply, params = linear_images, (rng.normal(size=(6, C)), rng.normal(size=(1, C)))
    else:
      apply, params = _relu_logits, (rng.normal(size=(6, 16)), rng.normal(size=(16, C)))
    y = np.array(jnp.argmax(apply(params, jnp.asarray(X)), axis=1))
    y[:6] = (y[:6] + 1) % C  # some examples start misclassified
    eps_list, bounds = [0.0, 0.02, 0.05, 0.1], (0.0, 1.0)
  report = attacks.robust_accuracy(apply, params, X, y, eps_list, bounds=bounds, key=KEY,
                                   norm="inf" if model != "poly" else 2)
  found = report["attacks"]
  apgd = np.min([found[k] for k in found if k.startswith("apgd")], axis=0)
  tie = 1.0 / len(y)  # one example
  assert np.all(apgd <= np.asarray(found["pgd"]) + tie)
  assert np.all(np.asarray(found["pgd"]) <= np.asarray(found["fgsm"]) + tie)
  assert np.all(np.asarray(found["fgsm"]) <= report["clean"])
  assert np.all(np.asarray(found["square"]) <= report["clean"])
  # Different attacks break different examples: together they break at least as many.
  assert np.all(np.asarray(report["worst_of_all"]) <= np.min(list(found.values()), axis=0))
  assert report["worst_of_all"][-1] < report["clean"]  # the radii are large enough to matter


def linear_images(params, x):
  """Linear logits of image-shaped inputs (n, h, w)."""
  return linear(params, x.reshape(x.shape[0], -1))


@pytest.mark.parametrize("kwargs, match", [
    (dict(norm=1), "norm"),
    (dict(eps=-0.1), "eps"),
    (dict(y=np.ones(3)), "y must have shape"),
    (dict(y=np.zeros(8)), "y must hold labels ±1"),
    (dict(bounds=(0.0, 0.5)), "within bounds"),
    (dict(loss="hinge"), "loss"),
    (dict(loss="dlr"), "at least 3 classes"),
    (dict(steps=-1), "steps"),
    (dict(restarts=0), "restarts"),
    (dict(params=(np.ones((5, 1)), 0.0)), r"apply\(params, X\) must return \(8,\)"),
])
@pytest.mark.parametrize("attack", [attacks.pgd, attacks.apgd])
def test_malformed_arguments_are_named(attack, kwargs, match):
  X, y, params = _linear_problem(7, n=8)
  X = np.abs(X) / np.abs(X).max()
  args = dict(eps=0.1, y=y, params=params, norm="inf", bounds=None, loss="margin", steps=2,
              restarts=1)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    attack(linear, args.pop("params"), X, args.pop("y"), args.pop("eps"), key=KEY, **args)


def test_malformed_reports_and_targets_are_named():
  X, y, params = _linear_problem(7, n=8)
  W = (np.ones((5, 3)), np.zeros((1, 3)))
  labels = np.arange(8) % 3
  with pytest.raises(ValueError, match="targets > 0 needs loss 'dlr' and at least 4 classes"):
    attacks.apgd(linear, W, X, labels, 0.1, key=KEY, loss="dlr", targets=2)
  with pytest.raises(ValueError, match="labels in 0..2"):
    attacks.fgsm(linear, W, X, labels + 1, 0.1)
  with pytest.raises(ValueError, match="eps_list"):
    attacks.robust_accuracy(linear, params, X, y, [0.1, -1.0], key=KEY)
  with pytest.raises(ValueError, match="key is required"):
    attacks.robust_accuracy(linear, params, X, y, [0.1])
  with pytest.raises(ValueError, match="norm"):
    attacks.robust_accuracy(linear, params, X, y, [0.1], key=KEY, norm="l1")
  with pytest.raises(ValueError, match="within bounds"):
    attacks.robust_accuracy(linear, params, X, y, [0.1], key=KEY, bounds=(0.0, 1.0))


def test_plot_robust_accuracy_draws_every_model_and_checks_the_radii(tmp_path):
  X, y, (w, b) = _linear_problem(10, n=20)
  suite = {"fgsm": attacks.fgsm}
  reports = {f"w×{s}": cvxjax.robust_accuracy(linear, (s * w, b), X, y, [0.0, 0.1, 0.2], suite)
             for s in (1.0, 3.0)}
  path = cvxjax.plot_robust_accuracy(str(tmp_path / "robust.png"), reports)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  reports["other"] = attacks.robust_accuracy(linear, (w, b), X, y, [0.0, 0.3], suite)
  with pytest.raises(ValueError, match="one eps list"):
    cvxjax.plot_robust_accuracy(str(tmp_path / "bad.png"), reports)


def test_square_schedule_halves_p_at_autoattacks_iterations():
  # A 10000-query run halves p after iterations 10, 50, 200, ..., 8000 (AutoAttack's).
  p = np.asarray(attacks.square_schedule(np.array([0, 10, 11, 50, 51, 201, 501, 1001, 2001,
                                                   4001, 6001, 8000, 8001, 9999]), 10000, 0.8))
  np.testing.assert_allclose(p, 0.8 / 2.0 ** np.array([0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 8, 9, 9]))
  # A 1000-query run reaches them ten times sooner: iteration 1 is 10 of 10000, 2 is 20.
  np.testing.assert_allclose(attacks.square_schedule(np.array([1, 2, 5, 6]), 1000, 0.5),
                             [0.5, 0.25, 0.25, 0.125])
  # Square sides cover a fraction p of a 32×32 image; ℓ₂ sides are odd and at least 3; a
  # vector's windows are p of its length; every window fits the grid.
  sides = lambda i, *grid: np.asarray(attacks.square_window(np.array(i), 5000, 0.8, *grid))
  np.testing.assert_array_equal(sides([0, 4999], (32, 32), 2, "inf"), [[29, 29], [1, 1]])
  np.testing.assert_array_equal(sides([0, 4999], (32, 32), 2, 2), [[29, 29], [3, 3]])
  np.testing.assert_array_equal(sides([0, 30], (1, 30), 1, "inf"), [[1, 24], [1, 6]])
  np.testing.assert_array_equal(sides([0], (4, 40), 2, 2), [[4, 11]])


@pytest.mark.parametrize("norm, shape", [("inf", (40, 12)), (2, (40, 4, 4, 2))])
def test_square_on_a_linear_model_succeeds_exactly_where_the_analytic_distance_allows(norm,
                                                                                     shape):
  rng = np.random.default_rng(11)
  X = rng.normal(size=shape)
  w = rng.normal(size=int(np.prod(shape[1:])))
  b = 0.2
  scores = X.reshape(len(X), -1) @ w + b
  y = np.where(rng.random(len(X)) < 0.8, np.sign(scores), -np.sign(scores))  # some wrong
  dual = np.abs(w).sum() if norm == "inf" else np.linalg.norm(w)
  distance = np.abs(scores) / dual  # the minimal adversarial distance of f(x) = wᵀx + b
  eps = float(np.median(distance))
  X_adv = attacks.square(linear_images, (w, b), X, y, eps, key=KEY, norm=norm, n_queries=400)
  assert np.all(np.asarray(attacks.norm_of(X_adv - X, norm)) <= eps)
  found = y * np.asarray(linear_images((w, b), X_adv))
  clean = y * np.asarray(linear_images((w, b), jnp.asarray(X)))  # XLA's rounding, as found
  assert np.all(found <= clean)  # never raises a margin
  assert np.all(found >= clean - eps * dual - 1e-9)  # no point of the ball goes lower
  correct = clean > 0
  assert not np.any((found <= 0) & correct & (distance > eps))
  near = correct & (distance <= 0.5 * eps)
  assert near.sum() >= 5 and np.mean(found[near] <= 0) >= 0.9


def test_square_l2_on_logits_and_channels_first_images_keeps_the_ball_and_bounds():
  rng = np.random.default_rng(12)
  X = rng.random(size=(24, 2, 3, 5))  # (n, C, H, W)
  params = (rng.normal(size=(30, 16)), rng.normal(size=(16, 4)))
  y = np.array(jnp.argmax(_relu_logits(params, jnp.asarray(X)), axis=1))
  y[:3] = (y[:3] + 1) % 4
  clean = np.asarray(attacks.margin(_relu_logits(params, jnp.asarray(X)), y))
  X_adv = attacks.square(_relu_logits, params, X, y, 0.3, key=KEY, norm=2, n_queries=200,
                         restarts=2, bounds=(0.0, 1.0), channel_axis=1)
  assert np.all(np.asarray(attacks.norm_of(X_adv - X, 2)) <= 0.3)
  assert np.all((np.asarray(X_adv) >= 0) & (np.asarray(X_adv) <= 1))
  found = np.asarray(attacks.margin(_relu_logits(params, X_adv), y))
  assert np.all(found <= clean) and np.any(found[clean > 0] <= 0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_queries=0), "n_queries"),
    (dict(n_queries=10**6), "n_queries"),
    (dict(p_init=0.0), "p_init"),
    (dict(restarts=0), "restarts"),
    (dict(channel_axis=0), "channel_axis"),
    (dict(channel_axis=None), "spatial axes"),
    (dict(norm=1), "norm"),
])
def test_square_names_malformed_arguments(kwargs, match):
  X = np.zeros((4, 2, 2, 2, 1))  # three spatial axes beside the channels: too many
  if "channel_axis" not in kwargs or kwargs["channel_axis"] == 0:
    X = X[..., 0]  # (n, H, W, C)
  with pytest.raises(ValueError, match=match):
    attacks.square(linear_images, (np.ones(8), 0.0), X, np.ones(4), 0.1, key=KEY, **kwargs)


def test_survivor_mode_equals_the_worst_of_all_on_a_linear_model():
  X, y, (w, b) = _linear_problem(13, n=40)
  eps_list = [0.0, 0.15, 0.3]
  clean = y * (X @ w + b)
  expected = [np.mean((clean > 0) & (clean - eps * np.abs(w).sum() > 0)) for eps in eps_list]
  suite = attacks.standard_attacks("inf", key=KEY, names=("fgsm", "pgd"))
  kw = dict(attacks=suite)
  every = attacks.robust_accuracy(linear, (w, b), X, y, eps_list, **kw)
  survivors = attacks.robust_accuracy(linear, (w, b), X, y, eps_list, mode="worst", **kw)
  assert survivors["clean"] == every["clean"] == np.mean(clean > 0)
  assert survivors["worst_of_all"] == every["worst_of_all"] == expected
  # FGSM, exact on a linear model, breaks every breakable example first: nothing is left.
  broken = survivors["broken_first"]
  np.testing.assert_allclose(survivors["clean"] - np.sum(list(broken.values()), axis=0),
                             survivors["worst_of_all"])
  assert broken["pgd"] == [0.0] * 3


def test_survivor_mode_attacks_only_survivors_and_matches_every_example_mode():
  rng = np.random.default_rng(14)
  X = rng.normal(size=(300, 6))
  params = (rng.normal(size=(6, 16)), rng.normal(size=(16, 3)))
  y = np.array(jnp.argmax(_relu_logits(params, jnp.asarray(X)), axis=1))
  y[:30] = (y[:30] + 1) % 3
  seen = []

  def recorded(attack):
    def run(apply, params, X, y, eps, bounds=None):
      seen.append(X.shape[0])
      return attack(apply, params, X, y, eps, bounds=bounds)
    return run

  # Deterministic attacks: each example's attacked point depends on it alone.
  suite = {"fgsm": recorded(functools.partial(attacks.fgsm, loss="ce")),
           "pgd": recorded(functools.partial(attacks.pgd, key=KEY, steps=10,
                                             random_start=False))}
  eps_list = [0.1, 0.4]
  every = attacks.robust_accuracy(_relu_logits, params, X, y, eps_list, suite, batch_size=128)
  seen.clear()
  survivors = attacks.robust_accuracy(_relu_logits, params, X, y, eps_list, suite,
                                      batch_size=128, mode="worst")
  assert survivors["worst_of_all"] == every["worst_of_all"]
  assert every["worst_of_all"][-1] < every["clean"]
  np.testing.assert_allclose(survivors["broken_first"]["fgsm"],
                             every["clean"] - np.asarray(every["attacks"]["fgsm"]))
  # PGD sees only FGSM's survivors, in batches of 128 and a last one padded to a power of 2,
  # at least 64.
  def batches(count):
    last = count % 128
    return [128] * (count // 128) + ([max(64, 1 << (last - 1).bit_length())] if last else [])

  clean = round(300 * every["clean"])
  alive = [clean - round(300 * f) for f in survivors["broken_first"]["fgsm"]]
  assert seen == sum((batches(clean) + batches(a) for a in alive), [])


def test_robust_accuracy_names_a_bad_mode():
  X, y, params = _linear_problem(7, n=8)
  with pytest.raises(ValueError, match="mode"):
    attacks.robust_accuracy(linear, params, X, y, [0.1], {"fgsm": attacks.fgsm}, mode="best")


def test_gated_walk_crosses_the_gate_that_gradients_cannot_see():
  # f(x) = 1[x₁ ≥ 0]·x₂ − 0.05·1[x₂ ≥ 0]·x₂: at x = (0.1, 1) the gradient (0, 0.95) points
  # away from the gate x₁ = 0, 0.1 away, across which f = −0.05·x₂ < 0.
  U = np.array([[[0.0], [1.0]], [[0.0], [-0.05]]])  # (P, d, 1)
  gates = np.array([[1.0, 0.0], [0.0, 1.0]])  # (d, P): h₁ = e₁, h₂ = e₂
  X, y = np.array([[0.1, 1.0]]), np.array([1.0])
  pgd = attacks.pgd(attacks.gated_scores, (U, gates), X, y, 0.3, key=KEY, norm=2, steps=20,
                    random_start=False)
  assert float(attacks.gated_scores((U, gates), pgd)[0]) > 0.5
  walk = attacks.gated_walk(U, gates, X, y, 0.3, steps=3)
  assert float(attacks.gated_scores((U, gates), walk)[0]) < 0
  assert float(attacks.norm_of(walk - X, 2)[0]) <= 0.3


def test_gated_walk_is_sound_and_finds_what_a_brute_force_search_finds():
  rng = np.random.default_rng(15)
  P, d, C, n, eps = 6, 2, 3, 40, 0.4
  U, gates = rng.normal(size=(P, d, C)), rng.normal(size=(d, P))
  X = rng.normal(size=(n, d))
  y = np.array(jnp.argmax(attacks.gated_scores((U, gates), jnp.asarray(X)), axis=1))
  X_adv = attacks.gated_walk(U, gates, X, y, eps, steps=20)
  assert np.all(np.asarray(attacks.norm_of(X_adv - X, 2)) <= eps)
  found = np.asarray(attacks.margin(attacks.gated_scores((U, gates), X_adv), y))
  clean = np.asarray(attacks.margin(attacks.gated_scores((U, gates), jnp.asarray(X)), y))
  assert np.all(found <= clean)
  # Sound: the gate-aware certificate is a lower bound on the distance to the boundary.
  radii = np.asarray(certify.gated_certified_radius(U, gates, X, y))
  assert not np.any((found <= 0) & (radii > eps))
  # Brute force: the disc on a polar grid of 100 radii × 360 angles around each example.
  r, a = np.meshgrid(np.linspace(0, eps, 100), np.linspace(0, 2 * np.pi, 360))
  disc = np.stack([r * np.cos(a), r * np.sin(a)], -1).reshape(-1, 2)
  points = jnp.asarray((X[:, None] + disc).reshape(-1, d))
  grid = np.asarray(attacks.gated_scores((U, gates), points))
  lowest = np.asarray(attacks.margin(grid, np.repeat(y, len(disc)))).reshape(n, -1).min(1)
  clearly = lowest < -0.05 * np.abs(clean).mean()
  assert clearly.sum() >= 5 and np.mean(found[clearly] <= 0) >= 0.9


@pytest.mark.parametrize("kwargs, match", [
    (dict(U=np.ones((3, 2, 1)), gates=np.ones((2, 4))), "must agree"),
    (dict(X=np.ones((4, 2, 1))), "must agree"),
    (dict(steps=0), "steps"),
    (dict(tabu=-1), "tabu"),
    (dict(y=np.zeros(4)), "labels"),
])
def test_gated_walk_names_malformed_arguments(kwargs, match):
  args = dict(U=np.ones((3, 2, 1)), gates=np.ones((2, 3)), X=np.ones((4, 2)), y=np.ones(4))
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    attacks.gated_walk(args.pop("U"), args.pop("gates"), args.pop("X"), args.pop("y"), 0.1,
                       **args)
