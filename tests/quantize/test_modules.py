"""The reference modules: the int8 conv's integer arithmetic checked against plain numpy loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from subp_fx.algorithm.block_sparse import BlockSparseConv2d
from subp_fx.quantize.modules import Dequantize, Int8Conv2dReference, Int8LinearReference, Quantize
from subp_fx.quantize.params import ActivationQuant


def _tiny_block_sparse_conv(seed: int = 0) -> BlockSparseConv2d:
    generator = torch.Generator().manual_seed(seed)
    conv = BlockSparseConv2d(8, 8, 3, N=4, K=3, stride=2, padding=1)
    with torch.no_grad():
        conv.values.copy_(torch.randn(conv.values.shape, generator=generator))
        conv.indices.copy_(torch.tensor([[0, 3, 6], [1, 2, 7]]))
        conv.bias.copy_(torch.randn(8, generator=generator))
    return conv


def _numpy_int8_conv(codes, weight, bias, quant, stride, padding):
    """acc[b, co, y, x] = sum (q_x - zp) * q_w over channels and taps, with q_x = zp outside the
    image; then float32(acc * (s_x * s_w) + b) in float64. Written with loops, from scratch."""
    peak = np.abs(weight).reshape(weight.shape[0], -1).max(axis=1).astype(np.float32)
    w_scale = np.where(peak > 0, peak / np.float32(127), np.float32(1))
    q_w = np.clip(np.rint(weight / w_scale[:, None, None, None]), -127, 127).astype(np.int64)
    batch, channels, height, width = codes.shape
    out_channels, _, kh, kw = weight.shape
    padded = np.full((batch, channels, height + 2 * padding, width + 2 * padding), quant.zero_point, np.int64)
    padded[:, :, padding : padding + height, padding : padding + width] = codes
    out_h, out_w = (height + 2 * padding - kh) // stride + 1, (width + 2 * padding - kw) // stride + 1
    acc = np.zeros((batch, out_channels, out_h, out_w), np.int64)
    for b in range(batch):
        for co in range(out_channels):
            for y in range(out_h):
                for x in range(out_w):
                    window = padded[b, :, y * stride : y * stride + kh, x * stride : x * stride + kw]
                    acc[b, co, y, x] = ((window - quant.zero_point) * q_w[co]).sum()
    scale = (np.float32(quant.scale) * w_scale).astype(np.float64)
    return (acc * scale[None, :, None, None] + bias.astype(np.float64)[None, :, None, None]).astype(np.float32)


def test_int8_conv_reference_computes_the_exact_integer_accumulation():
    conv = _tiny_block_sparse_conv()
    quant = ActivationQuant(float(np.float32(0.05)), 100)
    codes = torch.randint(0, 256, (2, 8, 5, 5), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    result = Int8Conv2dReference.from_conv(conv, quant)(codes)
    weight = conv.to_dense_weight().detach().numpy()
    expected = _numpy_int8_conv(codes.numpy(), weight, conv.bias.detach().numpy(), quant, stride=2, padding=1)
    assert result.dtype == torch.float32
    assert np.array_equal(result.numpy(), expected)  # bit for bit: both are exact until the last cast


def test_a_dense_conv_without_bias_gets_a_zero_bias():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 1, bias=False)
    quant = ActivationQuant(float(np.float32(0.1)), 7)
    codes = torch.randint(0, 256, (1, 4, 3, 3), dtype=torch.uint8)
    expected = _numpy_int8_conv(codes.numpy(), conv.weight.detach().numpy(), np.zeros(8), quant, stride=1, padding=0)
    assert np.array_equal(Int8Conv2dReference.from_conv(conv, quant)(codes).numpy(), expected)


def test_the_int8_conv_refuses_float_input_and_convs_it_cannot_compute():
    quant = ActivationQuant(0.5, 0)
    with pytest.raises(TypeError, match="uint8"):
        Int8Conv2dReference.from_conv(nn.Conv2d(4, 4, 1), quant)(torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError, match="from an nn.Conv2d or a BlockSparseConv2d, got Conv1d"):
        Int8Conv2dReference.from_conv(nn.Conv1d(8, 8, 3), quant)


def test_a_depthwise_conv_is_each_channel_convolved_alone():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6)
    quant = ActivationQuant(float(np.float32(0.03)), 200)
    codes = torch.randint(0, 256, (2, 6, 7, 7), dtype=torch.uint8)
    weight, bias = conv.weight.detach().numpy(), conv.bias.detach().numpy()
    per_channel = [
        _numpy_int8_conv(codes.numpy()[:, [c]], weight[[c]], bias[[c]], quant, stride=2, padding=1) for c in range(6)
    ]
    reference = Int8Conv2dReference.from_conv(conv, quant)
    assert np.array_equal(reference(codes).numpy(), np.concatenate(per_channel, axis=1))
    assert "groups=6" in repr(reference)


def test_int8_linear_reference_is_the_int8_conv_on_a_1x1_image():
    torch.manual_seed(0)
    linear = nn.Linear(8, 5)
    quant = ActivationQuant(float(np.float32(0.02)), 131)
    codes = torch.randint(0, 256, (3, 8), dtype=torch.uint8)
    result = Int8LinearReference.from_linear(linear, quant)(codes)
    weight = linear.weight.detach().numpy()[:, :, None, None]
    expected = _numpy_int8_conv(codes.numpy()[:, :, None, None], weight, linear.bias.detach().numpy(), quant, 1, 0)
    assert result.shape == (3, 5) and result.dtype == torch.float32
    assert np.array_equal(result.numpy(), expected[:, :, 0, 0])
    assert "in_features=8, out_features=5" in repr(Int8LinearReference.from_linear(linear, quant))


def test_the_int8_linear_refuses_other_modules_and_inputs_that_are_not_2d():
    quant = ActivationQuant(0.5, 0)
    with pytest.raises(ValueError, match="made from an nn.Linear"):
        Int8LinearReference.from_linear(nn.Conv2d(4, 4, 1), quant)
    with pytest.raises(ValueError, match=r"\(B, in_features\) codes, got shape \(1, 4, 1, 1\)"):
        Int8LinearReference.from_linear(nn.Linear(4, 2), quant)(torch.zeros(1, 4, 1, 1, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        Int8LinearReference.from_linear(nn.Linear(4, 2), quant)(torch.zeros(1, 4))


def test_quantize_and_dequantize_modules_apply_their_parameters():
    quant = ActivationQuant(0.5, 10)
    x = torch.tensor([[-1.0, 0.0, 1.25]])
    codes = Quantize(quant)(x)
    assert codes.tolist() == [[8, 10, 12]]  # 1.25 / 0.5 = 2.5: a tie, rounded to even
    assert Dequantize(quant)(codes).tolist() == [[-1.0, 0.0, 1.0]]
