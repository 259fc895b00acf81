"""The trainer end to end on synthetic data: outputs, final masks, resume, refusals."""

from __future__ import annotations

import json
import math

import pytest
import torch

from subp_fx.errors import CheckpointError, ConfigError
from subp_fx.recipes.schema import validate_recipe
from subp_fx.train import trainer as trainer_module
from subp_fx.train.checkpoint import load_trained
from subp_fx.train.distributed import DistContext
from subp_fx.train.trainer import evaluate_checkpoint, state_digest, train
from tests.conftest import small_recipe, write_imagefolder


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
    for module in gm.modules():
        if hasattr(module, "block_mask"):
            assert torch.equal(
                module.block_mask.sum(1), torch.full((module.block_mask.shape[0],), module.in_channels / 2)
            )
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
    result, _ = run(
        tmp_path, train={"epochs": 2}, sparsity={"decay_end": 1, "mode": "hard", "criterion": "L1", "N": 32}
    )
    assert result.masks_final


def test_dense_recipe_trains_without_masks(tmp_path):
    result, _ = run(tmp_path, train={"epochs": 1}, sparsity={"prune_rate": 0.0, "decay_end": 0})
    assert result.masks_final and result.final["val"]["samples"] == 32


# --- training fidelity and the paths a multi-epoch ImageNet run takes -------------------------

RAMP = {"decay_start": 0, "decay_end": 3}  # prune rate ramps over epochs 0..3, final from epoch 3 on


def _records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _kill_at(monkeypatch, epoch_index: int):
    original = trainer_module.Trainer._train_epoch

    def killed(self, epoch):
        if epoch == epoch_index:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(trainer_module.Trainer, "_train_epoch", killed)
    return original


def _comparable(record: dict) -> dict:
    return {key: value for key, value in record.items() if key != "seconds"}


def test_a_multi_epoch_ramp_regrows_pruned_blocks(tmp_path, monkeypatch):
    """Blocks pruned at one epoch come back at a later one while the rate ramps, and the logged
    'revived' counts are exactly the 0 -> 1 flips of the masks the epochs trained with."""
    masks_per_epoch = []
    original = trainer_module.Trainer._train_epoch

    def snapshot(self, epoch):
        masks_per_epoch.append({name: m.block_mask.clone() for name, m in trainer_module.subp_modules(self.gm)})
        return original(self, epoch)

    monkeypatch.setattr(trainer_module.Trainer, "_train_epoch", snapshot)
    result, _ = run(tmp_path, train={"epochs": 5}, sparsity=RAMP)
    assert result.masks_final
    records = _records(tmp_path / "run")
    flips = [
        {name: int(((before[name] == 0) & (after[name] == 1)).sum()) for name in after}
        for before, after in zip(masks_per_epoch, masks_per_epoch[1:], strict=False)
    ]
    for epoch, counts in enumerate(flips, start=1):
        assert {name: layer["revived"] for name, layer in records[epoch]["layers"].items()} == counts
    assert sum(sum(counts.values()) for counts in flips[:2]) > 0, "no block regrew during the ramp"
    kept = [records[e]["layers"]["features.1.0"]["kept_per_row"] for e in range(5)]
    assert kept[0] == 64 and kept[0] > kept[1] > kept[2] > kept[3] == kept[4] == 32
    assert [records[e]["layers"]["features.1.0"]["regrown"] > 0 for e in range(5)] == [True] * 3 + [False] * 2
    assert "revived" in (tmp_path / "run" / "train.log").read_text()


def test_resume_from_the_middle_of_the_ramp_is_bit_exact(tmp_path, monkeypatch):
    run(tmp_path, "straight", train={"epochs": 5}, sparsity=RAMP)
    original = _kill_at(monkeypatch, 2)  # epochs 1 and 2 done, masks between 0 and the target
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "killed", train={"epochs": 5}, sparsity=RAMP)
    monkeypatch.setattr(trainer_module.Trainer, "_train_epoch", original)
    killed_records = _records(tmp_path / "killed")
    assert [r["epoch"] for r in killed_records] == [1, 2]
    assert all(0 < layer["scheduled_rate"] < 0.5 for layer in killed_records[-1]["layers"].values())
    run(tmp_path, "killed", resume=True, train={"epochs": 5}, sparsity=RAMP)
    straight_gm, _, _ = load_trained(tmp_path / "straight" / "last.pt")
    resumed_gm, _, _ = load_trained(tmp_path / "killed" / "last.pt")
    assert state_digest(straight_gm) == state_digest(resumed_gm)
    straight, resumed = _records(tmp_path / "straight"), _records(tmp_path / "killed")
    assert [_comparable(r) for r in straight] == [_comparable(r) for r in resumed]
    assert sum(layer["revived"] for r in resumed[2:] for layer in r["layers"].values()) > 0


def test_resume_with_workers_and_augmentation_is_bit_exact(tmp_path, monkeypatch):
    """Persistent loader workers are seeded once, when they start: a resumed run's workers start
    at the resumed epoch. Crops, flips and lighting must still be the uninterrupted run's."""
    root = write_imagefolder(tmp_path / "images", classes=2, per_class=12, size=24)
    sections = {
        "data": {"kind": "imagefolder", "root": str(root), "image_size": 16, "augment": True, "lighting": 0.1},
        "train": {"epochs": 4, "workers": 2, "batch_size": 8},
        "sparsity": {"decay_start": 0, "decay_end": 2},
    }
    run(tmp_path, "straight", **sections)
    original = _kill_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "killed", **sections)
    monkeypatch.setattr(trainer_module.Trainer, "_train_epoch", original)
    run(tmp_path, "killed", resume=True, **sections)
    straight_gm, _, _ = load_trained(tmp_path / "straight" / "last.pt")
    resumed_gm, _, _ = load_trained(tmp_path / "killed" / "last.pt")
    assert state_digest(straight_gm) == state_digest(resumed_gm)
    straight, resumed = _records(tmp_path / "straight"), _records(tmp_path / "killed")
    assert [_comparable(r) for r in straight] == [_comparable(r) for r in resumed]


def test_the_last_partial_batch_is_trained_on(tmp_path):
    result, _ = run(tmp_path, train={"epochs": 2, "batch_size": 16}, data={"synthetic_train_size": 70})
    assert result.final["train"]["samples"] == 70  # 4 x 16 + 6
    dropped, _ = run(tmp_path, "dropped", train={"epochs": 2, "batch_size": 16, "drop_last": True})
    assert dropped.final["train"]["samples"] == 64


def test_epoch_lr_step_holds_the_authors_cosine_rate_for_a_whole_epoch(tmp_path, monkeypatch):
    seen = []
    original_step = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    run(tmp_path, train={"epochs": 4}, optim={"lr": 0.05, "lr_step": "epoch"})
    steps_per_epoch = 4  # 64 samples, batch 16
    expected = [0.05 * 0.5 * (1 + math.cos(math.pi * epoch / 4)) for epoch in range(4)]
    assert seen == pytest.approx([rate for rate in expected for _ in range(steps_per_epoch)], rel=1e-12)
    assert [r["lr"] for r in _records(tmp_path / "run")] == pytest.approx(expected, rel=1e-12)


def test_evaluation_runs_in_fp32_without_autocast_even_when_training_uses_it(tmp_path, monkeypatch):
    """On CUDA training runs under fp16 autocast; evaluation must not. CPU stand-in: an autocast
    (bfloat16 on CPU) wherever the trainer asks for one, and the logits' dtype shows where it was."""
    monkeypatch.setattr(
        trainer_module, "_autocast", lambda *args, **kwargs: torch.autocast("cpu", dtype=torch.bfloat16)
    )
    recipe = validate_recipe(small_recipe(tmp_path / "run", train={"epochs": 1}, sparsity={"decay_end": 0}))
    trainer = trainer_module.Trainer(recipe)
    dtypes = {True: set(), False: set()}
    trainer.gm.register_forward_hook(lambda module, args, output: dtypes[module.training].add(output.dtype))
    try:
        trainer.run()
    finally:
        trainer.close()
    assert dtypes[True] == {torch.bfloat16}, "training ran under the autocast"
    assert dtypes[False] == {torch.float32}, "evaluation did not"


def test_evaluation_reports_the_label_smoothed_loss(tmp_path):
    result, recipe = run(tmp_path, train={"epochs": 1}, sparsity={"decay_end": 0}, optim={"label_smoothing": 0.3})
    gm, _, _ = load_trained(tmp_path / "run" / "last.pt")
    bundle = trainer_module.build_data(recipe)
    images = torch.stack([bundle.val[i][0] for i in range(len(bundle.val))])
    targets = torch.tensor([bundle.val[i][1] for i in range(len(bundle.val))])
    with torch.no_grad():
        logits = gm.eval()(images)
    smoothed = float(torch.nn.functional.cross_entropy(logits, targets, label_smoothing=0.3))
    plain = float(torch.nn.functional.cross_entropy(logits, targets))
    assert result.final["val"]["loss"] == pytest.approx(smoothed, rel=1e-5)
    assert result.final["val"]["loss"] != pytest.approx(plain, rel=1e-5)


def test_cuda_backends_follow_the_recipe(tmp_path):
    recipe = validate_recipe(small_recipe(tmp_path, train={"tf32": False, "cudnn_benchmark": False}))
    cuda = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cuda", 0))
    cpu = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    saved = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.fp32_precision)
    saved_conv = torch.backends.cudnn.conv.fp32_precision
    try:
        trainer_module._configure_cuda_backends(validate_recipe(small_recipe(tmp_path)), cuda)
        assert torch.backends.cudnn.benchmark
        assert torch.backends.cuda.matmul.fp32_precision == torch.backends.cudnn.conv.fp32_precision == "tf32"
        trainer_module._configure_cuda_backends(recipe, cuda)
        assert not torch.backends.cudnn.benchmark
        assert torch.backends.cuda.matmul.fp32_precision == torch.backends.cudnn.conv.fp32_precision == "ieee"
        torch.backends.cudnn.benchmark = True
        trainer_module._configure_cuda_backends(recipe, cpu)
        assert torch.backends.cudnn.benchmark, "CPU runs leave the CUDA settings alone"
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.fp32_precision = saved
        torch.backends.cudnn.conv.fp32_precision = saved_conv


def test_sync_batchnorm_converts_only_multi_process_cuda_runs(tmp_path):
    recipe = validate_recipe(small_recipe(tmp_path, train={"sync_batchnorm": True}))
    single = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    gloo = DistContext(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    nccl = DistContext(rank=0, world_size=2, local_rank=0, device=torch.device("cuda", 0))

    def prepared():
        return trainer_module.build_prepared_model(recipe, trainer_module.build_data(recipe))

    gm = prepared()
    assert trainer_module._sync_batchnorm(gm, recipe, single) is gm
    with pytest.raises(ConfigError, match="sync_batchnorm needs CUDA"):
        trainer_module._sync_batchnorm(prepared(), recipe, gloo)
    converted = trainer_module._sync_batchnorm(prepared(), recipe, nccl)
    norms = [m for m in converted.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, torch.nn.SyncBatchNorm) for m in norms)
    # same state-dict keys, so checkpoints load into a plain model; the traced graph still runs
    assert list(converted.state_dict()) == list(prepared().state_dict())
    assert converted.eval()(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    off = validate_recipe(small_recipe(tmp_path))
    assert trainer_module._sync_batchnorm(gm, off, nccl) is gm


def test_single_process_run_with_sync_batchnorm_trains(tmp_path):
    result, _ = run(tmp_path, train={"epochs": 2, "sync_batchnorm": True}, sparsity={"decay_end": 1})
    assert result.masks_final
