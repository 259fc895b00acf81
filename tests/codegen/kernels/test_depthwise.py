"""The depthwise conv kernel against torch, with each fused activation, and its assembly."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from subp_fx.codegen.kernels.depthwise import DepthwiseConvSpec, depthwise_conv2d_primfunc  # noqa: E402
from subp_fx.codegen.kernels.isa import vector_isa  # noqa: E402
from subp_fx.codegen.target import parse_target  # noqa: E402

NATIVE = parse_target("llvm -mcpu=native")
TORCH_ACTIVATIONS = {
    "none": lambda t: t,
    "relu6": F.relu6,
    "silu": F.silu,
    "hardswish": F.hardswish,
    "sigmoid": torch.sigmoid,
    "hardsigmoid": F.hardsigmoid,
}


def _compile(spec: DepthwiseConvSpec, target):
    function = depthwise_conv2d_primfunc(spec, vector_isa(target).lanes).with_attr("global_symbol", "depthwise")
    return tvm.compile(tvm.IRModule({"depthwise": function}), target=target)


def _check_against_torch(spec: DepthwiseConvSpec, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    data = rng.standard_normal(spec.data_shape, dtype=np.float32) * 2
    weight = rng.standard_normal((spec.channels, 1, *spec.kernel_size), dtype=np.float32)
    bias = rng.standard_normal(spec.channels, dtype=np.float32) if spec.bias else None
    arguments = [data, weight[:, 0].transpose(1, 2, 0).copy()] + ([bias] if bias is not None else [])
    out = tvm.runtime.empty(spec.out_shape, "float32")
    _compile(spec, NATIVE)["depthwise"](*[tvm.runtime.tensor(array) for array in arguments], out)

    conv = F.conv2d(
        torch.from_numpy(data).permute(0, 3, 1, 2),
        torch.from_numpy(weight),
        None if bias is None else torch.from_numpy(bias),
        stride=spec.stride,
        padding=spec.padding,
        dilation=spec.dilation,
        groups=spec.channels,
    )
    expected = TORCH_ACTIVATIONS[spec.activation](conv).permute(0, 2, 3, 1).numpy()
    scale = np.abs(expected).max()
    assert scale > 0
    assert np.abs(out.numpy() - expected).max() <= 1e-5 * scale


# Odd sizes, channels not a multiple of the vector width, 3x3 / 5x5, stride 2, dilation, no bias.
@pytest.mark.parametrize(
    "spec",
    [
        DepthwiseConvSpec(2, 9, 11, 20, (3, 3), padding=(1, 1), activation="silu"),
        DepthwiseConvSpec(1, 13, 7, 12, (5, 5), stride=(2, 2), padding=(2, 2), activation="hardswish"),
        DepthwiseConvSpec(1, 7, 9, 36, (3, 3), padding=(2, 2), dilation=(2, 2), bias=False, activation="sigmoid"),
        DepthwiseConvSpec(3, 5, 5, 9, (3, 3), stride=(2, 2), padding=(1, 1), activation="hardsigmoid"),
        DepthwiseConvSpec(1, 6, 13, 16, (3, 3), padding=(1, 1), activation="relu6"),
        DepthwiseConvSpec(1, 6, 5, 8, (3, 3), activation="none"),
    ],
    ids=lambda spec: spec.activation,
)
def test_matches_torch_grouped_conv2d_then_the_activation(spec):
    _check_against_torch(spec)


def test_a_depthwise_conv_with_a_fused_silu_is_vector_code_without_libm_calls():
    target = parse_target("llvm -mcpu=znver3")  # compiled for AVX2, not run
    spec = DepthwiseConvSpec(1, 14, 14, 48, (3, 3), padding=(1, 1), activation="silu")
    asm = _compile(spec, target).jit().inspect_source("asm")
    assert "expf" not in asm
    assert "vfmadd" in asm and "vdivps" in asm and "%ymm" in asm


@pytest.mark.parametrize(
    ("in_dtype", "out_dtype"), [("bfloat16", "bfloat16"), ("bfloat16", "float32"), ("float32", "bfloat16")]
)
def test_bf16_storage_widens_the_input_and_rounds_the_output_like_torch(in_dtype, out_dtype):
    spec = DepthwiseConvSpec(
        2, 9, 11, 20, (3, 3), padding=(1, 1), activation="relu6", in_dtype=in_dtype, out_dtype=out_dtype
    )
    rng = np.random.default_rng(3)
    data = torch.from_numpy(rng.standard_normal(spec.data_shape, dtype=np.float32))
    if in_dtype == "bfloat16":
        data = data.to(torch.bfloat16)
    weight = torch.from_numpy(rng.standard_normal((spec.channels, 1, 3, 3), dtype=np.float32))
    bias = torch.from_numpy(rng.standard_normal(spec.channels, dtype=np.float32))
    stored = data.view(torch.int16).numpy().view(np.uint16) if in_dtype == "bfloat16" else data.numpy()
    arguments = [stored, weight[:, 0].permute(1, 2, 0).contiguous().numpy(), bias.numpy()]
    out = tvm.runtime.empty(spec.out_shape, "uint16" if out_dtype == "bfloat16" else "float32")
    _compile(spec, NATIVE)["depthwise"](*[tvm.runtime.tensor(array) for array in arguments], out)
    conv = F.conv2d(data.float().permute(0, 3, 1, 2), weight, bias, padding=1, groups=spec.channels)
    expected = F.relu6(conv).permute(0, 2, 3, 1)
    if out_dtype == "bfloat16":
        got = torch.from_numpy(out.numpy().view(np.int16)).view(torch.bfloat16).float()
        # float32 sums in another order, then one rounding: equal, or one bf16 step apart
        step = expected.abs() * 2**-7 + 1e-6
        assert ((got - expected.to(torch.bfloat16).float()).abs() <= step).all()
    else:
        np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=0, atol=1e-5 * float(expected.abs().max()))


def test_depthwise_storage_dtypes_are_checked():
    with pytest.raises(ValueError, match="in_dtype must be one of float32, bfloat16"):
        DepthwiseConvSpec(1, 4, 4, 8, (3, 3), in_dtype="uint8")
