"""ImageNet-style ``ImageFolder`` datasets with the standard ImageNet train/val transforms."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from subp_fx.data.imagefolder_scan import check_val_classes, list_class_folders, locate_split_dirs, scan_split
from subp_fx.data.spec import DataBundle
from subp_fx.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Val images are resized so the center crop keeps 87.5% of the short side (256 -> 224).
CENTER_CROP_FRACTION = 0.875


@dataclass(frozen=True)
class ChannelMode:
    """How to decode images for a model with a given number of input channels."""

    pil_mode: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


# in_channels -> decoding. Grayscale uses the ImageNet statistics pushed through the PIL luma
# weights (0.299, 0.587, 0.114); RGB channels are so correlated that the stds combine linearly.
CHANNEL_MODES: dict[int, ChannelMode] = {
    3: ChannelMode("RGB", IMAGENET_MEAN, IMAGENET_STD),
    1: ChannelMode("L", (0.459,), (0.226,)),
}
NATIVE_CHANNELS = 3


def train_transform(image_size: int, mode: ChannelMode) -> transforms.Compose:
    return transforms.Compose([
        transforms.RandomResizedCrop(image_size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mode.mean, mode.std),
    ])


def val_transform(image_size: int, mode: ChannelMode) -> transforms.Compose:
    return transforms.Compose([
        transforms.Resize(int(image_size / CENTER_CROP_FRACTION)),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize(mode.mean, mode.std),
    ])


class ImageFileDataset(Dataset):
    """Decodes ``samples`` (path, label) lazily; a broken file fails naming its path."""

    def __init__(self, samples: list[tuple[str, int]], transform, pil_mode: str):
        self.samples = samples
        self.targets = [label for _, label in samples]
        self.transform = transform
        self.pil_mode = pil_mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                decoded = image.convert(self.pil_mode)
        except OSError as error:  # includes PIL.UnidentifiedImageError
            raise DataError(
                f"image {path} cannot be decoded ({error}). Replace or delete the file."
            ) from error
        return self.transform(decoded), label


def build_imagefolder(spec, image_size: int, in_channels: int | None) -> DataBundle:
    """Train and val from ``spec.root``; class indices follow the sorted train class folders."""
    channels = NATIVE_CHANNELS if in_channels is None else in_channels
    if channels not in CHANNEL_MODES:
        raise ConfigError(
            f"ImageFolder data can feed a model with in_channels {sorted(CHANNEL_MODES)} (RGB or "
            f"grayscale); the model asks for {channels}. Change the model's in_channels."
        )
    if spec.root is None:
        raise ConfigError(
            "data.kind 'imagefolder' needs data.root: a folder holding train/ and val/, each with one "
            "sub-folder of images per class."
        )
    mode = CHANNEL_MODES[channels]
    split_dirs = locate_split_dirs(Path(spec.root))
    class_names = list_class_folders(split_dirs["train"])
    check_val_classes(class_names, list_class_folders(split_dirs["val"]), split_dirs["val"])
    make_train_transform = train_transform if spec.augment else val_transform
    return DataBundle(
        train=ImageFileDataset(
            scan_split(split_dirs["train"], class_names), make_train_transform(image_size, mode), mode.pil_mode
        ),
        val=ImageFileDataset(scan_split(split_dirs["val"], class_names), val_transform(image_size, mode), mode.pil_mode),
        num_classes=len(class_names),
        in_channels=channels,
        image_size=image_size,
        class_names=tuple(class_names),
    )
