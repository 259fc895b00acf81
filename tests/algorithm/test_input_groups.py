"""Blocks of G consecutive input channels (``sparsity.input_group``): masks of shape (C_out/N, C_in/G),
uniform rows counted in groups, kept channels in aligned runs of G once expanded, and G=1 exactly
the published algorithm (the golden tests in test_masks.py run the G=1 path)."""

from __future__ import annotations

import pytest
import torch

from subp_fx.algorithm.block_sparse import BlockSparseConv2d
from subp_fx.algorithm.masks import (
    block_importance,
    expand_block_mask,
    expand_group_mask,
    kept_per_row,
    to_block_layout,
    uniform_block_mask,
)
from subp_fx.algorithm.modules import SUBPConv2d
from subp_fx.codegen.errors import BlockLayoutError
from subp_fx.codegen.kernels.packing import pack_block_sparse


def _weight(c_out=32, c_in=24, k=3, seed=0) -> torch.Tensor:
    return torch.randn(c_out, c_in, k, k, generator=torch.Generator().manual_seed(seed))


def assert_aligned_runs(channel_mask: torch.Tensor, G: int) -> None:
    """Every run of G channels starting at a multiple of G is all kept or all pruned."""
    groups = channel_mask.reshape(channel_mask.shape[0], -1, G)
    assert bool((groups == groups[..., :1]).all()), "a G-aligned group is partly kept"


def kept_runs(indices: torch.Tensor, G: int) -> torch.Tensor:
    """(R, K/G, G) view of the kept indices, checked to be aligned runs c*G .. c*G+G-1."""
    runs = indices.reshape(indices.shape[0], -1, G)
    assert bool((runs[..., 0] % G == 0).all())
    assert torch.equal(runs - runs[..., :1], torch.arange(G).expand_as(runs))
    return runs


@pytest.mark.parametrize("criterion", ["L1", "L2", "BPAR"])
def test_g1_is_the_published_algorithm(criterion):
    weight, mask = _weight(), (torch.rand(8, 24, generator=torch.Generator().manual_seed(1)) > 0.3).float()
    assert torch.equal(to_block_layout(weight, 4, G=1), to_block_layout(weight, 4))
    assert torch.equal(block_importance(weight, 4, criterion, mask, G=1), block_importance(weight, 4, criterion, mask))
    drawn = [
        uniform_block_mask(weight, 4, 0.5, 0.25, criterion, mask, generator=torch.Generator().manual_seed(3), **kw)
        for kw in ({}, {"G": 1})
    ]
    assert torch.equal(drawn[0], drawn[1])


def test_group_layout_and_scores_aggregate_their_channels():
    weight, G, N = _weight(), 4, 8
    layout = to_block_layout(weight, N, G)
    assert layout.shape == (32 // N, 24 // G, N * G * 9)
    # Block (r, g) holds exactly W[r*N:(r+1)*N, g*G:(g+1)*G]: same numbers, so L1 is the channels' sum
    # and L2 the Euclidean norm of the whole group.
    assert torch.allclose(layout[1, 2].abs().sum(), weight[8:16, 8:12].abs().sum())
    per_channel = block_importance(weight, N, "L1")
    assert torch.allclose(block_importance(weight, N, "L1", G=G), per_channel.reshape(4, 6, G).sum(-1))
    per_channel_l2 = block_importance(weight, N, "L2")
    expected_l2 = per_channel_l2.square().reshape(4, 6, G).sum(-1).sqrt()
    assert torch.allclose(block_importance(weight, N, "L2", G=G), expected_l2)
    assert block_importance(weight, N, "BPAR", G=G).shape == (4, 6)


def test_expansion_gives_aligned_runs_of_g():
    mask = torch.tensor([[1.0, 0, 1], [0, 1, 1]])
    channel = expand_group_mask(mask, 4)
    assert channel.tolist()[0] == [1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1]
    full = expand_block_mask(mask, (8, 12, 3, 3), G=4)
    assert full.shape == (8, 12, 3, 3) and torch.equal(full[4:8, :, 1, 1], channel[1].expand(4, 12))
    with pytest.raises(ValueError, match="C_in/G"):
        expand_block_mask(mask, (8, 12, 3, 3))  # a group mask read as per-channel


@pytest.mark.parametrize("criterion", ["L1", "L2", "BPAR"])
def test_g4_masks_are_uniform_in_groups_through_regrowth(criterion):
    weight, G = _weight(c_in=64), 4
    groups = 64 // G
    mask = None
    for current_rate in (0.0, 0.2, 0.4, 0.6):
        mask = uniform_block_mask(
            weight, 8, 0.6, current_rate, criterion, mask, generator=torch.Generator().manual_seed(7), G=G
        )
        assert mask.shape == (32 // 8, groups)
        pruned, regrown = int(0.6 * groups), int((0.6 - current_rate) * groups)
        assert mask.sum(dim=1).tolist() == [groups - pruned + regrown] * 4
        assert_aligned_runs(expand_group_mask(mask, G), G)
    assert kept_per_row(0.6, 64, G) == (groups - int(0.6 * groups)) * G == 28


def test_bad_group_is_refused_naming_it():
    with pytest.raises(ValueError, match="G=5 does not divide C_in=24"):
        block_importance(_weight(), 4, "L1", G=5)
    with pytest.raises(ValueError, match="G must be a positive integer dividing in_channels=24"):
        SUBPConv2d(24, 32, 3, N=8, prune_rate=0.5, G=5)


def _trained_g4_conv() -> SUBPConv2d:
    torch.manual_seed(0)
    conv = SUBPConv2d(24, 32, 3, N=8, prune_rate=0.5, criterion="BPAR", decay_start=1, decay_end=3, G=4, padding=1)
    for epoch in range(4):
        update = conv.update_mask(epoch, generator=torch.Generator().manual_seed(epoch))
        assert conv.is_uniform() and update.kept_per_row % 4 == 0
    return conv


def test_subp_conv_g4_final_mask_and_masked_forward():
    conv = _trained_g4_conv()
    assert conv.block_mask.shape == (4, 6) and conv.channel_mask.shape == (4, 24)
    assert conv.final_kept_per_row == 12 and conv.channel_mask.sum(dim=1).tolist() == [12.0] * 4
    assert_aligned_runs(conv.channel_mask, 4)
    assert torch.equal(conv.weight_mask[:, :, 0, 0], conv.channel_mask.repeat_interleave(8, dim=0))
    assert "G=4" in repr(conv)


def test_block_sparse_form_has_aligned_runs_and_equals_the_masked_conv():
    conv = _trained_g4_conv().eval()
    compact = BlockSparseConv2d.from_subp(conv, name="toy").eval()
    assert (compact.G, compact.K) == (4, 12) and compact.values.shape == (4, 12, 3, 3, 8)
    kept_runs(compact.indices, 4)
    x = torch.randn(2, 24, 7, 7)
    with torch.no_grad():
        assert torch.equal(compact(x), conv(x))
    broken = compact.state_dict()
    broken["indices"] = broken["indices"].clone()
    broken["indices"][0] = torch.tensor([0, 1, 2, 3, 5, 6, 7, 8, 12, 13, 14, 15])
    with pytest.raises(RuntimeError, match="aligned runs of G=4"):
        BlockSparseConv2d(24, 32, 3, N=8, K=12, G=4).load_state_dict(broken)


def test_packing_a_group_mask():
    conv = _trained_g4_conv()
    values, indices = pack_block_sparse(conv.weight.detach().numpy(), conv.block_mask.numpy(), N=8, G=4)
    compact = BlockSparseConv2d.from_subp(conv)
    assert torch.equal(torch.from_numpy(indices).long(), compact.indices)
    assert torch.equal(torch.from_numpy(values), compact.values.detach())
    with pytest.raises(BlockLayoutError, match="N=8 and G=1"):
        pack_block_sparse(conv.weight.detach().numpy(), conv.block_mask.numpy(), N=8)
