"""Train, evaluate and report helpers shared by the experiments.

An experiment fits heads, turns each into a flat dict of numbers with `evaluate_head` (or
`evaluate_attacks` for any model), stacks the dicts with `collect`, and writes them with
`write_results`, `plot_models` and `format_table` (`cvxjax.plotting.plot_robust_accuracy` draws
`attacks.robust_accuracy` reports directly). Everything here runs on the host; the
attacks and solvers it calls are jitted.
"""

import json
import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from cvxjax import attacks, certify, poly, relu
from cvxjax.plotting import Panel, plot_accuracy
from cvxjax.train import head as network_head

# The attacks of `attacks.standard_attacks` (and the worst of them) and the balls they run in.
_ATTACK_TITLES = {"fgsm": "FGSM", "pgd": "PGD", "apgd_ce": "APGD-CE", "apgd_dlr": "APGD-DLR",
                  "apgd_t": "APGD-T", "worst": "worst of all attacks"}
_BALLS = {"linf": ("ℓ∞", "linf_eps"), "l2": ("ℓ₂", "l2_radii")}

# The result keys that hold one accuracy per attack radius: title, radius key, radius label.
CURVES = {
    **{f"{attack}_{ball}_accuracy": (f"{title} {symbol}", radius_key, f"{symbol} attack radius ε")
       for ball, (symbol, radius_key) in _BALLS.items()
       for attack, title in _ATTACK_TITLES.items()},
    "certified_l2_accuracy": ("certified ℓ₂ (exact or bounded radius)", "l2_radii",
                              "ℓ₂ radius ε"),
}


def network_width(alpha, rel_tol: float = 1e-6) -> int:
  """Neurons with |α| ≥ rel_tol · max|α|.

  Args:
    alpha: (M,) second-layer weights, or (M, C) (a neuron counts if any output uses it).
    rel_tol: relative threshold.

  Returns:
    The number of neurons kept.
  """
  alpha = np.abs(np.asarray(alpha))
  if alpha.size == 0:
    return 0
  size = alpha if alpha.ndim == 1 else alpha.max(axis=1)
  return int(np.sum(size >= rel_tol * size.max()))


def evaluate_attacks(apply: attacks.Apply, params, X, y, *, linf_eps: Sequence[float],
                     l2_radii: Sequence[float], pgd_steps: int, apgd_steps: int, restarts: int,
                     key: jax.Array, bounds: attacks.Bounds = None,
                     batch_size: Optional[int] = None, targets: int = 9,
                     names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  """Clean accuracy, and accuracy under every standard attack and the worst of them, per radius.

  Runs `attacks.standard_attacks` (FGSM, PGD, APGD-CE, and APGD-DLR / APGD-T for logits of
  3 / 4+ classes) in the ℓ∞ ball at each of `linf_eps` and in the ℓ₂ ball at each of `l2_radii`
  (a ball with no radii is skipped).

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

  Returns:
    {"clean_accuracy": float, "<attack>_<ball>_accuracy": [per radius]} for attack in fgsm,
    pgd, apgd_ce, (apgd_dlr, apgd_t,) worst and ball in linf, l2 (the keys of `CURVES`).
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
                                     restarts=restarts, targets=targets, names=names)
    found = attacks.robust_accuracy(apply, params, X, y, radii, suite, bounds=bounds,
                                    batch_size=batch_size)
    results["clean_accuracy"] = found["clean"]
    for name, accuracy in found["attacks"].items():
      results[f"{name.replace('-', '_')}_{ball}_accuracy"] = accuracy
    results[f"worst_{ball}_accuracy"] = found["worst_of_all"]
  return results


def evaluate_head(head: poly.PolyHead, X, y, **attack_settings) -> Dict[str, Any]:
  """Everything reported about a trained polynomial head, as a flat dict of numbers.

  Args:
    head: a trained `PolyHead` (binary or one-vs-all).
    X: (n, d) test inputs; y: (n,) test labels.
    **attack_settings: linf_eps, l2_radii, pgd_steps, apgd_steps, restarts, key: as for
      `evaluate_attacks`.

  Returns:
    `evaluate_attacks`'s dict plus "certified_l2_accuracy" ([per radius], from the exact
    radius `poly.certified_radius`), "objective", "gap" and "steps" of the solver, and
    "width" (neurons of the recovered network `poly.decompose`, |α| ≥ 1e-6·max|α|).
  """
  results = evaluate_attacks(poly.PolyHead.scores, head, X, y, **attack_settings)
  radii = poly.certified_radius(head, X, y)
  results["certified_l2_accuracy"] = certify.certified_accuracy(
      radii, attack_settings["l2_radii"]).tolist()
  _, alpha = poly.decompose(head)
  results.update(objective=float(head.objective), gap=float(head.gap), steps=int(head.steps),
                 width=network_width(alpha))
  return results


def evaluate_relu_head(head: relu.ReluHead, X, y, **attack_settings) -> Dict[str, Any]:
  """Everything reported about a ReLU or gated-ReLU head, with the keys of `evaluate_head`.

  The attacks act on the head's network (`ReluHead.scores`: the recovered ReLU network, or the
  gated model). "certified_l2_accuracy" comes from `relu.certified_radius` (the Lipschitz margin
  bound of a ReLU head, the gate-aware bound of a gated head); "gap" is None (no certificate of
  optimality is computed); "violation" is the largest cone violation of the returned weights.
  """
  results = evaluate_attacks(relu.ReluHead.scores, head, X, y, **attack_settings)
  radii = relu.certified_radius(head, X, y)
  results.update(
      certified_l2_accuracy=certify.certified_accuracy(radii, attack_settings["l2_radii"]).tolist(),
      objective=float(head.objective), gap=None, violation=float(head.violation),
      steps=int(head.steps), width=int(relu.recover(head)[0].shape[1]))
  return results


def evaluate_network_head(params, X, y, **attack_settings) -> Dict[str, Any]:
  """Everything reported about a nonconvex head (`cvxjax.train.head`), with the keys of
  `evaluate_head`: attacks on `head.scores`, certified accuracy by its Lipschitz margin bound;
  objective, gap and violation are None (nothing certifies its optimality)."""
  results = evaluate_attacks(network_head.scores, params, X, y, **attack_settings)
  radii = network_head.certified_radius(params, X, y)
  results.update(
      certified_l2_accuracy=certify.certified_accuracy(radii, attack_settings["l2_radii"]).tolist(),
      objective=None, gap=None, violation=None, steps=None, width=int(params["W1"].shape[1]))
  return results


def fit_and_select(train: Tuple[Any, Any], val: Tuple[Any, Any], *,
                   fit: Callable[[Any, Any, float], Any],
                   betas: Sequence[float]) -> Tuple[Any, float, float]:
  """Fits a head for each β and keeps the most accurate on the validation split.

  Never looks at a test split. Ties go to the first β listed.

  Args:
    train: (X, y) training split.
    val: (X, y) validation split.
    fit: (X, y, β) -> a head with `predict`.
    betas: the candidate regularisation weights.

  Returns:
    (head, β, validation accuracy) of the chosen fit.
  """
  best = None
  for beta in betas:
    head = fit(*train, float(beta))
    acc = float(np.mean(np.asarray(head.predict(jnp.asarray(val[0]))) == np.asarray(val[1])))
    if best is None or acc > best[2]:
      best = (head, float(beta), acc)
  return best


def collect(rows: Sequence[Mapping[str, Any]]) -> Dict[str, list]:
  """Stacks per-run dicts with the same keys into a dict of lists (one entry per run)."""
  return {k: [row[k] for row in rows] for k in rows[0]}


def _to_builtin(value):
  """Numbers, arrays and nested containers as JSON-ready Python numbers and lists."""
  if isinstance(value, Mapping):
    return {str(k): _to_builtin(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_to_builtin(v) for v in value]
  if value is None or isinstance(value, str):
    return value
  array = np.asarray(value)
  if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
    raise ValueError(f"results must hold numbers, labels or None, got {value!r}")
  return array.tolist()


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
  path = os.path.join(workdir, name)
  with open(path, "w") as f:
    json.dump(_to_builtin(results), f, indent=1, sort_keys=True)
  return path


def plot_models(workdir: str, results: Mapping[str, Any]) -> str:
  """`accuracy_vs_eps.png`: one panel per attack, accuracy against the attack radius, one line
  per model (models without a value, such as certificates of gated heads, are left out).

  Args:
    workdir: output directory.
    results: `collect`ed results with "model" labels, "linf_eps", "l2_radii" and the keys of
      `CURVES` that are present.

  Returns:
    The path written.
  """
  panels = []
  for k in (k for k in CURVES if k in results):
    title, radius_key, radius_label = CURVES[k]
    curves = {m: acc for m, acc in zip(results["model"], results[k], strict=True)
              if acc is not None}
    panels.append(Panel(title, radius_label, results[radius_key], curves))
  os.makedirs(workdir, exist_ok=True)
  return plot_accuracy(os.path.join(workdir, "accuracy_vs_eps.png"), panels,
                       suptitle="Test accuracy against the attack radius, one line per model")


def write_run(workdir: str, results: Mapping[str, Any], config) -> None:
  """An experiment's outputs: results.json, config.json, accuracy_vs_eps.png; prints the table.

  Args:
    workdir: the run's directory.
    results: `collect`ed results with the run's radii (see `plot_models`).
    config: the run's ml_collections config.
  """
  write_results(workdir, results)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json(indent=1))
  plot_models(workdir, results)
  print(format_table(results), flush=True)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
  line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))
  return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def format_table(results: Mapping[str, Any]) -> str:
  """The results as plain-text tables, one row per model: a summary, then one per attack.

  Args:
    results: `collect`ed results (see `plot_models`), optionally with "beta", "objective",
      "gap", "violation", "width", "val_accuracy", "seconds"; None shows as "—".

  Returns:
    The tables, separated by blank lines.
  """
  models = results["model"]
  cell = lambda fmt, v: "—" if v is None else fmt.format(v)
  summary = [("beta", "β", "{:.0e}"), ("objective", "objective", "{:.6g}"),
             ("gap", "gap", "{:.1e}"), ("violation", "violation", "{:.1e}"),
             ("width", "width", "{:d}"),
             ("val_accuracy", "val acc", "{:.3f}"), ("clean_accuracy", "test acc", "{:.3f}"),
             ("seconds", "fit s", "{:.1f}")]
  summary = [s for s in summary if s[0] in results]
  blocks = [_table(["model"] + [s[1] for s in summary],
                   [[m] + [cell(fmt, results[k][i]) for k, _, fmt in summary]
                    for i, m in enumerate(models)])]
  for k in (k for k in CURVES if k in results):
    title, radius_key, _ = CURVES[k]
    header = ["model"] + [f"ε={rho:g}" for rho in results[radius_key]]
    rows = [[m] + ([cell("{:.3f}", a) for a in results[k][i]] if results[k][i] is not None
                   else ["—"] * len(results[radius_key])) for i, m in enumerate(models)]
    blocks.append(f"{title} test accuracy\n" + _table(header, rows))
  return "\n\n".join(blocks)
