"""The model a recipe describes, built without reading the dataset (for dry runs, FLOPs and
compiling): class count and input shape come from the recipe, or from the dataset's known
constants, or from the class folders of an ImageFolder root."""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from subp_fx.data.spec import DEFAULT_IMAGE_SIZE, DEFAULT_SYNTHETIC_NUM_CLASSES
from subp_fx.errors import ConfigError
from subp_fx.recipes.schema import Recipe

_IN_CHANNELS = {"imagefolder": 3, "fashion-mnist": 1, "synthetic": 3}
_FIXED_CLASSES = {"fashion-mnist": 10}


def nominal_input_shape(recipe: Recipe, batch: int = 1) -> tuple[int, int, int, int]:
    """(batch, channels, H, W) of the images the recipe's data section feeds the model."""
    size = recipe.data.image_size or DEFAULT_IMAGE_SIZE[recipe.data.kind]
    return (batch, _IN_CHANNELS[recipe.data.kind], size, size)


def nominal_num_classes(recipe: Recipe) -> int:
    if recipe.model.num_classes:
        return recipe.model.num_classes
    kind = recipe.data.kind
    if kind in _FIXED_CLASSES:
        return _FIXED_CLASSES[kind]
    if kind == "synthetic":
        return recipe.data.num_classes or DEFAULT_SYNTHETIC_NUM_CLASSES
    train_dir = Path(recipe.data.root or "") / "train"
    if train_dir.is_dir():
        from subp_fx.data.imagefolder_scan import list_class_folders

        return len(list_class_folders(train_dir))
    raise ConfigError(
        f"cannot tell the class count: model.num_classes is not set and {str(train_dir)!r} does not exist; "
        "set model.num_classes (1000 for ImageNet)"
    )


def recipe_model(
    recipe: Recipe, num_classes: int | None = None, in_channels: int | None = None, load_pretrained: bool = True
) -> nn.Module:
    """The dense model of ``recipe``, for ``num_classes`` / ``in_channels`` when the caller knows
    them from the data, with the recipe's pretrained weights unless ``load_pretrained`` is off
    (a checkpoint's own weights are about to replace them)."""
    from subp_fx.models import build_model, load_state_dict_file

    model = build_model(
        recipe.model.name,
        num_classes=recipe.model.num_classes or num_classes or nominal_num_classes(recipe),
        in_channels=in_channels or nominal_input_shape(recipe)[1],
        small_input=recipe.model.small_input,
    )
    if load_pretrained and recipe.model.pretrained:
        load_state_dict_file(model, recipe.model.pretrained)
    return model
