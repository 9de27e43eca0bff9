"""The deep experiment: a backbone's last two layers replaced by a convex head, attacked in pixels.

Stages (docs/experiments.md "The deep experiment"), each resumable from what it left in the workdir:

  1. backbones   a PreAct ResNet-18 trained with SGD and one with SAM (orbax checkpoints);
  2. features    the SGD backbone's frozen features, cached per checkpoint;
  3. heads       convex heads (polynomial, ReLU, gated ReLU; plain and robust) and nonconvex
                 heads trained normally, by PGD-AT and by SSDS, on standardised features,
                 the training radius and β (or the weight decay) chosen on validation by the
                 worst-of-all accuracy at config.eval.select_eps, attacked through the backbone;
  4. evaluation  every model assembled with its backbone into one `apply(params, x)` and
                 attacked in pixel space (clean, FGSM, PGD, APGD, Square at ε = k/255; the
                 worst of all in survivor mode unless config.eval.per_attack).

`train_and_evaluate` runs them in order and writes results.json, accuracy_vs_eps.png and a
table; `config.stop_after` ends the run after a stage (the resumption tests use it). Every head
is a `cvxjax.heads.Head`, saved with `heads.save_head` once fitted.
"""

import functools
import json
import os
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cvxjax import data, features, heads, sharding
from cvxjax.models import PreActResNet18
from cvxjax.train import backbone
from cvxjax.train import head as network_head
from experiments import common, families, report

STAGES = ("backbones", "features", "heads", "evaluation")
# What `fit_heads` reports of each chosen head (None for the backbones' own heads).
CHOSEN = ("train_radius", "beta", "objective", "gap", "violation", "steps", "val_accuracy",
          "val_robust_accuracy", "seconds", "selection")


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
  if config.features.backbone not in config.backbones:
    raise ValueError(f"config.features.backbone {config.features.backbone!r} must be one of "
                     f"config.backbones {tuple(config.backbones)}")
  common.train_settings(config.train)
  families.check(config.heads)
  if any(k < 0 for k in config.eval.eps_k):
    raise ValueError(f"config.eval.eps_k must hold k >= 0 (ε = k/255), got {config.eval.eps_k}")
  if not (np.isfinite(config.eval.select_eps) and config.eval.select_eps >= 0):
    raise ValueError(f"config.eval.select_eps must be a finite pixel ε >= 0, got "
                     f"{config.eval.select_eps}")
  if not config.eval.select_attacks:
    raise ValueError("config.eval.select_attacks must name at least one attack")
  if int(config.num_seeds) < 1:
    raise ValueError(f"config.num_seeds must be >= 1, got {config.num_seeds}")
  if int(config.eval.square_queries) < 1:
    raise ValueError(f"config.eval.square_queries must be >= 1, got {config.eval.square_queries}")


def train_backbones(config, splits: data.ImageSplits, workdir: str) -> Dict[str, Any]:
  """Stage 1: {name: TrainState} for each of config.backbones, trained or restored."""
  model = PreActResNet18(num_classes=splits.num_classes, width=config.model.width,
                         head_width=config.model.head_width,
                         dtype=jnp.dtype(config.train.dtype))
  states = {}
  for index, name in enumerate(config.backbones):
    states[name] = backbone.train_backbone(
        model, common.train_settings(config.train, optimizer=name),
        (splits.train.X, splits.train.y),
        checkpoint_dir=os.path.join(workdir, f"backbone_{name}"),
        key=jax.random.fold_in(jax.random.key(config.seed), index), progress=config.progress)
  return states


def extract_features(config, model: nn.Module, state, splits: data.ImageSplits,
                     workdir: str) -> Tuple[data.Split, data.Split, data.Split]:
  """Stage 2: the backbone's features of train, val and test, from the cache when seen before."""
  feature_fn = lambda variables, x: model.apply(variables, x, method=type(model).features)
  cache = os.path.join(workdir, "features")
  return tuple(
      data.Split(features.cached(cache, f"{config.features.backbone}-{name}", feature_fn,
                                 state.variables, split.X,
                                 batch_size=config.features.batch_size,
                                 progress=config.progress), split.y)
      for name, split in (("train", splits.train), ("val", splits.val), ("test", splits.test)))


def _mesh(config) -> Optional[jax.sharding.Mesh]:
  """The heads' device mesh of config.mesh (None: one device)."""
  if config.mesh.examples * config.mesh.model == 1:
    return None
  return sharding.make_mesh(examples=config.mesh.examples, model=config.mesh.model)


def _standardised(mean: np.ndarray, std: np.ndarray, split: data.Split) -> Tuple[Any, Any]:
  """(X − mean) / std and y, in float64 where the caller enabled it (the solvers certify in it)."""
  dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
  return jnp.asarray((split.X - mean) / std, dtype), split.y


def fit_heads(config, feats: Tuple[data.Split, ...], workdir: str, *,
              robustness: Callable[[heads.Head, Tuple[np.ndarray, np.ndarray]], float],
              robustness_key: str):
  """Stage 3: every head on the standardised features, chosen on validation (resumable).

  Each family of config.heads (`families.families`) fits every candidate of its grid (radius ×
  β, the plain member's radius 0 × β), saving each once fitted, scores it on the validation
  split by `robustness` and its clean accuracy, and keeps per member the candidate
  `report.choose` picks. The test split is never looked at.

  Args:
    config: see experiments/configs/cifar.py.
    feats: train, val (and test, unused) features.
    workdir: the run's directory.
    robustness: (head as saved, (mean, std)) -> the validation accuracy that chooses (higher
      is better), such as the worst of the attacks through the backbone at one radius.
    robustness_key: names what `robustness` computes (its settings), so that its cached
      values are reused only for the same settings.

  Returns:
    ({label: (head, info)}, (mean, std) of the training features); each head as saved (numpy
    arrays), info holds the chosen "train_radius" and "beta" (or the weight decay), its
    "val_accuracy", "val_robust_accuracy", fit "seconds" and its summary ("objective", "gap",
    "violation", "steps": None where the head has none), and every candidate's numbers
    ("selection").
  """
  train, val, _ = feats
  mean = train.X.mean(axis=0)
  # One scale for every feature keeps the map isotropic: its Lipschitz constant is L / std.
  std = (train.X.std() if config.features.isotropic else train.X.std(axis=0)) + 1e-6
  std = np.broadcast_to(std, mean.shape)
  # Saved heads are reused only for the same settings and the same features.
  directory = os.path.join(workdir, "heads", common.fingerprint(
      config.heads.to_json(), config.features.to_json(), str(config.seed),
      features.identity((train.X, train.y)), features.identity((val.X, val.y))))
  scores = os.path.join(directory, "selection", common.fingerprint(robustness_key))
  os.makedirs(directory, exist_ok=True)
  train_z, val_z = _standardised(mean, std, train), _standardised(mean, std, val)
  fitted = {}
  for family in families.families(config.heads, key=jax.random.key(config.seed),
                                  progress=config.progress, mesh=_mesh(config)):
    X, y = train_z[0], family.labels(train_z[1])
    val_X, val_y = val_z[0], family.labels(val_z[1])
    candidates = []
    for candidate in family.candidates():
      path = os.path.join(directory, common.file_name(candidate.label))
      # The head is written last: its file says the fit is complete.
      if not os.path.exists(path + ".head"):
        start = time.perf_counter()
        head = candidate.fit(X, y)
        info = {"train_radius": candidate.radius, "beta": candidate.beta,
                "val_accuracy": report.accuracy(head, val_X, val_y),
                "seconds": time.perf_counter() - start}
        common.atomic_write(path + ".json", json.dumps(info))
        heads.save_head(path + ".head", head)
      head = heads.load_head(path + ".head")
      with open(path + ".json") as f:
        info = json.load(f)
      scored = common.cached_row(scores, candidate.label, head, {}, lambda head=head: {
          "val_robust_accuracy": robustness(head, (mean, std))})
      info["val_robust_accuracy"] = scored["val_robust_accuracy"]
      # Each fit's objective and certified gap, so a head that is not at its optimum says so.
      info.update({k: v for k, v in head.summary().items() if k != "width"})
      candidates.append((head, info))
    for member, rows in ((family.plain, [c for c in candidates if c[1]["train_radius"] == 0]),
                         (family.robust, candidates)):
      if member is None:
        continue
      head, info = rows[report.choose([info for _, info in rows])]
      fitted[member] = (head, dict(info, selection=[info for _, info in rows]))
      print(f"{member}: r={info['train_radius']:g} β={info['beta']:g} val acc "
            f"{info['val_accuracy']:.3f}, val robust {info['val_robust_accuracy']:.3f}"
            + ("" if info["objective"] is None else f", objective {info['objective']:.6g}, "
               + ("not certified" if info["gap"] is None else
                  f"certified gap {info['gap']:.2g}")),
            flush=True)
  return fitted, (mean, std)


def network_params(variables, head: heads.Head, standardisation) -> Tuple:
  """The parameters of an `assembled` network: the backbone's, the head's and the
  standardisation's, in float32 as the backbone computes."""
  as_float32 = lambda a: jnp.asarray(a, jnp.float32)
  return variables, jax.tree.map(as_float32, head), tuple(map(as_float32, standardisation))


def assemble(config, model: PreActResNet18, states, fitted, standardisation) -> List[Model]:
  """The models to attack: each backbone with its own head, and each fitted head."""
  apply = assembled(model)
  # The backbones' own heads see raw features: a standardisation of (0, 1).
  identity = (jnp.zeros(model.width * 8), jnp.ones(model.width * 8))
  names = {"sgd": "standard (SGD)", "sam": "SAM"}
  models = [Model(names[name], apply,
                  (state.variables, heads.NetworkHead(**network_head.from_model_params(
                      state.params)), identity), {}) for name, state in states.items()]
  variables = states[config.features.backbone].variables
  for label, (head, info) in fitted.items():
    models.append(Model(label, apply, network_params(variables, head, standardisation), info))
  return models


def _attack_settings(config) -> Dict[str, Any]:
  """The settings of `report.evaluate_attacks` that selection and evaluation share."""
  return dict(pgd_steps=config.eval.pgd_steps, apgd_steps=config.eval.apgd_steps,
              restarts=config.eval.restarts, targets=config.eval.targets,
              square_queries=config.eval.square_queries, key=jax.random.key(config.seed),
              bounds=(0.0, 1.0), batch_size=config.eval.batch_size)


def attacked_robustness(config, apply: Callable, variables, val: data.Split):
  """What chooses the heads: (robustness, robustness_key) for `fit_heads`.

  robustness(head, standardisation) is the validation accuracy of the whole network (backbone
  `variables`, the head on standardised features) under the worst of config.eval.select_attacks
  at ℓ∞ radius config.eval.select_eps in pixel space (survivor mode); the key names its
  settings, the backbone and the validation split.
  """
  settings = _attack_settings(config)

  def robustness(head: heads.Head, standardisation) -> float:
    params = network_params(variables, head, standardisation)
    return report.evaluate_attacks(
        apply, params, val.X, val.y, linf_eps=[config.eval.select_eps], l2_radii=(),
        names=tuple(config.eval.select_attacks), per_attack=False,
        **settings)["worst_linf_accuracy"][0]

  key = json.dumps(dict({k: v for k, v in settings.items() if k != "key"},
                        eps=config.eval.select_eps, attacks=list(config.eval.select_attacks),
                        seed=config.seed), sort_keys=True)
  return robustness, key + features.identity(variables) + features.identity((val.X, val.y))


def evaluate(config, models: List[Model], test: data.Split, workdir: str) -> List[Dict]:
  """Stage 4: clean and attacked accuracy at ε = k/255 for each model, each saved when done.

  The worst of all attacks runs in survivor mode (each attack only on the examples every earlier
  one failed on) unless config.eval.per_attack asks for every attack's accuracy. A network
  listed twice (a head chosen by two members of its family) is attacked once.
  """
  directory = os.path.join(workdir, "evaluation",
                           common.fingerprint(config.eval.to_json(), str(config.seed),
                                              features.identity((test.X, test.y))))
  eps = [k / 255 for k in config.eval.eps_k]
  found = {}

  def attacked(model: Model) -> Dict[str, Any]:
    network = features.identity(model.params)
    if network not in found:
      found[network] = report.evaluate_attacks(
          model.apply, model.params, test.X, test.y, linf_eps=eps, l2_radii=(),
          names=tuple(config.eval.attacks), per_attack=config.eval.per_attack,
          **_attack_settings(config))
    return dict(found[network])

  rows = []
  for model in models:
    row = common.cached_row(directory, model.label, model.params, model.info,
                            lambda model=model: attacked(model))
    print(f"{model.label}: clean {row['clean_accuracy']:.3f}, worst-of-all "
          + ", ".join(f"{a:.3f} at {k}/255" for a, k in zip(row["worst_linf_accuracy"],
                                                            config.eval.eps_k, strict=True)),
          flush=True)
    rows.append(row)
  return rows


def load_splits(config) -> data.ImageSplits:
  """The train / validation / test images of config.data (see experiments/configs/cifar.py)."""
  return data.image_splits(config.data.source, data_dir=config.data.data_dir,
                           val_fraction=config.data.val_fraction, seed=config.seed,
                           max_train=config.data.max_train, max_test=config.data.max_test,
                           max_val=config.data.max_val)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Runs (or resumes) every stage; writes results.json, accuracy_vs_eps.png into workdir.

  With `config.num_seeds` > 1 the whole run repeats for the seeds seed, seed + 1, … (split,
  backbones, heads and attacks all follow the seed), each in workdir/seed_<seed>, and workdir
  gets their mean ± standard deviation (`report.over_seeds`).

  Args:
    config: see experiments/configs/cifar.py.
    workdir: the run's directory: checkpoints, feature cache, heads, evaluations, results.

  Returns:
    The results written to results.json (lists indexed by model, then by ε), or the stage
    timings only when `config.stop_after` ends the run early.
  """
  _check_config(config)
  if config.num_seeds > 1:
    return _train_seeds(config, workdir)
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
    feats = extract_features(config, model, states[config.features.backbone], splits, workdir)
  if config.stop_after == "features":
    return {"timings": dict(timings)}
  with timings.stage("heads"):
    robustness, robustness_key = attacked_robustness(
        config, assembled(model), states[config.features.backbone].variables, splits.val)
    fitted, standardisation = fit_heads(config, feats, workdir, robustness=robustness,
                                        robustness_key=robustness_key)
  if config.stop_after == "heads":
    return {"timings": dict(timings)}
  models = assemble(config, model, states, fitted, standardisation)
  with timings.stage("evaluation"):
    rows = evaluate(config, models, splits.test, workdir)
  rows = [dict(dict.fromkeys(CHOSEN), **row) for row in rows]
  results = dict(report.collect(rows), linf_eps=[k / 255 for k in config.eval.eps_k],
                 linf_eps_k=list(config.eval.eps_k), select_eps=config.eval.select_eps,
                 timings=dict(timings), memory=common.memory(), n_train=len(splits.train.y),
                 n_val=len(splits.val.y), n_test=len(splits.test.y))
  report.write_run(workdir, results, config)
  print("seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
  return results


def _train_seeds(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """`train_and_evaluate` once per seed, then the runs' mean and spread in workdir."""
  seeds = list(range(config.seed, config.seed + config.num_seeds))
  runs = []
  for seed in seeds:
    single = config.copy_and_resolve_references()
    single.seed, single.num_seeds = seed, 1
    runs.append(train_and_evaluate(single, os.path.join(workdir, f"seed_{seed}")))
  if config.stop_after is not None:
    return {"timings": [run["timings"] for run in runs]}
  results = report.over_seeds(runs, seeds)
  report.write_run(workdir, results, config)
  return results
