"""Accuracy curves drawn with matplotlib (imported when a plot is drawn, headless).

`plot_robust_accuracy` draws `cvxjax.attacks.robust_accuracy` reports; `plot_accuracy` draws any
`Panel`s of accuracy against a radius.
"""

from typing import Any, Mapping, NamedTuple, Sequence


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


def plot_robust_accuracy(path: str, reports: Mapping[str, Mapping[str, Any]], *,
                         xlabel: str = "attack radius ε") -> str:
  """Accuracy against ε from `attacks.robust_accuracy` reports: a panel per attack and one for
  the worst of all, a line per model (each starting at its clean accuracy, ε = 0).

      reports = {name: cvxjax.robust_accuracy(apply, params, X, y, eps) for ...}
      cvxjax.plot_robust_accuracy("robust.png", reports)

  Args:
    path: the PNG's path.
    reports: model label -> its `robust_accuracy` report (models may run different attacks).
    xlabel: the x axis' label.

  Returns:
    The path written.
  """
  if not reports:
    raise ValueError("reports must hold at least one model's robust_accuracy report")
  eps = list(reports.values())[0]["eps"]
  if any(list(r["eps"]) != list(eps) for r in reports.values()):
    raise ValueError("reports must share one eps list, to share the plots' x axis")
  curves = {name: {model: r["attacks"][name] for model, r in reports.items()
                   if name in r["attacks"]}
            for r in reports.values() for name in r["attacks"]}
  curves["worst of all attacks"] = {model: r["worst_of_all"] for model, r in reports.items()}
  panels = [Panel(name if name.startswith("worst") else name.upper(), xlabel, eps, lines)
            for name, lines in curves.items()]
  return plot_accuracy(path, panels, suptitle="Accuracy against the attack radius")
