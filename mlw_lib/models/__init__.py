"""Models that declare their unit groups."""

from .convnet import ConvNet
from .mgnet import MgNet
from .mlp import MLP
from .registry import CNN_MODELS, PDE_NETS, build_cnn, build_pde_net, parameter_count
from .resnet import ResNet
from .stable import StableNet, double_depth
from .strided import StridedConvNet
from .transformer import TransformerClassifier

__all__ = [
    "CNN_MODELS",
    "MLP",
    "PDE_NETS",
    "ConvNet",
    "MgNet",
    "ResNet",
    "StableNet",
    "StridedConvNet",
    "TransformerClassifier",
    "build_cnn",
    "build_pde_net",
    "double_depth",
    "parameter_count",
]
