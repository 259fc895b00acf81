"""calibration_batches: images from the data module's evaluation splits (or seeded noise)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from subp_fx.data import DataSpec, build_datasets
from subp_fx.data.fashion_mnist import FASHION_MNIST_MEAN, FASHION_MNIST_STD
from subp_fx.data.spec import DEFAULT_FASHION_MNIST_ROOT
from subp_fx.errors import CalibrationError
from subp_fx.quantize.calibration_data import calibration_batches

HAS_FASHION_MNIST = Path(DEFAULT_FASHION_MNIST_ROOT, "t10k-images-idx3-ubyte.gz").is_file()


def test_synthetic_batches_are_seeded_normal_noise_of_any_shape():
    batches = calibration_batches("synthetic", None, (5, 7, 9), count=3, batch_size=2, seed=1)
    assert [tuple(batch.shape) for batch in batches] == [(2, 5, 7, 9)] * 3
    again = calibration_batches("synthetic", None, (1, 5, 7, 9), count=3, batch_size=2, seed=1)
    other = calibration_batches("synthetic", None, (5, 7, 9), count=3, batch_size=2, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    assert not torch.equal(batches[0], other[0])
    everything = torch.cat(calibration_batches("synthetic", None, (3, 16, 16), count=4, batch_size=8))
    assert abs(everything.mean().item()) < 0.05 and abs(everything.std().item() - 1) < 0.05


def test_imagefolder_batches_are_distinct_val_images_with_the_eval_transforms(tiny_imagefolder):
    batches = calibration_batches("imagefolder", str(tiny_imagefolder), (3, 32, 32), count=2, batch_size=3, seed=0)
    assert [tuple(batch.shape) for batch in batches] == [(3, 3, 32, 32)] * 2
    spec = DataSpec(kind="imagefolder", root=str(tiny_imagefolder), image_size=32, augment=False)
    val = [image for image, _ in build_datasets(spec, in_channels=3).val]
    chosen = torch.cat(batches)
    matches = [next(i for i, image in enumerate(val) if torch.equal(image, picked)) for picked in chosen]
    assert sorted(matches) == list(range(6))  # all six val images, each once


def test_asking_for_more_images_than_the_split_holds_is_refused(tiny_imagefolder):
    with pytest.raises(CalibrationError, match="need 8 images.*holds 6"):
        calibration_batches("imagefolder", str(tiny_imagefolder), (3, 32, 32), count=2, batch_size=4)


@pytest.mark.skipif(not HAS_FASHION_MNIST, reason=f"Fashion-MNIST is not installed in {DEFAULT_FASHION_MNIST_ROOT}")
def test_fashion_mnist_batches_are_normalised_test_images_resized_and_repeated_to_rgb():
    gray = calibration_batches("fashion-mnist", None, (1, 28, 28), count=2, batch_size=4, seed=3)
    rgb = calibration_batches("fashion-mnist", None, (3, 32, 32), count=2, batch_size=4, seed=3)
    assert tuple(gray[0].shape) == (4, 1, 28, 28) and tuple(rgb[0].shape) == (4, 3, 32, 32)
    assert torch.equal(rgb[0][:, 0], rgb[0][:, 1]) and torch.equal(rgb[0][:, 0], rgb[0][:, 2])
    black, white = -FASHION_MNIST_MEAN / FASHION_MNIST_STD, (1 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
    pixels = torch.cat(gray)
    assert pixels.min().item() == pytest.approx(black, abs=1e-5) and pixels.max().item() <= white + 1e-5
    # 28 px is the native size: every pixel is one of the 256 normalised grey levels
    levels = (pixels * FASHION_MNIST_STD + FASHION_MNIST_MEAN) * 255
    assert torch.allclose(levels, levels.round(), atol=1e-3)


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        (("cifar", None, (3, 8, 8)), "valid sources are fashion-mnist, imagefolder, synthetic"),
        (("imagefolder", None, (3, 8, 8)), "needs root"),
        (("synthetic", None, (3, 8)), r"\(C, H, W\) or \(B, C, H, W\)"),
        (("synthetic", None, (3, 0, 8)), "positive integer"),
        (("fashion-mnist", None, (1, 28, 30)), "square"),
    ],
)
def test_bad_arguments_are_refused(arguments, match):
    with pytest.raises(CalibrationError, match=match):
        calibration_batches(*arguments)


@pytest.mark.parametrize(
    ("keyword", "value", "match"), [("count", 0, "count"), ("batch_size", -1, "batch_size"), ("seed", -1, "seed")]
)
def test_non_positive_counts_and_negative_seeds_are_refused(keyword, value, match):
    with pytest.raises(CalibrationError, match=match):
        calibration_batches("synthetic", None, (3, 8, 8), **{keyword: value})
