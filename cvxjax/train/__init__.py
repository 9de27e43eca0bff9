"""Training the networks whose features and heads the convex heads are compared with."""

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
    "TrainState",
    "accuracy",
    "augment",
    "default_config",
    "load_backbone",
    "make_optimizer",
    "train_backbone",
    "train_step",
]
