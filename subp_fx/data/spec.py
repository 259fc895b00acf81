"""What a recipe asks for (``DataSpec``) and what the builders hand back (``DataBundle``).

``DataSpec`` is a plain dataclass so tests and scripts can build one without the recipe
machinery; the recipe's pydantic ``data:`` section mirrors these fields, and the builders only
read attributes, so either object can be passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch.utils.data import Dataset

DatasetKind = Literal["imagefolder", "fashion-mnist", "synthetic"]

# Resolution each kind uses when neither the caller nor the spec names one: ImageNet's usual
# training crop, Fashion-MNIST's native size, and a CIFAR-sized synthetic image.
DEFAULT_IMAGE_SIZE: dict[str, int] = {
    "imagefolder": 224,
    "fashion-mnist": 28,
    "synthetic": 32,
}

DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
DEFAULT_SYNTHETIC_NUM_CLASSES = 10
DEFAULT_SYNTHETIC_TRAIN_SIZE = 512
DEFAULT_SYNTHETIC_VAL_SIZE = 128


@dataclass
class DataSpec:
    """The ``data:`` section of a recipe.

    - ``kind``: which builder reads the data.
    - ``root``: imagefolder: folder holding ``train/`` and ``val/`` (required);
      fashion-mnist: folder holding the four IDX files (default
      ``/usr/share/datasets/fashion-mnist``); synthetic: unused.
    - ``image_size``: side of the square images the model sees; ``None`` means the kind's
      default (224, 28, 32).
    - ``num_classes``: synthetic: how many classes to generate (default 10). For the other
      kinds the classes come from the data; a value given here must match it.
    - ``synthetic_train_size`` / ``synthetic_val_size``: synthetic sample counts.
    - ``augment``: random train-time augmentation (imagefolder, fashion-mnist).
    - ``lighting``: std of PCA lighting noise added to training images (imagefolder with RGB
      images and ``augment`` only; 0 turns it off).
    - ``train_subset`` / ``val_subset``: keep only the first k samples of a split.
    """

    kind: DatasetKind = "synthetic"
    root: str | None = None
    image_size: int | None = None
    num_classes: int | None = None
    synthetic_train_size: int = DEFAULT_SYNTHETIC_TRAIN_SIZE
    synthetic_val_size: int = DEFAULT_SYNTHETIC_VAL_SIZE
    augment: bool = True
    lighting: float = 0.0
    train_subset: int | None = None
    val_subset: int | None = None


@dataclass
class DataBundle:
    """Both splits plus what the model builder needs to know about them.

    ``in_channels`` and ``image_size`` describe the tensors the datasets actually return
    (after any channel adaptation and resizing), so a model sized from the bundle fits the data.
    """

    train: Dataset
    val: Dataset
    num_classes: int
    in_channels: int
    image_size: int
    class_names: tuple[str, ...]
