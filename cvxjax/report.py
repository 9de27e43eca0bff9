"""Train, evaluate and report helpers shared by the experiments.

An experiment fits heads, turns each into a flat dict of numbers with `evaluate_head` (or
`evaluate_attacks` for any model), stacks the dicts with `collect`, and writes them with
`write_results`, `plot_sweep` and `format_table`. Everything here runs on the host; the
attacks and solvers it calls are jitted.
"""

import json
import os
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from cvxjax import attacks, certify, poly, relu

# The result keys that hold one accuracy per attack radius: title, radius key, radius label.
CURVES = {
    "fgsm_linf_accuracy": ("FGSM ℓ∞", "linf_eps", "ℓ∞ attack radius ε"),
    "pgd_linf_accuracy": ("PGD ℓ∞", "linf_eps", "ℓ∞ attack radius ε"),
    "pgd_l2_accuracy": ("PGD ℓ₂", "l2_radii", "ℓ₂ attack radius ε"),
    "certified_l2_accuracy": ("certified ℓ₂ (exact or Lipschitz radius)", "l2_radii",
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
                     l2_radii: Sequence[float], pgd_steps: int, pgd_restarts: int,
                     key: jax.Array, bounds: attacks.Bounds = None,
                     batch_size: Optional[int] = None) -> Dict[str, Any]:
  """Clean accuracy, and accuracy under FGSM-ℓ∞, PGD-ℓ∞ and PGD-ℓ₂ at each radius.

  Args:
    apply: (params, x) -> scores, as for `cvxjax.attacks`.
    params: the model's parameters.
    X: (n, ...) inputs; y: (n,) labels.
    linf_eps: ℓ∞ radii.
    l2_radii: ℓ₂ radii.
    pgd_steps, pgd_restarts: PGD settings (default step 2.5·ε/steps).
    key: PRNG key of the random starts.
    bounds: None or (lower, upper) input bounds.
    batch_size: examples attacked at a time (None: all).

  Returns:
    {"clean_accuracy": float, "fgsm_linf_accuracy": [per ε], "pgd_linf_accuracy": [per ε],
     "pgd_l2_accuracy": [per radius]}.
  """
  X, y = jnp.asarray(X), jnp.asarray(y)
  fgsm = lambda *a: attacks.fgsm(*a, norm="inf", bounds=bounds)

  def pgd(norm, index):
    return lambda *a: attacks.pgd(*a, norm=norm, steps=pgd_steps, restarts=pgd_restarts,
                                  key=jax.random.fold_in(key, index), bounds=bounds)

  curve = lambda radii, attack: [
      attacks.robust_accuracy(apply, params, X, y, float(e), attack(i), batch_size=batch_size)
      for i, e in enumerate(radii)]
  clean = float(np.mean(np.asarray(attacks.margin(apply(params, X), y)) > 0))
  return {
      "clean_accuracy": clean,
      "fgsm_linf_accuracy": curve(linf_eps, lambda i: fgsm),
      "pgd_linf_accuracy": curve(linf_eps, lambda i: pgd("inf", i)),
      "pgd_l2_accuracy": curve(l2_radii, lambda i: pgd(2, len(linf_eps) + i)),
  }


def evaluate_head(head: poly.PolyHead, X, y, *, linf_eps: Sequence[float],
                  l2_radii: Sequence[float], pgd_steps: int, pgd_restarts: int,
                  key: jax.Array) -> Dict[str, Any]:
  """Everything reported about a trained polynomial head, as a flat dict of numbers.

  Args:
    head: a trained `PolyHead` (binary or one-vs-all).
    X: (n, d) test inputs; y: (n,) test labels.
    linf_eps, l2_radii, pgd_steps, pgd_restarts, key: as for `evaluate_attacks`.

  Returns:
    `evaluate_attacks`'s dict plus "certified_l2_accuracy" ([per radius], from the exact
    radius `poly.certified_radius`), "objective", "gap" and "steps" of the solver, and
    "width" (neurons of the recovered network `poly.decompose`, |α| ≥ 1e-6·max|α|).
  """
  results = evaluate_attacks(poly.PolyHead.scores, head, X, y, linf_eps=linf_eps,
                             l2_radii=l2_radii, pgd_steps=pgd_steps,
                             pgd_restarts=pgd_restarts, key=key)
  radii = poly.certified_radius(head, X, y)
  results["certified_l2_accuracy"] = certify.certified_accuracy(radii, l2_radii).tolist()
  _, alpha = poly.decompose(head)
  results.update(objective=float(head.objective), gap=float(head.gap), steps=int(head.steps),
                 width=network_width(alpha))
  return results


def evaluate_relu_head(head: relu.ReluHead, X, y, *, linf_eps: Sequence[float],
                       l2_radii: Sequence[float], pgd_steps: int, pgd_restarts: int,
                       key: jax.Array) -> Dict[str, Any]:
  """Everything reported about a ReLU or gated-ReLU head, with the keys of `evaluate_head`.

  The attacks act on the head's network (`ReluHead.scores`: the recovered ReLU network, or the
  gated model). "certified_l2_accuracy" comes from the Lipschitz margin bound
  (`certify.lipschitz_certified_radius`) for ReLU heads and is None for gated heads, whose
  gates make them discontinuous; "gap" is None (no certificate is computed); "violation" is the
  largest cone violation of the returned weights.
  """
  results = evaluate_attacks(relu.ReluHead.scores, head, X, y, linf_eps=linf_eps,
                             l2_radii=l2_radii, pgd_steps=pgd_steps,
                             pgd_restarts=pgd_restarts, key=key)
  network = relu.recover(head)
  certified = None
  if not head.gated:
    radii = certify.lipschitz_certified_radius(network[0], network[1], X, y)
    certified = certify.certified_accuracy(radii, l2_radii).tolist()
  results.update(certified_l2_accuracy=certified, objective=float(head.objective), gap=None,
                 violation=float(head.violation), steps=int(head.steps),
                 width=int(network[0].shape[1]))
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


class Panel(NamedTuple):
  """One subplot: accuracy curves over a common x axis.

  Attributes:
    title: the subplot's title.
    xlabel: the x axis' label.
    x: (k,) x values.
    curves: label -> (k,) accuracies, one line each.
  """

  title: str
  xlabel: str
  x: Sequence[float]
  curves: Mapping[str, Sequence[float]]


def plot_accuracy(path: str, panels: Sequence[Panel], *, suptitle: str = "") -> str:
  """Draws accuracy curves (y in [0, 1]) in a grid of subplots (two per row), saves a PNG.

  Args:
    path: the PNG's path.
    panels: the subplots, row by row.
    suptitle: a title over all panels.

  Returns:
    The path written.
  """
  import matplotlib  # imported here: only plotting needs it, and headless
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  cols = min(2, len(panels))
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), squeeze=False)
  for ax in axes.flat[len(panels):]:
    ax.set_visible(False)
  for ax, panel in zip(axes.flat, panels, strict=False):
    for label, ys in panel.curves.items():
      ax.plot(panel.x, ys, marker="o", markersize=4, label=label)
    ax.set(title=panel.title, xlabel=panel.xlabel, ylabel="test accuracy", ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
  if suptitle:
    fig.suptitle(suptitle)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
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
