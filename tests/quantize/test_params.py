"""Activation and weight quantisation: the exact roundings the int8 kernels implement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from subp_fx.quantize.params import ActivationQuant, output_scales, quantize_weight, weight_scales


def test_from_range_takes_scale_and_zero_point_from_the_range_widened_to_zero():
    quant = ActivationQuant.from_range(-1.0, 3.0)
    assert quant.scale == float(np.float32(4.0 / 255))
    assert quant.zero_point == 64  # rint(1 / (4/255)) = rint(63.75)
    positive = ActivationQuant.from_range(2.0, 5.0)  # lo widened to 0: 0 stays exact
    assert (positive.scale, positive.zero_point) == (float(np.float32(5.0 / 255)), 0)
    negative = ActivationQuant.from_range(-6.0, -2.0)  # hi widened to 0
    assert negative.zero_point == 255


def test_a_constant_zero_tensor_gets_a_positive_scale_and_stays_exactly_zero():
    quant = ActivationQuant.from_range(0.0, 0.0)
    assert quant.scale > 0 and quant.zero_point == 0
    assert torch.equal(quant.fake_quant(torch.zeros(3)), torch.zeros(3))


@pytest.mark.parametrize(("lo", "hi"), [(float("nan"), 1.0), (0.0, float("inf")), (2.0, 1.0)])
def test_from_range_refuses_non_finite_or_reversed_bounds(lo, hi):
    with pytest.raises(ValueError, match="range"):
        ActivationQuant.from_range(lo, hi)


@pytest.mark.parametrize(
    ("scale", "zero_point", "match"),
    [(0.0, 0, "scale"), (0.1, 0, "float32"), (0.5, 256, "zero_point"), (0.5, 1.0, "zero_point"), (0.5, True, "zero")],
)
def test_invalid_parameters_are_refused_naming_the_field(scale, zero_point, match):
    with pytest.raises(ValueError, match=match):
        ActivationQuant(scale, zero_point)


def test_quantize_rounds_half_to_even_and_saturates():
    quant = ActivationQuant(0.5, 10)
    x = torch.tensor([0.25, 0.75, -0.25, -0.75, 1000.0, -1000.0])
    # x * 2 = 0.5 -> 0, 1.5 -> 2, -0.5 -> -0, -1.5 -> -2; then + 10 and clamp to [0, 255]
    assert quant.quantize(x).tolist() == [10, 12, 10, 8, 255, 0]
    assert quant.quantize(x).dtype == torch.uint8
    assert quant.quantize(x.numpy()).tolist() == [10, 12, 10, 8, 255, 0]


def test_quantize_multiplies_by_the_float32_reciprocal():
    # For these two values x * float32(1/s) and x / s round to different codes (found by search):
    # the kernels multiply, so the reference must too.
    quant = ActivationQuant(float(np.float32(3 / 255)), 0)
    x = np.array([2.8058825, 0.7235294], dtype=np.float32)
    divided = np.rint(x / np.float32(quant.scale))
    multiplied = np.rint(x * (np.float32(1) / np.float32(quant.scale)))
    assert (divided != multiplied).all()
    np.testing.assert_array_equal(quant.quantize(x), multiplied.astype(np.uint8))
    np.testing.assert_array_equal(quant.quantize(torch.from_numpy(x)).numpy(), multiplied.astype(np.uint8))


def test_torch_and_numpy_agree_and_fake_quant_is_within_half_a_step():
    quant = ActivationQuant.from_range(-2.0, 3.0)
    x = torch.empty(10_000).uniform_(-2.0, 3.0, generator=torch.Generator().manual_seed(0))
    codes = quant.quantize(x)
    assert np.array_equal(codes.numpy(), quant.quantize(x.numpy()))
    assert np.array_equal(quant.dequantize(codes).numpy(), quant.dequantize(codes.numpy()))
    error = (quant.fake_quant(x) - x).abs().max().item()
    assert error <= quant.scale / 2 * (1 + 1e-5)
    assert quant.fake_quant(x).dtype == torch.float32


def test_weight_scales_are_per_output_channel_and_one_for_a_zero_channel():
    weight = np.zeros((3, 2, 1, 1), dtype=np.float32)
    weight[0, 1] = -2.54
    weight[2, 0] = 0.127
    scales = weight_scales(weight)
    assert scales.dtype == np.float32
    assert scales.tolist() == [np.float32(2.54) / np.float32(127), 1.0, np.float32(0.127) / np.float32(127)]


def test_quantize_weight_maps_each_channel_peak_to_127_and_reconstructs_within_half_a_step():
    weight = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    codes, scales = quantize_weight(weight)
    assert codes.dtype == np.int8 and codes.shape == (8, 4, 3, 3)
    assert (np.abs(codes).reshape(8, -1).max(axis=1) == 127).all()
    error = np.abs(codes * scales[:, None, None, None] - weight.numpy())
    assert (error <= scales[:, None, None, None] / 2 * (1 + 1e-5)).all()


def test_weight_quantisation_refuses_non_finite_weights():
    with pytest.raises(ValueError, match="non-finite"):
        weight_scales(np.array([[np.nan]], dtype=np.float32))


def test_output_scales_are_float32_products():
    quant = ActivationQuant.from_range(-1.0, 1.0)
    scales = np.array([0.5, 0.25], dtype=np.float32)
    assert output_scales(quant, scales).tolist() == [np.float32(quant.scale) * s for s in scales]
