r"""Per-example cost of each stage of the CIFAR-10 experiment, for planning the full GPU run.

  python benchmarks/cifar_stage_costs.py                # width 64 (the real network), ~2 min
  python benchmarks/cifar_stage_costs.py --width=8      # the digits variant's network

For the PreAct ResNet-18 of `cvxjax.models` it compiles one SGD step, one SAM step, one
feature extraction, one attack iteration (forward and backward through the whole network,
as every PGD / APGD iteration does) and one Square query (a forward pass), and reports for
each: XLA's own count of floating-point operations per example (`compiled.cost_analysis()`),
the memory XLA plans for one batch (`compiled.memory_analysis()`), and the measured
wall-clock seconds per example on this machine (median of --repeats). It then multiplies the
FLOPs by the work of the full run (config `experiments/configs/cifar.py`) and divides by an
assumed sustained throughput (--tflops) to give the expected time per stage on one GPU.
Results go to benchmarks/results/cifar_stage_costs.json.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import costs  # noqa: E402
from cvxjax import attacks  # noqa: E402
from cvxjax.models import PreActResNet18  # noqa: E402
from cvxjax.train import backbone  # noqa: E402
from experiments import families  # noqa: E402
from experiments.configs import cifar as cifar_config  # noqa: E402

flags.DEFINE_integer("width", 64, "Network width (64: the real PreAct ResNet-18).")
flags.DEFINE_integer("batch", 128, "Batch size of the measured calls.")
flags.DEFINE_integer("repeats", 3, "Timed calls per stage (the median is reported).")
# ResNet-18 on 32×32 images keeps a GPU's matrix units far from busy: ~10% of an A100's peak.
flags.DEFINE_float("tflops", 25.0, "Assumed sustained TFLOP/s of the GPU for the projection.")
flags.DEFINE_string("out", "benchmarks/results/cifar_stage_costs.json", "JSON output.")
FLAGS = flags.FLAGS


def _measure(fn, *args):
  return costs.measure(fn, *args, repeats=FLAGS.repeats)


def main(argv):
  del argv
  config = cifar_config.get_config()
  model = PreActResNet18(width=FLAGS.width)
  n = FLAGS.batch
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.random((n, 32, 32, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, n), jnp.int32)
  key = jax.random.key(0)
  rows = {}
  for optimizer in ("sgd", "sam"):
    opt = backbone.make_optimizer(backbone.TrainSettings(optimizer=optimizer),
                                  steps_per_epoch=100)
    variables = model.init(key, images[:1])
    state = backbone.TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                                batch_stats=variables["batch_stats"],
                                opt_state=opt.init(variables["params"]), adversarial={})
    step = lambda s, x, y, k, opt=opt: backbone.train_step(model, opt, s, x, y, k)
    rows[f"train step ({optimizer})"] = _measure(step, state, images, labels, key)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  rows["features"] = _measure(
      lambda v, x: model.apply(v, x, method=PreActResNet18.features), variables, images)
  logits = lambda v, x: model.apply(v, x)
  attack_step = lambda v, x: jax.grad(
      lambda x: jnp.sum(attacks.log_likelihood(logits(v, x), labels)))(x)
  rows["attack iteration"] = _measure(attack_step, variables, images)
  # A Square query is one forward pass through the whole network, no gradient.
  rows["square query"] = _measure(logits, variables, images)

  # The full run's work, in examples through each computation (experiments/configs/cifar.py).
  n_train = int(50000 * (1 - config.data.val_fraction))
  ev = config.eval
  gradient_steps = {"fgsm": 1, "pgd": ev.pgd_steps, "apgd-ce": ev.apgd_steps,
                    "apgd-dlr": ev.apgd_steps, "apgd-t": ev.apgd_steps * ev.targets}
  # ε = 0 costs nothing: `robust_accuracy` skips the attacks there. Every attack on every test
  # image: an upper bound, since survivor mode attacks only what earlier attacks left standing.
  radii = sum(k > 0 for k in ev.eps_k)
  iterations = sum(gradient_steps[a] for a in ev.attacks if a in gradient_steps) * radii
  queries = (ev.square_queries if "square" in ev.attacks else 0) * radii
  # The networks the evaluation attacks: the backbones with their own heads, each chosen head.
  models = len(config.backbones) + sum(
      (family.plain is not None) + (family.robust is not None)
      for family in families.families(config.heads, key=key))
  work = {"train step (sgd)": config.train.epochs * n_train,
          "train step (sam)": config.train.epochs * n_train,
          "features": 60000,
          "attack iteration": 10000 * iterations * models,
          "square query": 10000 * queries * models}
  report = {"width": FLAGS.width, "batch": n, "assumed_tflops": FLAGS.tflops,
            "device": str(jax.devices()[0]), "stages": {}}
  print(f"PreAct ResNet-18, width {FLAGS.width}, batch {n}, on {jax.devices()[0]}")
  print(f"{'computation':>22}  {'GFLOP/example':>13}  {'XLA memory MB':>13}  "
        f"{'CPU s/example':>13}  {'full-run examples':>17}  {'GPU hours':>9}")
  for name, (gflops, planned, seconds) in rows.items():
    per_example = gflops / n
    hours = per_example * 1e9 * work[name] / (FLAGS.tflops * 1e12) / 3600
    report["stages"][name] = dict(gflop_per_example=per_example, xla_memory_mb=planned / 2**20,
                                  cpu_seconds_per_example=seconds / n,
                                  full_run_examples=work[name], projected_gpu_hours=hours)
    print(f"{name:>22}  {per_example:13.3f}  {planned / 2**20:13.0f}  {seconds / n:13.5f}  "
          f"{work[name]:17.3g}  {hours:9.2f}")
  os.makedirs(os.path.dirname(FLAGS.out), exist_ok=True)
  with open(FLAGS.out, "w") as f:
    json.dump(report, f, indent=1)


if __name__ == "__main__":
  app.run(main)
