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

from subp_fx.codegen import activations
from subp_fx.codegen.errors import KernelSpecError
from subp_fx.codegen.kernels.loops import lane_chunk, schedule_flat_parallel_vector

FLOAT = "float32"
UINT8_CEILING = 255
# float32 lanes of an AVX-512 register: the vector chunk (a narrower unit splits it).
_LANES = 16


# Levels are clamped to this before the float -> int32 conversion: a level of 2^31 or more would
# convert to INT_MIN (x86's "integer indefinite") and store as 0; anything above 255 stores 255.
_LEVEL_CEILING = 256.0


def _rounded_level(value, inverse):
    """``rint(value * inverse)`` as int32 (round half to even), ``value * inverse`` first clamped
    to ``_LEVEL_CEILING``. ``llvm.lrint`` is one ``vcvtps2dq`` (the current rounding mode: to
    nearest even) where ``tirx.round`` then a cast took ``vrndscaleps`` + ``vcvttps2dq``; and TVM
    cannot vectorise ``tirx.nearbyint`` at all (a 56x56x64 quantise fell to scalar code that
    LLVM re-vectorised with gathers: 950 us against 29 us, Ice Lake, 2 threads)."""
    scaled = tirx.min(value * inverse, tirx.const(_LEVEL_CEILING, FLOAT))
    return tirx.call_llvm_pure_intrin("int32", "llvm.lrint", scaled)


def requantized_uint8(value, params, activation: str = "none"):
    """:func:`requantized_code` as uint8."""
    return tirx.Cast("uint8", requantized_code(value, params, activation))


def requantized_code(value, params, activation: str = "none"):
    """The uint8 code of ``act(value)``, as a uint32 value in 0..255, for a ``params`` buffer ``[scale, zero_point]``:
    exactly ``clamp(rint(act(value) * float32(1 / scale)) + zero_point, 0, 255)``, the arithmetic
    of ``quantize.params.ActivationQuant.quantize`` (a product by the float32 reciprocal, not a
    divide: ``vdivps`` cost 5x ``vmulps``).

    An activation that is a clamp (``Activation.clamp``: none, ReLU, ReLU6) is applied to the
    rounded int32 levels instead: ``rint(max(y, 0) * inv) = max(rint(y * inv), 0)`` and the same
    for an upper bound, because multiplying by a positive float32 and rounding are both monotone;
    the bounds' own levels are rounded by the same operations. With the zero point added in int32
    and the 0..255 clamp folded into those bounds, a ReLU epilogue's store is ``vmulps``,
    ``vminps``, ``vcvtps2dq``, ``vpaddd``, ``vpmaxsd``, ``vpmovusdb`` (AVX-512, read in the
    assembly) where the float form took ``vmaxps``, ``vmulps``, ``vrndscaleps``, ``vaddps``, ``vmaxps``, ``vminps``,
    ``vcvttps2dq``, ``vpmovdb``. Other activations are applied to the float value first."""
    clamp = activations.ACTIVATIONS[activation].clamp
    if clamp is None:
        value, clamp = activations.expression(activation)(value), (None, None)
    inverse = tirx.const(1.0, FLOAT) / params[0]
    zero_point = tirx.Cast("int32", params[1])
    lo, hi = clamp
    floor = zero_point if lo == 0.0 else tirx.const(0, "int32")
    if lo not in (None, 0.0):
        floor = tirx.max(floor, _rounded_level(tirx.const(lo, FLOAT), inverse) + zero_point)
    code = tirx.max(_rounded_level(value, inverse) + zero_point, floor)
    if hi is not None:
        code = tirx.min(code, _rounded_level(tirx.const(hi, FLOAT), inverse) + zero_point)
    # code >= floor >= 0 here; as uint32, the 255 ceiling and the byte store become one
    # ``vpmovusdb`` (unsigned saturation), where an int32 min kept a ``vpminsd``.
    return tirx.min(tirx.Cast("uint32", code), tirx.const(UINT8_CEILING, "uint32"))


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
            return requantized_uint8(data[index], params)
        inside = index[-1] < shape[-1]
        clamped = (*index[:-1], tirx.min(index[-1], shape[-1] - 1))
        zero_point = tirx.Cast("uint8", tirx.Cast("int32", params[1]))
        return tirx.if_then_else(inside, requantized_uint8(data[clamped], params), zero_point)

    return _scheduled([data, params, te.compute(out_shape, level, name="out")], out_shape)


def quantize_image_primfunc(shape: tuple[int, ...], padded_channels: int) -> tirx.PrimFunc:
    """float32 NCHW ``data`` of ``shape`` (a model's input image) and ``params`` (2,) -> uint8 NHWC
    ``out`` (B, H, W, ``padded_channels``), the channels beyond C at the zero point: the layout
    change and :func:`quantize_primfunc` in one pass, for an int8 stem that is the image's only
    reader. ``padded_channels`` is a multiple of 4 and at least C.

    Each 32-bit word of the output (4 channels of one pixel) is assembled in int32 lanes from
    the 4 channel planes, so a vector of pixels is one contiguous load per channel and one store.
    Measured on the 1x3x224x224 image (Ice Lake, 2 threads): NCHW -> NHWC fp32 then quantise took
    45-63 + 19-23 us in the MobileNetV1 and ResNet-50 profiles; this kernel 30 us in the
    MobileNetV1 profile (the image arrives cold), 11 us timed alone."""
    shape = _check_shape(shape)
    if len(shape) != 4:
        raise KernelSpecError(f"shape must be an NCHW (B, C, H, W) tuple, got {shape!r}")
    batch, channels, height, width = shape
    if isinstance(padded_channels, bool) or not isinstance(padded_channels, int):
        raise KernelSpecError(f"padded_channels must be an integer, got {padded_channels!r}")
    if padded_channels < channels or padded_channels % 4:
        raise KernelSpecError(
            f"padded_channels must be a multiple of 4 and >= the {channels} channels, got {padded_channels}"
        )
    data = tirx.decl_buffer(shape, FLOAT, "data")
    params = tirx.decl_buffer((2,), FLOAT, "params")
    out = tirx.decl_buffer((batch, height, width, padded_channels), "uint8", "out")
    words = tirx.decl_buffer((batch, height, width, padded_channels // 4), "uint32", "out_words", data=out.data)
    row, column, lane = (tirx.Var(name, "int32") for name in ("row", "column", "lane"))
    chunk = lane_chunk(width, _LANES)
    b, h, w = row // height, row % height, column * chunk + lane
    zero_point = tirx.Cast("uint32", tirx.Cast("int32", params[1]))

    def code(channel: int):
        return requantized_code(data[b, channel, h, w], params) if channel < channels else zero_point

    stores = []
    for group in range(padded_channels // 4):
        word = code(4 * group)
        for byte in range(1, 4):
            word = word | (code(4 * group + byte) << tirx.const(8 * byte, "uint32"))
        stores.append(tirx.BufferStore(words, word, [b, h, w, group]))
    body = tirx.For(
        row,
        0,
        batch * height,
        tirx.ForKind.PARALLEL,
        tirx.For(
            column,
            0,
            width // chunk,
            tirx.ForKind.SERIAL,
            tirx.For(lane, 0, chunk, tirx.ForKind.VECTORIZED, tirx.SeqStmt(stores) if len(stores) > 1 else stores[0]),
        ),
    )
    func = tirx.PrimFunc([data, params, out], tirx.SeqStmt([tirx.DeclBuffer(words, data=out.data), body]))
    return func.with_attr("tirx.noalias", True)


def dequantize_primfunc(shape: tuple[int, ...]) -> tirx.PrimFunc:
    """uint8 ``data`` of ``shape`` and ``params`` (2,) -> float32 ``out`` (arguments in that order)."""
    shape = _check_shape(shape)
    data = te.placeholder(shape, "uint8", name="data")
    params = te.placeholder((2,), FLOAT, name="params")
    out = te.compute(shape, lambda *index: (tirx.Cast(FLOAT, data[index]) - params[1]) * params[0], name="out")
    return _scheduled([data, params, out], shape)
