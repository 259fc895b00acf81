"""subp_fx.algorithm.modules.SUBPConv2d: masking in forward/backward, mask updates, decay, state."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from subp_fx.algorithm.masks import expand_block_mask
from subp_fx.algorithm.modules import SUBPConv2d


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _conv(seed: int = 0, **kwargs) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(**kwargs)


CONV_VARIANTS = [
    dict(in_channels=6, out_channels=8, kernel_size=3, stride=2, padding=1, bias=True),
    dict(in_channels=5, out_channels=4, kernel_size=(3, 1), dilation=2, padding=2, padding_mode="reflect", bias=False),
    dict(in_channels=4, out_channels=8, kernel_size=1, bias=True),
]


@pytest.mark.parametrize("kwargs", CONV_VARIANTS)
@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_from_conv_equals_conv(kwargs, mode):
    conv = _conv(**kwargs)
    conv.eval()
    module = SUBPConv2d.from_conv(conv, N=4, prune_rate=0.5, mode=mode)
    assert type(module) is SUBPConv2d and not module.training
    assert module.block_mask.shape == (kwargs["out_channels"] // 4, kwargs["in_channels"])
    assert (module.block_mask == 1).all()
    for attr in ("stride", "padding", "dilation", "groups", "padding_mode", "kernel_size"):
        assert getattr(module, attr) == getattr(conv, attr), attr
    x = torch.randn(2, kwargs["in_channels"], 9, 9, generator=_gen(1))
    torch.testing.assert_close(module(x), conv(x), rtol=0, atol=0)
    # Copied, not shared.
    assert module.weight.data_ptr() != conv.weight.data_ptr()
    with torch.no_grad():
        module.weight.add_(1.0)
    assert not torch.equal(module.weight, conv.weight)


def _masked_module(mode: str, seed: int = 0) -> SUBPConv2d:
    conv = _conv(seed, in_channels=6, out_channels=8, kernel_size=3, padding=1, bias=True)
    module = SUBPConv2d.from_conv(conv, N=4, prune_rate=0.5, mode=mode)
    module.block_mask.copy_(torch.tensor([[1, 0, 1, 1, 0, 1], [0, 1, 1, 0, 1, 1]], dtype=torch.float32))
    return module


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_forward_uses_masked_weight(mode):
    module = _masked_module(mode)
    x = torch.randn(2, 6, 7, 7, generator=_gen(2))
    mask = expand_block_mask(module.block_mask, module.weight.shape)
    expected = F.conv2d(x, module.weight * mask, module.bias, padding=1)
    torch.testing.assert_close(module(x), expected, rtol=0, atol=0)
    # And the pruned blocks matter: the dense conv is different.
    assert not torch.allclose(module(x), F.conv2d(x, module.weight, module.bias, padding=1))


def _gradients(module: SUBPConv2d, x: torch.Tensor):
    """(weight grad of module, grad w.r.t. the masked weight as a leaf, input grads of both)."""
    x1 = x.clone().requires_grad_()
    module(x1).pow(2).sum().backward()  # a nonlinear loss: the gradient depends on the forward
    mask = expand_block_mask(module.block_mask, module.weight.shape)
    masked = (module.weight.detach() * mask).requires_grad_()
    x2 = x.clone().requires_grad_()
    F.conv2d(x2, masked, module.bias.detach(), padding=1).pow(2).sum().backward()
    return module.weight.grad, masked.grad, x1.grad, x2.grad, mask


def test_soft_gradient_is_straight_through():
    module = _masked_module("soft")
    grad, reference, x_grad, x_reference, mask = _gradients(module, torch.randn(2, 6, 7, 7, generator=_gen(3)))
    torch.testing.assert_close(grad, reference)
    torch.testing.assert_close(x_grad, x_reference)
    assert (grad[mask == 0] != 0).any(), "pruned weights must receive a gradient in soft mode"


def test_hard_gradient_is_zero_on_pruned_blocks():
    module = _masked_module("hard")
    grad, reference, x_grad, x_reference, mask = _gradients(module, torch.randn(2, 6, 7, 7, generator=_gen(3)))
    assert (grad[mask == 0] == 0).all()
    torch.testing.assert_close(grad, reference * mask)
    torch.testing.assert_close(x_grad, x_reference)
    assert (grad[mask == 1] != 0).any()


def _hand_checkable() -> SUBPConv2d:
    """C_out=4, C_in=8, N=2 (2 block-rows), 1x1, L1 scores set by hand; prune_rate 0.5 -> P=4.
    linear schedule 0..10: epoch 5 -> rate 0.25 -> G = int(0.25 * 8) = 2; epoch >= 10 -> G = 0."""
    module = SUBPConv2d(
        8,
        4,
        1,
        N=2,
        prune_rate=0.5,
        criterion="L1",
        tau=0.01,
        schedule="linear",
        decay_start=0,
        decay_end=10,
        bias=False,
    )
    row0 = torch.tensor([5.0, 1.0, 7.0, 3.0, 8.0, 2.0, 6.0, 4.0])  # ranks by channel
    row1 = torch.tensor([1.0, 8.0, 2.0, 7.0, 3.0, 6.0, 4.0, 5.0])
    with torch.no_grad():
        module.weight.copy_(torch.stack([row0, -row0, row1, row1])[:, :, None, None])
    return module


def test_update_mask_telemetry_by_hand():
    module = _hand_checkable()
    # Epoch 5: keep the top 4 of each row, regrow the top 2 of the pruned 4 (tau 0.01) -> top 6.
    update = module.update_mask(5, generator=_gen(0))
    assert module.block_mask.tolist() == [[1, 0, 1, 1, 1, 0, 1, 1], [0, 1, 0, 1, 1, 1, 1, 1]]
    assert (update.epoch, update.current_rate) == (5, 0.25)
    assert (update.kept_per_row, update.rows, update.in_channels) == (6, 2, 8)
    assert update.regrown == 4  # G * rows
    assert update.changed == 4  # 2 blocks per row went from 1 to 0
    assert update.sparsity == 0.25

    # Epoch 10: final. The two blocks pruned at epoch 5 score 0 (v2 rule) and stay pruned,
    # plus the next two lowest -> the top 4 of each row.
    update = module.update_mask(10, generator=_gen(0))
    assert module.block_mask.tolist() == [[1, 0, 1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1, 0, 1]]
    assert (update.current_rate, update.kept_per_row, update.regrown, update.changed) == (0.5, 4, 0, 4)
    assert update.sparsity == 0.5
    assert module.is_uniform()

    # Same epoch again: nothing changes.
    update = module.update_mask(12, generator=_gen(0))
    assert (update.kept_per_row, update.regrown, update.changed) == (4, 0, 0)


def test_update_mask_regrowth_is_uniform_and_counts_changes():
    conv = _conv(4, in_channels=40, out_channels=32, kernel_size=3)
    module = SUBPConv2d.from_conv(
        conv, N=8, prune_rate=0.5, criterion="BPAR", schedule="linear", decay_start=0, decay_end=10
    )
    previous = module.block_mask.clone()
    for epoch in (2, 5, 7, 10):
        update = module.update_mask(epoch, generator=_gen(epoch))
        rate = epoch / 10 * 0.5
        G = int((0.5 - rate) * 40)
        assert (module.block_mask.sum(dim=1) == 40 - 20 + G).all()
        assert update.kept_per_row == 40 - 20 + G
        assert update.regrown == G * 4
        assert update.changed == int((module.block_mask != previous).sum())
        previous = module.block_mask.clone()


def test_decay_pruned_weights_only_on_pruned_entries():
    module = _masked_module("soft")
    module.pruned_weight_decay = 0.1
    base_grad = torch.randn(module.weight.shape, generator=_gen(5))
    module.weight.grad = base_grad.clone()
    module.decay_pruned_weights()
    mask = expand_block_mask(module.block_mask, module.weight.shape)
    torch.testing.assert_close(module.weight.grad, base_grad + 0.1 * module.weight.detach() * (1 - mask))
    assert torch.equal(module.weight.grad[mask == 1], base_grad[mask == 1])
    assert not torch.equal(module.weight.grad[mask == 0], base_grad[mask == 0])


def test_decay_pruned_weights_noop_cases():
    module = _masked_module("soft")
    module.decay_pruned_weights()  # no grad yet: nothing to do, no error
    assert module.weight.grad is None
    module.pruned_weight_decay = 0.0
    module.weight.grad = torch.ones_like(module.weight)
    module.decay_pruned_weights()
    assert (module.weight.grad == 1).all()


def test_state_dict_round_trip():
    module = _masked_module("soft", seed=1)
    state = module.state_dict()
    assert "block_mask" in state and torch.equal(state["block_mask"], module.block_mask)
    fresh = SUBPConv2d(6, 8, 3, N=4, prune_rate=0.5, padding=1)
    assert (fresh.block_mask == 1).all()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.block_mask, module.block_mask)
    x = torch.randn(1, 6, 5, 5, generator=_gen(6))
    torch.testing.assert_close(fresh(x), module(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(in_channels=8, out_channels=8, kernel_size=3, groups=2, N=4, prune_rate=0.5), "groups"),
        (dict(in_channels=8, out_channels=12, kernel_size=3, N=8, prune_rate=0.5), "N=8"),
        (dict(in_channels=8, out_channels=8, kernel_size=3, N=4, prune_rate=0.5, mode="medium"), "mode"),
    ],
)
def test_constructor_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SUBPConv2d(**kwargs)
