"""Per-tensor quantisation kernels between the float32 and uint8 halves of an int8 model.

``quantize``:   ``q = clamp(rint(x * inverse_scale) + zero_point, 0, 255)`` as uint8, with
``inverse_scale = float32(1 / scale)`` and round half to even: ``quantize.params``' arithmetic,
which the int8 conv kernel's requantisation shares (see there why a product, not a divide);
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


def quantization_level(value, params):
    """``rint(value * float32(1 / scale)) + zero_point`` (float32) for a ``params`` buffer
    ``[scale, zero_point]``: the reciprocal is one scalar divide, the same IEEE operation as
    ``quantize.params.ActivationQuant.inverse_scale``.

    ``tirx.round``, not ``tirx.nearbyint``: TVM lowers ``round`` to LLVM's ``nearbyint`` too
    (``vrndscaleps $12``: the current rounding mode, round half to even), but its vectoriser
    cannot vectorise a ``nearbyint`` call: the 56x56x64 quantise loop fell to scalar code that
    LLVM re-vectorised with gathers and byte extracts, 950 us against 29 us (Ice Lake, 2 threads).
    """
    inverse = tirx.const(1.0, FLOAT) / params[0]
    return tirx.round(value * inverse) + params[1]


def to_uint8(level):
    """A float32 quantisation level (already rounded) clamped to 0..255 and stored as uint8.

    Through int32: LLVM truncates an int32 vector to bytes with one ``vpmovdb``, while a direct
    float -> uint8 cast was extracted byte by byte (128 ``vpextrb`` in a 16-lane quantise loop).
    """
    clamped = tirx.min(tirx.max(level, tirx.const(0.0, FLOAT)), tirx.const(255.0, FLOAT))
    return tirx.Cast("uint8", tirx.Cast("int32", clamped))


def _check_shape(shape) -> tuple[int, ...]:
    shape = tuple(shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise KernelSpecError(f"shape must be a non-empty tuple of integers >= 1, got {shape!r}")
    return shape


def _scheduled(arguments: list[te.Tensor], shape: tuple[int, ...]) -> tirx.PrimFunc:
    sch = s_tir.Schedule(te.create_prim_func(arguments))
    schedule_flat_parallel_vector(sch, arguments[-1].op.name, shape, _LANES)
    return sch.mod["main"]


def quantize_primfunc(shape: tuple[int, ...], padded_channels: int | None = None) -> tirx.PrimFunc:
    """float32 ``data`` of ``shape`` and ``params`` (2,) -> uint8 ``out`` (arguments in that order).

    ``padded_channels``: the last axis of ``out`` holds that many channels (at least the input's),
    the extra ones set to the zero point: an int8 conv reads channels in groups of 4, so an RGB
    image is stored with a fourth channel (its weights are zero)."""
    shape = _check_shape(shape)
    channels = shape[-1] if padded_channels is None else padded_channels
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < shape[-1]:
        raise KernelSpecError(f"padded_channels must be an integer >= the {shape[-1]} channels, got {channels!r}")
    data = te.placeholder(shape, FLOAT, name="data")
    params = te.placeholder((2,), FLOAT, name="params")
    out_shape = (*shape[:-1], channels)

    def level(*index):
        if channels == shape[-1]:
            return to_uint8(quantization_level(data[index], params))
        inside = index[-1] < shape[-1]
        clamped = (*index[:-1], tirx.min(index[-1], shape[-1] - 1))
        return to_uint8(tirx.if_then_else(inside, quantization_level(data[clamped], params), params[1]))

    return _scheduled([data, params, te.compute(out_shape, level, name="out")], out_shape)


def dequantize_primfunc(shape: tuple[int, ...]) -> tirx.PrimFunc:
    """uint8 ``data`` of ``shape`` and ``params`` (2,) -> float32 ``out`` (arguments in that order)."""
    shape = _check_shape(shape)
    data = te.placeholder(shape, "uint8", name="data")
    params = te.placeholder((2,), FLOAT, name="params")
    out = te.compute(shape, lambda *index: (tirx.Cast(FLOAT, data[index]) - params[1]) * params[0], name="out")
    return _scheduled([data, params, out], shape)
