r"""Convex heads on the Wisconsin breast-cancer data: polynomial (sweep over r), convex ReLU and
gated ReLU (sweep over the robust-training radius ε), against the nonconvex network trained
normally, by PGD adversarial training and by SSDS on the same features.

For each model: fit the head to global optimality (`cvxjax.poly.fit` / `cvxjax.relu.fit`,
float64; the nonconvex ones with AdamW, `cvxjax.train.head.fit`) and time it, then report on
the test split its objective (and the polynomial heads' certified gap), clean accuracy,
accuracy under FGSM, PGD, APGD-CE, Square and the worst of them in the ℓ∞ ball at each ε and in
the ℓ₂ ball at each radius, certified ℓ₂ accuracy at each radius (the exact radius of
polynomial heads, the Lipschitz bound of ReLU and nonconvex heads, the gate-aware bound of
gated heads), and the width of the recovered two-layer network. β (the weight decay of the
nonconvex heads) is chosen on the validation split when several values are listed (never on
the test split).

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

  config.relu = ml_collections.ConfigDict()
  config.relu.families = ("relu", "gated")  # convex ReLU (cone constraints) and gated ReLU
  # Robust-training radii of the ReLU heads, in ℓ₂ like r. Their cone constraints fix every
  # neuron's pattern on each training ball: on this data ℓ∞ balls of ε ≥ 0.05 leave no pattern
  # with a nonzero neuron, ℓ₂ balls of ε = 0.1 leave 13 of 100.
  config.relu.eps = (0.0, 0.05, 0.1)  # convex ReLU; gated heads train plain (docs/math.md §4)
  config.relu.p = 2  # their ball: 2 or "inf" (the weights then pay ℓ₁)
  config.relu.betas = (0.1, 1.0)
  config.relu.num_patterns = 100  # sampled gates, before duplicate patterns are dropped
  config.relu.tol = 1e-6  # ADMM's relative residuals at which it stops
  config.relu.max_steps = 4000  # ADMM steps (robust ones cost ~16 ms here)

  # The nonconvex two-layer ReLU network on the same features, trained normally, by PGD
  # adversarial training and by SSDS (cvxjax.train.adversarial), at the convex heads' ℓ₂ radii.
  config.network = ml_collections.ConfigDict()
  config.network.methods = ("standard", "pgd", "ssds")
  config.network.eps = 0.5  # ℓ₂ training radius of PGD-AT and SSDS, as poly's largest r
  config.network.norm = 2
  config.network.pgd_steps = 7
  config.network.hidden = 32
  config.network.steps = 2000
  config.network.learning_rate = 1e-2
  config.network.weight_decays = (1e-4, 1e-2)  # chosen on validation, like β

  config.linf_eps = (0.0, 0.05, 0.1, 0.2, 0.3)  # attack radii in ℓ∞ (standardised features)
  config.l2_radii = (0.0, 0.25, 0.5, 1.0, 1.5)  # attack and certified radii in ℓ₂
  config.pgd_steps = 20
  config.apgd_steps = 100  # AutoAttack's
  config.restarts = 2  # random restarts of PGD and APGD
  config.square_queries = 5000  # the Square attack's (AutoAttack's)

  if variant == "smoke":
    config.n_train = 60
    config.radii = (0.0, 0.5)
    config.tol = 1e-4
    config.linf_eps = (0.0, 0.1, 0.3)
    config.l2_radii = (0.0, 0.5, 1.5)
    config.pgd_steps = 10
    config.apgd_steps = 20
    config.restarts = 1
    config.square_queries = 50
    config.relu.eps = (0.0, 0.2)
    config.relu.betas = (1.0,)
    config.relu.num_patterns = 12
    config.relu.max_steps = 2000
    config.network.steps = 200
    config.network.weight_decays = (1e-4,)
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; expected '' or 'smoke'")
  return config.lock()
