"""Training the networks whose features and heads the convex heads are compared with.

`backbone` trains whole networks (SGD or SAM), `head` the nonconvex two-layer head on frozen
features; both train normally, by PGD adversarial training or by SSDS (`adversarial`).
"""

from cvxjax.train import adversarial, head
from cvxjax.train.adversarial import Adversary
from cvxjax.train.backbone import (
    TrainSettings,
    TrainState,
    accuracy,
    augment,
    load_backbone,
    make_optimizer,
    train_backbone,
    train_step,
)

__all__ = [
    "Adversary",
    "TrainSettings",
    "TrainState",
    "accuracy",
    "adversarial",
    "augment",
    "head",
    "load_backbone",
    "make_optimizer",
    "train_backbone",
    "train_step",
]
