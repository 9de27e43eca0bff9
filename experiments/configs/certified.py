r"""Certified ℓ₂ accuracy of a 1-Lipschitz SOC network with its linear last layer replaced by
convex heads (polynomial: exact radius; ReLU, gated ReLU, nonconvex: Lipschitz margin bounds),
at ℓ₂ radii 36/255, 72/255, 108/255, beside ℓ₂ attacks at the same radii
(`experiments.certified_train`; docs/math.md §7).

Offline on a CPU in about 30 minutes, most of it attacks (scikit-learn's digits as 32×32×3):

  python -m experiments.certified --config=experiments/configs/certified.py:digits \
      --workdir=runs/certified_digits

CIFAR-10 (one GPU; the data prepared once with TFDS, see the README):

  python -m experiments.certified --config=experiments/configs/certified.py \
      --workdir=runs/certified_cifar --config.data.data_dir=~/tensorflow_datasets

Smoke run (tiny; the tests use it):

  python -m experiments.certified --config=experiments/configs/certified.py:smoke \
      --workdir=/tmp/certified_smoke

Every stage resumes from the workdir: rerun the same command after an interruption.
"""

import ml_collections
from ml_collections import config_dict

from experiments.configs import cifar


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The experiment's settings; `variant` is "" (CIFAR-10), "digits" or "smoke"."""
  if variant not in ("", "digits", "smoke"):
    raise ValueError(f"unknown variant {variant!r}; expected '', 'digits' or 'smoke'")
  # Data, training and heads as in the deep experiment of the same variant (the nonconvex
  # heads' hidden width too: 256, 32 for digits, 8 for smoke), then changed below.
  config = cifar.get_config(variant).unlock()
  del config.backbones
  del config.eval
  config.stop_after = config_dict.placeholder(str)  # "backbone", "features" or "heads"

  config.model = ml_collections.ConfigDict()
  config.model.widths = (32, 64, 128, 256)  # one stage of SOC layers per width
  config.model.depth = 5  # SOC + MaxMin blocks per stage
  config.model.train_terms = 6  # Taylor terms of exp(A) in training
  config.model.eval_terms = 15  # and for features, attacks and the Lipschitz bound

  config.train.dtype = "float32"  # the certificate's bound is computed for float32 features
  config.train.weight_decay = 0.0  # SOC's filters are rescaled: decay only fights the scale
  # The pooled features are norms of whole images (about ‖x − mean‖): larger steps diverge.
  config.train.learning_rate = 0.01
  config.features.backbone = "soc"  # the feature cache's name
  config.features.isotropic = True  # one scale for all features keeps the bound L / scale

  config.eval = ml_collections.ConfigDict()
  config.eval.radii_k = (36, 72, 108)  # ℓ₂ radii k/255 in pixel space
  config.eval.attacks = ("pgd", "apgd-ce")  # the ℓ₂ attacks that bound the certificates above
  config.eval.per_attack = False  # True: every attack on every example, each reported
  config.eval.pgd_steps = 50
  config.eval.apgd_steps = 100
  config.eval.restarts = 1
  config.eval.square_queries = 5000  # where config.eval.attacks holds "square"
  config.eval.batch_size = 500
  # Every head's training radius and β are chosen by its validation accuracy certified at this
  # ℓ₂ radius k/255 in pixel space (cheap: no attack; the test split chooses nothing).
  config.eval.select_radius_k = 36

  if variant in ("digits", "smoke"):
    config.model.widths = (4, 16, 64)  # channels grow 4× with space-to-channel: nothing dropped
    config.model.depth = 2
    config.train.epochs = 15
    # Attack steps run the 15-term SOC network inside lax loops, slow on XLA's CPU backend:
    # about a minute per network here for 100 images and PGD-5 at three radii.
    config.eval.attacks = ("pgd",)
    config.eval.pgd_steps = 5
  if variant == "digits":
    config.data.max_test = 100
  if variant == "smoke":
    config.model.widths = (4, 8)
    config.model.depth = 1
    config.train.epochs = 2
    # One head of each certificate: exact (poly), gate-aware (gated), Lipschitz (network).
    for label in ("relu", "pgd", "ssds"):
      del config.heads[label]
    config.eval.attacks = ("pgd",)
    config.eval.pgd_steps = 3
    config.eval.batch_size = 32
  return config.lock()
