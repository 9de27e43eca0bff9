r"""Adversarially trained polynomial heads on the Wisconsin breast-cancer data (sweep over r).

For each training radius r: fit the head to global optimality (`cvxjax.poly.fit`, float64),
then report on the test split its objective and certified gap, clean accuracy, FGSM-ℓ∞ and
PGD-ℓ∞ accuracy at each ε, PGD-ℓ₂ and exact certified ℓ₂ accuracy at each radius, and the
width of the recovered two-layer network. β is chosen on the validation split when `betas`
lists several values (never on the test split).

Full run (a few minutes on 2 CPU cores):

  python -m experiments.wbc --config=experiments/configs/wbc.py --workdir=/tmp/wbc

Smoke run (tiny: 60 training points, two r, three radii; well under a minute):

  python -m experiments.wbc --config=experiments/configs/wbc.py:smoke --workdir=/tmp/wbc_smoke

Override any field from the command line, e.g. `--config.radii='(0.0, 0.5)'`.
"""

import ml_collections
from ml_collections import config_dict


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The experiment's settings; `variant` is "" (full) or "smoke"."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # of the data split and the attacks' random starts
  config.val_fraction = 0.2
  config.test_fraction = 0.2
  config.n_train = config_dict.placeholder(int)  # cap on training rows; None: all (~341)
  config.num_features = config_dict.placeholder(int)  # first k of 30 features; None: all

  config.radii = (0.0, 0.1, 0.25, 0.5)  # adversarial training radii r (ℓ₂)
  config.betas = (1e-3,)  # several: chosen per r by validation accuracy
  config.tol = 1e-6  # relative certified gap at which the solver stops
  config.max_steps = 300
  config.progress = False  # the solver's progress bar

  config.linf_eps = (0.0, 0.05, 0.1, 0.2, 0.3)  # FGSM / PGD ℓ∞ radii (standardised features)
  config.l2_radii = (0.0, 0.25, 0.5, 1.0, 1.5)  # PGD and certified ℓ₂ radii
  config.pgd_steps = 20
  config.pgd_restarts = 2

  if variant == "smoke":
    config.n_train = 60
    config.radii = (0.0, 0.5)
    config.tol = 1e-4
    config.linf_eps = (0.0, 0.1, 0.3)
    config.l2_radii = (0.0, 0.5, 1.5)
    config.pgd_steps = 10
    config.pgd_restarts = 1
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; expected '' or 'smoke'")
  return config.lock()
