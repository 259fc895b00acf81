"""float32 -> bf16 conversion of a feature map, the input of a bf16 conv.

``out[..., c] = bf16(data[..., c])`` (round to nearest even, stored as uint16) for the input's C
channels, and 0 for the channels up to ``padded_channels`` (the bf16 conv reads channel pairs, so
an RGB image is stored with a fourth, zero channel whose weights are zero). One flat elementwise
loop, parallel chunks of vectors (``loops.schedule_flat_parallel_vector``).
"""

from __future__ import annotations

from tvm import s_tir, te, tirx

from subp_fx.codegen.errors import KernelSpecError
from subp_fx.codegen.kernels.bf16_dot import rounded_bf16_bits
from subp_fx.codegen.kernels.bf16_spec import BF16
from subp_fx.codegen.kernels.loops import schedule_flat_parallel_vector

_LANES = 16


def to_bf16_primfunc(shape: tuple[int, ...], padded_channels: int | None = None) -> tirx.PrimFunc:
    """float32 ``data`` of ``shape`` -> bf16 bits ``out`` (uint16), the last axis padded with zeros
    to ``padded_channels`` (default: none)."""
    shape = tuple(shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise KernelSpecError(f"shape must be a non-empty tuple of integers >= 1, got {shape!r}")
    channels = shape[-1] if padded_channels is None else padded_channels
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < shape[-1]:
        raise KernelSpecError(f"padded_channels must be an integer >= the {shape[-1]} channels, got {channels!r}")
    data = te.placeholder(shape, "float32", name="data")
    out_shape = (*shape[:-1], channels)

    def bits(*index):
        if channels == shape[-1]:
            return rounded_bf16_bits(data[index])
        clamped = (*index[:-1], tirx.min(index[-1], shape[-1] - 1))
        return tirx.if_then_else(index[-1] < shape[-1], rounded_bf16_bits(data[clamped]), tirx.const(0, BF16))

    out = te.compute(out_shape, bits, name="out")
    sch = s_tir.Schedule(te.create_prim_func([data, out]))
    schedule_flat_parallel_vector(sch, "out", out_shape, _LANES)
    return sch.mod["main"]
