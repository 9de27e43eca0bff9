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
nonconvex heads) is chosen on the validation split when several values are listed, by attacked
accuracy at ℓ₂ radius select_radius (never on the test split).

Full run (a few minutes on 2 CPU cores):

  python -m experiments.wbc --config=experiments/configs/wbc.py --workdir=/tmp/wbc

Smoke run (tiny: 60 training points, two r, three radii; well under a minute):

  python -m experiments.wbc --config=experiments/configs/wbc.py:smoke --workdir=/tmp/wbc_smoke

The heads are the entries of config.heads, as in the other experiments
(experiments/families.py). Override any field from the command line, e.g.
`--config.heads.poly.radii='(0.0, 0.5)'`.
"""

import ml_collections
from ml_collections import config_dict

from experiments.configs.cifar import NETWORK_HEADS, set_heads


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The experiment's settings; `variant` is "" (full) or "smoke"."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # of the data split and the attacks' random starts
  config.val_fraction = 0.2
  config.test_fraction = 0.2
  config.n_train = config_dict.placeholder(int)  # cap on training rows; None: all (~341)
  config.num_features = config_dict.placeholder(int)  # first k of 30 features; None: all

  config.progress = False  # the solvers' progress bars

  # Every radius of a head is reported as its own model; β (a nonconvex head's weight decay)
  # is chosen per radius where several are listed, by the validation accuracy under the worst
  # of select_attacks in the ℓ₂ ball of select_radius (ties to clean validation accuracy).
  config.select_radius = 0.5
  config.select_attacks = ("apgd-ce",)
  config.heads = ml_collections.ConfigDict()
  config.heads.poly = ml_collections.ConfigDict(dict(
      type="poly", radii=(0.0, 0.1, 0.25, 0.5),  # adversarial training radii r (ℓ₂)
      betas=(1e-3,), solver="auto",
      tol=1e-6,  # relative certified gap at which the solver stops
      max_steps=300))
  # Convex ReLU (cone constraints) and gated ReLU, their ball ℓ₂ (p = "inf": the weights then
  # pay ℓ₁), 100 sampled gates before duplicate patterns are dropped; ADMM stops at relative
  # residuals of tol (robust steps cost ~16 ms here).
  relu = dict(p=2, bias=False, betas=(0.1, 1.0), num_patterns=100, tol=1e-6, max_steps=4000,
              loss="hinge")
  # Robust-training radii of the ReLU heads, in ℓ₂ like r. Their cone constraints fix every
  # neuron's pattern on each training ball: on this data ℓ∞ balls of ε ≥ 0.05 leave no pattern
  # with a nonzero neuron, ℓ₂ balls of ε = 0.1 leave 13 of 100. Gated heads train plain
  # (docs/math.md §4).
  config.heads.relu = ml_collections.ConfigDict(dict(type="relu", eps=(0.0, 0.05, 0.1), **relu))
  config.heads.gated = ml_collections.ConfigDict(dict(type="gated", **relu))
  # The nonconvex two-layer ReLU network on the same features, trained normally, by PGD
  # adversarial training and by SSDS (cvxjax.train.adversarial), at ℓ₂ radius 0.5 (poly's
  # largest r); the weight decay chosen on validation, like β.
  network = dict(type="network", hidden=32, steps=2000, learning_rate=1e-2,
                 weight_decays=(1e-4, 1e-2))
  config.heads.network = ml_collections.ConfigDict(dict(network, method="standard"))
  for method in NETWORK_HEADS[1:]:
    config.heads[method] = ml_collections.ConfigDict(dict(network, method=method, radii=(0.5,),
                                                          norm=2, pgd_steps=7))

  config.linf_eps = (0.0, 0.05, 0.1, 0.2, 0.3)  # attack radii in ℓ∞ (standardised features)
  config.l2_radii = (0.0, 0.25, 0.5, 1.0, 1.5)  # attack and certified radii in ℓ₂
  config.pgd_steps = 20
  config.apgd_steps = 100  # AutoAttack's
  config.restarts = 2  # random restarts of PGD and APGD
  config.square_queries = 5000  # the Square attack's (AutoAttack's)

  if variant == "smoke":
    config.n_train = 60
    config.heads.poly.radii = (0.0, 0.5)
    config.heads.poly.tol = 1e-4
    config.linf_eps = (0.0, 0.1, 0.3)
    config.l2_radii = (0.0, 0.5, 1.5)
    config.pgd_steps = 10
    config.apgd_steps = 20
    config.restarts = 1
    config.square_queries = 50
    config.heads.relu.eps = (0.0, 0.2)
    set_heads(config, ("relu", "gated"), betas=(1.0,), num_patterns=12, max_steps=2000)
    set_heads(config, NETWORK_HEADS, steps=200, weight_decays=(1e-4,))
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; expected '' or 'smoke'")
  return config.lock()
