"""The heads an experiment fits, read from one config schema that all three experiments share.

Every entry of `config.heads` is one family of heads, named by its key (big_vision's
`config.evals.<name> = dict(type=...)`):

    config.heads.<label> = ml_collections.ConfigDict(dict(type=..., **settings))

with the settings of its type, named the same in every experiment:

  type       settings                                          fitted by
  "poly"     radii, betas, solver, tol, max_steps              `cvxjax.poly.fit` at r ∈ radii
  "relu"     eps, p, bias, betas, num_patterns, tol, max_steps `cvxjax.relu.fit` at ε ∈ eps
             (loss: "hinge", or "ova_hinge" for one-vs-all)
  "gated"    p, bias, betas, num_patterns, tol, max_steps      `relu.fit(gated=True)` at ε = 0
             (loss, as "relu")
  "network"  method, hidden, steps, learning_rate,             `cvxjax.train.head.fit`
             weight_decays; radii, norm, pgd_steps (method
             "pgd" or "ssds": PGD-AT or SSDS at each radius)

Gated heads train plain only: their prediction jumps where a gate flips inside the ball, so ε‖θ‖
does not bound their worst case and `relu.fit` refuses `gated=True, eps > 0` (docs/math.md §4).
A nonconvex head of method "standard" trains at radius 0 only; "pgd" and "ssds" exist only
robust (at radius 0 both are the standard training).

`families` turns every entry into a `Family`: its candidates (training radius × β, β being a
nonconvex head's weight decay), a fit for each, and the names of its members in the results. The
experiments choose among the candidates, each its own way, and never ask which type a family is.
"""

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import jax
import numpy as np

from cvxjax import heads, poly, relu
from cvxjax.train import adversarial
from cvxjax.train import head as network_head
from experiments import report

# Each type's settings: those every entry must give, and those with a default.
REQUIRED = {
    "poly": ("radii", "betas", "solver", "tol", "max_steps"),
    "relu": ("eps", "p", "bias", "betas", "num_patterns", "tol", "max_steps"),
    "gated": ("p", "bias", "betas", "num_patterns", "tol", "max_steps"),
    "network": ("method", "hidden", "steps", "learning_rate", "weight_decays"),
}
OPTIONAL = {"network": {"radii": (0.0,), "norm": 2, "pgd_steps": 7},
            "relu": {"loss": "hinge"}, "gated": {"loss": "hinge"}}
TYPES = tuple(REQUIRED)


class Candidate(NamedTuple):
  """One head a family fits: its file label, training radius, β and fit (X, y) -> head."""

  label: str
  radius: float
  beta: float
  fit: Callable[[Any, Any], heads.Head]


class Family(NamedTuple):
  """One entry of config.heads, ready to fit.

  Attributes:
    label: its key in config.heads ("poly", "pgd", ...); its candidates' files are named by it.
    type: "poly", "relu", "gated" or "network".
    radii: its training radii (0 alone for gated and standard nonconvex heads).
    betas: its regularisation weights β (a nonconvex head's weight decays).
    names: per radius, the results' name of the head trained at it, where every radius is
      reported as its own model ("poly r=0.5", "relu ε=0.1", "PGD-AT head ℓ₂ ε=0.5").
    plain: the results' name of the member chosen among the candidates at radius 0 ("poly",
      "network head"), or None (PGD-AT and SSDS have none).
    robust: the results' name of the member chosen among all candidates ("poly robust",
      "PGD-AT head ℓ₂"), or None (no radius > 0).
    tol: the tolerance its solver stops at (None: a nonconvex head, which has no certificate).
    labels: y -> the labels its heads train on and predict: ±1 labels as classes 0/1 for a
      nonconvex head, all others unchanged.
    fit: (X (n, d), y (n,) as `labels` gives them, radius, β) -> a `heads.Head`.
  """

  label: str
  type: str
  radii: Tuple[float, ...]
  betas: Tuple[float, ...]
  names: Tuple[str, ...]
  plain: Optional[str]
  robust: Optional[str]
  tol: Optional[float]
  labels: Callable[[Any], Any]
  fit: Callable[..., heads.Head]

  def candidates(self) -> List[Candidate]:
    """The plain member's grid (0 × betas), then the robust member's (radii × betas) not in it."""
    grid = [(0.0, beta) for beta in self.betas] if self.plain is not None else []
    if self.robust is not None:
      grid += [(r, beta) for r in self.radii for beta in self.betas if (r, beta) not in grid]
    return [Candidate(f"{self.label} r={r:g} β={beta:g}", float(r), float(beta),
                      lambda X, y, r=float(r), beta=float(beta): self.fit(X, y, r, beta))
            for r, beta in grid]


def _unchanged(y):
  """The labels as given: what the convex heads train on (±1, or classes 0..C−1)."""
  return y


def _classes(y):
  """±1 labels as classes 0/1, classes 0..C−1 unchanged: what a nonconvex head trains on."""
  return np.maximum(np.asarray(y), 0).astype(np.int64)


def _numbers(label: str, name: str, values, positive: bool = False) -> Tuple[float, ...]:
  """A setting that lists numbers >= 0 (> 0 with `positive`), as floats; at least one."""
  ok = isinstance(values, (tuple, list)) and len(values) > 0 and all(
      isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
      and (v > 0 if positive else v >= 0) for v in values)
  if not ok:
    raise ValueError(f"config.heads.{label}.{name} must list at least one finite number "
                     f"{'> 0' if positive else '>= 0'}, got {values!r}")
  return tuple(float(v) for v in values)


def _settings(label: str, entry) -> Dict[str, Any]:
  """The entry's validated settings with "type" and every default filled in.

  Raises:
    ValueError: naming config.heads.<label> and the first setting that is wrong.
  """
  try:
    settings = dict(entry)
  except (TypeError, ValueError):
    raise ValueError(f"config.heads.{label} must be a ConfigDict(dict(type=..., ...)), got "
                     f"{entry!r}") from None
  kind = settings.get("type")
  if kind not in TYPES:
    raise ValueError(f"config.heads.{label}.type must be one of {TYPES}, got {kind!r}")
  allowed = {"type", *REQUIRED[kind], *OPTIONAL.get(kind, {})}
  unknown = sorted(set(settings) - allowed)
  if unknown:
    raise ValueError(f"config.heads.{label} has settings {unknown} that a {kind!r} head does not "
                     f"take; it takes {sorted(allowed - {'type'})}")
  missing = [name for name in REQUIRED[kind] if name not in settings]
  if missing:
    raise ValueError(f"config.heads.{label} lacks the settings {missing} of a {kind!r} head")
  settings = dict(OPTIONAL.get(kind, {}), **settings)
  for name in sorted(set(settings) & {"radii", "eps", "betas", "weight_decays"}):
    settings[name] = _numbers(label, name, settings[name])
  for name in sorted(set(settings) & {"max_steps", "num_patterns", "hidden", "steps"}):
    value = settings[name]
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
      raise ValueError(f"config.heads.{label}.{name} must be an integer >= 1, got {value!r}")
  for name in sorted(set(settings) & {"tol", "learning_rate"}):
    value = settings[name]
    if not (isinstance(value, (int, float)) and not isinstance(value, bool)
            and np.isfinite(value) and value > 0):
      raise ValueError(f"config.heads.{label}.{name} must be a finite number > 0, got {value!r}")
  if kind == "network":
    method = settings["method"]
    if method not in adversarial.METHODS:
      raise ValueError(f"config.heads.{label}.method must be one of {adversarial.METHODS}, got "
                       f"{method!r}")
    if method == "standard" and any(settings["radii"]):
      raise ValueError(f"config.heads.{label}.radii must be (0.0,): method 'standard' trains at "
                       f"radius 0 only, got {settings['radii']}")
    if method != "standard":
      _numbers(label, "radii", settings["radii"], positive=True)
    _adversaries(label, settings)
  return settings


def _adversaries(label: str, settings: Dict[str, Any]) -> Tuple[adversarial.Adversary, ...]:
  """A nonconvex family's adversary per training radius (validated)."""
  try:
    return tuple(adversarial.Adversary(settings["method"], eps=r, norm=settings["norm"],
                                       pgd_steps=settings["pgd_steps"])
                 for r in settings["radii"])
  except ValueError as error:
    raise ValueError(f"config.heads.{label}.{str(error).removeprefix('adversary.')}") from None


def check(config_heads) -> None:
  """Raises ValueError naming config.heads.<label>.<setting> on any invalid entry (no compute)."""
  if not len(config_heads):
    raise ValueError("config.heads must hold at least one head")
  for label, entry in config_heads.items():
    _settings(label, entry)


def _poly(label: str, s: Dict[str, Any], key, progress: bool, mesh) -> Family:
  fit = lambda X, y, r, beta: poly.fit(X, y, r=r, beta=beta, solver=s["solver"], tol=s["tol"],
                                       max_steps=s["max_steps"], progress=progress, mesh=mesh)
  names = tuple(f"{label} r={r:g}" for r in s["radii"])
  return Family(label, "poly", s["radii"], s["betas"], names, label,
                f"{label} robust" if any(s["radii"]) else None, s["tol"], _unchanged, fit)


def _relu(label: str, s: Dict[str, Any], key, progress: bool, mesh, gated: bool) -> Family:
  fit = lambda X, y, eps, beta: relu.fit(
      X, y, eps=eps, p=s["p"], beta=beta, num_patterns=s["num_patterns"], gated=gated,
      bias=s["bias"], loss=s["loss"], key=key, tol=s["tol"], max_steps=s["max_steps"],
      progress=progress, mesh=mesh)
  radii = (0.0,) if gated else s["eps"]
  return Family(label, "gated" if gated else "relu", radii, s["betas"],
                tuple(f"{label} ε={eps:g}" for eps in radii), label,
                f"{label} robust" if any(radii) else None, s["tol"], _unchanged, fit)


def _network(label: str, s: Dict[str, Any], key, progress: bool, mesh) -> Family:
  adversaries = dict(zip(s["radii"], _adversaries(label, s), strict=True))

  def fit(X, y, radius, weight_decay):
    # Its own stream, apart from the ReLU heads' gates.
    stream = jax.random.fold_in(key, int(np.max(y)) + 1)
    return heads.NetworkHead(**network_head.fit(
        X, y, hidden=s["hidden"], steps=s["steps"], learning_rate=s["learning_rate"],
        weight_decay=weight_decay, key=stream, adversary=adversaries[radius],
        progress=progress))

  method, norm = s["method"], s["norm"]
  member = report.network_label(method, norm)
  return Family(label, "network", s["radii"], s["weight_decays"],
                tuple(report.network_label(method, norm, r) for r in s["radii"]),
                member if method == "standard" else None,
                None if method == "standard" else member, None, _classes, fit)


def families(config_heads, *, key: jax.Array, progress: bool = False,
             mesh=None) -> List[Family]:
  """Every entry of config.heads as a `Family`: by type in the order of `TYPES`, entries of
  one type in the order config.heads lists them (a ConfigDict sorts its keys).

  Args:
    config_heads: config.heads, {label: ConfigDict(dict(type=..., **settings))}.
    key: PRNG key of the ReLU heads' sampled gates and the nonconvex heads' training.
    progress: show the solvers' progress bars.
    mesh: None or a `jax.sharding.Mesh` the convex heads are fitted on (`cvxjax.sharding`).

  Returns:
    The families.

  Raises:
    ValueError: naming config.heads.<label>.<setting> on an invalid entry, before any fit.
  """
  check(config_heads)
  builders = {"poly": _poly, "relu": lambda *a: _relu(*a, gated=False),
              "gated": lambda *a: _relu(*a, gated=True), "network": _network}
  entries = [(label, _settings(label, entry)) for label, entry in config_heads.items()]
  entries.sort(key=lambda item: TYPES.index(item[1]["type"]))
  return [builders[settings["type"]](label, settings, key, progress, mesh)
          for label, settings in entries]
