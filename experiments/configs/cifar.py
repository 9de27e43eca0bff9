r"""A PreAct ResNet-18's last two layers replaced by convex heads, attacked in pixel space.

Trains the backbone with SGD and with SAM, extracts the SGD backbone's frozen features, fits
polynomial, ReLU and gated-ReLU heads (plain and robust) and nonconvex heads (trained normally,
by PGD adversarial training and by SSDS) on them, each robust head's training radius and every
head's β (or weight decay) chosen on the validation split by its worst-of-all accuracy at
ε = config.eval.select_eps, and reports each head's chosen settings, fitting time and the
clean and attacked accuracy (FGSM, PGD, APGD, Square) at ε = k/255 of every assembled network
(`experiments.cifar_train`; docs/math.md §5, §6).

Full CIFAR-10 run (one GPU; the data prepared once with TFDS, see the README):

  python -m experiments.cifar --config=experiments/configs/cifar.py --workdir=runs/cifar \
      --config.data.data_dir=~/tensorflow_datasets

From a local copy of the binary archive instead (cifar-10-binary.tar.gz or its folder):

  python -m experiments.cifar --config=experiments/configs/cifar.py --workdir=runs/cifar \
      --config.data.source=archive --config.data.data_dir=/data/cifar-10-batches-bin

Offline on a CPU in minutes (scikit-learn's digits resized to 32×32×3, a narrow network):

  python -m experiments.cifar --config=experiments/configs/cifar.py:digits --workdir=runs/digits

The same over three seeds (split, backbones, heads, attacks), with mean ± standard deviation:

  python -m experiments.cifar --config=experiments/configs/cifar.py:digits --workdir=runs/digits3 \
      --config.num_seeds=3

Smoke run (tiny; the tests use it):

  python -m experiments.cifar --config=experiments/configs/cifar.py:smoke --workdir=/tmp/smoke

Several GPUs (the convex heads data-parallel over 8 devices; on several hosts also
--config.distributed=True, which calls jax.distributed.initialize()):

  python -m experiments.cifar --config=experiments/configs/cifar.py --workdir=runs/cifar \
      --config.mesh.examples=8

The heads are the entries of config.heads (experiments/families.py), e.g. fewer training radii
for the robust polynomial head: --config.heads.poly.radii='(0.0, 1.0)'; the nonconvex heads
are three entries (network, pgd, ssds), each with its own settings. Every stage resumes from
the workdir: rerun the same command after an interruption.
"""

import ml_collections
from ml_collections import config_dict

from cvxjax.train import backbone
from experiments import common

NETWORK_HEADS = ("network", "pgd", "ssds")  # the nonconvex heads: normal, PGD-AT, SSDS training


def set_heads(config: ml_collections.ConfigDict, labels, **settings) -> None:
  """The same settings on the entries `labels` of config.heads."""
  for label in labels:
    config.heads[label].update(settings)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The experiment's settings; `variant` is "" (CIFAR-10), "digits" or "smoke"."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  # > 1: the whole run for seeds seed, seed + 1, …; results.json and the table give mean ± std.
  config.num_seeds = 1
  config.progress = True
  config.distributed = False  # several hosts: jax.distributed.initialize() before anything
  config.stop_after = config_dict.placeholder(str)  # end after this stage (cifar_train.STAGES)

  config.data = ml_collections.ConfigDict()
  config.data.source = "tfds"  # "tfds", "archive" (the CIFAR-10 binary format) or "digits"
  config.data.data_dir = config_dict.placeholder(str)  # TFDS data dir, or the archive's path
  config.data.val_fraction = 0.1  # carved out of the training set; β and heads chosen on it
  config.data.max_train = config_dict.placeholder(int)  # caps for quick runs; None: all
  config.data.max_test = config_dict.placeholder(int)
  config.data.max_val = config_dict.placeholder(int)  # selection attacks each candidate on val

  config.model = ml_collections.ConfigDict()
  config.model.width = 64  # channels of the first stage; features have 8 × width dimensions
  config.model.head_width = 256  # the two-layer head 512 → 256 → 10

  config.backbones = ("sgd", "sam")  # the standard network and the SAM network
  # The backbones' `TrainSettings` (CIFAR-10's usual recipe) with its adversary nested.
  config.train = common.train_config(backbone.TrainSettings())
  config.train.dtype = "bfloat16"  # mixed precision: GPUs compute it natively (parameters f32)

  config.features = ml_collections.ConfigDict()
  config.features.backbone = "sgd"  # whose frozen features the heads are trained on
  config.features.batch_size = 500
  config.features.isotropic = False  # True: one scale for all features; False: one per feature
  # Devices of the heads' mesh (cvxjax.sharding): examples data-parallel (must divide the
  # training set), heads or patterns model-parallel; 1 × 1 is one device.
  config.mesh = ml_collections.ConfigDict(dict(examples=1, model=1))

  # The heads on the standardised features, one entry per family (experiments/families.py).
  # Each member chooses its training radius and β on validation; the plain ones train at 0.
  config.heads = ml_collections.ConfigDict()
  # ℓ₂ training radii r on standardised features: the robust head's r is chosen among them (×
  # betas) on validation; the plain head trains at r = 0. They reach where clean accuracy fails.
  config.heads.poly = ml_collections.ConfigDict(dict(
      type="poly", radii=(0.0, 0.5, 1.0, 2.0, 4.0), betas=(1e-3, 1e-2),
      solver="auto",  # d ≤ 49: "interior" (r = 0) or "interior+sdp" (r > 0); else "low_rank"
      tol=1e-4, max_steps=4000))
  # Affine neurons (bias): through the origin, no robust cone has an interior on standardised
  # digits features at ε = 0.1 (docs/math.md §4).
  # loss="ova_hinge" (one binary head per class) lets the barrier certify the plain and gated
  # heads, which ADMM leaves uncertified under the multi-class hinge (docs/solvers.md).
  relu = dict(p=2, bias=True, betas=(1e-3, 1e-2), num_patterns=256, tol=1e-5, max_steps=2000,
              loss="hinge")
  # ℓ₂ training radii on standardised features: ℓ∞ balls of 0.1 leave no sign pattern whose
  # robust cone has an interior on digits (validation accuracy 0.10), as on breast cancer.
  # Convex ReLU, chosen on validation as poly's r; gated heads train plain (docs/math.md §4).
  config.heads.relu = ml_collections.ConfigDict(dict(type="relu", eps=(0.0, 0.05, 0.1, 0.2),
                                                     **relu))
  config.heads.gated = ml_collections.ConfigDict(dict(type="gated", **relu))
  # The nonconvex head 8·width → head_width → 10 retrained on the same features, normally, by
  # PGD-AT and by SSDS; the weight decay chosen on validation with the radius.
  network = dict(type="network", hidden=config.model.head_width, steps=3000, learning_rate=1e-3,
                 weight_decays=(1e-4, 1e-2))
  config.heads.network = ml_collections.ConfigDict(dict(network, method="standard"))
  for method in NETWORK_HEADS[1:]:  # ℓ₂ radii of PGD-AT and SSDS, as poly's r
    config.heads[method] = ml_collections.ConfigDict(dict(
        network, method=method, radii=(0.5, 1.0, 2.0, 4.0), norm=2, pgd_steps=7))

  config.eval = ml_collections.ConfigDict()
  config.eval.eps_k = tuple(range(9))  # ℓ∞ radii ε = k/255 in pixel space
  config.eval.attacks = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "square")
  # False: each attack only on the examples every earlier one failed on (the worst of all at a
  # fraction of the cost, AutoAttack's order); True: every attack on every example, each reported.
  config.eval.per_attack = False
  config.eval.pgd_steps = 20
  config.eval.apgd_steps = 100
  config.eval.restarts = 1
  config.eval.targets = 9  # APGD-T's target classes
  config.eval.square_queries = 5000  # AutoAttack's
  config.eval.batch_size = 500
  # The heads' settings are chosen on validation by the worst of these attacks at this pixel ε.
  config.eval.select_eps = 8 / 255
  config.eval.select_attacks = ("apgd-ce",)

  if variant in ("digits", "smoke"):
    # Sized for 2 CPU cores (about an hour); every stage still runs as on CIFAR-10.
    config.data.source = "digits"
    config.data.max_test = 160
    config.model.width = 4
    config.model.head_width = 32
    # 24 epochs: test accuracy 0.97–0.99 for both backbones on seeds 0–2 (8: 0.71–0.88, and SAM's
    # 0.48–0.83, still far from trained: docs/experiments.md).
    config.train.epochs = 24
    config.train.warmup_epochs = 1
    config.train.batch_size = 64
    config.train.learning_rate = 0.05
    config.train.dtype = "float32"  # CPUs emulate bfloat16 slowly
    config.heads.poly.radii = (0.0, 0.5, 1.0, 2.0, 4.0)
    config.heads.poly.betas = (1e-3,)
    # "auto" certifies each head to 1e-3: the grid adds about 50 minutes per seed on 2 cores
    # (docs/experiments.md); solver="projected" with max_steps=150 takes seconds, uncertified.
    config.heads.poly.tol = 1e-3
    config.heads.poly.max_steps = 450
    config.heads.relu.eps = (0.0, 0.05, 0.1)
    # One binary head per class: the barrier certifies each (docs/solvers.md#one-vs-all-heads).
    set_heads(config, ("relu", "gated"), betas=(1e-3,), num_patterns=32, loss="ova_hinge",
              tol=1e-4, max_steps=600)
    set_heads(config, NETWORK_HEADS, hidden=32, steps=1000, weight_decays=(1e-4,))
    set_heads(config, NETWORK_HEADS[1:], radii=(0.5, 1.0, 2.0))
    config.eval.eps_k = (0, 1, 2, 4, 8)
    # The full run adds APGD-DLR and APGD-T; Square on the survivors of the gradient attacks.
    config.eval.attacks = ("fgsm", "pgd", "apgd-ce", "square")
    config.eval.pgd_steps = 10
    config.eval.apgd_steps = 20
    config.eval.square_queries = 500
  if variant == "smoke":
    config.progress = False
    config.data.max_train = 64  # one shape for every source: the runs share compilations
    config.data.max_test = 32
    config.data.max_val = 32  # the heads' selection: one batch of the shape the tests attack
    config.model.width = 2
    config.model.head_width = 8
    config.train.epochs = 2
    config.train.warmup_epochs = 0
    config.train.batch_size = 32
    config.heads.poly.radii = (0.0, 0.5)  # a grid of two: plain and robust heads, both chosen
    config.heads.poly.betas = (1e-2,)
    config.heads.poly.solver = "barrier"
    config.heads.relu.eps = (0.05,)
    set_heads(config, ("relu", "gated"), betas=(1e-2,), num_patterns=8, loss="hinge",
              tol=1e-5, max_steps=200)
    set_heads(config, NETWORK_HEADS, hidden=8, steps=50, weight_decays=(1e-4,))
    set_heads(config, NETWORK_HEADS[1:], radii=(0.5,))
    config.eval.eps_k = (0, 4)
    config.eval.attacks = ("pgd", "apgd-ce")  # every gradient attack runs the same wiring
    config.eval.pgd_steps = 3
    config.eval.apgd_steps = 4
    config.eval.square_queries = 10
    config.eval.batch_size = 32
  elif variant not in ("", "digits"):
    raise ValueError(f"unknown variant {variant!r}; expected '', 'digits' or 'smoke'")
  return config.lock()
