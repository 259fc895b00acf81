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


class Slices(nn.Module):
    """GhostNet's ``torch.cat([x1, x2], 1)[:, :out_chs]`` (an odd count, 21), RexNet's
    ``x[:, 0:c]`` added to a narrower map, a window of rows and columns in steps with
    ``...``, a batch slice with a negative bound, the full slice (no kernel), and features of a
    (B, F) tensor."""

    def __init__(self):
        super().__init__()
        self.primary = nn.Conv2d(3, 12, 1)
        self.cheap = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.expand = nn.Conv2d(21, 32, 1)
        self.head = nn.Linear(7, 4)

    def forward(self, x):
        x1 = torch.relu(self.primary(x))
        x = torch.cat([x1, self.cheap(x1)], dim=1)[:, :21]
        y = self.expand(x)
        z = torch.cat([y[:, 0:21] + x, y[:, 21:]], dim=1)
        window = z[..., 1:6:2, ::3][-1:, :, :, :][:, :]
        return self.head(torch.flatten(window.mean((2, 3)), 1)[:, 3:10])


@pytest.mark.parametrize("batch", [1, 3])
def test_slices_match_eager(batch):
    torch.manual_seed(0)
    _check(Slices(), (batch, 3, 7, 8))


def test_a_channel_range_runs_on_the_slice_kernel_and_other_slices_on_the_strided_copy():
    torch.manual_seed(0)
    graph = inference_graph(Slices().eval(), (3, 3, 7, 8))
    kernels = {gv.name_hint for gv in lower_graph(graph.gm, (3, 3, 7, 8)).module.get_global_vars()}
    # Besides the padded conv's and linear's trims (12 and 4 channels computed as 16):
    slices = {name for name in kernels if name.startswith("slice")} - {"slice_channels_16to12", "slice_features_16to4"}
    assert slices == {
        "slice_channels_0to21_3x7x8x24",  # GhostNet's
        "slice_channels_0to21_3x7x8x32",  # RexNet's
        "slice_channels_21to32_3x7x8x32",
        "slice_3x7x8x32_from_0x1x0x0_by_1x2x3_to_3x3x3x32",  # rows 1:6:2, columns ::3
        "slice_3x3x3x32_from_2x0x0x0_by_1x1x1_to_1x3x3x32",  # the last image
        "slice_channels_3to10_1x1x1x32",  # features of the (B, F) tensor, as a (B, 1, 1, F) map
    }  # [:, :] needs no kernel


class Refused(nn.Module):
    def forward(self, x):
        top, bottom = x.chunk(2, dim=2)
        return torch.flatten(top + bottom + x[:, :, :4] + x[:, ::3, :4] + x[:, 1:2, :4][:, 0, None], 1)


def test_a_split_off_the_channels_and_unsupported_indexing_are_refused():
    with pytest.raises(UnsupportedOpError) as caught:
        compile(Refused().eval(), (1, 3, 8, 8), threads=1)
    message = str(caught.value)
    assert "splits a tensor of shape (1, 3, 8, 8) on dim 2; only chunk/split on the channels" in message
    assert "takes every 3th channel (or feature); supported are contiguous channel ranges" in message
    assert "its index (slice(None, None, None), 0, None) holds something other than slices" in message
    # [:, ::3] and [:, 0, None]; the chunk's parts, [:, :, :4] and [:, 1:2, :4] lower
    assert message.count("node 'getitem") == 2


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
