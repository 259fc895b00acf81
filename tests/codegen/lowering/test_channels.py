"""Channel shuffle, chunk / split on channels and the no-op methods, compiled and compared with
PyTorch eager; ShuffleNet V2 sparse and dense; the refusals."""

from __future__ import annotations

import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import torch.nn as nn  # noqa: E402

from subp_fx.codegen.lowering.lower import lower_graph  # noqa: E402
from subp_fx.codegen.pipeline import compile, inference_graph  # noqa: E402
from subp_fx.errors import ConversionError, UnsupportedOpError  # noqa: E402
from subp_fx.passes import impose_random_masks  # noqa: E402
from tests.codegen.lowering.test_more_ops import _check  # noqa: E402
from tests.toy_models import randomise_batchnorms  # noqa: E402


class ShuffleBlocks(nn.Module):
    """Odd channel counts: a view/transpose shuffle of 30 channels in 3 groups split by chunk(2)
    (gathered per part), nn.ChannelShuffle feeding a conv (one whole gather), split into 7 + 23
    (slices at an odd offset), concat, and contiguous / clone / detach / float."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 30, 3, padding=1)
        self.left = nn.Conv2d(15, 15, 1)
        self.shuffle = nn.ChannelShuffle(5)
        self.mix = nn.Conv2d(30, 30, 1)
        self.head = nn.Conv2d(30, 8, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        b, c, h, w = x.size()
        x = torch.transpose(x.view(b, 3, c // 3, h, w), 1, 2).contiguous().view(b, -1, h, w)
        first, second = x.chunk(2, dim=1)
        x = torch.cat([self.left(first), second.clone()], dim=1)
        x = self.mix(self.shuffle(x)).detach().float()
        small, large = torch.split(x, [7, 23], dim=1)
        x = torch.cat([large, torch.relu(small)], 1)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.head(x), 1), 1)


@pytest.mark.parametrize("batch", [1, 2])
def test_shuffles_and_splits_match_eager(batch):
    torch.manual_seed(0)
    _check(ShuffleBlocks(), (batch, 3, 7, 5))


def test_a_shuffle_split_by_chunk_is_gathered_per_part_and_never_materialised():
    torch.manual_seed(0)
    graph = inference_graph(ShuffleBlocks().eval(), (1, 3, 7, 5))
    assert graph.passes.fused_channel_shuffles == 1
    assert graph.passes.folded_shape_nodes == 6  # size, its 4 getitems, floordiv
    kernels = {gv.name_hint for gv in lower_graph(graph.gm, (1, 3, 7, 5)).module.get_global_vars()}
    shuffles = sorted(name for name in kernels if name.startswith("shuffle"))
    # The 3-group shuffle read by chunk(2): two half gathers; nn.ChannelShuffle(5) read by a conv: one whole.
    assert shuffles == [
        "shuffle3_channels_0to15_1x7x5x30",
        "shuffle3_channels_15to30_1x7x5x30",
        "shuffle5_channels_1x7x5x30",
    ]
    assert {"slice_channels_0to7_1x7x5x30", "slice_channels_7to30_1x7x5x30"} <= kernels


class Refused(nn.Module):
    def forward(self, x):
        top, bottom = x.chunk(2, dim=2)
        return torch.flatten(top + bottom + x[0:1, :, :4], 1)


def test_a_split_off_the_channels_and_indexing_a_tensor_are_refused():
    with pytest.raises(UnsupportedOpError) as caught:
        compile(Refused().eval(), (1, 3, 8, 8), threads=1)
    message = str(caught.value)
    assert "splits a tensor of shape (1, 3, 8, 8) on dim 2; only chunk/split on the channels" in message
    assert "indexes a tensor; only picking a part of a chunk/split on channels" in message


def test_lower_graph_asks_for_the_shape_folding_pass():
    class Flattens(nn.Module):
        def forward(self, x):
            return x.view(x.size(0), -1)

    with pytest.raises(ConversionError, match=r"node\(s\) 'size' read a tensor's shape: run .*fold_static_shapes"):
        lower_graph(Flattens(), (1, 3, 4, 4))


@pytest.mark.slow
@pytest.mark.parametrize(("sparse", "batch"), [(True, 1), (True, 4), (False, 1), (False, 4)])
def test_shufflenet_v2_compiles_sparse_and_dense_and_matches_eager(sparse, batch):
    torch.manual_seed(0)
    model = randomise_batchnorms(torchvision.models.shufflenet_v2_x0_5(num_classes=10))
    with torch.no_grad():
        # Its random features are small next to the classifier's bias: without it the logits
        # show a channel permutation gone wrong (a shuffle replaced by the identity: 40% off).
        model.fc.bias.zero_()
    if sparse:
        model = impose_random_masks(model, 0.5, 16).eval()
    _check(model, (batch, 3, 64, 64))
