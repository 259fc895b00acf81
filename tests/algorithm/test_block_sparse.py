"""BlockSparseConv2d: compact layout, exact forward, refusals, state_dict and pickling."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from subp_fx.algorithm.block_sparse import BlockSparseConv2d, uniform_mask_problem
from subp_fx.algorithm.modules import SUBPConv2d
from subp_fx.errors import ConversionError
from subp_fx.passes.impose_random_masks import random_uniform_block_mask


def _subp_conv(c_in=8, c_out=16, kernel=3, N=4, kept=3, seed=0, **conv_kwargs) -> SUBPConv2d:
    torch.manual_seed(seed)
    conv = SUBPConv2d(c_in, c_out, kernel, N=N, prune_rate=0.0, **conv_kwargs)
    with torch.no_grad():
        if conv.bias is not None:
            conv.bias.normal_()
        mask = random_uniform_block_mask(c_out // N, c_in, kept, torch.Generator().manual_seed(seed))
        conv.block_mask.copy_(mask)
    return conv.eval()


def _input(c_in=8, size=11, batch=2, seed=1) -> torch.Tensor:
    return torch.randn(batch, c_in, size, size, generator=torch.Generator().manual_seed(seed))


GEOMETRIES = {
    "3x3 pad 1": dict(kernel=3, padding=1),
    "3x3 stride 2 pad 1": dict(kernel=3, stride=2, padding=1),
    "1x1": dict(kernel=1),
    "1x1 stride 2": dict(kernel=1, stride=2),
    "5x5 pad 2": dict(kernel=5, padding=2),
    "3x3 dilation 2": dict(kernel=3, padding=2, dilation=2),
    "3x1 no bias": dict(kernel=(3, 1), padding=(1, 0), bias=False),
    "K = 1": dict(kernel=3, padding=1, kept=1),
    "K = C_in": dict(kernel=3, padding=1, kept=8),
    "N = 1": dict(kernel=3, padding=1, N=1),
    "N = C_out": dict(kernel=3, padding=1, N=16),
    "padding same": dict(kernel=3, padding="same"),
    "padding valid": dict(kernel=3, padding="valid"),
}


@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
def test_forward_equals_masked_subp_conv_exactly(geometry):
    conv = _subp_conv(**geometry)
    compact = BlockSparseConv2d.from_subp(conv, name="layer")
    x = _input()
    with torch.no_grad():
        expected, actual = conv(x), compact(x)
    assert actual.shape == expected.shape
    assert torch.equal(actual, expected), (actual - expected).abs().max()
    assert torch.equal(compact.to_dense_weight(), conv.masked_weight().detach())


def test_layout_holds_only_the_kept_blocks():
    conv = _subp_conv(c_in=8, c_out=16, kernel=3, N=4, kept=3)
    compact = BlockSparseConv2d.from_subp(conv, name="layer")
    assert (compact.in_channels, compact.out_channels, compact.N, compact.K, compact.rows) == (8, 16, 4, 3, 4)
    assert compact.values.shape == (4, 3, 3, 3, 4)
    assert compact.indices.shape == (4, 3) and compact.indices.dtype == torch.int64
    assert (compact.indices[:, 1:] > compact.indices[:, :-1]).all()
    for r in range(4):
        kept = torch.nonzero(conv.block_mask[r])[:, 0]
        assert torch.equal(compact.indices[r], kept)
        for k, channel in enumerate(kept.tolist()):
            for j in range(4):
                assert torch.equal(compact.values[r, k, :, :, j], conv.weight[r * 4 + j, channel])
    assert torch.equal(compact.bias, conv.bias)
    # Copied, not shared: training the compact module leaves the SUBP conv alone.
    assert compact.values.data_ptr() != conv.weight.data_ptr()
    assert compact.stride == (1, 1) and compact.padding == (0, 0) and compact.dilation == (1, 1)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
def test_padding_strings_become_explicit_where_symmetric():
    assert BlockSparseConv2d.from_subp(_subp_conv(kernel=5, padding="same")).padding == (2, 2)
    assert BlockSparseConv2d.from_subp(_subp_conv(kernel=3, padding="valid")).padding == (0, 0)
    even = _subp_conv(kernel=(2, 3), padding="same")
    compact = BlockSparseConv2d.from_subp(even)
    assert compact.padding == "same"  # asymmetric: F.conv2d pads it as nn.Conv2d does
    x = _input()
    with torch.no_grad():
        assert torch.equal(compact(x), even(x))


def test_mode_follows_the_subp_conv():
    assert BlockSparseConv2d.from_subp(_subp_conv().train()).training
    assert not BlockSparseConv2d.from_subp(_subp_conv().eval()).training


def test_gradient_reaches_the_kept_values():
    conv = _subp_conv(kernel=3, padding=1)
    compact = BlockSparseConv2d.from_subp(conv)
    x = _input()
    compact(x).square().sum().backward()
    weight = conv.weight.detach().clone().requires_grad_()
    F.conv2d(x, weight * conv.weight_mask, conv.bias, padding=1).square().sum().backward()
    with torch.no_grad():
        conv.weight.copy_(weight.grad)
    expected = BlockSparseConv2d.from_subp(conv).values  # the masked weight's gradient, kept blocks only
    torch.testing.assert_close(compact.values.grad, expected, rtol=1e-5, atol=1e-5)


def test_non_uniform_mask_refused_naming_layer_and_counts():
    conv = _subp_conv(c_in=8, c_out=16, N=4, kept=3)
    with torch.no_grad():
        conv.block_mask[2] = torch.tensor([1, 1, 1, 1, 1, 0, 0, 0], dtype=conv.block_mask.dtype)
    with pytest.raises(ConversionError) as info:
        BlockSparseConv2d.from_subp(conv, name="features.3.conv")
    message = str(info.value)
    assert "'features.3.conv'" in message
    assert "[3, 3, 5, 3]" in message and "between 3 and 5" in message


def test_long_count_lists_are_shortened():
    block_mask = torch.ones(40, 4)
    block_mask[39, 0] = 0
    problem = uniform_mask_problem(block_mask)
    assert "... (40 rows)" in problem and "between 3 and 4" in problem


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda mask: mask.mul_(0.5), "other than 0 and 1"),
        (lambda mask: mask.zero_(), "keeps no input channel"),
    ],
    ids=["non-binary", "empty"],
)
def test_unusable_masks_refused(edit, expected):
    conv = _subp_conv()
    with torch.no_grad():
        edit(conv.block_mask)
    with pytest.raises(ConversionError, match=expected) as info:
        BlockSparseConv2d.from_subp(conv, name="pw")
    assert "'pw'" in str(info.value)


def test_non_zero_padding_mode_refused():
    conv = _subp_conv(padding=1, padding_mode="reflect")
    with pytest.raises(ConversionError, match="padding_mode='reflect'.*'zeros'"):
        BlockSparseConv2d.from_subp(conv, name="stem")


def test_plain_conv_refused():
    with pytest.raises(ConversionError, match="'head' is a Conv2d, not a SUBPConv2d"):
        BlockSparseConv2d.from_subp(torch.nn.Conv2d(4, 4, 1), name="head")


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(N=3), "N must be a positive integer dividing out_channels=16"),
        (dict(N=0), "N must be a positive integer"),
        (dict(K=0), r"K must be an integer in \[1, in_channels=8\]"),
        (dict(K=9), r"K must be an integer in \[1, in_channels=8\]"),
    ],
)
def test_constructor_validates_shape(kwargs, expected):
    arguments = dict(in_channels=8, out_channels=16, kernel_size=3, N=4, K=2) | kwargs
    with pytest.raises(ValueError, match=expected):
        BlockSparseConv2d(**arguments)


def test_state_dict_round_trip_into_an_empty_module():
    compact = BlockSparseConv2d.from_subp(_subp_conv(kernel=3, stride=2, padding=1))
    state = compact.state_dict()
    assert set(state) == {"values", "indices", "bias"}
    empty = BlockSparseConv2d(8, 16, 3, N=4, K=3, stride=2, padding=1).eval()
    x = _input()
    with torch.no_grad():
        assert not torch.equal(empty(x), compact(x))
        empty.load_state_dict(state)
        assert torch.equal(empty(x), compact(x))
    assert torch.equal(empty.indices, compact.indices)


def test_state_dict_without_bias():
    compact = BlockSparseConv2d.from_subp(_subp_conv(bias=False))
    assert set(compact.state_dict()) == {"values", "indices"}
    BlockSparseConv2d(8, 16, 3, N=4, K=3, bias=False).load_state_dict(compact.state_dict())


@pytest.mark.parametrize(
    "indices, expected",
    [
        (torch.tensor([[0, 2, 1]] * 4), "strictly ascending"),
        (torch.tensor([[0, 1, 1]] * 4), "strictly ascending"),
        (torch.tensor([[0, 1, 8]] * 4), r"\[0, in_channels=8\)"),
        (torch.tensor([[0.0, 1.0, 2.0]] * 4), "integer"),
    ],
)
def test_load_state_dict_refuses_broken_indices(indices, expected):
    state = BlockSparseConv2d.from_subp(_subp_conv()).state_dict()
    state["indices"] = indices
    module = BlockSparseConv2d(8, 16, 3, N=4, K=3)
    before = module.values.clone()
    with pytest.raises(RuntimeError, match=expected):
        module.load_state_dict(state)
    assert torch.equal(module.values, before)


def test_load_state_dict_refuses_other_shape():
    state = BlockSparseConv2d.from_subp(_subp_conv(kept=3)).state_dict()
    with pytest.raises(RuntimeError, match="size mismatch"):
        BlockSparseConv2d(8, 16, 3, N=4, K=2).load_state_dict(state)


def test_pickle_and_torch_save_round_trip():
    compact = BlockSparseConv2d.from_subp(_subp_conv(kernel=3, stride=2, padding=1, dilation=1))
    x = _input()
    buffer = io.BytesIO()
    torch.save(compact, buffer)
    buffer.seek(0)
    for restored in (pickle.loads(pickle.dumps(compact)), torch.load(buffer, weights_only=False)):
        assert type(restored) is BlockSparseConv2d
        assert (restored.N, restored.K, restored.in_channels, restored.stride) == (4, 3, 8, (2, 2))
        with torch.no_grad():
            assert torch.equal(restored(x), compact(x))


@settings(max_examples=30, deadline=None)
@given(
    c_in=st.integers(1, 9),
    rows=st.integers(1, 4),
    N=st.sampled_from([1, 2, 4]),
    kernel=st.sampled_from([1, 2, 3]),
    stride=st.integers(1, 2),
    padding=st.integers(0, 1),
    data=st.data(),
)
def test_any_uniform_mask_round_trips_exactly(c_in, rows, N, kernel, stride, padding, data):
    kept = data.draw(st.integers(1, c_in))
    seed = data.draw(st.integers(0, 1000))
    conv = _subp_conv(
        c_in=c_in, c_out=rows * N, kernel=kernel, N=N, kept=kept, seed=seed, stride=stride, padding=padding
    )
    compact = BlockSparseConv2d.from_subp(conv)
    assert compact.K == kept
    x = _input(c_in=c_in, size=6, batch=1, seed=seed)
    with torch.no_grad():
        assert torch.equal(compact(x), conv(x))
