"""ImageFolder: layout discovery, class indexing, ImageNet transforms, and layout errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from subp_fx.data import DataSpec, build_datasets
from subp_fx.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD
from subp_fx.errors import ConfigError, DataError


def spec(root: Path, **overrides) -> DataSpec:
    return DataSpec(kind="imagefolder", root=str(root), **overrides)


def expected_normalised(colour: tuple[int, int, int]) -> torch.Tensor:
    return torch.tensor([(c / 255 - m) / s for c, m, s in zip(colour, IMAGENET_MEAN, IMAGENET_STD)])


def test_shapes_labels_class_names(imagefolder_root):
    bundle = build_datasets(spec(imagefolder_root), image_size=32)
    assert bundle.class_names == ("cat", "dog", "fox")
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (3, 3, 32)
    assert (len(bundle.train), len(bundle.val)) == (12, 6)
    assert bundle.train.targets == [0] * 4 + [1] * 4 + [2] * 4
    assert bundle.val.targets == [0, 0, 1, 1, 2, 2]
    image, label = bundle.train[5]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == 1


def test_default_image_size_is_224(imagefolder_root):
    bundle = build_datasets(spec(imagefolder_root))
    assert bundle.image_size == 224 and bundle.val[0][0].shape == (3, 224, 224)


@pytest.mark.parametrize("split", ["train", "val"])
def test_pixels_are_imagenet_normalised(imagefolder_root, class_colours, split):
    """Solid-colour images stay solid under crop/resize/flip, so every pixel is known exactly."""
    dataset = getattr(build_datasets(spec(imagefolder_root), image_size=16), split)
    colours = list(class_colours.values())
    torch.manual_seed(0)
    for index in range(len(dataset)):
        image, label = dataset[index]
        expected = expected_normalised(colours[label])[:, None, None].expand_as(image)
        torch.testing.assert_close(image, expected, atol=1e-5, rtol=0)


def test_val_resizes_to_size_over_0875_then_center_crops(tmp_path, png_writer):
    """A 1-pixel red border on a 40x40 image: Resize(36) + CenterCrop(32) cuts it off entirely,
    whereas resizing straight to 32 would keep it."""
    for split in ("train", "val"):
        png_writer(tmp_path / split / "only" / "0.png", (255, 255, 255))
    bordered = Image.new("RGB", (40, 40), (255, 0, 0))
    bordered.paste((255, 255, 255), (1, 1, 39, 39))
    bordered.save(tmp_path / "val" / "only" / "0.png")
    image, _ = build_datasets(spec(tmp_path), image_size=32).val[0]
    torch.testing.assert_close(image, expected_normalised((255, 255, 255))[:, None, None].expand_as(image), atol=0.02, rtol=0)


def test_augment_false_makes_train_deterministic(tmp_path):
    for split in ("train", "val"):
        path = tmp_path / split / "noise" / "0.png"
        path.parent.mkdir(parents=True)
        Image.frombytes("RGB", (40, 40), bytes(range(256)) * 18 + bytes(192)).save(path)
    augmented = build_datasets(spec(tmp_path), image_size=24).train
    plain = build_datasets(spec(tmp_path, augment=False), image_size=24)
    torch.manual_seed(0)
    assert not all(torch.equal(augmented[0][0], augmented[0][0]) for _ in range(5))
    assert torch.equal(plain.train[0][0], plain.val[0][0])


def test_grayscale_model(imagefolder_root):
    bundle = build_datasets(spec(imagefolder_root), image_size=16, in_channels=1)
    assert bundle.in_channels == 1 and bundle.val[0][0].shape == (1, 16, 16)


def test_unsupported_channel_count(imagefolder_root):
    with pytest.raises(ConfigError, match="in_channels"):
        build_datasets(spec(imagefolder_root), in_channels=4)


def test_val_may_lack_a_train_class_and_keeps_train_indices(imagefolder_root):
    for path in (imagefolder_root / "val" / "dog").iterdir():
        path.unlink()
    (imagefolder_root / "val" / "dog").rmdir()
    bundle = build_datasets(spec(imagefolder_root))
    assert bundle.num_classes == 3 and bundle.val.targets == [0, 0, 2, 2]


def test_hidden_folders_and_uppercase_extensions(imagefolder_root, png_writer):
    png_writer(imagefolder_root / "train" / ".cache" / "x.png", (0, 0, 0))
    png_writer(imagefolder_root / "train" / "cat" / "nested" / "EXTRA.PNG", (0, 0, 0))
    bundle = build_datasets(spec(imagefolder_root))
    assert bundle.class_names == ("cat", "dog", "fox") and len(bundle.train) == 13


def test_root_missing(tmp_path):
    with pytest.raises(DataError, match="does not exist") as error:
        build_datasets(spec(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(error.value)


def test_root_none_is_a_config_error():
    with pytest.raises(ConfigError, match="data.root"):
        build_datasets(DataSpec(kind="imagefolder"))


@pytest.mark.parametrize("present,missing", [("train", "val/"), ("val", "train/")])
def test_root_without_a_split(tmp_path, png_writer, present, missing):
    png_writer(tmp_path / present / "cat" / "0.png", (1, 2, 3))
    with pytest.raises(DataError, match=f"lacks {missing}"):
        build_datasets(spec(tmp_path))


def test_split_without_class_folders(imagefolder_root, png_writer):
    for path in sorted((imagefolder_root / "val").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    png_writer(imagefolder_root / "val" / "loose.png", (1, 2, 3))
    with pytest.raises(DataError, match="no class sub-folders") as error:
        build_datasets(spec(imagefolder_root))
    assert str(imagefolder_root / "val") in str(error.value)


def test_split_without_images_lists_extensions(tmp_path, png_writer):
    png_writer(tmp_path / "val" / "cat" / "0.png", (1, 2, 3))
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="no images") as error:
        build_datasets(spec(tmp_path))
    assert ".jpeg" in str(error.value) and ".png" in str(error.value)


def test_one_empty_class_is_named(imagefolder_root):
    (imagefolder_root / "train" / "owl").mkdir()
    with pytest.raises(DataError, match="owl"):
        build_datasets(spec(imagefolder_root))


def test_val_class_not_in_train(imagefolder_root, png_writer):
    png_writer(imagefolder_root / "val" / "zebra" / "0.png", (1, 2, 3))
    with pytest.raises(DataError, match="zebra") as error:
        build_datasets(spec(imagefolder_root))
    assert "train/" in str(error.value)


def test_undecodable_image_is_named(imagefolder_root):
    broken = imagefolder_root / "val" / "cat" / "0.png"
    broken.write_bytes(b"not a png")
    val = build_datasets(spec(imagefolder_root)).val
    with pytest.raises(DataError) as error:
        val[0]
    assert str(broken) in str(error.value)
