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

from cvxjax import data  # noqa: E402
from experiments import families, report  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment configuration file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for results.json and the plots.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Fits every head, evaluates it on the test split, writes results and plots into workdir.

  Float64 is the caller's choice: `main` enables `jax_enable_x64` (the certified gaps need it).

  Args:
    config: see experiments/configs/wbc.py.
    workdir: output directory.

  Returns:
    The results dict written to results.json (lists indexed by model, then by radius).
  """
  heads = families.families(config.heads, key=jax.random.key(config.seed),
                            progress=config.progress)
  splits = data.breast_cancer_splits(config.seed, config.val_fraction, config.test_fraction,
                                     max_train=config.n_train, num_features=config.num_features)
  attack_settings = dict(pgd_steps=config.pgd_steps, apgd_steps=config.apgd_steps,
                         restarts=config.restarts, square_queries=config.square_queries,
                         key=jax.random.PRNGKey(config.seed))
  rows = []
  for family, (label, radius) in ((f, named) for f in heads
                                  for named in zip(f.names, f.radii, strict=True)):
    train, val, test = ((s.X, family.labels(s.y)) for s in (splits.train, splits.val,
                                                            splits.test))
    start = time.perf_counter()
    fitted, beta, validation = report.fit_and_select(
        train, val, fit=lambda X, y, beta, family=family, radius=radius: family.fit(
            X, y, radius, beta), betas=family.betas,
        robustness=lambda head, val=val: report.evaluate_attacks(
            report.head_scores, head, *val, linf_eps=(), l2_radii=[config.select_radius],
            names=tuple(config.select_attacks), per_attack=False, **attack_settings)[
                "worst_l2_accuracy"][0])
    seconds = time.perf_counter() - start
    row = report.evaluate_head(fitted, *test, linf_eps=config.linf_eps, l2_radii=config.l2_radii,
                               **attack_settings)
    rows.append(dict(row, **validation, model=label, family=family.type, train_radius=radius,
                     beta=beta, seconds=seconds))
    # A solver stops at a relative gap of tol; a much larger gap means it stalled.
    stalled = (row["gap"] is not None and family.tol is not None
               and row["gap"] > 10 * family.tol * abs(row["objective"]))
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
