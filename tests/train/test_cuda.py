"""The GPU training path: CUDA, AMP (float16 with a grad scaler, bfloat16), NCCL, channels_last.

Every test is parametrised over the device: the ``cpu`` variants run everywhere (and keep the
logic of these checks exercised on machines without a GPU); the ``cuda`` variants are marked
``cuda`` and skipped with "no CUDA device" where there is none. On a GPU machine run only them
with ``pytest -m cuda tests/train/test_cuda.py`` (``benchmarks/gpu_checks.sh`` does).
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from subp_fx.algorithm.masks import block_importance
from subp_fx.passes import subp_modules, update_masks
from subp_fx.recipes.schema import validate_recipe
from subp_fx.train import trainer as trainer_module
from subp_fx.train.checkpoint import read_training_checkpoint
from subp_fx.train.trainer import Trainer, build_data, build_prepared_model, train
from tests.conftest import small_recipe, write_recipe

REPO = Path(__file__).resolve().parents[2]
NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
NEEDS_TWO_GPUS = pytest.mark.skipif(
    torch.cuda.device_count() < 2,
    reason="no CUDA device" if not torch.cuda.is_available() else "needs two CUDA devices",
)
CUDA = pytest.param("cuda", marks=[pytest.mark.cuda, NEEDS_CUDA])
DEVICES = ["cpu", CUDA]


def _recipe(tmp_path: Path, device: str, name: str = "run", **sections) -> dict:
    train_section = {"device": device, "epochs": 2, "max_steps_per_epoch": 3, **sections.pop("train", {})}
    return small_recipe(tmp_path / name, train=train_section, **sections)


@pytest.fixture
def tf32_allowed():
    """TF32 matmuls switched on, as the trainer does on CUDA (``train.tf32``), restored afterwards."""
    matmul = torch.backends.cuda.matmul
    saved = matmul.fp32_precision
    matmul.fp32_precision = "tf32"
    yield
    matmul.fp32_precision = saved


@pytest.mark.parametrize("amp_dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("device", DEVICES)
def test_prepare_and_amp_training_steps(tmp_path, device, amp_dtype):
    recipe = validate_recipe(_recipe(tmp_path, device, train={"amp": True, "amp_dtype": amp_dtype}))
    trainer = Trainer(recipe)
    on_cuda = device == "cuda"
    assert trainer.amp is on_cuda
    assert trainer.scaler.is_enabled() is (on_cuda and amp_dtype == "float16")
    seen = []
    first_conv = subp_modules(trainer.gm)[0][1]
    first_conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    try:
        result = trainer.run()
    finally:
        trainer.close()
    assert {p.device.type for p in trainer.gm.parameters()} == {device}
    assert {m.block_mask.device.type for _, m in subp_modules(trainer.gm)} == {device}
    # convs run in the autocast dtype on CUDA (eval included: it only sees fp32 here if it turns autocast off)
    train_dtype = getattr(torch, amp_dtype) if on_cuda else torch.float32
    assert train_dtype in seen
    assert result.masks_final and torch.isfinite(torch.tensor(result.final["train"]["loss"]))
    if trainer.scaler.is_enabled():
        assert read_training_checkpoint(tmp_path / "run" / "last.pt").scaler["scale"] > 0


@pytest.mark.parametrize("amp_dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("device", DEVICES)
def test_pruned_weight_decay_sees_unscaled_gradients(tmp_path, device, amp_dtype, monkeypatch):
    decay = 0.01
    recipe = validate_recipe(
        _recipe(tmp_path, device, sparsity={"pruned_weight_decay": decay}, train={"amp": True, "amp_dtype": amp_dtype})
    )
    trainer = Trainer(recipe)
    calls = []
    real_decay = trainer_module.decay_pruned_weights

    def checked_decay(gm):
        # a disabled scaler never creates its per-optimiser state (and unscale_ is a no-op)
        states = getattr(trainer.scaler, "_per_optimizer_states", {})
        stage = states[id(trainer.optimizer)]["stage"].name if id(trainer.optimizer) in states else None
        before = {name: (m.weight.grad.clone(), m.weight.detach().clone()) for name, m in subp_modules(gm)}
        real_decay(gm)
        for name, module in subp_modules(gm):
            grad, weight = before[name]
            expected = grad + decay * (1 - module.weight_mask) * weight
            torch.testing.assert_close(module.weight.grad, expected, equal_nan=True)
        calls.append(
            {
                "unscaled": stage == "UNSCALED",
                "scaler": trainer.scaler.is_enabled(),
                "scale": trainer.scaler.get_scale() if trainer.scaler.is_enabled() else 1.0,
                # a float16 step that overflowed holds inf (the scaler skips it): look at the finite part
                "max_grad": max(
                    float(torch.where(grad.isfinite(), grad.abs(), 0).max()) for grad, _ in before.values()
                ),
                "pruned": sum(int((m.block_mask == 0).sum()) for _, m in subp_modules(gm)),
            }
        )

    monkeypatch.setattr(trainer_module, "decay_pruned_weights", checked_decay)
    try:
        trainer.run()
    finally:
        trainer.close()
    assert len(calls) == 6
    assert any(call["pruned"] > 0 for call in calls)  # epoch 2 runs with pruned blocks to decay
    for call in calls:
        if call["scaler"]:
            # after unscale_: gradients are at their true size, not multiplied by the loss scale (65536)
            assert call["unscaled"] and call["scale"] >= 1024 and call["max_grad"] < 100
        else:
            assert not call["unscaled"]


@pytest.mark.parametrize("criterion", ["BPAR", "L1"])
@pytest.mark.parametrize("device", DEVICES)
def test_mask_updates_match_the_cpu_for_the_same_seed(tf32_allowed, device, criterion):
    recipe = validate_recipe(
        {
            "model": {"name": "resnet18", "num_classes": 10, "small_input": True},
            "data": {"kind": "synthetic", "image_size": 32},
            "sparsity": {"N": 16, "prune_rate": 0.5, "decay_start": 1, "decay_end": 6, "criterion": criterion},
            "train": {"epochs": 8},
        }
    )
    torch.manual_seed(0)
    on_cpu = build_prepared_model(recipe, build_data(recipe))
    on_device = copy.deepcopy(on_cpu).to(device)
    for epoch in (2, 4, 6):  # regrowth epochs (multinomial draws), then the final mask
        with torch.no_grad():  # move the weights as training would, identically on both
            for (_, a), (_, b) in zip(subp_modules(on_cpu), subp_modules(on_device)):
                a.weight.mul_(1 + 0.1 * torch.sin(a.weight * 1000 + epoch))
                b.weight.copy_(a.weight)
        update_masks(on_cpu, epoch, seed=7)
        update_masks(on_device, epoch, seed=7)
        for (name, a), (_, b) in zip(subp_modules(on_cpu), subp_modules(on_device)):
            torch.testing.assert_close(
                block_importance(b.weight, b.N, criterion, b.block_mask).cpu(),
                block_importance(a.weight, a.N, criterion, a.block_mask),
                rtol=1e-5,
                atol=1e-6,
            )
            differ = int((a.block_mask != b.block_mask.cpu()).sum())
            assert differ == 0, f"epoch {epoch}, {name}: {differ} mask entries differ between cpu and {device}"
    assert any(int(m.block_mask.sum()) < m.block_mask.numel() for _, m in subp_modules(on_device))


@pytest.mark.parametrize("device", DEVICES)
def test_checkpoint_moves_between_gpu_and_cpu(tmp_path, device):
    """Trained on ``device`` (AMP float16: a grad scaler), resumed on the CPU, then back on ``device``."""
    legs = [(device, 2), ("cpu", 3), (device, 4)]
    for index, (leg_device, epochs) in enumerate(legs):
        recipe = validate_recipe(
            _recipe(tmp_path, leg_device, name="moved", train={"epochs": epochs, "amp": True, "channels_last": True})
        )
        result = train(recipe, resume=index > 0)
        assert result.epochs_run == (2 if index == 0 else 1)
        checkpoint = read_training_checkpoint(tmp_path / "moved" / "last.pt")
        assert checkpoint.epoch == epochs
        assert all(t.device.type == "cpu" for t in checkpoint.model.values())
        assert bool(checkpoint.scaler) is (leg_device == "cuda")
        assert result.masks_final
    records = [json.loads(line) for line in (tmp_path / "moved" / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in records] == [1, 2, 3, 4]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_trains_like_contiguous(tmp_path, device, channels_last):
    fp32 = {"amp": False, "tf32": False}
    recipe = validate_recipe(
        _recipe(tmp_path, device, name=f"cl{channels_last}", train={**fp32, "channels_last": channels_last})
    )
    trainer = Trainer(recipe)
    try:
        result = trainer.run()
    finally:
        trainer.close()
    for _, module in subp_modules(trainer.gm):
        assert module.weight.is_contiguous(memory_format=torch.channels_last) is channels_last
    reference = validate_recipe(_recipe(tmp_path, "cpu", name=f"ref{channels_last}", train=fp32))
    expected = train(reference)
    assert result.masks_final
    # fp32 (no TF32) on both: the kernels differ in summation order only
    assert result.final["train"]["loss"] == pytest.approx(expected.final["train"]["loss"], rel=1e-2, abs=1e-2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("amp_dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("device", DEVICES)
def test_ddp_one_process(tmp_path, device, amp_dtype):
    backend = "nccl" if device == "cuda" else "gloo"
    recipe = _recipe(tmp_path, device, train={"amp": True, "amp_dtype": amp_dtype, "channels_last": True})
    path = write_recipe(tmp_path / "ddp.yaml", recipe)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}
    result_path = tmp_path / "result.json"
    completed = subprocess.run(
        [sys.executable, str(REPO / "tests" / "train" / "ddp_worker.py"), backend, device, str(path), str(result_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(result_path.read_text())
    assert result["backend"] == backend and result["world_size"] == 1
    assert result["all_reduce"] == [1.0, 2.0] and result["gathered"] == 1
    assert result["weights_on"].startswith(device) and all(d.startswith(device) for d in result["masks_on"])
    assert result["channels_last"] is True
    assert all(torch.isfinite(torch.tensor(result["losses"])))
    assert result["trainer_masks_final"] is True


@pytest.mark.cuda
@NEEDS_TWO_GPUS
def test_ddp_two_gpus_nccl(tmp_path):
    recipe = _recipe(tmp_path, "cuda", train={"amp": True, "channels_last": True, "batch_size": 8})
    path = write_recipe(tmp_path / "ddp.yaml", recipe)
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        + ["-m", "subp_fx.cli", "prune", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])},
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["masks_final_and_uniform"] is True
    assert len(set(summary["rank_state_digests"])) == 1
