r"""Certified accuracy: a 1-Lipschitz SOC network with convex heads in place of its last layer.

  python -m experiments.certified --config=experiments/configs/certified.py:digits \
      --workdir=runs/certified_digits

See experiments/configs/certified.py for the CIFAR-10 command and the variants, and
`cvxjax.certified_pipeline` for the stages. Writes results.json, config.json and
accuracy_vs_eps.png into --workdir and prints a table (one row per network); rerunning resumes
where it stopped.
"""

import os

# XLA's and OpenBLAS's thread pools contend on small CPUs: one BLAS thread (before numpy loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# XLA's concurrency-optimised CPU scheduler deadlocks on programs that run batched LAPACK calls
# side by side, as the ReLU barrier's Newton step does; set before jax starts its backend.
if "xla_cpu_enable_concurrency_optimized_scheduler" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_enable_concurrency_optimized_scheduler=false").strip()

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from cvxjax import certified_pipeline  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment configuration file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory of the run: checkpoints, caches, results.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  # The polynomial heads' solver certifies its optimum in float64; the network stays float32.
  jax.config.update("jax_enable_x64", True)
  certified_pipeline.train_and_certify(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
