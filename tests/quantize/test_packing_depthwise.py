"""quantize_depthwise_weights: codes per channel in (kh, kw, C), scales, and the folded bias."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from subp_fx.quantize.modules import Int8Conv2dReference
from subp_fx.quantize.packing_depthwise import quantize_depthwise_weights
from subp_fx.quantize.params import ActivationQuant


def test_the_raw_codes_times_the_constants_equal_the_reference_conv():
    """y = float32(sum q_x * q_w) * scale + bias on the raw codes (zero-point padded) is the
    reference's (q_x - zp) arithmetic, up to float32 rounding of the folded bias."""
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 5, 3, padding=1, groups=5)
    quant = ActivationQuant(float(np.float32(0.02)), 37)
    packed = quantize_depthwise_weights(conv.weight, conv.bias, quant)
    assert packed.codes.shape == (3, 3, 5) and packed.codes.dtype == np.int8
    codes = torch.randint(0, 256, (1, 5, 6, 6), dtype=torch.uint8)
    padded = F.pad(codes.to(torch.float64), (1, 1, 1, 1), value=quant.zero_point)
    weight = torch.from_numpy(packed.codes.transpose(2, 0, 1)[:, None].astype(np.float64))
    acc = F.conv2d(padded, weight, groups=5).numpy().astype(np.float32)
    got = acc * packed.scale[:, None, None] + packed.bias[:, None, None]
    expected = Int8Conv2dReference.from_conv(conv, quant)(codes).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_a_missing_bias_folds_only_the_zero_point_and_bad_shapes_are_refused():
    weight = np.ones((4, 1, 3, 3), dtype=np.float32)
    packed = quantize_depthwise_weights(weight, None, ActivationQuant(0.5, 2))
    # every code is 127 (scale 1/127), so bias = -0.5/127 * 2 * 9 * 127 = -9
    np.testing.assert_allclose(packed.bias, -9.0, rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(C, 1, kh, kw\)"):
        quantize_depthwise_weights(np.ones((4, 2, 3, 3)), None, ActivationQuant(0.5, 2))
    with pytest.raises(ValueError, match=r"bias must have shape \(C,\) = \(4,\)"):
        quantize_depthwise_weights(weight, np.ones(3), ActivationQuant(0.5, 2))
