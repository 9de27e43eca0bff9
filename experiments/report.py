"""Train, evaluate and report helpers shared by the experiments.

An experiment fits heads (`fit_and_select`), turns each into a flat dict of numbers with
`evaluate_head` (or `evaluate_attacks` for any model), stacks the dicts with `collect`, and
writes them with `write_results`, `plot_models` and `format_table`. Everything here runs on the
host; the attacks and solvers it calls are jitted.
"""

import json
import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from cvxjax import attacks, certify, heads
from cvxjax.plotting import Panel, plot_accuracy
from experiments import common

# The attacks of `attacks.standard_attacks` (and the worst of them) and the balls they run in.
_ATTACK_TITLES = {"fgsm": "FGSM", "pgd": "PGD", "apgd_ce": "APGD-CE", "apgd_dlr": "APGD-DLR",
                  "apgd_t": "APGD-T", "square": "Square", "worst": "worst of all attacks"}
_BALLS = {"linf": ("ℓ∞", "linf_eps"), "l2": ("ℓ₂", "l2_radii")}

# The result keys that hold one accuracy per attack radius: title, radius key, radius label.
CURVES = {
    **{f"{attack}_{ball}_accuracy": (f"{title} {symbol}", radius_key, f"{symbol} attack radius ε")
       for ball, (symbol, radius_key) in _BALLS.items()
       for attack, title in _ATTACK_TITLES.items()},
    "certified_l2_accuracy": ("certified ℓ₂ (exact or bounded radius)", "l2_radii",
                              "ℓ₂ radius ε"),
}


def evaluate_attacks(apply: attacks.Apply, params, X, y, *, linf_eps: Sequence[float],
                     l2_radii: Sequence[float], pgd_steps: int, apgd_steps: int, restarts: int,
                     key: jax.Array, bounds: attacks.Bounds = None,
                     batch_size: Optional[int] = None, targets: int = 9,
                     names: Optional[Sequence[str]] = None, square_queries: int = 5000,
                     per_attack: bool = True) -> Dict[str, Any]:
  """Clean accuracy, and accuracy under the worst of the standard attacks (and each), per radius.

  Runs `attacks.standard_attacks` (FGSM, PGD, APGD-CE, APGD-DLR / APGD-T for logits of
  3 / 4+ classes, and Square) in the ℓ∞ ball at each of `linf_eps` and in the ℓ₂ ball at each
  of `l2_radii` (a ball with no radii is skipped): with `per_attack` every attack on every
  example, else each attack only on the examples every earlier one failed on (AutoAttack's
  order, `attacks.robust_accuracy(..., mode="worst")`), which gives the same worst of all.

  Args:
    apply: (params, x) -> scores, as for `cvxjax.attacks`.
    params: the model's parameters.
    X: (n, ...) inputs; y: (n,) labels.
    linf_eps: ℓ∞ radii.
    l2_radii: ℓ₂ radii.
    pgd_steps: PGD's steps (step 2.5·ε/steps).
    apgd_steps: each APGD run's iterations.
    restarts: random restarts of PGD and APGD.
    key: PRNG key of the random starts.
    bounds: None or (lower, upper) input bounds.
    batch_size: examples attacked at a time (None: all).
    targets: APGD-T's target classes.
    names: run only these attacks of the standard suite (None: all).
    square_queries: the Square attack's queries.
    per_attack: report each attack's accuracy (every attack on every example); False: the
      worst of all and the fraction of examples each attack broke first, at a fraction of the
      cost.

  Returns:
    {"clean_accuracy": float, "worst_<ball>_accuracy": [per radius]} for ball in linf, l2,
    and per attack (fgsm, pgd, apgd_ce, (apgd_dlr, apgd_t,) square) "<attack>_<ball>_accuracy"
    with `per_attack` (the keys of `CURVES`), else "<attack>_<ball>_broken_first".
  """
  X = jnp.asarray(X)
  shape = jax.eval_shape(apply, params, X).shape
  if not (len(linf_eps) or len(l2_radii)):
    raise ValueError("linf_eps and l2_radii must not both be empty")
  results = {}
  for index, (ball, norm, radii) in enumerate((("linf", "inf", linf_eps), ("l2", 2, l2_radii))):
    if not len(radii):
      continue
    suite = attacks.standard_attacks(norm, key=jax.random.fold_in(key, index),
                                     classes=2 if len(shape) == 1 else shape[1],
                                     pgd_steps=pgd_steps, apgd_steps=apgd_steps,
                                     restarts=restarts, targets=targets,
                                     square_queries=square_queries, names=names)
    found = attacks.robust_accuracy(apply, params, X, y, radii, suite, bounds=bounds,
                                    batch_size=batch_size,
                                    mode="all" if per_attack else "worst")
    results["clean_accuracy"] = found["clean"]
    part, suffix = ("attacks", "accuracy") if per_attack else ("broken_first", "broken_first")
    for name, value in found[part].items():
      results[f"{name.replace('-', '_')}_{ball}_{suffix}"] = value
    results[f"worst_{ball}_accuracy"] = found["worst_of_all"]
  return results


def head_scores(head: heads.Head, X: jnp.ndarray) -> jnp.ndarray:
  """`head.scores(X)`: the `apply` of a head for `cvxjax.attacks` (one function for every head,
  so the jitted attacks compile once per head structure)."""
  return head.scores(X)


def evaluate_head(head: heads.Head, X, y, **attack_settings) -> Dict[str, Any]:
  """Everything reported about a trained head, as a flat dict of numbers.

  Args:
    head: any `heads.Head` (polynomial, ReLU, gated, nonconvex or linear).
    X: (n, d) test inputs; y: (n,) test labels, as the head predicts them.
    **attack_settings: linf_eps, l2_radii, pgd_steps, apgd_steps, restarts, key: as for
      `evaluate_attacks`.

  Returns:
    `evaluate_attacks`'s dict (attacks on `head.scores`) plus "certified_l2_accuracy" ([per
    radius of l2_radii], from `head.certified_radius`) and the entries of `head.summary()`:
    "objective", "gap", "violation", "steps", "width" (None where the head has none).
  """
  results = evaluate_attacks(head_scores, head, X, y, **attack_settings)
  radii = head.certified_radius(X, y)
  results["certified_l2_accuracy"] = certify.certified_accuracy(
      radii, attack_settings["l2_radii"]).tolist()
  results.update(head.summary())
  return results


def network_label(method: str, norm, eps: Optional[float] = None) -> str:
  """The results' name of a nonconvex head trained by `method` ("standard", "pgd" or "ssds") in
  the `norm` ball ("inf" or 2) of radius `eps` (None: a radius chosen per run, not named)."""
  if method == "standard":
    return "network head"
  ball = "ℓ∞" if norm == "inf" else "ℓ₂"
  name = {"pgd": "PGD-AT", "ssds": "SSDS"}[method]
  return f"{name} head {ball}" + ("" if eps is None else f" ε={eps:g}")


def accuracy(head: heads.Head, X, y) -> float:
  """The fraction of rows of X, (n, d), that `head` labels as y, (n,)."""
  return float(np.mean(np.asarray(head.predict(jnp.asarray(X))) == np.asarray(y)))


def fit_and_select(train: Tuple[Any, Any], val: Tuple[Any, Any], *,
                   fit: Callable[[Any, Any, float], Any], betas: Sequence[float],
                   robustness: Callable[[Any], float]) -> Tuple[Any, float, Dict[str, float]]:
  """Fits a head for each β and keeps the most robust on the validation split (`choose`).

  Never looks at a test split. With one β nothing is chosen and nothing attacked
  ("val_robust_accuracy" None).

  Args:
    train: (X, y) training split.
    val: (X, y) validation split.
    fit: (X, y, β) -> a head with `predict`.
    betas: the candidate regularisation weights.
    robustness: head -> its attacked accuracy on the validation split.

  Returns:
    (head, β, {"val_accuracy", "val_robust_accuracy"}) of the chosen fit.
  """
  fits, candidates = [], []
  for beta in betas:
    head = fit(*train, float(beta))
    fits.append((head, float(beta)))
    candidates.append(dict(val_accuracy=accuracy(head, *val),
                           val_robust_accuracy=robustness(head) if len(betas) > 1 else None))
  chosen = choose(candidates) if len(betas) > 1 else 0
  return (*fits[chosen], candidates[chosen])


def choose(candidates: Sequence[Mapping[str, float]]) -> int:
  """The index of the candidate most robust on validation: the highest "val_robust_accuracy",
  ties to the higher "val_accuracy" (clean), then to the first listed.

  Args:
    candidates: one dict per fitted candidate with both keys (validation numbers only).

  Returns:
    The chosen candidate's index.
  """
  if not candidates:
    raise ValueError("candidates must hold at least one fitted candidate")
  ranks = [(c["val_robust_accuracy"], c["val_accuracy"], -i) for i, c in enumerate(candidates)]
  return -max(ranks)[2]


def collect(rows: Sequence[Mapping[str, Any]]) -> Dict[str, list]:
  """Stacks per-run dicts with the same keys into a dict of lists (one entry per run)."""
  return {k: [row[k] for row in rows] for k in rows[0]}


# The per-model accuracies that `over_seeds` averages: clean, and the curves of `CURVES`.
_SEED_AVERAGED = ("clean_accuracy", *CURVES)


def over_seeds(runs: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> Dict[str, Any]:
  """One run's results per seed, summarised: the mean and the spread of every accuracy.

  Args:
    runs: the `collect`ed results of each seed's run, with the same models in the same order.
    seeds: the seed of each run.

  Returns:
    The first run's radii and model labels; for each accuracy key k of the runs (clean and the
    curves), k the mean over seeds and k_std the standard deviation (ddof = 1; (models,) or
    (models, radii), None where a model has no value), k_per_seed the runs' values; every
    chosen setting of `CHOSEN`-like keys the runs carry, per seed under k_per_seed; "seeds";
    and "runs", each seed's full results.

  Raises:
    ValueError: if the runs' models differ or fewer than two runs are given.
  """
  if len(runs) < 2 or len(runs) != len(seeds):
    raise ValueError(f"over_seeds needs one run per seed and at least two, got {len(runs)} runs "
                     f"for seeds {list(seeds)}")
  models = runs[0]["model"]
  for seed, run in zip(seeds, runs, strict=True):
    if run["model"] != models:
      raise ValueError(f"the run of seed {seed} has models {run['model']}, expected {models}")
  results: Dict[str, Any] = {k: runs[0][k] for k in runs[0] if k.endswith(("_eps", "_eps_k",
                                                                            "_radii", "_radii_k"))}
  results.update(model=models, seeds=list(seeds), runs=list(runs))
  for k in runs[0]:
    if k in _SEED_AVERAGED:
      per_model = [[run[k][i] for run in runs] for i in range(len(models))]
      mean, std = [], []
      for values in per_model:
        missing = any(v is None for v in values)
        mean.append(None if missing else np.mean(values, axis=0).tolist())
        std.append(None if missing else np.std(values, axis=0, ddof=1).tolist())
      results.update({k: mean, f"{k}_std": std, f"{k}_per_seed": per_model})
    elif isinstance(runs[0][k], list) and len(runs[0][k]) == len(models) and k != "model":
      results[f"{k}_per_seed"] = [[run[k][i] for run in runs] for i in range(len(models))]
  return results


def write_results(workdir: str, results: Mapping[str, Any],
                  name: str = "results.json") -> str:
  """Writes the results (numbers, labels, None and nested lists of them) as JSON into workdir.

  Args:
    workdir: output directory (created if missing).
    results: dict of numbers, arrays or nested lists of them.
    name: file name.

  Returns:
    The path written.

  Raises:
    ValueError: if a value is neither a number, a string nor None.
  """
  os.makedirs(workdir, exist_ok=True)
  return common.atomic_write(os.path.join(workdir, name),
                             json.dumps(common.to_builtin(results), indent=1, sort_keys=True))


def radius_axis(results: Mapping[str, Any], radius_key: str) -> Tuple[list, Optional[list]]:
  """The x values and their labels of a radius key: k with labels "k/255" where the results
  hold the radii as k/255 (f"{radius_key}_k", pixel-space radii), else the radii themselves."""
  if f"{radius_key}_k" in results:
    ks = list(results[f"{radius_key}_k"])
    return ks, [f"{k:g}/255" for k in ks]
  return list(results[radius_key]), None


def plot_models(workdir: str, results: Mapping[str, Any]) -> str:
  """`accuracy_vs_eps.png`: one panel per attack, accuracy against the attack radius, one line
  per model (models without a value, such as certificates of gated heads, are left out).

  Args:
    workdir: output directory.
    results: `collect`ed results with "model" labels, "linf_eps", "l2_radii" (and optionally
      "linf_eps_k", "l2_radii_k": the radii as k/255, drawn so) and the keys of `CURVES` that
      are present.

  Returns:
    The path written.
  """
  panels = []
  for k in (k for k in CURVES if k in results):
    title, radius_key, radius_label = CURVES[k]
    curves = {m: acc for m, acc in zip(results["model"], results[k], strict=True)
              if acc is not None}
    x, ticks = radius_axis(results, radius_key)
    panels.append(Panel(title, radius_label, x, curves, ticks))
  os.makedirs(workdir, exist_ok=True)
  return plot_accuracy(os.path.join(workdir, "accuracy_vs_eps.png"), panels,
                       suptitle="Test accuracy against the attack radius, one line per model")


def plot_certified(workdir: str, results: Mapping[str, Any]) -> Optional[str]:
  """`certified_vs_attacked.png`: a panel per model with a certificate, its certified ℓ₂
  accuracy beside its accuracy under the worst of the ℓ₂ attacks (which bounds it above).

  Args:
    workdir: output directory.
    results: `collect`ed results with "model", "l2_radii", "certified_l2_accuracy" and
      "worst_l2_accuracy" (None where a model has no certificate).

  Returns:
    The path written, or None where no model has both numbers.
  """
  if not {"certified_l2_accuracy", "worst_l2_accuracy"} <= set(results):
    return None
  x, ticks = radius_axis(results, "l2_radii")
  panels = [Panel(model, "ℓ₂ radius ε", x,
                  {"attacked (worst of all)": attacked, "certified": certified}, ticks)
            for model, certified, attacked in zip(results["model"],
                                                  results["certified_l2_accuracy"],
                                                  results["worst_l2_accuracy"], strict=True)
            if certified is not None and attacked is not None]
  if not panels:
    return None
  return plot_accuracy(os.path.join(workdir, "certified_vs_attacked.png"), panels,
                       suptitle="Certified and attacked ℓ₂ test accuracy, one panel per model")


def write_run(workdir: str, results: Mapping[str, Any], config) -> None:
  """An experiment's outputs: results.json, config.json, accuracy_vs_eps.png and, where models
  have certificates, certified_vs_attacked.png; prints the table.

  Args:
    workdir: the run's directory.
    results: `collect`ed results with the run's radii (see `plot_models`).
    config: the run's ml_collections config.
  """
  write_results(workdir, results)
  common.atomic_write(os.path.join(workdir, "config.json"), config.to_json(indent=1))
  plot_models(workdir, results)
  plot_certified(workdir, results)
  print(format_table(results), flush=True)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
  line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))
  return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def format_table(results: Mapping[str, Any]) -> str:
  """The results as plain-text tables, one row per model: a summary, then one per attack.

  Args:
    results: `collect`ed results (see `plot_models`), optionally with "train_radius", "beta",
      "objective", "gap", "violation", "width", "val_accuracy", "val_robust_accuracy",
      "seconds"; None shows as "—". Radii with a "_k" key print as k/255.

  Returns:
    The tables, separated by blank lines.
  """
  models = results["model"]
  cell = lambda fmt, v: "—" if v is None else fmt.format(v)
  if "seeds" in results:
    return _seeds_table(results)
  summary = [("train_radius", "train r", "{:g}"), ("beta", "β", "{:.0e}"),
             ("objective", "objective", "{:.6g}"), ("gap", "gap", "{:.1e}"),
             ("violation", "violation", "{:.1e}"), ("width", "width", "{:d}"),
             ("val_accuracy", "val acc", "{:.3f}"), ("val_robust_accuracy", "val robust",
                                                     "{:.3f}"),
             ("clean_accuracy", "test acc", "{:.3f}"), ("seconds", "fit s", "{:.1f}")]
  summary = [s for s in summary if s[0] in results]
  blocks = [_table(["model"] + [s[1] for s in summary],
                   [[m] + [cell(fmt, results[k][i]) for k, _, fmt in summary]
                    for i, m in enumerate(models)])]
  tables = {k: (f"{title} test accuracy", radius_key) for k, (title, radius_key, _) in
            CURVES.items()}
  tables.update({f"{attack}_{ball}_broken_first": (
      f"{title} {symbol}: fraction of the test split it broke first", radius_key)
      for ball, (symbol, radius_key) in _BALLS.items()
      for attack, title in _ATTACK_TITLES.items()})
  for k in (k for k in tables if k in results):
    title, radius_key = tables[k]
    x, ticks = radius_axis(results, radius_key)
    header = ["model"] + [f"ε={t}" for t in (ticks or [f"{rho:g}" for rho in x])]
    rows = [[m] + ([cell("{:.3f}", a) for a in results[k][i]] if results[k][i] is not None
                   else ["—"] * len(x)) for i, m in enumerate(models)]
    blocks.append(f"{title}\n" + _table(header, rows))
  return "\n\n".join(blocks)


def _seeds_table(results: Mapping[str, Any]) -> str:
  """`format_table` of `over_seeds` results: mean ± std over the seeds, the chosen settings
  of each seed."""
  models = results["model"]
  spread = lambda mean, std: "—" if mean is None else f"{mean:.3f} ± {std:.3f}"
  chosen = [(k, title) for k, title in (("train_radius_per_seed", "train r per seed"),
                                        ("beta_per_seed", "β per seed")) if k in results]
  show = lambda v: "—" if v is None else f"{v:g}"
  blocks = [f"{len(results['seeds'])} seeds {results['seeds']}: mean ± standard deviation",
            _table(["model", "clean acc"] + [t for _, t in chosen],
                   [[m, spread(results["clean_accuracy"][i], results["clean_accuracy_std"][i])]
                    + [", ".join(show(v) for v in results[k][i]) for k, _ in chosen]
                    for i, m in enumerate(models)])]
  for k in (k for k in CURVES if k in results):
    title, radius_key, _ = CURVES[k]
    x, ticks = radius_axis(results, radius_key)
    header = ["model"] + [f"ε={t}" for t in (ticks or [f"{rho:g}" for rho in x])]
    rows = [[m] + ([spread(a, sd) for a, sd in zip(results[k][i], results[f"{k}_std"][i],
                                                      strict=True)]
                   if results[k][i] is not None else ["—"] * len(x))
            for i, m in enumerate(models)]
    blocks.append(f"{title} test accuracy\n" + _table(header, rows))
  return "\n\n".join(blocks)
