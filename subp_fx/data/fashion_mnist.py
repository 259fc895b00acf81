"""Fashion-MNIST from its four IDX files, kept in memory and augmented on tensors.

The whole dataset is 55 MB of uint8, so it lives in memory and every sample is a few tensor
ops: no PIL round trip, which keeps a 60k-image epoch cheap on a 2-core CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from subp_fx.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, read_idx_ubyte
from subp_fx.data.spec import DEFAULT_FASHION_MNIST_ROOT, DataBundle
from subp_fx.errors import ConfigError, DataError

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530
NATIVE_SIZE = 28
NATIVE_CHANNELS = 1
CROP_PADDING = 2
# Channel counts the dataset can deliver: native grayscale, or the gray plane repeated three
# times for models built for RGB input.
SUPPORTED_CHANNELS = (1, 3)

# split name -> (images file stem, labels file stem)
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class FashionMNISTDataset(Dataset):
    """In-memory uint8 images -> normalised float tensors ``(C, S, S)`` and int labels.

    With ``augment`` each sample is randomly shifted (zero-pad by 2, crop 28) and horizontally
    flipped, using torch's RNG so DataLoader worker seeding makes it reproducible.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, image_size: int, channels: int, augment: bool):
        self.images = images
        self.targets = labels
        self.image_size = image_size
        self.channels = channels
        self.augment = augment

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index].unsqueeze(0)  # (1, 28, 28) uint8
        if self.augment:
            image = _random_shift_and_flip(image)
        pixels = image.float().div_(255.0)
        if self.image_size != NATIVE_SIZE:
            pixels = F.interpolate(
                pixels.unsqueeze(0),
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
                antialias=self.image_size < NATIVE_SIZE,
            ).squeeze(0)
        pixels = pixels.sub_(FASHION_MNIST_MEAN).div_(FASHION_MNIST_STD)
        if self.channels != NATIVE_CHANNELS:
            pixels = pixels.expand(self.channels, -1, -1).contiguous()
        return pixels, int(self.targets[index])


def _random_shift_and_flip(image: torch.Tensor) -> torch.Tensor:
    """RandomCrop(28, padding=2) + RandomHorizontalFlip on a ``(1, 28, 28)`` uint8 tensor."""
    padded = F.pad(image, (CROP_PADDING,) * 4)
    top, left = torch.randint(0, 2 * CROP_PADDING + 1, (2,)).tolist()
    image = padded[:, top : top + NATIVE_SIZE, left : left + NATIVE_SIZE]
    if torch.rand(()) < 0.5:
        image = image.flip(-1)
    return image


def find_idx_file(root: Path, stem: str) -> Path | None:
    """The gzipped file if present, else the raw one, else ``None``."""
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    return None


def locate_split_files(root: Path) -> dict[str, tuple[Path, Path]]:
    """split -> (images path, labels path); one error listing every missing file."""
    if not root.is_dir():
        raise DataError(
            f"Fashion-MNIST folder {root} does not exist. Install the data with "
            f"'apt-get install -y dataset-fashion-mnist' (it goes to {DEFAULT_FASHION_MNIST_ROOT}) or "
            f"set the recipe's data.root: key to the folder holding the four IDX files."
        )
    found = {stem: find_idx_file(root, stem) for stems in SPLIT_FILES.values() for stem in stems}
    missing = [stem for stem, path in found.items() if path is None]
    if missing:
        raise DataError(
            f"Fashion-MNIST folder {root} lacks {', '.join(missing)} (looked for '<name>.gz' and "
            f"'<name>'). Install the data with 'apt-get install -y dataset-fashion-mnist' (it goes to "
            f"{DEFAULT_FASHION_MNIST_ROOT}) or set the recipe's data.root: key to the folder holding "
            f"all four IDX files."
        )
    return {split: (found[images], found[labels]) for split, (images, labels) in SPLIT_FILES.items()}


def load_split_arrays(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64 of one split, fully validated."""
    images = read_idx_ubyte(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx_ubyte(labels_path, IDX_LABELS_MAGIC)
    if images.shape[1:] != (NATIVE_SIZE, NATIVE_SIZE):
        raise DataError(
            f"IDX file {images_path} holds images of {images.shape[1]}x{images.shape[2]} pixels; "
            f"Fashion-MNIST images are {NATIVE_SIZE}x{NATIVE_SIZE}. The file is not Fashion-MNIST; "
            f"point root: at the Fashion-MNIST files."
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} "
            f"labels; they must come from the same split. Download both files again."
        )
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise DataError(
            f"IDX file {labels_path} contains label {int(labels.max())}; Fashion-MNIST labels are "
            f"0..{len(FASHION_MNIST_CLASSES) - 1}. The file is not Fashion-MNIST labels; download it again."
        )
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype("int64"))


def build_fashion_mnist(spec, image_size: int, in_channels: int | None) -> DataBundle:
    """Both Fashion-MNIST splits (train: 60k, val: the 10k test set)."""
    channels = NATIVE_CHANNELS if in_channels is None else in_channels
    if channels not in SUPPORTED_CHANNELS:
        raise ConfigError(
            f"Fashion-MNIST is grayscale and can feed a model with in_channels 1 (native) or 3 "
            f"(gray repeated); the model asks for {channels}. Change the model's in_channels."
        )
    split_files = locate_split_files(Path(spec.root or DEFAULT_FASHION_MNIST_ROOT))
    train_images, train_labels = load_split_arrays(*split_files["train"])
    val_images, val_labels = load_split_arrays(*split_files["val"])
    return DataBundle(
        train=FashionMNISTDataset(train_images, train_labels, image_size, channels, augment=spec.augment),
        val=FashionMNISTDataset(val_images, val_labels, image_size, channels, augment=False),
        num_classes=len(FASHION_MNIST_CLASSES),
        in_channels=channels,
        image_size=image_size,
        class_names=FASHION_MNIST_CLASSES,
    )
