"""The deep experiment: a backbone's last two layers replaced by a convex head, attacked in pixels.

Stages (ARCHITECTURE.md "How data flows"), each resumable from what it left in the workdir:

  1. backbones   a PreAct ResNet-18 trained with SGD and one with SAM (orbax checkpoints);
  2. features    the SGD backbone's frozen features, cached per checkpoint;
  3. heads       convex heads (polynomial, ReLU, gated ReLU; plain and robust) and nonconvex
                 heads trained normally, by PGD-AT and by SSDS, on standardised features,
                 β (or the weight decay) chosen on validation;
  4. evaluation  every model assembled with its backbone into one `apply(params, x)` and
                 attacked in pixel space (clean, FGSM, PGD, APGD at ε = k/255).

`train_and_evaluate` runs them in order and writes results.json, accuracy_vs_eps.png and a
table; `config.stop_after` ends the run after a stage (the resumption tests use it). Every head
is a `cvxjax.heads.Head`, saved with `heads.save_head` once fitted.
"""

import functools
import json
import os
import time
from typing import Any, Callable, Dict, List, NamedTuple, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cvxjax import data, features, heads, poly, relu, sharding
from cvxjax.models import PreActResNet18
from cvxjax.train import adversarial, backbone
from cvxjax.train import head as network_head
from experiments import common, report

STAGES = ("backbones", "features", "heads", "evaluation")


class Model(NamedTuple):
  """One network to attack: a backbone with a head on its standardised features.

  Attributes:
    label: its name in the results.
    apply: (params, images) -> logits, the whole network (a stable function: jit's static arg).
    params: (backbone variables, head (a `heads.Head`), (feature mean, feature std)).
    info: numbers reported beside the accuracies (β, validation accuracy, fit seconds, ...).
  """

  label: str
  apply: Callable
  params: Any
  info: Dict[str, Any]


@functools.cache
def assembled(model: nn.Module) -> Callable:
  """(params, images) -> head.scores((model.features(images) − mean) / std), for any head.

  Cached: one function object per architecture, so that the jitted attacks, whose static
  argument it is, compile once per process (and head structure) and not once per run.
  """
  features_of = type(model).features

  def apply(params, images):
    variables, head, (mean, std) = params
    feats = model.apply(variables, images, method=features_of)
    return head.scores((feats - mean) / std)

  return apply


def _check_config(config: ml_collections.ConfigDict) -> None:
  """Fails fast on settings that would only break hours into the run."""
  common.check_stop_after(config.stop_after, STAGES)
  for name in config.backbones:
    if name not in ("sgd", "sam"):
      raise ValueError(f"config.backbones must hold 'sgd' and/or 'sam', got {name!r}")
  if config.heads.backbone not in config.backbones:
    raise ValueError(f"config.heads.backbone {config.heads.backbone!r} must be one of "
                     f"config.backbones {tuple(config.backbones)}")
  if any(k < 0 for k in config.eval.eps_k):
    raise ValueError(f"config.eval.eps_k must hold k >= 0 (ε = k/255), got {config.eval.eps_k}")


def train_backbones(config, splits: data.ImageSplits, workdir: str) -> Dict[str, Any]:
  """Stage 1: {name: TrainState} for each of config.backbones, trained or restored."""
  model = PreActResNet18(num_classes=splits.num_classes, width=config.model.width,
                         head_width=config.model.head_width,
                         dtype=jnp.dtype(config.train.dtype))
  states = {}
  for index, name in enumerate(config.backbones):
    train_config = ml_collections.ConfigDict(config.train.to_dict())
    train_config.optimizer = name
    states[name] = backbone.train_backbone(
        model, train_config, (splits.train.X, splits.train.y),
        checkpoint_dir=os.path.join(workdir, f"backbone_{name}"),
        key=jax.random.fold_in(jax.random.key(config.seed), index), progress=config.progress)
  return states


def extract_features(config, model: nn.Module, state, splits: data.ImageSplits,
                     workdir: str) -> Tuple[data.Split, data.Split, data.Split]:
  """Stage 2: the backbone's features of train, val and test, from the cache when seen before."""
  feature_fn = lambda variables, x: model.apply(variables, x, method=type(model).features)
  cache = os.path.join(workdir, "features")
  return tuple(
      data.Split(features.cached(cache, f"{config.heads.backbone}-{name}", feature_fn,
                                 state.variables, split.X,
                                 batch_size=config.features_batch_size,
                                 progress=config.progress), split.y)
      for name, split in (("train", splits.train), ("val", splits.val), ("test", splits.test)))


def _head_fits(config, classes: int):
  """(label, fit(X, y, β) -> head, betas) for every head of config.heads."""
  mesh = config.heads.get("mesh", ml_collections.ConfigDict(dict(examples=1, model=1)))
  mesh = (None if mesh.examples * mesh.model == 1
          else sharding.make_mesh(examples=mesh.examples, model=mesh.model))
  polys = config.heads.poly
  for r in polys.radii:
    yield (f"poly r={r:g}", lambda X, y, beta, r=r: poly.fit(
        X, y, r=float(r), beta=beta, solver=polys.solver, tol=polys.tol,
        max_steps=polys.max_steps, progress=config.progress, mesh=mesh), polys.betas)
  key = jax.random.key(config.seed)
  relus = config.heads.relu
  for family in relus.families:
    for eps in common.relu_radii(family, relus.eps):
      yield (f"{family} ε={eps:g}", lambda X, y, beta, eps=eps, family=family: relu.fit(
          X, y, eps=float(eps), p=relus.p, beta=beta, num_patterns=relus.num_patterns,
          gated=family == "gated", bias=relus.bias, key=key, tol=relus.tol,
          max_steps=relus.max_steps,
          progress=config.progress, mesh=mesh), relus.betas)
  network = config.heads.network
  for method in network.methods if network.steps > 0 else ():
    adversary = adversarial.from_config(ml_collections.ConfigDict(dict(
        method=method, eps=0.0 if method == "standard" else network.eps, norm=network.norm,
        pgd_steps=network.pgd_steps)))
    yield (report.network_label(adversary),
           lambda X, y, weight_decay, adversary=adversary: heads.NetworkHead(
               **network_head.fit(X, y, hidden=config.model.head_width, steps=network.steps,
                                  learning_rate=network.learning_rate, weight_decay=weight_decay,
                                  key=jax.random.fold_in(key, classes), adversary=adversary,
                                  progress=config.progress)),
           network.weight_decays)


def fit_heads(config, feats: Tuple[data.Split, ...], workdir: str):
  """Stage 3: every head on the standardised features, each saved once fitted (resumable).

  Returns:
    ({label: (head, info)}, (mean, std) of the training features); each head as saved (numpy
    arrays), info holds β (or the weight decay), the validation accuracy and the fit's seconds.
  """
  train, val, _ = feats
  mean = train.X.mean(axis=0)
  # One scale for every feature keeps the map isotropic: its Lipschitz constant is L / std.
  std = (train.X.std() if config.heads.get("isotropic", False) else train.X.std(axis=0)) + 1e-6
  std = np.broadcast_to(std, mean.shape)
  # The convex solvers certify their optimum in float64 where the caller enabled it.
  dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
  standard = lambda split: (jnp.asarray((split.X - mean) / std, dtype), split.y)
  # Saved heads are reused only for the same settings and the same features.
  directory = os.path.join(workdir, "heads", common.fingerprint(
      config.heads.to_json(), str(config.model.head_width), str(config.seed),
      features.identity((train.X, train.y)), features.identity((val.X, val.y))))
  os.makedirs(directory, exist_ok=True)
  fitted = {}
  for label, fit, betas in _head_fits(config, int(train.y.max()) + 1):
    path = os.path.join(directory, common.file_name(label))
    # The head is written last: its file says the fit is complete.
    if not os.path.exists(path + ".head"):
      start = time.perf_counter()
      head, beta, val_accuracy = report.fit_and_select(standard(train), standard(val), fit=fit,
                                                       betas=betas)
      info = {"beta": beta, "val_accuracy": val_accuracy,
              "seconds": time.perf_counter() - start}
      common.atomic_write(path + ".json", json.dumps(info))
      heads.save_head(path + ".head", head)
      print(f"{label}: β={beta:g} val acc={val_accuracy:.3f} ({info['seconds']:.1f} s)",
            flush=True)
    with open(path + ".json") as f:
      fitted[label] = (heads.load_head(path + ".head"), json.load(f))
  return fitted, (mean, std)


def assemble(config, model: PreActResNet18, states, fitted, standardisation) -> List[Model]:
  """The models to attack: each backbone with its own head, and each fitted head."""
  apply = assembled(model)
  # The backbones' own heads see raw features: a standardisation of (0, 1).
  identity = (jnp.zeros(model.width * 8), jnp.ones(model.width * 8))
  names = {"sgd": "standard (SGD)", "sam": "SAM"}
  models = [Model(names[name], apply,
                  (state.variables, heads.NetworkHead(**network_head.from_model_params(
                      state.params)), identity), {}) for name, state in states.items()]
  variables = states[config.heads.backbone].variables
  mean, std = (jnp.asarray(v, jnp.float32) for v in standardisation)
  for label, (head, info) in fitted.items():
    head = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), head)
    models.append(Model(label, apply, (variables, head, (mean, std)), info))
  return models


def evaluate(config, models: List[Model], test: data.Split, workdir: str) -> List[Dict]:
  """Stage 4: clean and attacked accuracy at ε = k/255 for each model, each saved when done."""
  directory = os.path.join(workdir, "evaluation",
                           common.fingerprint(config.eval.to_json(), str(config.seed),
                                       features.identity((test.X, test.y))))
  eps = [k / 255 for k in config.eval.eps_k]
  rows = []
  for model in models:
    row = common.cached_row(directory, model.label, model.params, model.info,
                            lambda model=model: report.evaluate_attacks(
        model.apply, model.params, test.X, test.y, linf_eps=eps, l2_radii=(),
        pgd_steps=config.eval.pgd_steps, apgd_steps=config.eval.apgd_steps,
        restarts=config.eval.restarts, targets=config.eval.targets,
        names=tuple(config.eval.attacks), key=jax.random.key(config.seed), bounds=(0.0, 1.0),
        batch_size=config.eval.batch_size))
    print(f"{model.label}: clean {row['clean_accuracy']:.3f}, worst-of-all "
          + ", ".join(f"{a:.3f}" for a in row["worst_linf_accuracy"]), flush=True)
    rows.append(row)
  return rows


def load_splits(config) -> data.ImageSplits:
  """The train / validation / test images of config.data (see experiments/configs/cifar.py)."""
  return data.image_splits(config.data.source, data_dir=config.data.data_dir,
                           val_fraction=config.data.val_fraction, seed=config.seed,
                           max_train=config.data.max_train, max_test=config.data.max_test)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Runs (or resumes) every stage; writes results.json, accuracy_vs_eps.png into workdir.

  Args:
    config: see experiments/configs/cifar.py.
    workdir: the run's directory: checkpoints, feature cache, heads, evaluations, results.

  Returns:
    The results written to results.json (lists indexed by model, then by ε), or the stage
    timings only when `config.stop_after` ends the run early.
  """
  _check_config(config)
  os.makedirs(workdir, exist_ok=True)
  timings = common.Timings()
  with timings.stage("data"):
    splits = load_splits(config)
  with timings.stage("backbones"):
    states = train_backbones(config, splits, workdir)
  if config.stop_after == "backbones":
    return {"timings": dict(timings)}
  model = PreActResNet18(num_classes=splits.num_classes, width=config.model.width,
                         head_width=config.model.head_width)
  with timings.stage("features"):
    feats = extract_features(config, model, states[config.heads.backbone], splits, workdir)
  if config.stop_after == "features":
    return {"timings": dict(timings)}
  with timings.stage("heads"):
    fitted, standardisation = fit_heads(config, feats, workdir)
  if config.stop_after == "heads":
    return {"timings": dict(timings)}
  models = assemble(config, model, states, fitted, standardisation)
  with timings.stage("evaluation"):
    rows = evaluate(config, models, splits.test, workdir)
  rows = [dict({k: None for k in ("beta", "val_accuracy", "seconds")}, **row) for row in rows]
  results = dict(report.collect(rows), linf_eps=[k / 255 for k in config.eval.eps_k],
                 timings=dict(timings), memory=common.memory(), n_train=len(splits.train.y),
                 n_val=len(splits.val.y), n_test=len(splits.test.y))
  report.write_run(workdir, results, config)
  print("seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
  return results
