"""ImageFolder: layout discovery, class indexing, ImageNet transforms, and layout errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from subp_fx.data import DataSpec, build_datasets
from subp_fx.data.imagefolder import (
    IMAGENET_MEAN,
    IMAGENET_PCA_EIGENVALUES,
    IMAGENET_PCA_EIGENVECTORS,
    IMAGENET_STD,
    PCALighting,
)
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
    torch.testing.assert_close(
        image, expected_normalised((255, 255, 255))[:, None, None].expand_as(image), atol=0.02, rtol=0
    )


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


def test_pca_eigenvectors_are_orthonormal_columns():
    vectors = torch.tensor(IMAGENET_PCA_EIGENVECTORS)
    torch.testing.assert_close(vectors.T @ vectors, torch.eye(3), atol=2e-4, rtol=0)
    # the largest component is (nearly) the luminance direction: equal weight on R, G and B
    assert torch.allclose(vectors[:, 0].abs(), torch.full((3,), 0.577), atol=0.01)


def test_pca_lighting_adds_one_colour_shift_along_the_eigenvectors():
    lighting = PCALighting(0.1)
    image = torch.rand(3, 5, 7)
    torch.manual_seed(11)
    shifted = lighting(image)
    torch.manual_seed(11)
    alpha = torch.randn(3) * 0.1
    shift = (shifted - image).flatten(1)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-7), "one shift per channel"
    # back in the eigenbasis, the shift is alpha_i * eigenvalue_i
    coefficients = torch.tensor(IMAGENET_PCA_EIGENVECTORS).T @ shift[:, 0]
    torch.testing.assert_close(coefficients, alpha * torch.tensor(IMAGENET_PCA_EIGENVALUES), atol=1e-6, rtol=1e-4)
    assert torch.equal(PCALighting(0.0)(image), image)


def test_pca_lighting_noise_has_the_pca_covariance():
    """Over many draws the shift's covariance is std^2 * V diag(eigenvalues^2) V^T."""
    lighting = PCALighting(0.1)
    torch.manual_seed(0)
    zero = torch.zeros(3, 1, 1)
    shifts = torch.stack([lighting(zero).flatten() for _ in range(20000)]).double()
    vectors = torch.tensor(IMAGENET_PCA_EIGENVECTORS, dtype=torch.float64)
    values = torch.tensor(IMAGENET_PCA_EIGENVALUES, dtype=torch.float64)
    expected = 0.01 * vectors @ torch.diag(values**2) @ vectors.T
    torch.testing.assert_close(shifts.T.cov(), expected, atol=2e-5, rtol=0.05)


def test_pca_lighting_refuses_a_gray_image():
    with pytest.raises(ValueError, match="RGB"):
        PCALighting(0.1)(torch.zeros(1, 4, 4))


def test_lighting_sits_between_to_tensor_and_normalize(imagefolder_root, class_colours):
    """A solid-colour image stays solid under crop and flip, so (output * std + mean) - colour is
    exactly the lighting shift in [0, 1] pixel units: one value per channel, on the PCA scale."""
    dataset = build_datasets(spec(imagefolder_root, lighting=0.1), image_size=16).train
    names = [type(step).__name__ for step in dataset.transform.transforms]
    assert names.index("ToTensor") < names.index("PCALighting") < names.index("Normalize")
    colours = list(class_colours.values())
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    shifts = []
    torch.manual_seed(0)
    for index in range(len(dataset)):
        image, label = dataset[index]
        shift = (image * std + mean - torch.tensor(colours[label])[:, None, None] / 255).flatten(1)
        assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-5)
        shifts.append(shift[:, 0])
    shifts = torch.stack(shifts)
    assert 0 < shifts.abs().max() < 0.2 and len({tuple(row.tolist()) for row in shifts}) == len(dataset)


def test_lighting_off_leaves_pixels_exact_and_val_is_never_lit(imagefolder_root):
    bundle = build_datasets(spec(imagefolder_root, lighting=0.1), image_size=16)
    assert "PCALighting" not in [type(step).__name__ for step in bundle.val.transform.transforms]
    plain = build_datasets(spec(imagefolder_root), image_size=16).train
    assert "PCALighting" not in [type(step).__name__ for step in plain.transform.transforms]


@pytest.mark.parametrize(
    "overrides, in_channels, message",
    [
        ({"lighting": 0.1, "augment": False}, None, "augment"),
        ({"lighting": -0.1}, None, "positive standard deviation"),
        ({"lighting": 0.1}, 1, "RGB"),
    ],
)
def test_lighting_refusals(imagefolder_root, overrides, in_channels, message):
    with pytest.raises(ConfigError, match=message):
        build_datasets(spec(imagefolder_root, **overrides), image_size=16, in_channels=in_channels)


def test_lighting_is_refused_for_other_kinds():
    with pytest.raises(ConfigError, match="imagefolder data only"):
        build_datasets(DataSpec(kind="synthetic", lighting=0.1))
