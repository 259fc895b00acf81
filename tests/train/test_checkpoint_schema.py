"""train.checkpoint: one schema for what the trainer writes and resume, --evaluate and compile read."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from subp_fx.errors import CheckpointError
from subp_fx.train.checkpoint import TrainingCheckpoint, read_training_checkpoint


def _checkpoint() -> TrainingCheckpoint:
    return TrainingCheckpoint(
        recipe={"name": "x"},
        epoch=3,
        model={"w": torch.ones(2)},
        optimizer={},
        scheduler={},
        scaler={},
        best_top1=12.5,
        metrics={"val": {"top1": 12.5}},
        rng={"torch": torch.zeros(3)},
        num_classes=10,
        in_channels=1,
        image_size=28,
    )


def test_a_checkpoint_round_trips_through_its_file(tmp_path):
    checkpoint = _checkpoint()
    checkpoint.save(tmp_path / "last.pt")
    again = read_training_checkpoint(tmp_path / "last.pt")
    for field in dataclasses.fields(TrainingCheckpoint):
        assert str(getattr(again, field.name)) == str(getattr(checkpoint, field.name)), field.name


def test_a_plain_state_dict_is_refused_as_a_training_checkpoint(tmp_path):
    torch.save({"conv.weight": torch.ones(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="plain state dict, not a subp-fx training checkpoint"):
        read_training_checkpoint(tmp_path / "plain.pt")


def test_a_truncated_checkpoint_names_the_missing_fields(tmp_path):
    payload = _checkpoint().to_payload()
    del payload["optimizer"], payload["image_size"]
    torch.save(payload, tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="lacks optimizer, image_size"):
        read_training_checkpoint(tmp_path / "cut.pt")


def test_another_version_is_refused(tmp_path):
    payload = _checkpoint().to_payload() | {"version": 99}
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        read_training_checkpoint(tmp_path / "future.pt")
