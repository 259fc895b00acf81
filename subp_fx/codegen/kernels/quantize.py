"""Per-tensor quantisation kernels between the float32 and uint8 halves of an int8 model.

``quantize``:   ``q = clamp(nearbyint(x / scale) + zero_point, 0, 255)`` as uint8 (round half to
even, a divide rather than a multiply by the reciprocal: the int8 conv kernel's requantisation
and torch's ``quantize_per_tensor`` round the same way);
``dequantize``: ``x = (float32(q) - zero_point) * scale``.

``params`` is a float32 (2,) buffer ``[scale, zero_point]``: an argument, so one compiled kernel
serves every tensor of the same shape. Both are flat elementwise loops, parallel over chunks and
vectorised (``loops.schedule_flat_parallel_vector``).
"""

from __future__ import annotations

from tvm import s_tir, te, tirx

from subp_fx.codegen.errors import KernelSpecError
from subp_fx.codegen.kernels.loops import schedule_flat_parallel_vector

FLOAT = "float32"
# float32 lanes of an AVX-512 register: the vector chunk (a narrower unit splits it).
_LANES = 16


def _check_shape(shape) -> tuple[int, ...]:
    shape = tuple(shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise KernelSpecError(f"shape must be a non-empty tuple of integers >= 1, got {shape!r}")
    return shape


def _scheduled(arguments: list[te.Tensor], shape: tuple[int, ...]) -> tirx.PrimFunc:
    sch = s_tir.Schedule(te.create_prim_func(arguments))
    schedule_flat_parallel_vector(sch, arguments[-1].op.name, shape, _LANES)
    return sch.mod["main"]


def quantize_primfunc(shape: tuple[int, ...]) -> tirx.PrimFunc:
    """float32 ``data`` of ``shape`` and ``params`` (2,) -> uint8 ``out`` (arguments in that order)."""
    shape = _check_shape(shape)
    data = te.placeholder(shape, FLOAT, name="data")
    params = te.placeholder((2,), FLOAT, name="params")

    def level(*index):
        value = tirx.nearbyint(data[index] / params[0]) + params[1]
        return tirx.Cast("uint8", tirx.min(tirx.max(value, tirx.const(0.0, FLOAT)), tirx.const(255.0, FLOAT)))

    return _scheduled([data, params, te.compute(shape, level, name="out")], shape)


def dequantize_primfunc(shape: tuple[int, ...]) -> tirx.PrimFunc:
    """uint8 ``data`` of ``shape`` and ``params`` (2,) -> float32 ``out`` (arguments in that order)."""
    shape = _check_shape(shape)
    data = te.placeholder(shape, "uint8", name="data")
    params = te.placeholder((2,), FLOAT, name="params")
    out = te.compute(shape, lambda *index: (tirx.Cast(FLOAT, data[index]) - params[1]) * params[0], name="out")
    return _scheduled([data, params, out], shape)
