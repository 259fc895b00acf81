"""build_datasets: kind dispatch, image-size precedence, subsets, and spec validation."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from subp_fx.data import DataSpec, build_datasets
from subp_fx.errors import ConfigError


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(ConfigError, match="'cifar'.*fashion-mnist, imagefolder, synthetic"):
        build_datasets(SimpleNamespace(**{**DataSpec().__dict__, "kind": "cifar"}))


def test_any_object_with_the_spec_attributes_is_accepted():
    """The recipe passes its own (pydantic) model; only attribute access is relied on."""
    bundle = build_datasets(SimpleNamespace(**{**DataSpec(synthetic_train_size=8).__dict__}))
    assert len(bundle.train) == 8


@pytest.mark.parametrize(
    "argument,spec_size,expected",
    [(None, None, 32), (None, 20, 20), (24, 20, 24)],
    ids=["kind-default", "spec", "argument-overrides-spec"],
)
def test_image_size_precedence(argument, spec_size, expected):
    bundle = build_datasets(DataSpec(kind="synthetic", image_size=spec_size, synthetic_val_size=2), image_size=argument)
    assert bundle.image_size == expected and bundle.val[0][0].shape[-1] == expected


def test_subsets_keep_the_first_samples():
    full = build_datasets(DataSpec(synthetic_train_size=30, synthetic_val_size=20))
    cut = build_datasets(DataSpec(synthetic_train_size=30, synthetic_val_size=20, train_subset=5, val_subset=3))
    assert (len(cut.train), len(cut.val)) == (5, 3)
    for index in range(5):
        assert torch.equal(cut.train[index][0], full.train[index][0])
    for index in range(3):
        assert torch.equal(cut.val[index][0], full.val[index][0])


def test_subset_larger_than_split_keeps_everything():
    bundle = build_datasets(DataSpec(synthetic_train_size=10, train_subset=1000))
    assert len(bundle.train) == 10


def test_subset_applies_to_files_too(imagefolder_root):
    bundle = build_datasets(DataSpec(kind="imagefolder", root=str(imagefolder_root), train_subset=2, val_subset=1))
    assert (len(bundle.train), len(bundle.val)) == (2, 1)


@pytest.mark.parametrize("field", ["image_size", "num_classes", "synthetic_train_size", "train_subset", "val_subset"])
def test_non_positive_values_are_rejected(field):
    with pytest.raises(ConfigError, match=f"data.{field} is 0"):
        build_datasets(DataSpec(**{field: 0}))


def test_non_positive_image_size_argument():
    with pytest.raises(ConfigError, match="image_size is 0"):
        build_datasets(DataSpec(), image_size=0)


def test_non_positive_in_channels():
    with pytest.raises(ConfigError, match="in_channels is 0"):
        build_datasets(DataSpec(), in_channels=0)


def test_num_classes_must_match_data_defined_classes(imagefolder_root):
    with pytest.raises(ConfigError, match="num_classes is 5 .* 3 classes"):
        build_datasets(DataSpec(kind="imagefolder", root=str(imagefolder_root), num_classes=5))
    assert build_datasets(DataSpec(kind="imagefolder", root=str(imagefolder_root), num_classes=3)).num_classes == 3
