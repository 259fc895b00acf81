"""prepare + two training steps (the trainer's optimizer_step and the mask update) on torchvision
families with SE / SiLU / LayerNorm and on a timm-style model fx cannot trace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from subp_fx.passes import prepare, subp_modules, update_masks
from subp_fx.passes.dry_run import dry_run
from subp_fx.train.trainer import optimizer_step
from tests.toy_models import TimmStyleNet

CONFIG = {"N": 16, "prune_rate": 0.5, "decay_start": 0, "decay_end": 2}


def _train_two_steps(model: torch.nn.Module, size: int, expected_capture: str) -> None:
    assert dry_run(model, CONFIG, (1, 3, size, size)).capture == expected_capture
    gm = prepare(model, CONFIG).train()
    layers = subp_modules(gm)
    assert layers
    optimizer = torch.optim.SGD(gm.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    generator = torch.Generator().manual_seed(0)
    before = {name: conv.weight.detach().clone() for name, conv in layers}
    for epoch in (1, 2):
        update_masks(gm, epoch)
        images = torch.randn(2, 3, size, size, generator=generator)
        loss = F.cross_entropy(gm(images), torch.randint(0, 10, (2,), generator=generator))
        assert torch.isfinite(loss)
        optimizer_step(loss, gm, optimizer, scaler)
    assert all(not torch.equal(conv.weight, before[name]) for name, conv in layers)
    # From decay_end on, every block-row keeps exactly C_in - int(0.5 * C_in) input channels.
    for _, conv in layers:
        assert conv.is_uniform() and int(conv.block_mask.sum(dim=1)[0]) == conv.final_kept_per_row


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v3_small", "regnet_y_400mf", "convnext_tiny"])
def test_torchvision_families_prepare_and_train(name):
    torch.manual_seed(0)
    _train_two_steps(getattr(torchvision.models, name)(num_classes=10), 32, "symbolic_trace")


def test_a_model_fx_cannot_trace_prepares_by_module_swap_and_trains():
    torch.manual_seed(0)
    _train_two_steps(TimmStyleNet(), 30, "module_swap")
