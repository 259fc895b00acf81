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

# Principal components of the RGB pixel covariance of ImageNet's training images (pixel values in
# [0, 1]), as published with AlexNet (Krizhevsky et al. 2012): the eigenvalues, and the unit
# eigenvectors as the columns of the matrix, in the same order.
IMAGENET_PCA_EIGENVALUES = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGENVECTORS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


class PCALighting:
    """AlexNet's lighting augmentation: add ``sum_i alpha_i * eigenvalue_i * eigenvector_i`` to every
    pixel of a ``(3, H, W)`` image in [0, 1] (after ``ToTensor``, before ``Normalize``), with
    ``alpha_i ~ N(0, std)`` drawn once per image from torch's global generator, which the loaders
    seed per sample and epoch."""

    def __init__(self, std: float):
        if std < 0:
            raise ValueError(f"lighting std must be >= 0, got {std}")
        self.std = std
        self.eigenvalues = torch.tensor(IMAGENET_PCA_EIGENVALUES)
        self.eigenvectors = torch.tensor(IMAGENET_PCA_EIGENVECTORS)

    def shift(self, alpha: torch.Tensor) -> torch.Tensor:
        """The per-channel offset for coefficients ``alpha`` (3,)."""
        return self.eigenvectors @ (alpha * self.eigenvalues)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[0] != 3:
            raise ValueError(f"PCA lighting needs an RGB (3, H, W) image, got shape {tuple(image.shape)}")
        if self.std == 0:
            return image
        alpha = torch.randn(3) * self.std
        return image + self.shift(alpha).to(image.dtype).view(3, 1, 1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(std={self.std})"


def train_transform(image_size: int, mode: ChannelMode, lighting: float = 0.0) -> transforms.Compose:
    steps = [
        transforms.RandomResizedCrop(image_size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
    ]
    if lighting > 0:
        steps.append(PCALighting(lighting))
    steps.append(transforms.Normalize(mode.mean, mode.std))
    return transforms.Compose(steps)


def val_transform(image_size: int, mode: ChannelMode) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.Resize(int(image_size / CENTER_CROP_FRACTION)),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(mode.mean, mode.std),
        ]
    )


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
            raise DataError(f"image {path} cannot be decoded ({error}). Replace or delete the file.") from error
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
    lighting = getattr(spec, "lighting", 0.0)
    if lighting > 0 and channels != 3:
        raise ConfigError(
            f"data.lighting is {lighting} but the model reads {channels}-channel (grayscale) images; PCA lighting "
            "works on RGB images only. Set data.lighting to 0."
        )
    split_dirs = locate_split_dirs(Path(spec.root))
    class_names = list_class_folders(split_dirs["train"])
    check_val_classes(class_names, list_class_folders(split_dirs["val"]), split_dirs["val"])
    training = train_transform(image_size, mode, lighting) if spec.augment else val_transform(image_size, mode)
    return DataBundle(
        train=ImageFileDataset(scan_split(split_dirs["train"], class_names), training, mode.pil_mode),
        val=ImageFileDataset(
            scan_split(split_dirs["val"], class_names), val_transform(image_size, mode), mode.pil_mode
        ),
        num_classes=len(class_names),
        in_channels=channels,
        image_size=image_size,
        class_names=tuple(class_names),
    )
