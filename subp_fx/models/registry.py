"""Model names -> models: the paper's four models plus any torchvision classification model.

``build_model("resnet50")`` gives the paper's models; ``build_model("torchvision.<name>")`` any
classification builder torchvision ships (``torchvision.mobilenet_v2``, ``torchvision.regnet_y_400mf``,
...). Weights are always random: nothing is ever downloaded. Pretrained weights come from a local
file through ``load_state_dict_file``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn
import torchvision

from subp_fx.errors import ConfigError
from subp_fx.models.mobilenet_v1 import mobilenet_v1
from subp_fx.models.resnet import RESNET_NAMES, build_resnet
from subp_fx.models.small_cnn import small_cnn

TORCHVISION_PREFIX = "torchvision."


def _resnet_builder(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_channels: int, small_input: bool) -> nn.Module:
        return build_resnet(name, num_classes=num_classes, in_channels=in_channels, small_input=small_input)

    return build


_PAPER_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    **{name: _resnet_builder(name) for name in RESNET_NAMES},
    "mobilenet_v1": mobilenet_v1,
}

PAPER_MODELS: tuple[str, ...] = tuple(_PAPER_BUILDERS)

# Built-in models: the paper's plus a small CNN for quick runs on 28x28 / 32x32 data.
_BUILTIN_BUILDERS: dict[str, Callable[..., nn.Module]] = {**_PAPER_BUILDERS, "small_cnn": small_cnn}

BUILTIN_MODELS: tuple[str, ...] = tuple(_BUILTIN_BUILDERS)

# The ``layers`` section of the sparsity config that reproduces which layers the SUBP paper's
# ImageNet experiments make sparse. The default rule (every conv with groups == 1,
# C_in >= 4, N dividing C_out) already leaves out the 3-channel stems, MobileNetV1's depthwise
# convs and every fc layer, so only ResNet-18/34 need to say more: their downsample convs stay dense.
PAPER_LAYER_SELECTION: dict[str, dict] = {
    "resnet18": {"exclude": ["re:.*downsample.*"]},
    "resnet34": {"exclude": ["re:.*downsample.*"]},
    "resnet50": {},
    "mobilenet_v1": {},
}


def torchvision_model_names() -> list[str]:
    """Classification model builders torchvision offers (without the ``torchvision.`` prefix)."""
    return torchvision.models.list_models(module=torchvision.models)


def available_models() -> list[str]:
    """Every name ``build_model`` accepts."""
    return list(BUILTIN_MODELS) + [TORCHVISION_PREFIX + name for name in torchvision_model_names()]


def _first_rgb_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3 and module.groups == 1:
            return name, module
    return None


def _set_submodule(model: nn.Module, name: str, new_module: nn.Module) -> None:
    parent_name, _, child_name = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child_name, new_module)


def _adapt_input_channels(model: nn.Module, model_name: str, in_channels: int) -> None:
    """Give a torchvision model's stem conv ``in_channels`` inputs (freshly initialised)."""
    found = _first_rgb_conv(model)
    if found is None:
        raise ConfigError(
            f"model {model_name!r} has no 3-channel conv to adapt to in_channels={in_channels}; "
            "use in_channels=3 (e.g. repeat a grey channel three times in the data transform)"
        )
    name, conv = found
    new_conv = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    nn.init.kaiming_normal_(new_conv.weight, mode="fan_out", nonlinearity="relu")
    if new_conv.bias is not None:
        nn.init.zeros_(new_conv.bias)
    _set_submodule(model, name, new_conv)


def _build_torchvision(model_name: str, num_classes: int, in_channels: int, small_input: bool) -> nn.Module:
    builder_name = model_name[len(TORCHVISION_PREFIX) :]
    valid = torchvision_model_names()
    if builder_name not in valid:
        raise ConfigError(
            f"unknown model {model_name!r}: torchvision {torchvision.__version__} has no classification "
            f"model {builder_name!r}; valid torchvision names: {', '.join(valid)}"
        )
    if small_input:
        raise ConfigError(
            f"small_input=True is not available for {model_name!r}: a small-image stem is architecture-specific "
            f"and is provided for the built-in models only ({', '.join(BUILTIN_MODELS)}); use one of those, "
            "or small_input=False with images resized to the model's usual input size"
        )
    model = torchvision.models.get_model(builder_name, weights=None, num_classes=num_classes)
    if in_channels != 3:
        _adapt_input_channels(model, model_name, in_channels)
    return model


def _check_positive_int(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")


def build_model(name: str, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False) -> nn.Module:
    """A freshly initialised model by name (never downloads weights).

    ``name``: ``resnet18``, ``resnet34``, ``resnet50``, ``mobilenet_v1`` (the paper's models),
    ``small_cnn`` (a quick model for small images) or ``torchvision.<builder>`` for any torchvision
    classification model. ``in_channels``: input
    image channels (1 for Fashion-MNIST). ``small_input``: a stem for 28x28 / 32x32 images
    (built-in models only; see ``build_resnet`` and ``MobileNetV1`` for what it changes).
    """
    _check_positive_int(num_classes, "num_classes")
    _check_positive_int(in_channels, "in_channels")
    if not isinstance(name, str):
        raise ConfigError(f"model name must be a string, got {type(name).__name__}")
    if name in _BUILTIN_BUILDERS:
        return _BUILTIN_BUILDERS[name](num_classes=num_classes, in_channels=in_channels, small_input=small_input)
    if name.startswith(TORCHVISION_PREFIX):
        return _build_torchvision(name, num_classes, in_channels, small_input)
    raise ConfigError(
        f"unknown model {name!r}; valid names: {', '.join(BUILTIN_MODELS)}, or 'torchvision.<name>' for a "
        "torchvision classification model (e.g. torchvision.mobilenet_v2; see available_models())"
    )
