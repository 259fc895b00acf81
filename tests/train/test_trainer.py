"""The trainer end to end on synthetic data: outputs, final masks, resume, refusals."""

from __future__ import annotations

import json

import pytest
import torch

from subp_fx.errors import CheckpointError, ConfigError
from subp_fx.recipes.schema import validate_recipe
from subp_fx.train import trainer as trainer_module
from subp_fx.train.checkpoint import load_trained
from subp_fx.train.trainer import evaluate_checkpoint, state_digest, train
from tests.conftest import small_recipe


def run(tmp_path, name="run", resume=False, force=False, **sections):
    recipe = validate_recipe(small_recipe(tmp_path / name, **sections))
    return train(recipe, resume=resume, force=force), recipe


def test_training_writes_outputs_and_ends_with_uniform_masks(tmp_path):
    result, recipe = run(tmp_path)
    out = tmp_path / "run"
    assert result.masks_final and result.mask_problems == {}
    for name in ("last.pt", "best.pt", "metrics.jsonl", "train.log", "summary.json"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in records] == [1, 2, 3]
    # epoch 1 (index 0) is dense at a cubic ramp starting at 0; from decay_end=1 on it is final
    first, last = records[0]["layers"], records[-1]["layers"]
    assert all(layer["kept_per_row"] == layer["in_channels"] for layer in first.values())
    assert all(layer["kept_per_row"] == layer["in_channels"] // 2 and layer["regrown"] == 0 for layer in last.values())
    assert any(layer["changed"] > 0 for layer in records[1]["layers"].values())
    assert "blocks regrown" in (out / "train.log").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["masks_final_and_uniform"] is True and summary["world_size"] == 1

    gm, saved_recipe, checkpoint = load_trained(out / "last.pt")
    assert saved_recipe == recipe and checkpoint.epoch == 3
    for name, module in gm.named_modules():
        if hasattr(module, "block_mask"):
            assert torch.equal(module.block_mask.sum(1), torch.full((module.block_mask.shape[0],), module.in_channels / 2))
    metrics = evaluate_checkpoint(recipe, out / "last.pt")
    assert metrics["top1"] == pytest.approx(records[-1]["val"]["top1"])


def test_resume_continues_as_if_never_stopped(tmp_path, monkeypatch):
    straight, _ = run(tmp_path, "straight")
    original_train_epoch = trainer_module.Trainer._train_epoch

    def killed_during_epoch_2(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original_train_epoch(self, epoch)

    monkeypatch.setattr(trainer_module.Trainer, "_train_epoch", killed_during_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "killed")
    monkeypatch.setattr(trainer_module.Trainer, "_train_epoch", original_train_epoch)
    assert json.loads((tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 1
    resumed, _ = run(tmp_path, "killed", resume=True)
    assert resumed.epochs_run == 2
    gm_straight, _, _ = load_trained(tmp_path / "straight" / "last.pt")
    gm_resumed, _, _ = load_trained(tmp_path / "killed" / "last.pt")
    assert state_digest(gm_straight) == state_digest(gm_resumed)
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_existing_run_is_never_overwritten_without_resume_or_force(tmp_path):
    run(tmp_path, train={"epochs": 2}, sparsity={"decay_end": 1})
    out = tmp_path / "run"
    before = {name: (out / name).read_bytes() for name in ("last.pt", "metrics.jsonl", "train.log")}
    with pytest.raises(ConfigError, match="--resume"):
        run(tmp_path, train={"epochs": 2}, sparsity={"decay_end": 1})
    assert before == {name: (out / name).read_bytes() for name in before}


def test_corrupt_checkpoint_on_resume_is_reported_and_kept(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        run(tmp_path, resume=True)
    assert (out / "last.pt").read_bytes() == b"not a checkpoint at all"


def test_resume_refuses_a_different_sparsity_section(tmp_path):
    run(tmp_path, train={"epochs": 2}, sparsity={"decay_end": 1})
    with pytest.raises(ConfigError, match="another model or sparsity"):
        run(tmp_path, resume=True, train={"epochs": 2}, sparsity={"decay_end": 1, "N": 32})


def test_hard_mode_and_l1_train_too(tmp_path):
    result, _ = run(tmp_path, train={"epochs": 2}, sparsity={"decay_end": 1, "mode": "hard", "criterion": "L1", "N": 32})
    assert result.masks_final


def test_dense_recipe_trains_without_masks(tmp_path):
    result, _ = run(tmp_path, train={"epochs": 1}, sparsity={"prune_rate": 0.0, "decay_end": 0})
    assert result.masks_final and result.final["val"]["samples"] == 32
