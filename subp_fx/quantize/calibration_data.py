"""``calibration_batches``: a few batches of images to calibrate an int8 build with.

The images come from the project's data module, so they are decoded, resized, channel-adapted
and normalised exactly as the model saw them in evaluation: Fashion-MNIST's 10,000-image test
set, an ImageFolder's ``val/`` split (eval transforms: resize, centre crop, normalise), or seeded
standard-normal noise (``synthetic``: for random-weight models, whose inputs are the same).
Which images is drawn from ``seed`` (a random subset, not the first ones: an ImageFolder split is
ordered by class).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

from subp_fx.data.build import build_datasets
from subp_fx.data.spec import DataSpec
from subp_fx.errors import CalibrationError
from subp_fx.quantize.precision import CALIBRATION_SOURCES


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise CalibrationError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _image_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) from a (C, H, W) or (B, C, H, W) ``shape``."""
    dims = tuple(shape) if isinstance(shape, (tuple, list, torch.Size)) else ()
    if len(dims) not in (3, 4):
        raise CalibrationError(f"shape must be the compiled input's (C, H, W) or (B, C, H, W), got {shape!r}")
    channels, height, width = (_positive_int(size, f"shape {shape!r}: every size") for size in dims[-3:])
    return channels, height, width


def _check_arguments(source: str, root, count, batch_size, seed) -> None:
    if source not in CALIBRATION_SOURCES:
        raise CalibrationError(
            f"calibration source {source!r} is not known; valid sources are {', '.join(CALIBRATION_SOURCES)}"
        )
    if source == "imagefolder" and not root:
        raise CalibrationError(
            "calibration source 'imagefolder' needs root: a folder holding val/ (and train/), each with one "
            "sub-folder of images per class"
        )
    _positive_int(count, "count (calibration batches)")
    _positive_int(batch_size, "batch_size")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise CalibrationError(f"seed must be a non-negative integer, got {seed!r}")


def _dataset_batches(source, root, shape, count, batch_size, generator) -> list[torch.Tensor]:
    channels, height, width = shape
    if height != width:
        raise CalibrationError(
            f"{source} images are square (the data module resizes to one side), but the model is compiled for "
            f"{height}x{width}; use the synthetic source, or compile for a square input"
        )
    spec = DataSpec(kind=source, root=root, image_size=height, augment=False)
    images = build_datasets(spec, image_size=height, in_channels=channels).val
    needed = count * batch_size
    if needed > len(images):
        raise CalibrationError(
            f"{count} calibration batches of {batch_size} need {needed} images, but the {source} evaluation "
            f"split holds {len(images)}; ask for fewer batches or smaller ones"
        )
    chosen = torch.randperm(len(images), generator=generator)[:needed].tolist()
    stacked = torch.stack([images[index][0] for index in chosen])
    return list(stacked.split(batch_size))


def calibration_batches(
    source: str,
    root: str | None,
    shape: Sequence[int],
    count: int = 8,
    batch_size: int = 8,
    seed: int = 0,
) -> list[torch.Tensor]:
    """``count`` float32 NCHW batches of ``batch_size`` images of ``shape`` (C, H, W) — a
    (B, C, H, W) shape is accepted, B ignored — from ``source``:

    - ``"fashion-mnist"``: the test set's IDX files in ``root`` (default
      ``/usr/share/datasets/fashion-mnist``), resized to H (square) and repeated to C = 3 when asked;
    - ``"imagefolder"``: ``root``/val with the evaluation transforms, C = 3 (RGB) or 1 (grayscale);
    - ``"synthetic"``: standard-normal images (any shape), ``root`` unused.

    The images are a random subset drawn from ``seed`` (same seed, same batches). Refuses
    (``CalibrationError``): an unknown source, ``imagefolder`` without ``root``, a non-square
    size for a dataset, non-positive ``count`` / ``batch_size`` / sizes, a negative ``seed``, more
    images than the split holds; and whatever the data module refuses (``DataError`` /
    ``ConfigError``: missing files, an unsupported channel count).
    """
    _check_arguments(source, root, count, batch_size, seed)
    image_shape = _image_shape(shape)
    generator = torch.Generator().manual_seed(int(seed))
    if source == "synthetic":
        return [torch.randn(batch_size, *image_shape, generator=generator) for _ in range(count)]
    return _dataset_batches(source, root, image_shape, count, batch_size, generator)
