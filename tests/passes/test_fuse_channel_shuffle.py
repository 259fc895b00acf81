"""passes.fuse_channel_shuffles: view -> transpose -> view on channels becomes one
torch.channel_shuffle; anything that is not exactly that is left alone."""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from subp_fx.passes import fold_static_shapes, fuse_channel_shuffles
from subp_fx.passes.fold_static_shapes import run_example
from subp_fx.passes.fuse_channel_shuffle import FUSED_SHUFFLES_META_KEY, _ShapeRecorder, match_channel_shuffle


class Shuffles(nn.Module):
    """torchvision's spelling (x.size() arithmetic, contiguous), a permute without contiguous, and
    a reshape that splits H (not a shuffle)."""

    def forward(self, x):
        b, c, h, w = x.size()
        y = x.view(b, 3, c // 3, h, w)
        y = torch.transpose(y, 1, 2).contiguous().view(b, -1, h, w)
        z = y.reshape(b, 5, 3, h, w).permute(0, 2, 1, 3, 4).reshape(b, c, h, w)
        not_a_shuffle = z.view(b, c, 2, h // 2, w).transpose(1, 2).reshape(b, c, h, w)
        return y + z + not_a_shuffle


def _shuffles(gm: fx.GraphModule) -> list[fx.Node]:
    return [node for node in gm.graph.nodes if node.target is torch.channel_shuffle]


def test_both_spellings_fuse_and_compute_the_same():
    model = Shuffles()
    fused = fuse_channel_shuffles(fold_static_shapes(model, (2, 15, 4, 3)), (2, 15, 4, 3))
    assert [node.args[1] for node in _shuffles(fused)] == [3, 5]
    assert fused.meta[FUSED_SHUFFLES_META_KEY] == 2
    remaining = [node.target for node in fused.graph.nodes if node.op == "call_method"]
    assert remaining == ["view", "transpose", "reshape"]  # the H split, untouched
    x = torch.randn(2, 15, 4, 3)
    torch.testing.assert_close(fused(x), model(x), rtol=0, atol=0)


def test_unfolded_shape_arithmetic_of_a_fused_shuffle_is_erased_with_it():
    fused = fuse_channel_shuffles(Shuffles(), (1, 15, 4, 3))
    assert len(_shuffles(fused)) == 2
    # The floordiv fed only the first shuffle's view; the size() still feeds the other reshapes.
    assert "floordiv" not in [node.name for node in fused.graph.nodes]
    x = torch.randn(1, 15, 4, 3)
    torch.testing.assert_close(fused(x), Shuffles()(x), rtol=0, atol=0)


def test_a_chain_whose_inner_step_has_another_user_is_left_alone():
    class Shared(nn.Module):
        def forward(self, x):
            split = x.view(1, 2, 4, 3, 3)
            shuffled = split.transpose(1, 2).reshape(1, 8, 3, 3)
            return shuffled + split.sum(1).repeat(1, 2, 1, 1)

    gm = fold_static_shapes(Shared(), (1, 8, 3, 3))
    recorder = _ShapeRecorder(gm)
    run_example(recorder, (1, 8, 3, 3))
    assert all(match_channel_shuffle(node, recorder.shapes) is None for node in gm.graph.nodes)
    assert fuse_channel_shuffles(gm, (1, 8, 3, 3)).meta[FUSED_SHUFFLES_META_KEY] == 0


def test_the_model_is_not_modified():
    gm = fold_static_shapes(Shuffles(), (1, 15, 4, 3))
    before = [node.name for node in gm.graph.nodes]
    fuse_channel_shuffles(gm, (1, 15, 4, 3))
    assert [node.name for node in gm.graph.nodes] == before
