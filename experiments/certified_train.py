"""Certified ℓ₂ robustness: a 1-Lipschitz SOC backbone with a linear, convex or nonconvex head.

Singla & Feizi's certificate replaces the last linear layer of a 1-Lipschitz network by a
one-hidden-layer MLP; cvxjax's convex heads are such MLPs, and the polynomial one has an exact
radius (docs/math.md §7). Every head is a `cvxjax.heads.Head`, certified by its own
`certified_radius`. Stages, each resumable from the workdir:

  1. backbone    an `SOCNet` trained with `train.backbone.train_backbone` (orbax checkpoints);
                 the Lipschitz bound L of its features computed from its filters and checked
                 against power iteration on test images;
  2. features    its frozen features, cached;
  3. heads       the heads of `cifar_train.fit_heads` on isotropically standardised features
                 (one scale s for all, so the map to them is L/s-Lipschitz);
  4. evaluation  per model, certified accuracy at ℓ₂ radii k/255 in pixel space (the SOC's own
                 linear layer: the pairwise margin bound; polynomial heads: the exact radius;
                 ReLU and nonconvex heads: the Lipschitz margin bound; gated heads: the
                 gate-aware bound), all divided by the backbone's L/s, beside the accuracy
                 under ℓ₂ attacks at the same radii, which no certificate may exceed.
"""

import os
from typing import Any, Dict, List

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cvxjax import certify, data, features, heads
from cvxjax.models import SOCNet, soc
from cvxjax.train import backbone
from experiments import cifar_train, common, families, report

STAGES = ("backbone", "features", "heads", "evaluation")
# Test images whose Jacobian norm is estimated by power iteration, and the iterations.
_POWER_IMAGES = 8
_POWER_ITERATIONS = 50


def _model(config, splits: data.ImageSplits) -> SOCNet:
  """The SOCNet of config.model, centred on the training images' per-channel mean."""
  mean = tuple(round(float(m), 6) for m in splits.train.X.mean(axis=(0, 1, 2)))
  return SOCNet(num_classes=splits.num_classes, widths=tuple(config.model.widths),
                depth=config.model.depth, train_terms=config.model.train_terms,
                eval_terms=config.model.eval_terms, input_mean=mean)


def lipschitz_report(model: SOCNet, variables, images: np.ndarray, key: jax.Array) -> Dict:
  """The computed Lipschitz bound of the features and power-iteration estimates below it.

  Args:
    model: the network. variables: its {"params": ...}.
    images: (m, 32, 32, 3) images at which the Jacobian's norm is estimated.
    key: PRNG key of the power iterations' starts.

  Returns:
    {"bound": L, "power_iteration": [per image]}; every estimate is ≤ L if the bound is sound.
  """
  bound = float(soc.lipschitz_bound(model, variables["params"]))
  features_of = lambda x: model.apply(variables, x[None], method=SOCNet.features)[0]
  estimate = jax.jit(lambda x, k: soc.jacobian_norm_estimate(features_of, x, k,
                                                             _POWER_ITERATIONS))
  keys = jax.random.split(key, len(images))
  return {"bound": bound, "power_iteration": [float(estimate(jnp.asarray(x), k))
                                             for x, k in zip(images, keys, strict=True)]}


def certified_accuracy(head: heads.Head, standardisation, feats: np.ndarray, y: np.ndarray,
                       lipschitz: float, radii) -> List[float]:
  """The fraction of rows of `feats` (n, d) that `head`, on standardised features, certifies
  at each of `radii` (pixel-space ℓ₂), the map from pixels to the features being
  `lipschitz`-Lipschitz (the standardisation's scale is divided into it here)."""
  dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
  mean, std = standardisation
  Z = (jnp.asarray(feats, dtype) - mean) / std
  scale = float(np.asarray(std).reshape(-1)[0])  # isotropic (checked): one scale
  certified = head.certified_radius(Z, y, backbone_lipschitz=lipschitz / scale)
  return certify.certified_accuracy(certified, radii).tolist()


def evaluate(config, models: List[cifar_train.Model], lipschitz: float,
             test_features: np.ndarray, test: data.Split, workdir: str) -> List[Dict[str, Any]]:
  """Stage 4: certified and attacked ℓ₂ accuracy at radii k/255, each model saved when done.

  Args:
    config: see experiments/configs/certified.py.
    models: the assembled networks (the SOC's own and one per head; `heads.kind` in info).
    lipschitz: the Lipschitz constant of the backbone's map from pixels to features.
    test_features: (n, d) the backbone's features of the test images.
    test: the test images and labels.
    workdir: the run's directory.

  Returns:
    Rows with "certified_l2_accuracy" and the ℓ₂ attack accuracies (`report.evaluate_attacks`).

  Raises:
    AssertionError: if a certified accuracy exceeds the attacked one (an unsound certificate).
  """
  radii = [k / 255 for k in config.eval.radii_k]
  directory = os.path.join(workdir, "evaluation", common.fingerprint(
      config.eval.to_json(), str(config.seed), features.identity((test.X, test.y))))

  def compute(model: cifar_train.Model) -> Dict[str, Any]:
    row = report.evaluate_attacks(
        model.apply, model.params, test.X, test.y, linf_eps=(), l2_radii=radii,
        pgd_steps=config.eval.pgd_steps, apgd_steps=config.eval.apgd_steps,
        restarts=config.eval.restarts, names=tuple(config.eval.attacks),
        square_queries=config.eval.square_queries, per_attack=config.eval.per_attack,
        key=jax.random.key(config.seed), bounds=(0.0, 1.0), batch_size=config.eval.batch_size)
    _, head, standardisation = model.params
    row["certified_l2_accuracy"] = certified_accuracy(head, standardisation, test_features,
                                                      test.y, lipschitz, radii)
    return row

  rows = []
  for model in models:
    row = common.cached_row(directory, model.label, model.params, model.info,
                            lambda model=model: compute(model))
    if any(c > a for c, a in zip(row["certified_l2_accuracy"], row["worst_l2_accuracy"],
                                 strict=True)):
      raise AssertionError(f"{model.label}: certified accuracy {row['certified_l2_accuracy']} "
                           f"exceeds attacked accuracy {row['worst_l2_accuracy']}")
    print(f"{model.label}: clean {row['clean_accuracy']:.3f}, certified "
          + ", ".join(f"{a:.3f}" for a in row["certified_l2_accuracy"]) + ", attacked "
          + ", ".join(f"{a:.3f}" for a in row["worst_l2_accuracy"]), flush=True)
    rows.append(row)
  return rows


def _check_config(config: ml_collections.ConfigDict) -> None:
  common.check_stop_after(config.stop_after, STAGES)
  if not config.features.isotropic:
    raise ValueError("config.features.isotropic must be True: per-feature scales would change "
                     "the Lipschitz constant feature by feature")
  if not config.eval.radii_k or any(k <= 0 for k in config.eval.radii_k):
    raise ValueError(f"config.eval.radii_k must hold k > 0 (radius k/255), got "
                     f"{config.eval.radii_k}")
  common.train_settings(config.train)
  families.check(config.heads)


def train_and_certify(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Runs (or resumes) every stage; writes results.json, accuracy_vs_eps.png into workdir.

  Args:
    config: see experiments/configs/certified.py.
    workdir: the run's directory.

  Returns:
    The results written to results.json, or the stage timings only when `config.stop_after`
    ends the run early.
  """
  _check_config(config)
  os.makedirs(workdir, exist_ok=True)
  timings = common.Timings()
  with timings.stage("backbone"):
    splits = cifar_train.load_splits(config)
    model = _model(config, splits)
    state = backbone.train_backbone(model, common.train_settings(config.train),
                                    (splits.train.X, splits.train.y),
                                    checkpoint_dir=os.path.join(workdir, "backbone_soc"),
                                    key=jax.random.key(config.seed), progress=config.progress)
    variables = state.variables
    lipschitz = lipschitz_report(model, variables, splits.test.X[:_POWER_IMAGES],
                                 jax.random.key(config.seed))
  print(f"backbone: Lipschitz bound {lipschitz['bound']:.6f}, power iteration at most "
        f"{max(lipschitz['power_iteration']):.6f}", flush=True)
  if config.stop_after == "backbone":
    return {"timings": dict(timings)}

  with timings.stage("features"):
    feats = cifar_train.extract_features(config, model, state, splits, workdir)
  if config.stop_after == "features":
    return {"timings": dict(timings)}

  with timings.stage("heads"):
    # Chosen on certificates: the validation accuracy certified at select_radius_k/255.
    val_features, select_radius = feats[1], config.eval.select_radius_k / 255
    robustness = lambda head, standardisation: certified_accuracy(
        head, standardisation, val_features.X, val_features.y, lipschitz["bound"],
        [select_radius])[0]
    fitted, (mean, std) = cifar_train.fit_heads(
        config, feats, workdir, robustness=robustness,
        robustness_key=f"certified at {select_radius!r}, L = {lipschitz['bound']!r}")
  if config.stop_after == "heads":
    return {"timings": dict(timings)}

  with timings.stage("evaluation"):
    width = model.widths[-1]
    apply = cifar_train.assembled(model)
    own_head = heads.LinearHead(**variables["params"]["head"]["output"])
    # The SOC's own layer sees the raw features: a standardisation of (0, 1).
    own = cifar_train.Model("SOC (linear layer)", apply,
                            (variables, own_head, (jnp.zeros(width), jnp.ones(width))),
                            {"kind": heads.kind(own_head)})
    models = [own] + [
        cifar_train.Model(label, apply, cifar_train.network_params(variables, head, (mean, std)),
                          dict(info, kind=heads.kind(head)))
        for label, (head, info) in fitted.items()]
    rows = evaluate(config, models, lipschitz["bound"], feats[2].X, splits.test, workdir)
  rows = [dict(dict.fromkeys(cifar_train.CHOSEN), **row) for row in rows]
  scale = float(np.asarray(std).reshape(-1)[0])
  results = dict(report.collect(rows), l2_radii=[k / 255 for k in config.eval.radii_k],
                 l2_radii_k=list(config.eval.radii_k), select_radius=select_radius,
                 lipschitz=lipschitz, feature_scale=scale, timings=dict(timings),
                 n_train=len(splits.train.y), n_val=len(splits.val.y),
                 n_test=len(splits.test.y))
  report.write_run(workdir, results, config)
  return results
