"""Models for SUBP: the paper's ResNet-18/34/50 and MobileNetV1, a small CNN for quick runs, any
torchvision classifier, and loading of local state-dict files."""

from subp_fx.models.mobilenet_v1 import MobileNetV1, mobilenet_v1
from subp_fx.models.registry import (
    BUILTIN_MODELS,
    PAPER_LAYER_SELECTION,
    PAPER_MODELS,
    available_models,
    build_model,
    torchvision_model_names,
)
from subp_fx.models.resnet import build_resnet
from subp_fx.models.state_dict_file import load_state_dict_file

__all__ = [
    "BUILTIN_MODELS",
    "MobileNetV1",
    "PAPER_LAYER_SELECTION",
    "PAPER_MODELS",
    "available_models",
    "build_model",
    "build_resnet",
    "load_state_dict_file",
    "mobilenet_v1",
    "torchvision_model_names",
]
