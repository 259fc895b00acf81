"""Fashion-MNIST: parsing, normalisation, tensor augmentation, channel/size adaptation, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from subp_fx.data import DataSpec, build_datasets
from subp_fx.data.fashion_mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD
from subp_fx.errors import ConfigError, DataError

REAL_ROOT = Path("/usr/share/datasets/fashion-mnist")


def spec(root: Path, **overrides) -> DataSpec:
    return DataSpec(kind="fashion-mnist", root=str(root), **overrides)


def unnormalise(image: torch.Tensor) -> torch.Tensor:
    """Back to 0..255 pixel values."""
    return (image * FASHION_MNIST_STD + FASHION_MNIST_MEAN) * 255


def test_parses_both_splits_exactly(fashion_root, fashion_arrays):
    bundle = build_datasets(spec(fashion_root, augment=False))
    assert (len(bundle.train), len(bundle.val)) == (12, 6)
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (10, 1, 28)
    assert bundle.class_names == FASHION_MNIST_CLASSES
    for dataset, images, labels in (
        (bundle.train, fashion_arrays["train-images-idx3-ubyte"], fashion_arrays["train-labels-idx1-ubyte"]),
        (bundle.val, fashion_arrays["t10k-images-idx3-ubyte"], fashion_arrays["t10k-labels-idx1-ubyte"]),
    ):
        for index in range(len(dataset)):
            image, label = dataset[index]
            assert image.shape == (1, 28, 28) and image.dtype == torch.float32
            assert isinstance(label, int) and label == labels[index]
            expected = (torch.from_numpy(images[index]).float() / 255 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
            torch.testing.assert_close(image[0], expected)


def test_train_augmentation_is_a_shift_and_optional_flip(fashion_root, fashion_arrays):
    """Every augmented sample equals one of the 25 shifts (pad 2, crop 28), flipped or not."""
    original = torch.from_numpy(fashion_arrays["train-images-idx3-ubyte"][0]).float()
    padded = torch.nn.functional.pad(original, (2, 2, 2, 2))
    candidates = [
        crop.flip(-1) if flip else crop
        for top in range(5)
        for left in range(5)
        for flip in (False, True)
        for crop in [padded[top : top + 28, left : left + 28]]
    ]
    dataset = build_datasets(spec(fashion_root)).train
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        pixels = unnormalise(dataset[0][0][0])
        matches = [i for i, candidate in enumerate(candidates) if torch.allclose(pixels, candidate, atol=1e-3)]
        assert matches, "augmented image is not a padded shift/flip of the original"
        seen.add(matches[0])
    assert len(seen) > 5, "augmentation should vary between draws"


def test_val_is_never_augmented(fashion_root):
    val = build_datasets(spec(fashion_root, augment=True)).val
    torch.manual_seed(0)
    first = val[0][0]
    assert all(torch.equal(first, val[0][0]) for _ in range(5))


def test_resize_and_rgb_replication(fashion_root, fashion_arrays):
    bundle = build_datasets(spec(fashion_root, augment=False), image_size=32, in_channels=3)
    image, _ = bundle.val[0]
    assert image.shape == (3, 32, 32) and (bundle.in_channels, bundle.image_size) == (3, 32)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    original_mean = fashion_arrays["t10k-images-idx3-ubyte"][0].mean()
    assert abs(unnormalise(image[0]).mean().item() - original_mean) < 2.0


def test_unsupported_channel_count(fashion_root):
    with pytest.raises(ConfigError, match="in_channels"):
        build_datasets(spec(fashion_root), in_channels=2)


def test_missing_file_is_named_with_install_hint(tmp_path, fashion_arrays, fashion_writer):
    root = tmp_path / "fashion"
    arrays = {stem: array for stem, array in fashion_arrays.items() if stem != "t10k-labels-idx1-ubyte"}
    fashion_writer(root, arrays, gzipped=True)
    with pytest.raises(DataError) as error:
        build_datasets(spec(root))
    message = str(error.value)
    assert "t10k-labels-idx1-ubyte" in message and "train-images" not in message
    assert "apt-get install -y dataset-fashion-mnist" in message and "root:" in message


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist") as error:
        build_datasets(spec(tmp_path / "nowhere"))
    assert "dataset-fashion-mnist" in str(error.value)


def test_image_and_label_counts_must_agree(tmp_path, fashion_arrays, fashion_writer, idx_writer):
    root = tmp_path / "fashion"
    fashion_writer(root, fashion_arrays, gzipped=False)
    idx_writer(root / "train-labels-idx1-ubyte", 2049, np.zeros(11, dtype=np.uint8))
    with pytest.raises(DataError, match="12 images but .* 11 labels"):
        build_datasets(spec(root))


def test_label_out_of_range(tmp_path, fashion_arrays, fashion_writer, idx_writer):
    root = tmp_path / "fashion"
    fashion_writer(root, fashion_arrays, gzipped=False)
    idx_writer(root / "t10k-labels-idx1-ubyte", 2049, np.array([0, 1, 2, 3, 4, 10], dtype=np.uint8))
    with pytest.raises(DataError, match="label 10") as error:
        build_datasets(spec(root))
    assert "t10k-labels-idx1-ubyte" in str(error.value)


def test_wrong_image_size_in_file(tmp_path, fashion_arrays, fashion_writer, idx_writer):
    root = tmp_path / "fashion"
    fashion_writer(root, fashion_arrays, gzipped=False)
    idx_writer(root / "t10k-images-idx3-ubyte", 2051, np.zeros((6, 32, 32), dtype=np.uint8))
    with pytest.raises(DataError, match="32x32"):
        build_datasets(spec(root))


def test_corrupt_file_is_named_through_build(tmp_path, fashion_arrays, fashion_writer):
    root = tmp_path / "fashion"
    fashion_writer(root, fashion_arrays, gzipped=False)
    labels = root / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated") as error:
        build_datasets(spec(root))
    assert str(labels) in str(error.value)


@pytest.mark.skipif(
    not REAL_ROOT.is_dir(),
    reason=f"real Fashion-MNIST not installed at {REAL_ROOT} (apt-get install -y dataset-fashion-mnist)",
)
def test_real_fashion_mnist_loads():
    bundle = build_datasets(DataSpec(kind="fashion-mnist"))
    assert (len(bundle.train), len(bundle.val)) == (60000, 10000)
    for dataset in (bundle.train, bundle.val):
        assert sorted(set(dataset.targets.tolist())) == list(range(10))
    image, label = bundle.val[0]
    assert image.shape == (1, 28, 28) and 0 <= label <= 9
