r"""Breast-cancer experiment: polynomial, convex ReLU and gated-ReLU heads, plain and robust,
against the nonconvex two-layer network trained normally, by PGD-AT and by SSDS.

  python -m experiments.wbc --config=experiments/configs/wbc.py --workdir=/tmp/wbc

See experiments/configs/wbc.py for the settings and the smoke variant. Writes results.json,
config.json and accuracy_vs_eps.png into --workdir and prints a table (one row per model).
"""

import os

# XLA's and OpenBLAS's thread pools contend on small CPUs: one BLAS thread (before numpy loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# XLA's concurrency-optimised CPU scheduler deadlocks on programs that run batched LAPACK calls
# side by side, as the ReLU barrier's Newton step does; set before jax starts its backend.
if "xla_cpu_enable_concurrency_optimized_scheduler" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_enable_concurrency_optimized_scheduler=false").strip()

import time  # noqa: E402

import jax  # noqa: E402
import ml_collections  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from cvxjax import data, heads, poly, relu  # noqa: E402
from cvxjax.train import adversarial, head  # noqa: E402
from experiments import common, report  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment configuration file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for results.json and the plots.")


def _signs(y):
  """Labels ±1, as the convex heads take them."""
  return y


def _classes(y):
  """Labels ±1 as classes 0/1, as the nonconvex heads take them (y > 0)."""
  return (y > 0).astype(int)


def _models(config: ml_collections.ConfigDict):
  """(label, family, training radius, fit(X, y, β), the βs, the labels the head takes) for every
  head of the experiment."""
  for r in config.radii:
    yield (f"poly r={r:g}", "poly", r, lambda X, y, beta, r=r: poly.fit(
        X, y, r=float(r), beta=beta, tol=config.tol, max_steps=config.max_steps,
        progress=config.progress), config.betas, _signs)
  key = jax.random.key(config.seed)
  for family in config.relu.families:
    for eps in common.relu_radii(family, config.relu.eps):
      yield (f"{family} ε={eps:g}", family, eps,
             lambda X, y, beta, eps=eps, family=family: relu.fit(
                 X, y, eps=float(eps), p=config.relu.p, beta=beta,
                 num_patterns=config.relu.num_patterns, gated=family == "gated", key=key,
                 tol=config.relu.tol, max_steps=config.relu.max_steps,
                 progress=config.progress), config.relu.betas, _signs)
  network = config.network
  for method in network.methods:
    adversary = adversarial.from_config(ml_collections.ConfigDict(dict(
        method=method, eps=0.0 if method == "standard" else network.eps, norm=network.norm,
        pgd_steps=network.pgd_steps)))
    yield (report.network_label(method, network.norm, adversary.eps), "network", adversary.eps,
           lambda X, y, weight_decay, adversary=adversary: heads.NetworkHead(**head.fit(
               X, y, hidden=network.hidden, steps=network.steps,
               learning_rate=network.learning_rate, weight_decay=weight_decay, key=key,
               adversary=adversary, progress=config.progress)),
           network.weight_decays, _classes)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Fits every head, evaluates it on the test split, writes results and plots into workdir.

  Float64 is the caller's choice: `main` enables `jax_enable_x64` (the certified gaps need it).

  Args:
    config: see experiments/configs/wbc.py.
    workdir: output directory.

  Returns:
    The results dict written to results.json (lists indexed by model, then by radius).
  """
  splits = data.breast_cancer_splits(config.seed, config.val_fraction, config.test_fraction,
                                     max_train=config.n_train, num_features=config.num_features)
  key = jax.random.PRNGKey(config.seed)
  rows = []
  for label, family, radius, fit, betas, labels in _models(config):
    train, val, test = ((s.X, labels(s.y)) for s in (splits.train, splits.val, splits.test))
    start = time.perf_counter()
    fitted, beta, val_accuracy = report.fit_and_select(train, val, fit=fit, betas=betas)
    seconds = time.perf_counter() - start
    row = report.evaluate_head(fitted, *test, linf_eps=config.linf_eps, l2_radii=config.l2_radii,
                               pgd_steps=config.pgd_steps, apgd_steps=config.apgd_steps,
                               restarts=config.restarts, square_queries=config.square_queries,
                               key=key)
    rows.append(dict(row, model=label, family=family, train_radius=radius, beta=beta,
                     val_accuracy=val_accuracy, seconds=seconds))
    # The poly solver stops at a relative gap of tol; a much larger gap means it stalled.
    stalled = row["gap"] is not None and row["gap"] > 10 * config.tol * abs(row["objective"])
    objective = "—" if row["objective"] is None else f"{row['objective']:.6g}"
    print(f"{label}  β={beta:g}  objective={objective}  width={row['width']}  "
          f"test acc={row['clean_accuracy']:.3f}  ({seconds:.1f} s fit)"
          + ("  WARNING: the solver stalled; this head is not certified optimal" * stalled),
          flush=True)
  results = dict(report.collect(rows), linf_eps=config.linf_eps, l2_radii=config.l2_radii,
                 n_train=len(splits.train.y), n_val=len(splits.val.y), n_test=len(splits.test.y))
  report.write_run(workdir, results, config)
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  jax.config.update("jax_enable_x64", True)
  train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
