"""Accuracy curves drawn with matplotlib (imported when a plot is drawn, headless).

`plot_robust_accuracy` draws `cvxjax.attacks.robust_accuracy` reports; `plot_accuracy` draws any
`Panel`s of accuracy against a radius. Every line's label keeps one colour, line style and marker
in every panel of a figure (`line_styles`), and no two labels share a colour.
"""

import itertools
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence

# 20 colours (matplotlib's tab20, dark shades first), cycled with line styles and markers.
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
            "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")
_LINE_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


class Panel(NamedTuple):
  """One subplot: accuracy curves over a common x axis.

  Attributes:
    title: the subplot's title.
    xlabel: the x axis' label.
    x: (k,) x values.
    curves: label -> (k,) accuracies, one line each.
    xticklabels: (k,) labels of the x values (such as "8/255"); None: matplotlib's ticks.
  """

  title: str
  xlabel: str
  x: Sequence[float]
  curves: Mapping[str, Sequence[float]]
  xticklabels: Optional[Sequence[str]] = None


def line_styles(labels: Sequence[str]) -> Dict[str, Dict[str, str]]:
  """One look per label, in order of first appearance: colour, line style and marker.

  Colours are distinct for up to 20 labels; consecutive labels also differ in line style and
  marker, so lines stay apart in print and for readers who do not tell the colours apart.

  Args:
    labels: the lines' labels (repeats share the look of their first appearance).

  Returns:
    {label: {"color": ..., "linestyle": ..., "marker": ...}}, keyword arguments of `plot`.
  """
  unique = list(dict.fromkeys(labels))
  looks = zip(itertools.cycle(_COLOURS), itertools.cycle(_LINE_STYLES), itertools.cycle(_MARKERS))
  return {label: dict(color=c, linestyle=ls, marker=m)
          for label, (c, ls, m) in zip(unique, looks, strict=False)}


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
  looks = line_styles([label for panel in panels for label in panel.curves])
  for ax, panel in zip(axes.flat, panels, strict=False):
    for label, ys in panel.curves.items():
      ax.plot(panel.x, ys, markersize=4, label=label, **looks[label])
    ax.set(title=panel.title, xlabel=panel.xlabel, ylabel="test accuracy", ylim=(-0.02, 1.02))
    if panel.xticklabels is not None:
      ax.set_xticks(list(panel.x), list(panel.xticklabels))
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
  # Survivor-mode reports (mode "worst") hold no per-attack accuracies: only the worst is drawn.
  per_attack = {model: r.get("attacks", {}) for model, r in reports.items()}
  curves = {name: {model: found[name] for model, found in per_attack.items() if name in found}
            for found in per_attack.values() for name in found}
  curves["worst of all attacks"] = {model: r["worst_of_all"] for model, r in reports.items()}
  panels = [Panel(name if name.startswith("worst") else name.upper(), xlabel, eps, lines)
            for name, lines in curves.items()]
  return plot_accuracy(path, panels, suptitle="Accuracy against the attack radius")
