"""Deep backbones whose pooled features feed the convex heads."""

from cvxjax.models.resnet import PreActResNet18
from cvxjax.models.soc import SOCNet

__all__ = ["PreActResNet18", "SOCNet"]
