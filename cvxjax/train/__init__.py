"""Training the networks whose features and heads the convex heads are compared with.

`backbone` trains whole networks (SGD or SAM), `head` the nonconvex two-layer head on frozen
features; both train normally, by PGD adversarial training or by SSDS (`adversarial`).
"""

from cvxjax.train import adversarial, head
from cvxjax.train.adversarial import Adversary
from cvxjax.train.backbone import (
    TrainState,
    accuracy,
    augment,
    default_config,
    load_backbone,
    make_optimizer,
    train_backbone,
    train_step,
)

__all__ = [
    "Adversary",
    "TrainState",
    "accuracy",
    "adversarial",
    "augment",
    "default_config",
    "head",
    "load_backbone",
    "make_optimizer",
    "train_backbone",
    "train_step",
]
