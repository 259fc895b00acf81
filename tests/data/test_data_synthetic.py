"""Synthetic data: deterministic, shaped as asked, and learnable in a few steps."""

from __future__ import annotations

import pytest
import torch

from subp_fx.data import DataSpec, build_datasets
from subp_fx.errors import ConfigError


def test_defaults():
    bundle = build_datasets(DataSpec(kind="synthetic"))
    assert (len(bundle.train), len(bundle.val)) == (512, 128)
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (10, 3, 32)
    assert bundle.class_names == tuple(f"class_{i}" for i in range(10))
    image, label = bundle.train[13]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == 3


def test_same_spec_gives_identical_samples_and_splits_differ():
    spec = DataSpec(kind="synthetic", synthetic_train_size=20, synthetic_val_size=20)
    first, second = build_datasets(spec), build_datasets(spec)
    for index in (0, 7, 19):
        assert torch.equal(first.train[index][0], second.train[index][0])
        assert torch.equal(first.val[index][0], second.val[index][0])
        assert first.train[index][1] == first.val[index][1]
        assert not torch.equal(first.train[index][0], first.val[index][0])
    assert not torch.equal(first.train[0][0], first.train[10][0])  # same class, different noise


def test_num_classes_channels_and_size():
    bundle = build_datasets(DataSpec(kind="synthetic", num_classes=4, image_size=20), in_channels=1)
    assert bundle.num_classes == 4 and bundle.val[0][0].shape == (1, 20, 20)
    assert sorted(set(bundle.train.targets)) == [0, 1, 2, 3]


def test_a_few_training_steps_beat_chance():
    """A linear classifier after 30 SGD steps must be far above 10% chance on val."""
    bundle = build_datasets(DataSpec(kind="synthetic", image_size=8, synthetic_train_size=256, synthetic_val_size=200))
    train_x = torch.stack([bundle.train[i][0] for i in range(len(bundle.train))]).flatten(1)
    train_y = torch.tensor(bundle.train.targets)
    val_x = torch.stack([bundle.val[i][0] for i in range(len(bundle.val))]).flatten(1)
    val_y = torch.tensor(bundle.val.targets)
    torch.manual_seed(0)
    model = torch.nn.Linear(train_x.shape[1], bundle.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(30):
        batch = slice((step * 32) % 256, (step * 32) % 256 + 32)
        loss = torch.nn.functional.cross_entropy(model(train_x[batch]), train_y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    accuracy = (model(val_x).argmax(1) == val_y).float().mean().item()
    assert accuracy > 0.6, f"val accuracy {accuracy:.2f} after 30 steps"


def test_split_size_beyond_seed_band_is_rejected():
    with pytest.raises(ConfigError, match="synthetic_val_size"):
        build_datasets(DataSpec(kind="synthetic", synthetic_val_size=1 << 30))
