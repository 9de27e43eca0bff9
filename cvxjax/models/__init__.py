"""Deep backbones whose pooled features feed the convex heads."""

from cvxjax.models.resnet import PreActResNet18

__all__ = ["PreActResNet18"]
