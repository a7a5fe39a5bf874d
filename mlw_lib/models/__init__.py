"""Models that declare their unit groups."""

from .convnet import ConvNet
from .mlp import MLP
from .resnet import ResNet

__all__ = ["MLP", "ConvNet", "ResNet"]
