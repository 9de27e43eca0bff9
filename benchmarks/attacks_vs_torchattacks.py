"""Benchmark: cvxjax's ℓ∞ attack suite against torchattacks on one small digits network.

An independent cross-check of `cvxjax.attacks` (outside CI): the same trained network, with the
same float32 weights in JAX and in PyTorch, is attacked by both libraries at every ε of `--eps`
(default 0.05, 0.075, 0.1, 0.15: robust accuracy from about 75% down to 3%; at 0.2 it is 0) in
the ℓ∞ ball, inputs clipped to [0, 1].

  data:   scikit-learn digits, pixels / 16 in [0, 1], images (n, 1, 8, 8) float32; a fixed
          permutation (`--seed`) splits them into 1297 training and 500 test images.
  model:  flatten -> Linear(64, 64) -> ReLU -> Linear(64, 10), trained in JAX with optax's Adam
          (`--train_steps` full-batch steps, `--lr`), copied into an equal `torch.nn.Module`
          (eval mode); their logits must agree to `LOGIT_TOL` on the test set.
  cvxjax: `attacks.robust_accuracy` with the `standard_attacks` of key 0: FGSM, PGD (20 steps
          of 2.5·ε/20 on the cross-entropy, random start), APGD-CE, APGD-DLR and APGD-T (9
          targets), 100 steps each, Square (5000 queries, p_init 0.8, channels first), and the
          worst of them all per example. Also, as a diagnostic outside the suite, the same PGD
          on the margin (`loss="margin"`), which the suite ran before this cross-check showed it
          weaker on logits.
  torch:  torchattacks' PGD (eps, alpha = 2.5·eps/20, 20 steps, random start, CE loss),
          APGD (norm 'Linf', 100 steps, 1 restart, loss 'ce' and 'dlr'), APGDT (100 steps,
          9 targets), Square (5000 queries, p_init 0.8, margin loss, 1 restart) and
          AutoAttack (version 'standard', seed 0: torchattacks' APGD-CE, APGD-T, FAB-T and
          Square at its own defaults, which in torchattacks 3.5.1 are 10 steps for APGD-CE,
          APGD-T and FAB-T, not AutoAttack's 100, and 5000 Square queries).

Robust accuracy is the fraction of test images classified correctly both clean and at the
attacked point. Every attacked point is checked against the ball and the bounds. The script
prints, per ε, both libraries' robust accuracies and the checks (PASS / FAIL, not asserted):
cvxjax's PGD, APGD and Square attacks reach a robust accuracy no higher than torchattacks'
counterparts (+ `--tol`, 1 point), and cvxjax's worst-of-all is within `--tol` of torchattacks'
AutoAttack.

Timings: cvxjax's attacks are timed through the public functions (argument validation
included), with `jax.block_until_ready`: the first call (XLA compilation + one run) is reported
separately, then the median of `--repeats` runs. torchattacks' attacks: the median of
`--repeats` runs (one run for an attack whose first run takes longer than `--slow_s`), with
`torch.set_num_threads(--torch_threads)` (2). JAX runs in float32. With 2 threads, torch's tiny
per-step operations slow down many times over when another process holds a core: keep the
machine idle (the JSON file records the load averages).

Run from the repository root (torchattacks: `pip install --no-deps torchattacks` beside
torch==2.14.1 and torchvision==0.29.1):

    python benchmarks/attacks_vs_torchattacks.py           # 4 radii, 3 runs: 18 min at load 6
    python benchmarks/attacks_vs_torchattacks.py --quick   # ε = 0.1, 1 run: 3 min at load 3

See benchmarks/README.md for the figures and the JSON file.
"""

import os

# XLA's thread pool and OpenBLAS's threads contend on small CPUs (see cvxjax/solvers/loop.py);
# this must happen before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable, Dict, List, Tuple  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402
import torchattacks  # noqa: E402
from provenance import git_state  # noqa: E402  (beside this script)
from sklearn import datasets  # noqa: E402

from cvxjax import attacks  # noqa: E402

DEFAULT_OUT = os.path.join("benchmarks", "results", "attacks_vs_torchattacks.json")
DEFAULT_EPS = (0.05, 0.075, 0.1, 0.15)
N_TEST = 500
HIDDEN = 64
CLASSES = 10
LOGIT_TOL = 1e-5  # max |JAX logits − torch logits| on the test set, relative to max |logit|
BALL_TOL = 1e-6  # how far (absolute) a torchattacks point may stray outside the ball in float32
PGD_STEPS, APGD_STEPS = 20, 100

# Column names: cvxjax's (names of `standard_attacks`) and torchattacks' attacks.
CVXJAX_ATTACKS = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "square")
DIAGNOSTIC = "pgd-margin"  # cvxjax's PGD on the margin: not in the suite nor its worst-of-all
TORCH_ATTACKS = ("pgd", "apgd-ce", "apgd-dlr", "apgd-t", "square", "autoattack")
# The counterpart pairs the checks and the timing ratios compare.
PAIRS = (("pgd", "pgd"), ("apgd-ce", "apgd-ce"), ("apgd-dlr", "apgd-dlr"), ("apgd-t", "apgd-t"),
         ("square", "square"))
SQUARE_QUERIES = 5000
LABELS = {"fgsm": "FGSM", "pgd": "PGD", "apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR",
          "apgd-t": "APGD-T", "square": "Square", "autoattack": "AutoAttack",
          "worst_of_all": "worst", "pgd-margin": "PGD-margin"}


def load_digits(seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """scikit-learn digits as [0, 1] images, split by a fixed permutation.

  Args:
    seed: seed of the permutation.

  Returns:
    (X_train, y_train, X_test, y_test): (n, 1, 8, 8) float32 images (pixels / 16) and (n,)
    int32 labels 0..9; the last `N_TEST` rows of the permutation are the test set.
  """
  data = datasets.load_digits()
  X = (data.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
  y = data.target.astype(np.int32)
  order = np.random.default_rng(seed).permutation(len(y))
  train, test = order[:-N_TEST], order[-N_TEST:]
  return X[train], y[train], X[test], y[test]


def init_params(key: jax.Array) -> Dict[str, jnp.ndarray]:
  """PyTorch's default Linear initialisation: uniform in ±1/√fan_in, float32."""
  k1, k2, k3, k4 = jax.random.split(key, 4)
  bound1, bound2 = 1.0 / np.sqrt(64), 1.0 / np.sqrt(HIDDEN)
  uniform = lambda k, shape, b: jax.random.uniform(k, shape, jnp.float32, -b, b)
  return dict(w1=uniform(k1, (64, HIDDEN), bound1), b1=uniform(k2, (HIDDEN,), bound1),
              w2=uniform(k3, (HIDDEN, CLASSES), bound2), b2=uniform(k4, (CLASSES,), bound2))


def apply(params: Dict[str, jnp.ndarray], x: jnp.ndarray) -> jnp.ndarray:
  """The network: (n, 1, 8, 8) images -> (n, 10) logits (flatten, Linear, ReLU, Linear).

  A module-level function, so that cvxjax's jitted attacks compile it once.
  """
  h = jax.nn.relu(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"])
  return h @ params["w2"] + params["b2"]


def train(X: np.ndarray, y: np.ndarray, steps: int, lr: float, seed: int):
  """Full-batch Adam on the mean cross-entropy.

  Returns:
    (params, final training loss).
  """
  optimizer = optax.adam(lr)
  params = init_params(jax.random.key(seed))
  X, y = jnp.asarray(X), jnp.asarray(y)

  def loss(p):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(apply(p, X), y))

  @jax.jit
  def step(p, state):
    value, grad = jax.value_and_grad(loss)(p)
    updates, state = optimizer.update(grad, state, p)
    return optax.apply_updates(p, updates), state, value

  state = optimizer.init(params)
  for _ in range(steps):
    params, state, value = step(params, state)
  return params, float(value)


def to_torch(params: Dict[str, jnp.ndarray]) -> torch.nn.Module:
  """The same network in PyTorch, float32, eval mode (Linear weights are (out, in): transposed)."""
  model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, HIDDEN), torch.nn.ReLU(),
                              torch.nn.Linear(HIDDEN, CLASSES))
  as_tensor = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))
  with torch.no_grad():
    model[1].weight.copy_(as_tensor(params["w1"]).T)
    model[1].bias.copy_(as_tensor(params["b1"]))
    model[3].weight.copy_(as_tensor(params["w2"]).T)
    model[3].bias.copy_(as_tensor(params["b2"]))
  for p in model.parameters():
    p.requires_grad_(False)
  return model.float().eval()


def ball_excess(X_adv: np.ndarray, X: np.ndarray, eps: float) -> Dict[str, float]:
  """How far points stray outside the ℓ∞ ball of radius ε and outside [0, 1] (0: inside).

  Measured as computed in float32, the attacks' precision: |x_adv − x| against float32(ε).
  """
  X_adv, X = np.asarray(X_adv, np.float32), np.asarray(X, np.float32)
  return dict(ball=float(max(np.max(np.abs(X_adv - X)) - np.float32(eps), 0.0)),
              bounds=float(max(-np.min(X_adv), np.max(X_adv) - 1.0, 0.0)))


def torch_predict(model: torch.nn.Module, X) -> np.ndarray:
  with torch.no_grad():
    return model(torch.as_tensor(X)).argmax(dim=1).numpy()


def time_runs(run: Callable[[], Any], repeats: int, slow_s: float = float("inf")):
  """Runs `run` up to `repeats` times (once if the first takes longer than `slow_s`).

  Returns:
    (the last result, median seconds, every run's seconds).
  """
  walls = []
  for _ in range(repeats):
    start = time.perf_counter()
    result = run()
    walls.append(time.perf_counter() - start)
    if walls[0] > slow_s:
      break
  return result, statistics.median(walls), walls


def bench_cvxjax(params, X, y, eps_list: List[float], repeats: int) -> Dict[str, Any]:
  """Times each standard attack of cvxjax and runs `robust_accuracy` for the accuracies.

  The timed calls run the very attacks (same keys) that `robust_accuracy` runs, so their
  robust counts must equal the report's; the script checks this. The diagnostic PGD-margin (the
  suite's PGD with loss "margin" and the same key) is timed and scored here only.
  """
  key = jax.random.key(0)
  bounds = (0.0, 1.0)
  # The images are (n, 1, 8, 8): channels first, for the Square attack's windows.
  standard = attacks.standard_attacks("inf", key=key, classes=CLASSES,
                                      square_queries=SQUARE_QUERIES, channel_axis=1)
  assert tuple(standard) == CVXJAX_ATTACKS, tuple(standard)
  suite = dict(standard, **{DIAGNOSTIC: functools.partial(standard["pgd"], loss="margin")})
  X, y = jnp.asarray(X), jnp.asarray(y)
  correct = np.asarray(attacks.margin(apply(params, X), y) > 0)
  timing = {name: dict(first_call_s=None, median_s=[], all_s=[]) for name in suite}
  robust_timed = {name: [] for name in suite}
  excess = {name: [] for name in suite}
  for eps in eps_list:
    for name, attack in suite.items():
      run = lambda attack=attack, eps=eps: jax.block_until_ready(
          attack(apply, params, X, y, eps, bounds=bounds))
      if timing[name]["first_call_s"] is None:  # compiles: one jitted program for every ε
        start = time.perf_counter()
        run()
        timing[name]["first_call_s"] = time.perf_counter() - start
      X_adv, median, walls = time_runs(run, repeats)
      timing[name]["median_s"].append(median)
      timing[name]["all_s"].append(walls)
      ok = correct & np.asarray(attacks.margin(apply(params, X_adv), y) > 0)
      robust_timed[name].append(float(ok.mean()))
      excess[name].append(ball_excess(X_adv, X, eps))
      print(f"  cvxjax {LABELS[name]:>10} eps={eps:<5g} robust {ok.mean():6.1%}  "
            f"{median:7.3f} s (median of {len(walls)})", flush=True)
  start = time.perf_counter()
  report = attacks.robust_accuracy(apply, params, X, y, eps_list, standard, bounds=bounds)
  report_s = time.perf_counter() - start
  mismatch = {name: (robust_timed[name], report["attacks"][name]) for name in CVXJAX_ATTACKS
              if not np.allclose(robust_timed[name], report["attacks"][name])}
  return dict(report=report, robust_accuracy_call_s=report_s, timing=timing,
              robust_timed=robust_timed, timed_vs_report_mismatch=mismatch, excess=excess)


def make_torch_attack(name: str, model: torch.nn.Module, eps: float):
  """torchattacks' attack `name` at radius ε with the settings of the module docstring."""
  if name == "pgd":
    return torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / PGD_STEPS, steps=PGD_STEPS,
                            random_start=True)
  if name in ("apgd-ce", "apgd-dlr"):
    return torchattacks.APGD(model, norm="Linf", eps=eps, steps=APGD_STEPS, n_restarts=1,
                             loss=name.split("-")[1], seed=0)
  if name == "apgd-t":
    return torchattacks.APGDT(model, norm="Linf", eps=eps, steps=APGD_STEPS, n_restarts=1,
                              n_classes=CLASSES, seed=0)
  if name == "square":
    return torchattacks.Square(model, norm="Linf", eps=eps, n_queries=SQUARE_QUERIES,
                               n_restarts=1, p_init=0.8, loss="margin", resc_schedule=True,
                               seed=0)
  if name == "autoattack":
    return torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard",
                                   n_classes=CLASSES, seed=0)
  raise ValueError(name)


def bench_torch(model, X, y, eps_list: List[float], repeats: int, slow_s: float,
                seed: int) -> Dict[str, Any]:
  """Robust accuracy and time of each torchattacks attack at each ε, and their worst of all."""
  Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
  correct = torch_predict(model, Xt) == y
  robust = {name: [] for name in TORCH_ATTACKS}
  timing = {name: dict(median_s=[], all_s=[]) for name in TORCH_ATTACKS}
  excess = {name: [] for name in TORCH_ATTACKS}
  worst = []
  for eps in eps_list:
    survives = correct.copy()
    for name in TORCH_ATTACKS:
      attack = make_torch_attack(name, model, eps)

      def run(attack=attack):
        torch.manual_seed(seed)  # PGD's random start draws from the global generator
        return attack(Xt, yt).detach().numpy()

      X_adv, median, walls = time_runs(run, repeats, slow_s)
      ok = correct & (torch_predict(model, X_adv) == y)
      survives &= ok
      robust[name].append(float(ok.mean()))
      timing[name]["median_s"].append(median)
      timing[name]["all_s"].append(walls)
      excess[name].append(ball_excess(X_adv, X, eps))
      print(f"  torchattacks {LABELS[name]:>10} eps={eps:<5g} robust {ok.mean():6.1%}  "
            f"{median:7.3f} s (median of {len(walls)})", flush=True)
    worst.append(float(survives.mean()))
  return dict(clean=float(correct.mean()), attacks=robust, worst_of_all=worst, timing=timing,
              excess=excess)


def run_checks(cvx: Dict[str, Any], ta: Dict[str, Any], eps_list: List[float],
               tol: float) -> List[Dict[str, Any]]:
  """The cross-checks, per ε: PGD / APGD no weaker than torchattacks', worst-of-all ≈ AA."""
  report, checks = cvx["report"], []
  for j, eps in enumerate(eps_list):
    for mine, theirs in PAIRS:
      a, b = report["attacks"][mine][j], ta["attacks"][theirs][j]
      checks.append(dict(eps=eps, check=f"cvxjax {LABELS[mine]} <= torchattacks "
                         f"{LABELS[theirs]} + {tol:.0%}", cvxjax=a, torchattacks=b,
                         passed=bool(a <= b + tol + 1e-12)))
    a, b = cvx["robust_timed"][DIAGNOSTIC][j], ta["attacks"]["pgd"][j]
    checks.append(dict(eps=eps, check=f"(diagnostic) cvxjax PGD-margin <= torchattacks PGD + "
                       f"{tol:.0%}", cvxjax=a, torchattacks=b, passed=bool(a <= b + tol + 1e-12)))
    a, b = report["worst_of_all"][j], ta["attacks"]["autoattack"][j]
    checks.append(dict(eps=eps, check=f"|cvxjax worst-of-all - torchattacks AutoAttack| <= "
                       f"{tol:.0%}", cvxjax=a, torchattacks=b,
                       passed=bool(abs(a - b) <= tol + 1e-12)))
  return checks


def print_tables(cvx, ta, eps_list, checks) -> None:
  report = cvx["report"]
  print(f"\nRobust accuracy (%), {N_TEST} test images; clean: cvxjax {report['clean']:.1%}, "
        f"torch {ta['clean']:.1%}")
  cvx_cols = list(CVXJAX_ATTACKS) + ["worst_of_all", DIAGNOSTIC]
  ta_cols = list(TORCH_ATTACKS) + ["worst_of_all"]
  print(f"{'':>6} | {'cvxjax':^{9 * len(cvx_cols) - 1}} | {'torchattacks':^{9 * len(ta_cols) - 1}}")
  print(f"{'eps':>6} | " + " ".join(f"{LABELS[c]:>8}" for c in cvx_cols) + " | "
        + " ".join(f"{LABELS[c] if c != 'autoattack' else 'AA':>8}" for c in ta_cols))
  for j, eps in enumerate(eps_list):
    mine = [report["attacks"][c][j] for c in CVXJAX_ATTACKS]
    mine += [report["worst_of_all"][j], cvx["robust_timed"][DIAGNOSTIC][j]]
    theirs = [ta["attacks"].get(c, ta["worst_of_all"])[j] for c in ta_cols]
    print(f"{eps:>6g} | " + " ".join(f"{100 * v:8.1f}" for v in mine) + " | "
          + " ".join(f"{100 * v:8.1f}" for v in theirs))
  print("('worst': an image counts only if it survives every attack of that library; "
        "torchattacks' worst includes AutoAttack. cvxjax's PGD runs on the cross-entropy like "
        "torchattacks'; PGD-margin is a diagnostic, not in its worst)")

  print("\nChecks:")
  for c in checks:
    print(f"  {'PASS' if c['passed'] else 'FAIL'}  eps={c['eps']:<5g} {c['check']}: "
          f"cvxjax {100 * c['cvxjax']:.1f} vs torchattacks {100 * c['torchattacks']:.1f}")

  print("\nTimes (s): cvxjax median after compilation [first call = compile + run], "
        "torchattacks median; ratio = torch / cvxjax")
  print(f"{'eps':>6} {'attack':>10} {'cvxjax':>9} {'[first]':>9} {'torch':>9} {'ratio':>8}")
  for j, eps in enumerate(eps_list):
    for mine, theirs in PAIRS + ((DIAGNOSTIC, "pgd"),):
      t_mine = cvx["timing"][mine]["median_s"][j]
      t_theirs = ta["timing"][theirs]["median_s"][j]
      first = cvx["timing"][mine]["first_call_s"] if j == 0 else None
      print(f"{eps:>6g} {LABELS[mine]:>10} {t_mine:9.3f} "
            f"{'' if first is None else f'[{first:.1f}]':>9} {t_theirs:9.3f} "
            f"{t_theirs / t_mine:8.1f}")
    suite_s = sum(cvx["timing"][n]["median_s"][j] for n in CVXJAX_ATTACKS)
    aa = ta["timing"]["autoattack"]
    print(f"{eps:>6g} {'suite/AA':>10} {suite_s:9.3f} {'':>9} {aa['median_s'][j]:9.3f} "
          f"{aa['median_s'][j] / suite_s:8.1f}"
          + ("  (AA: 1 run)" if len(aa["all_s"][j]) == 1 else ""))
  print("('suite/AA': cvxjax's six attacks in all vs torchattacks' AutoAttack: not the same "
        "work; cvxjax FGSM median: "
        + ", ".join(f"{t:.4f}" for t in cvx["timing"]["fgsm"]["median_s"]) + " s)")
  print(f"robust_accuracy (every attack, every eps, compiled): "
        f"{cvx['robust_accuracy_call_s']:.2f} s")


def versions() -> Dict[str, str]:
  names = ("jax", "jaxlib", "optax", "numpy", "scikit-learn", "torch", "torchvision",
           "torchattacks")
  found = {}
  for name in names:
    try:
      found[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      found[name] = None
  return found


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument("--eps", type=float, nargs="+", default=list(DEFAULT_EPS),
                      help="ℓ∞ radii")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs per attack (median)")
  parser.add_argument("--slow_s", "--slow-s", type=float, default=60.0,
                      help="a torchattacks attack whose first run takes longer runs only once")
  parser.add_argument("--torch_threads", "--torch-threads", type=int, default=2,
                      help="torch.set_num_threads")
  parser.add_argument("--train_steps", "--train-steps", type=int, default=300,
                      help="full-batch Adam steps")
  parser.add_argument("--lr", type=float, default=1e-2, help="Adam's learning rate")
  parser.add_argument("--seed", type=int, default=0,
                      help="seed of the split, the initialisation and torch's generator")
  parser.add_argument("--tol", type=float, default=0.01,
                      help="slack of the checks, as a fraction (0.01: 1 point)")
  parser.add_argument("--quick", action="store_true", help="ε = 0.1 only, one timed run")
  parser.add_argument("--out", default=DEFAULT_OUT, help="JSON results file")
  args = parser.parse_args(argv)
  if args.quick:
    args.eps, args.repeats = [0.1], 1
  torch.set_num_threads(args.torch_threads)

  X_train, y_train, X_test, y_test = load_digits(args.seed)
  start = time.perf_counter()
  params, train_loss = train(X_train, y_train, args.train_steps, args.lr, args.seed)
  train_s = time.perf_counter() - start
  model = to_torch(params)
  logits_jax = np.asarray(apply(params, jnp.asarray(X_test)))
  with torch.no_grad():
    logits_torch = model(torch.from_numpy(X_test)).numpy()
  logit_diff = float(np.max(np.abs(logits_jax - logits_torch)))
  logit_scale = float(np.max(np.abs(logits_jax)))
  if logit_diff > LOGIT_TOL * max(logit_scale, 1.0):
    raise SystemExit(f"JAX and torch logits differ by {logit_diff:.2e} (max |logit| "
                     f"{logit_scale:.1f}): the weights were not copied right")
  test_acc = float(np.mean(logits_jax.argmax(axis=1) == y_test))
  train_acc = float(np.mean(np.asarray(apply(params, jnp.asarray(X_train))).argmax(axis=1)
                            == y_train))
  print(f"digits: {len(y_train)} train / {len(y_test)} test images (1, 8, 8) in [0, 1]; MLP "
        f"64-{HIDDEN}-{CLASSES} trained {args.train_steps} Adam steps in {train_s:.1f} s: loss "
        f"{train_loss:.4f}, train {train_acc:.1%}, test {test_acc:.1%}")
  print(f"JAX vs torch logits on the test set: max |diff| {logit_diff:.2e} "
        f"(max |logit| {logit_scale:.1f})")
  print(f"JAX {jax.__version__} ({jax.default_backend()}, float32), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), torchattacks {torchattacks.__version__}; "
        f"eps = {args.eps}", flush=True)

  load_before = os.getloadavg()
  print("\ncvxjax:", flush=True)
  cvx = bench_cvxjax(params, X_test, y_test, args.eps, args.repeats)
  print("\ntorchattacks:", flush=True)
  ta = bench_torch(model, X_test, y_test, args.eps, args.repeats, args.slow_s, args.seed)
  load_after = os.getloadavg()

  checks = run_checks(cvx, ta, args.eps, args.tol)
  print_tables(cvx, ta, args.eps, checks)
  problems = []
  if cvx["timed_vs_report_mismatch"]:
    problems.append(f"cvxjax's timed attacks disagree with robust_accuracy: "
                    f"{cvx['timed_vs_report_mismatch']}")
  for lib, res in (("cvxjax", cvx), ("torchattacks", ta)):
    for name, per_eps in res["excess"].items():
      worst = max(max(e["ball"], e["bounds"]) for e in per_eps)
      exact = lib == "cvxjax"  # cvxjax promises the ball exactly; torch within float32 rounding
      if (worst > 0) if exact else (worst > BALL_TOL):
        problems.append(f"{lib} {LABELS[name]} leaves the ball or [0, 1] by {worst:.2e}")
  ta_excess = max(e["ball"] for per_eps in ta["excess"].values() for e in per_eps)
  print(f"ball and bounds: cvxjax exact; torchattacks' largest excess over eps {ta_excess:.1e} "
        f"(tolerance {BALL_TOL:g})")
  if max(load_before[0], load_after[0]) > (os.cpu_count() or 1):
    problems.append(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after the "
                    f"attacks, above the {os.cpu_count()} cores: other processes slowed the "
                    "timings")
  for problem in problems:
    print("WARNING:", problem)
  print(f"checks: {sum(c['passed'] for c in checks)} of {len(checks)} pass")

  meta = dict(argv=sys.argv[1:], args=vars(args), versions=versions(),
              backend=jax.default_backend(), torch_threads=torch.get_num_threads(),
              platform=platform.platform(), cpu_count=os.cpu_count(),
              openblas_threads=os.environ.get("OPENBLAS_NUM_THREADS"), git=git_state(),
              loadavg_before=load_before, loadavg_after=load_after,
              timing_note="cvxjax: public attack functions, jax.block_until_ready, median after "
                          "one compiling call (first_call_s, at the first eps); torchattacks: "
                          "median of the runs in all_s (one run when the first exceeds slow_s)")
  model_info = dict(architecture=f"flatten-64-{HIDDEN}-relu-{CLASSES}", train_loss=train_loss,
                    train_accuracy=train_acc, test_accuracy=test_acc, train_s=train_s,
                    logit_max_abs_diff=logit_diff, logit_max_abs=logit_scale,
                    n_train=len(y_train), n_test=len(y_test))
  per_eps = range(len(args.eps))
  ratios = {mine: [ta["timing"][theirs]["median_s"][j] / cvx["timing"][mine]["median_s"][j]
                   for j in per_eps] for mine, theirs in PAIRS + ((DIAGNOSTIC, "pgd"),)}
  suite_s = [sum(cvx["timing"][n]["median_s"][j] for n in CVXJAX_ATTACKS) for j in per_eps]
  ratios["autoattack_vs_cvxjax_suite"] = [ta["timing"]["autoattack"]["median_s"][j] / suite_s[j]
                                          for j in per_eps]
  results = dict(meta=meta, model=model_info, eps=args.eps, cvxjax=cvx, torchattacks=ta,
                 checks=checks, ratios_torch_over_cvxjax=ratios, problems=problems)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=1)
  print(f"\nwrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
