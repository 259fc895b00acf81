"""quantize_kernel_weights: the int8 kernel's constants, checked by running the kernel's own
arithmetic (uint8 x int8 sums over aligned groups of 4 channels, then ``* scale + bias`` in
float32) in numpy against the reference conv."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from subp_fx.algorithm.block_sparse import BlockSparseConv2d
from subp_fx.quantize.modules import Int8Conv2dReference
from subp_fx.quantize.packing import Int8KernelWeights, quantize_kernel_weights
from subp_fx.quantize.params import ActivationQuant, quantize_weight
from tests.quantize.graphs import toy_graph

INPUT_QUANT = ActivationQuant(float(np.float32(0.02)), 37)


def _kernel_layout(conv: nn.Module, N: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(values, indices, bias) as the compiler hands them over: compact for a block-sparse conv,
    K = C_in and indices = arange for a dense one."""
    bias = None if conv.bias is None else conv.bias.detach().numpy()
    if isinstance(conv, BlockSparseConv2d):
        return conv.values.detach().numpy(), conv.indices.numpy().astype(np.int32), bias
    out_channels, in_channels, kh, kw = conv.weight.shape
    values = conv.weight.detach().numpy().reshape(out_channels // N, N, in_channels, kh, kw).transpose(0, 2, 3, 4, 1)
    indices = np.tile(np.arange(in_channels, dtype=np.int32), (out_channels // N, 1))
    return np.ascontiguousarray(values), indices, bias


def _emulate_kernel(weights: Int8KernelWeights, codes: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """NCHW float32 output of the int8 kernel: NHWC uint8 input padded with the zero point,
    acc_raw = sum q_x * q_w over the stored groups (int32), y = float32(acc_raw) * scale + bias."""
    rows, groups, kh, kw, N, lanes = weights.values.shape
    nhwc = codes.transpose(0, 2, 3, 1).astype(np.int32)
    batch, height, width, _ = nhwc.shape
    padded = np.pad(
        nhwc, ((0, 0), (padding, padding), (padding, padding), (0, 0)), constant_values=weights.input_quant.zero_point
    )
    out_h, out_w = (height + 2 * padding - kh) // stride + 1, (width + 2 * padding - kw) // stride + 1
    acc = np.zeros((batch, out_h, out_w, rows * N), np.int32)
    for row in range(rows):
        for group in range(groups):
            start = weights.group_starts[row, group]
            for s in range(kh):
                for t in range(kw):
                    window = padded[
                        :, s : s + stride * out_h : stride, t : t + stride * out_w : stride, start : start + lanes
                    ]
                    tap = weights.values[row, group, s, t].astype(np.int32)  # (N, 4)
                    acc[..., row * N : (row + 1) * N] += np.einsum("bhwc,jc->bhwj", window, tap)
    y = acc.astype(np.float32) * weights.scale + weights.bias
    return y.transpose(0, 3, 1, 2)


def _conv_cases():
    sparse_g1 = toy_graph(G=1).get_submodule("block.conv2")  # 64 -> 64, K = 32, 3x3, padding 1
    sparse_g4 = toy_graph(G=4).get_submodule("block.conv1")  # 32 -> 64, K = 16, 3x3, stride 2
    dense = toy_graph().get_submodule("odd")  # nn.Conv2d 64 -> 24
    return {"sparse_G1": sparse_g1, "sparse_G4": sparse_g4, "dense": dense}


@pytest.mark.parametrize("case", ["sparse_G1", "sparse_G4", "dense"])
def test_the_kernel_arithmetic_on_the_packed_weights_matches_the_reference_conv(case):
    conv = _conv_cases()[case]
    weights = quantize_kernel_weights(*_kernel_layout(conv), conv.in_channels, INPUT_QUANT)
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 256, (2, conv.in_channels, 7, 7), generator=generator, dtype=torch.uint8)
    reference = Int8Conv2dReference.from_conv(conv, INPUT_QUANT)(codes).numpy()
    result = _emulate_kernel(weights, codes.numpy(), conv.stride[0], conv.padding[0])
    # Equal up to float32 rounding of acc_raw * scale and of the folded bias (whose magnitude,
    # scale * zp * wsum, can exceed the output's).
    tolerance = 1e-6 * (np.abs(reference).max() + np.abs(weights.bias).max())
    assert np.abs(result - reference).max() <= tolerance


@pytest.mark.parametrize("case", ["sparse_G1", "sparse_G4", "dense"])
def test_weights_are_quantised_as_the_dense_weight_would_be(case):
    conv = _conv_cases()[case]
    weights = quantize_kernel_weights(*_kernel_layout(conv), conv.in_channels, INPUT_QUANT)
    dense = conv.to_dense_weight() if isinstance(conv, BlockSparseConv2d) else conv.weight
    codes, scales = quantize_weight(dense)
    assert np.array_equal(weights.to_dense_int8(), codes)
    assert np.array_equal(weights.weight_scales, scales)
    assert np.array_equal(weights.weight_sums, codes.reshape(len(codes), -1).sum(axis=1))
    assert weights.values.dtype == np.int8 and weights.group_starts.dtype == np.int32
    assert weights.scale.dtype == np.float32 and weights.bias.dtype == np.float32


def test_input_groups_of_4_store_exactly_the_kept_groups():
    conv = _conv_cases()["sparse_G4"]
    weights = quantize_kernel_weights(*_kernel_layout(conv), conv.in_channels, INPUT_QUANT)
    assert weights.groups_per_row == conv.K // 4 == 4
    assert weights.kept_groups_per_row.tolist() == [conv.K // 4] * conv.rows
    assert np.array_equal(weights.group_starts, conv.indices[:, ::4].numpy())


def test_single_channel_pruning_at_half_density_stores_almost_every_group():
    conv = _conv_cases()["sparse_G1"]
    weights = quantize_kernel_weights(*_kernel_layout(conv), conv.in_channels, INPUT_QUANT)
    all_groups = conv.in_channels // 4
    kept_groups = [len(set((row // 4).tolist())) for row in conv.indices]
    assert weights.kept_groups_per_row.tolist() == kept_groups
    assert weights.groups_per_row == max(kept_groups) >= 0.85 * all_groups  # 4 x the groups > 1.7 x K
    starts = weights.group_starts
    assert (np.diff(starts, axis=1) > 0).all() and (starts % 4 == 0).all() and starts.max() < conv.in_channels


def test_rows_with_fewer_groups_are_padded_with_zero_groups_at_unused_starts():
    values = np.ones((2, 2, 1, 1, 4), dtype=np.float32)
    indices = np.array([[1, 2], [5, 9]])  # row 0: group 0 only; row 1: groups 1 and 2
    weights = quantize_kernel_weights(values, indices, None, 12, INPUT_QUANT)
    assert weights.group_starts.tolist() == [[0, 4], [4, 8]]
    assert weights.kept_groups_per_row.tolist() == [1, 2]
    assert not weights.values[0, 1].any()  # the padding group is all zeros
    assert weights.values[0, 0, 0, 0, :, :].tolist() == [[0, 127, 127, 0]] * 4
    # without a bias the folded bias is -scale * zp * wsum
    expected = -(weights.scale.astype(np.float64) * INPUT_QUANT.zero_point * 2 * 127)
    assert np.array_equal(weights.bias, expected.astype(np.float32))


@pytest.mark.parametrize(
    ("values", "indices", "bias", "in_channels", "match"),
    [
        (np.ones((1, 2, 1, 1, 4)), np.array([[0, 1]]), None, 6, "multiple of 4"),
        (np.ones((1, 2, 1, 1, 4)), np.array([[1, 0]]), None, 8, "strictly ascending"),
        (np.ones((1, 2, 1, 1, 4)), np.array([[0, 8]]), None, 8, r"\[0, in_channels=8\)"),
        (np.ones((1, 2, 1, 1, 4)), np.array([[0, 1, 2]]), None, 8, r"\(R, K\) = \(1, 2\)"),
        (np.ones((2, 1, 1, 4)), np.array([[0]]), None, 8, r"\(R, K, kh, kw, N\)"),
        (np.ones((1, 2, 1, 1, 4)), np.array([[0, 1]]), np.ones(3), 8, r"\(R\*N,\) = \(4,\)"),
    ],
)
def test_inconsistent_inputs_are_refused_naming_the_argument(values, indices, bias, in_channels, match):
    with pytest.raises(ValueError, match=match):
        quantize_kernel_weights(values, indices, bias, in_channels, INPUT_QUANT)
