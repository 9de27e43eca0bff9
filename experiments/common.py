"""What the experiments' stages share: checking `stop_after`, timing stages, naming outputs by
what they depend on, writing files whole, reusing results computed before, and the backbones'
`TrainSettings` read from config.train (the library takes settings, not configs).

A stage's output is kept in the workdir under a `fingerprint` of its inputs and written with
`atomic_write` (to a temporary name, then renamed), so an interrupted run leaves no half-written
file and a rerun reuses exactly the outputs of the same inputs.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import resource
import time
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence, Union

import jax
import ml_collections
import numpy as np

from cvxjax import features
from cvxjax.train import adversarial, backbone


def check_stop_after(stop_after: Optional[str], stages: Sequence[str]) -> None:
  """Fails fast on a `config.stop_after` that names no stage of the run."""
  if stop_after is not None and stop_after not in stages:
    raise ValueError(f"config.stop_after must be None or one of {tuple(stages)}, got "
                     f"{stop_after!r}")


class Timings(dict):
  """Seconds per stage of a run, {name: seconds}, each measured by `with timings.stage(name):`."""

  @contextlib.contextmanager
  def stage(self, name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    self[name] = time.perf_counter() - start


def train_config(settings: backbone.TrainSettings) -> ml_collections.ConfigDict:
  """`settings` as config.train: its fields, the adversary's nested in config.train.adversary
  (not type-safe: its norm is "inf" or 2, its pgd_step_size None or a number)."""
  fields = dataclasses.asdict(settings)
  config = ml_collections.ConfigDict({k: v for k, v in fields.items() if k != "adversary"})
  config.adversary = ml_collections.ConfigDict(fields["adversary"], type_safe=False)
  return config


def train_settings(config: ml_collections.ConfigDict, **overrides) -> backbone.TrainSettings:
  """The `backbone.TrainSettings` that config.train describes, `overrides` replacing fields.

  Raises:
    ValueError: naming config.train.<field> when a field is unknown or invalid.
  """
  values = dict(config.to_dict(), **overrides)
  adversary = values.pop("adversary", {})
  for given, known in ((values, backbone.TrainSettings), (adversary, adversarial.Adversary)):
    unknown = sorted(set(given) - {f.name for f in dataclasses.fields(known)})
    if unknown:
      raise ValueError(f"config.train has unknown settings {unknown}")
  try:
    return backbone.TrainSettings(**values, adversary=adversarial.Adversary(**adversary))
  except ValueError as error:
    raise ValueError(f"config.train.{error}") from None


def fingerprint(*parts: str) -> str:
  """16 hex digits naming what a stage's output depends on, so a changed input never reuses it."""
  return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def file_name(label: str) -> str:
  """A label as a file name: runs of anything but letters, digits and dots become "_"."""
  return re.sub(r"[^\w.]+", "_", label)


def atomic_write(path: str, content: Union[str, bytes]) -> str:
  """Writes `content` to `path` whole: to `path`.partial, then renamed (never truncated).

  Returns:
    The path written.
  """
  partial = path + ".partial"
  with open(partial, "wb" if isinstance(content, bytes) else "w") as f:
    f.write(content)
  os.replace(partial, path)
  return path


def cached_row(directory: str, label: str, params: Any, info: Mapping[str, Any],
               compute: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
  """`compute()`'s result row for a model, read from `directory` when it was computed before.

  Named by the model's label and its parameters (`features.identity`), so a refitted head or
  backbone is evaluated anew.

  Args:
    directory: where the rows are kept (its name should fingerprint the evaluation's settings).
    label: the model's name in the results.
    params: the model's parameters (any pytree of arrays).
    info: numbers stored beside the computed ones (β, validation accuracy, ...).
    compute: () -> the row of numbers, labels and lists (JSON-ready after `to_builtin`).

  Returns:
    The row, with "model" (the label), "eval_seconds" and this call's `info` added (the info
    of the call that computed it is not reused: a new candidate in a selection grid changes a
    chosen head's "selection" without changing the head).
  """
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f"{file_name(label)}-{features.identity(params)}.json")
  if not os.path.exists(path):
    start = time.perf_counter()
    row = compute()
    row.update(model=label, eval_seconds=time.perf_counter() - start)
    atomic_write(path, json.dumps(to_builtin(row), indent=1, sort_keys=True))
  with open(path) as f:
    return dict(json.load(f), **to_builtin(info))


def to_builtin(value):
  """Numbers, arrays and nested containers as JSON-ready Python numbers and lists.

  Raises:
    ValueError: if a value is neither a number, a string nor None.
  """
  if isinstance(value, Mapping):
    return {str(k): to_builtin(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_builtin(v) for v in value]
  if value is None or isinstance(value, str):
    return value
  array = np.asarray(value)
  if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
    raise ValueError(f"results must hold numbers, labels or None, got {value!r}")
  return array.tolist()


def memory() -> Dict[str, float]:
  """Peak host memory of this process, and the device's peak where the backend reports it."""
  peak = {"host_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
  stats = jax.local_devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    peak["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
  return peak
