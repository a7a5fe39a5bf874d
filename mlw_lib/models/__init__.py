"""Models that declare their unit groups."""

from .convnet import ConvNet
from .mgnet import MgNet
from .mlp import MLP
from .registry import CNN_MODELS, build_cnn, parameter_count
from .resnet import ResNet
from .transformer import TransformerClassifier

__all__ = [
    "CNN_MODELS",
    "MLP",
    "ConvNet",
    "MgNet",
    "ResNet",
    "TransformerClassifier",
    "build_cnn",
    "parameter_count",
]
