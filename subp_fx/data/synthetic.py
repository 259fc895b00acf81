"""Deterministic synthetic images that a CNN can learn from in a few steps, for smoke tests.

Each class owns a smooth random pattern (a coarse random grid upsampled to the image size); a
sample is its class pattern plus unit Gaussian noise. The class signal covers the whole image,
so a model beats chance after a handful of SGD steps, while the noise keeps it from being
trivially constant. Samples are generated on the fly from a per-index seed: identical on every
run, process and DataLoader worker, and no memory grows with the split size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from subp_fx.data.spec import DEFAULT_SYNTHETIC_NUM_CLASSES, DataBundle
from subp_fx.errors import ConfigError

NATIVE_CHANNELS = 3
PATTERN_GRID = 4  # class patterns are drawn on a 4x4 grid, then upsampled: smooth, CNN-friendly
PATTERN_SEED = 0
# torch's CPU generator keeps only the low 32 bits of a seed, so each split's noise seeds live in
# their own 2**30-wide band (sample i of a split uses band start + i), away from PATTERN_SEED.
SEED_BAND = 1 << 30
SPLIT_SEED_BANDS: dict[str, int] = {"train": 1 * SEED_BAND, "val": 2 * SEED_BAND}


def class_patterns(num_classes: int, channels: int) -> torch.Tensor:
    """``(num_classes, channels, 4, 4)`` coarse patterns, the same for every split and run."""
    generator = torch.Generator().manual_seed(PATTERN_SEED)
    return torch.randn(num_classes, channels, PATTERN_GRID, PATTERN_GRID, generator=generator)


class SyntheticDataset(Dataset):
    """Sample ``i`` has label ``i % num_classes`` (so any prefix covers every class) and an
    image ``upsampled pattern[label] + noise`` whose noise is seeded by ``first_seed + i``."""

    def __init__(self, size: int, patterns: torch.Tensor, image_size: int, first_seed: int):
        self.size = size
        self.patterns = patterns
        self.image_size = image_size
        self.first_seed = first_seed
        num_classes = patterns.shape[0]
        self.targets = [index % num_classes for index in range(size)]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for a synthetic split of {self.size} samples")
        label = self.targets[index]
        pattern = F.interpolate(
            self.patterns[label : label + 1],
            size=(self.image_size, self.image_size),
            mode="bilinear",
            align_corners=False,
        )[0]
        generator = torch.Generator().manual_seed(self.first_seed + index)
        noise = torch.randn(pattern.shape, generator=generator)
        return pattern + noise, label


def build_synthetic(spec, image_size: int, in_channels: int | None) -> DataBundle:
    """Train and val drawn around the same class patterns with different noise.

    ``augment`` has no effect: the noise already varies every sample, and flips or crops would
    only blur the class patterns.
    """
    for field in ("synthetic_train_size", "synthetic_val_size"):
        size = getattr(spec, field)
        if size >= SEED_BAND:
            raise ConfigError(f"data.{field} is {size}; a synthetic split holds fewer than {SEED_BAND} samples.")
    channels = NATIVE_CHANNELS if in_channels is None else in_channels
    num_classes = spec.num_classes if spec.num_classes is not None else DEFAULT_SYNTHETIC_NUM_CLASSES
    patterns = class_patterns(num_classes, channels)
    return DataBundle(
        train=SyntheticDataset(spec.synthetic_train_size, patterns, image_size, SPLIT_SEED_BANDS["train"]),
        val=SyntheticDataset(spec.synthetic_val_size, patterns, image_size, SPLIT_SEED_BANDS["val"]),
        num_classes=num_classes,
        in_channels=channels,
        image_size=image_size,
        class_names=tuple(f"class_{index}" for index in range(num_classes)),
    )
