"""CPU checks of what the GPU path added: train.amp_dtype / train.channels_last, scaler state moving
between devices, device-independent mask draws. The GPU runs themselves are in test_cuda.py."""

from __future__ import annotations

import pytest
import torch

from subp_fx.algorithm.masks import ieee_fp32_matmul, uniform_block_mask
from subp_fx.errors import ConfigError
from subp_fx.passes.update import mask_generator
from subp_fx.recipes.schema import validate_recipe
from subp_fx.train import trainer as trainer_module
from subp_fx.train.checkpoint import read_training_checkpoint
from subp_fx.train.trainer import amp_settings, to_memory_format, train
from tests.conftest import small_recipe


def test_amp_dtype_and_channels_last_are_validated(tmp_path):
    recipe = validate_recipe(small_recipe(tmp_path, train={"amp_dtype": "bfloat16", "channels_last": True}))
    assert recipe.train.amp_dtype == "bfloat16" and recipe.train.channels_last is True
    defaults = validate_recipe(small_recipe(tmp_path))
    assert defaults.train.amp_dtype == "float16" and defaults.train.channels_last is False
    with pytest.raises(ConfigError, match="amp_dtype"):
        validate_recipe(small_recipe(tmp_path, train={"amp_dtype": "float8"}))
    with pytest.raises(ConfigError, match="channels_last"):
        validate_recipe(small_recipe(tmp_path, train={"channels_last": "sometimes"}))


@pytest.mark.parametrize(
    ("device", "amp", "dtype", "expected"),
    [
        ("cuda", True, "float16", (True, torch.float16, True)),
        ("cuda", True, "bfloat16", (True, torch.bfloat16, False)),
        ("cuda", False, "float16", (False, torch.float16, False)),
        ("cpu", True, "float16", (False, torch.float16, False)),
        ("cpu", True, "bfloat16", (False, torch.bfloat16, False)),
    ],
)
def test_amp_settings_scale_float16_only_and_only_on_cuda(tmp_path, device, amp, dtype, expected):
    recipe = validate_recipe(small_recipe(tmp_path, train={"amp": amp, "amp_dtype": dtype}))
    assert amp_settings(recipe, torch.device(device)) == expected


def test_to_memory_format():
    images = torch.randn(2, 3, 8, 8)
    assert to_memory_format(images, True).is_contiguous(memory_format=torch.channels_last)
    assert to_memory_format(images, False) is images
    flat = torch.randn(2, 5)
    assert to_memory_format(flat, True) is flat


def test_resume_into_a_grad_scaler_from_a_checkpoint_written_without_one(tmp_path, monkeypatch):
    """A CPU (or bfloat16) run saves an empty scaler state; resuming it under float16 AMP on a GPU
    used to fail in GradScaler.load_state_dict ("The source state dict is empty"). Here the GPU's
    enabled scaler is stood in for by an enabled CPU one."""
    recipe = validate_recipe(small_recipe(tmp_path / "run", train={"epochs": 2, "max_steps_per_epoch": 2}))
    train(recipe)
    assert read_training_checkpoint(tmp_path / "run" / "last.pt").scaler == {}
    real = torch.amp.GradScaler
    monkeypatch.setattr(trainer_module.torch.amp, "GradScaler", lambda device, enabled: real("cpu", enabled=True))
    longer = validate_recipe(small_recipe(tmp_path / "run", train={"epochs": 3, "max_steps_per_epoch": 2}))
    result = train(longer, resume=True)
    assert result.epochs_run == 1
    assert read_training_checkpoint(tmp_path / "run" / "last.pt").scaler["scale"] > 0


def test_mask_generator_is_on_the_cpu_whatever_the_weights_device():
    # a CUDA generator would draw other blocks from the same seed than a CPU run or a CPU resume
    assert mask_generator(0, 3, 1).device.type == "cpu"


def test_tied_scores_are_pruned_and_regrown_by_channel_index():
    """All-equal blocks: which ones go must not depend on the device's sort (CUDA's is unstable)."""
    weight = torch.ones(32, 12, 3, 3)
    generator = torch.Generator().manual_seed(0)
    mask = uniform_block_mask(weight, 16, 0.5, 0.5, "L1", generator=generator)
    assert torch.equal(mask, torch.tensor([[0.0] * 6 + [1.0] * 6] * 2))
    partial = uniform_block_mask(weight, 16, 0.5, 0.25, "L1", generator=torch.Generator().manual_seed(0))
    again = uniform_block_mask(weight, 16, 0.5, 0.25, "L1", generator=torch.Generator().manual_seed(0))
    assert torch.equal(partial, again) and torch.equal(partial.sum(1), torch.tensor([9.0, 9.0]))
    assert bool((partial[:, 6:] == 1).all())


def test_ieee_fp32_matmul_switches_tf32_off_on_cuda_and_restores_it():
    matmul = torch.backends.cuda.matmul
    saved = matmul.fp32_precision
    try:
        matmul.fp32_precision = "tf32"
        with ieee_fp32_matmul(torch.device("cuda")):
            assert matmul.fp32_precision == "ieee"
        assert matmul.fp32_precision == "tf32"
        with ieee_fp32_matmul(torch.device("cpu")):
            assert matmul.fp32_precision == "tf32"
    finally:
        matmul.fp32_precision = saved
