"""The int8 depthwise conv2d (groups == C_in == C_out), NHWC: uint8 in, exact integer sums, fp32 or uint8 out.

What it computes (``quantize.packing_depthwise`` produces the arguments)::

    acc[b, oh, ow, c] = sum_{s, t} data[b, oh*sh - ph + s*dh, ow*sw - pw + t*dw, c] * weight[s, t, c]   (exact)
    y   = float32(acc) * scale[c] + bias[c]        (the zero-point correction is folded into bias)
    y   = act(y)
    out = y  (float32)   or   clamp(rint(y * float32(1 / s_out)) + zp_out, 0, 255)  (uint8, ties to even)

``data`` is uint8 with a per-tensor zero point, which padding reads (so a padded tap adds
``zp * w`` like every other tap, and the folded bias cancels it exactly); ``weight`` int8
(kh, kw, C), symmetric per channel. The epilogue is the int8 conv kernel's (``int8_spec``)
without the residual: :func:`epilogue`.

How: parallel over (batch, output row); each row is cut into register tiles of up to
``Int8Path.max_accumulators`` pixels x one vector of channels (the last tile narrower, no padded
work); per kernel row, each input column the tile reads is loaded once (16 bytes), widened and
used by every (pixel, tap) that reads it; the epilogue runs on the registers before the one
store. Tiles whose windows lie inside the input run unguarded; border tiles clamp the address
and select the zero point (no branch per tap).

The sums are accumulated in *float32 lanes holding exact integers*: every product (<= 255 * 127)
and every partial sum (<= 255 * 127 * kh * kw, under 2**24 for up to ``MAX_TAPS`` taps) is an
integer float32 represents exactly, so the result is the int32 sum bit for bit, and a tap is one
FMA, which Ice Lake issues on two ports. The int32 form (LLVM emits ``vpmaddwd`` + ``vpaddd``, both
competing for port 0/5 with the ``vpmovzxbd`` widening; it even splits an explicit ``vpdpwssd``
back into those two) ran 1.1-1.3x slower (u8 -> u8 with ReLU, TVM_NUM_THREADS=2, machine loaded,
time per call): 112x112x32 s1 338 / 252 us, 56x56x128 s1 327 / 279, 28x28x256 s1 118 / 105,
14x14x512 s1 58 / 49. Against the fp32 kernel plus the quantize pass it replaces: 396.8 / 251.5 us
(1.58x), 112x112x64 s2 400 / 186 (2.16x), 56x56x128 s1 455 / 279 (1.63x), 28x28x256 s1 172 / 105
(1.64x), 14x14x512 s1 65 / 49 (1.31x), 14x14x512 s2 23 / 19 (1.21x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm import tirx
from tvm.target import Target
from tvm.tirx import ForKind

from subp_fx.codegen import activations
from subp_fx.codegen.errors import KernelSpecError
from subp_fx.codegen.kernels.block_sparse_conv_int8 import resolve_path
from subp_fx.codegen.kernels.depthwise import DepthwiseConvSpec
from subp_fx.codegen.kernels.isa import Int8Path
from subp_fx.codegen.kernels.loops import ACCUMULATOR_SCOPE, border_split, lane_chunk
from subp_fx.codegen.kernels.quantize import requantized_uint8
from subp_fx.quantize.plan import DEPTHWISE_MAX_TAPS as MAX_TAPS  # one registry: the plan decides with it

FLOAT = "float32"
# The accumulator lanes: float32 holding exact integers (see the module docstring).
ACC = "float32"
OUT_DTYPES = ("float32", "uint8")


@dataclass(frozen=True)
class DepthwiseInt8Spec(DepthwiseConvSpec):
    """A depthwise conv's static shape (``DepthwiseConvSpec``; the folded bias is always an
    argument, so ``bias`` is True) plus ``input_zero_point`` (0..255, what padding reads) and
    ``out_dtype`` (float32, or uint8 requantised with an ``out_params`` argument)."""

    input_zero_point: int = 0
    out_dtype: str = "float32"

    def __post_init__(self) -> None:
        zero_point = self.input_zero_point
        if isinstance(zero_point, bool) or not isinstance(zero_point, int) or not 0 <= zero_point <= 255:
            raise KernelSpecError(f"input_zero_point must be an integer in 0..255, got {zero_point!r}")
        if self.out_dtype not in OUT_DTYPES:
            raise KernelSpecError(f"out_dtype must be one of {', '.join(OUT_DTYPES)}, got {self.out_dtype!r}")
        taps = self.kernel_size[0] * self.kernel_size[1]
        if taps > MAX_TAPS:
            raise KernelSpecError(
                f"a {self.kernel_size} kernel has {taps} taps; the int8 depthwise kernel's float32 accumulation "
                f"is exact up to {MAX_TAPS}"
            )
        if not self.bias:
            raise KernelSpecError("an int8 depthwise conv always takes a bias (the folded zero-point correction)")
        if self.activation not in activations.ACTIVATIONS:
            raise KernelSpecError(
                f"activation must be one of {', '.join(activations.ACTIVATIONS)}, got {self.activation!r}"
            )

    def argument_shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Every buffer argument's (shape, dtype), in call order (the output last)."""
        shapes: dict[str, tuple[tuple[int, ...], str]] = {
            "data": (self.data_shape, "uint8"),
            "weight": (self.weight_shape, "int8"),
            "scale": ((self.channels,), FLOAT),
            "bias": ((self.channels,), FLOAT),
        }
        if self.out_dtype == "uint8":
            shapes["out_params"] = ((2,), FLOAT)
        shapes["out"] = (self.out_shape, self.out_dtype)
        return shapes


def epilogue(acc, scale, bias, activation: str, out_params=None):
    """One output value from its int32 accumulator: ``act(float32(acc) * scale + bias)``, then
    requantised to uint8 when ``out_params`` (a ``[scale, zero_point]`` buffer) is given. The
    same arithmetic as the int8 conv kernel's epilogue without a residual; kept in one small
    function so that both change together."""
    value = tirx.Cast(FLOAT, acc) * scale + bias
    if out_params is None:
        return activations.expression(activation)(value)
    return requantized_uint8(value, out_params, activation)


def depthwise_int8_tile_cols(spec: DepthwiseInt8Spec, path: Int8Path) -> int:
    """Pixels per register tile: as many as ``path.max_accumulators`` allows, evened out over
    the row (112 -> 8 x 14; 28 -> 2 x 14; 7 -> 7), as the int8 conv kernel's heuristic does."""
    tiles = math.ceil(spec.out_width / path.max_accumulators)
    return math.ceil(spec.out_width / tiles)


class _Builder:
    """Emits the loop nest for one (spec, path, tile width); one instance per PrimFunc."""

    def __init__(self, spec: DepthwiseInt8Spec, path: Int8Path, cols: int) -> None:
        self.spec, self.path, self.cols = spec, path, cols
        self.chunk = lane_chunk(spec.channels, path.lanes)
        self.buffers = {
            name: tirx.decl_buffer(shape, dtype, name) for name, (shape, dtype) in spec.argument_shapes().items()
        }

    def _vector(self, c0):
        return tirx.Ramp(c0, 1, self.chunk)

    def _widened(self, value):
        return tirx.Cast(f"{ACC}x{self.chunk}", value)

    def _tile_is_interior(self, oh, ow0, cols: int):
        spec = self.spec
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = spec.kernel_size, spec.stride, spec.padding, spec.dilation
        first_h, first_w = oh * sh - ph, ow0 * sw - pw
        return tirx.all(
            first_h >= 0,
            first_h + (kh - 1) * dh < spec.height,
            first_w >= 0,
            first_w + (cols - 1) * sw + (kw - 1) * dw < spec.width,
        )

    def _input(self, b, h, w, c0, guarded: bool):
        """The widened input vector at (h, w): on a border tile the address is clamped into the
        input and the zero point selected outside it (a select, not a branch per tap)."""
        spec, data = self.spec, self.buffers["data"]
        if not guarded:
            return self._widened(data[b, h, w, self._vector(c0)])
        inside = tirx.all(h >= 0, h < spec.height, w >= 0, w < spec.width)
        h_in = tirx.max(tirx.min(h, spec.height - 1), 0)
        w_in = tirx.max(tirx.min(w, spec.width - 1), 0)
        zero_point = tirx.Broadcast(tirx.const(spec.input_zero_point, "uint8"), self.chunk)
        return self._widened(tirx.Select(inside, data[b, h_in, w_in, self._vector(c0)], zero_point))

    def _reduction(self, b, oh, ow0, cols: int, c0, acc, guarded: bool) -> tirx.Stmt:
        """Every tap of the tile. Per kernel row, each input column the tile reads is loaded and
        widened once and used by every (pixel, tap) that reads it, so a 3x3 stride-1 tile of
        ``cols`` pixels widens ``cols + 2`` vectors a row, not ``3 * cols``."""
        spec, lanes = self.spec, self.chunk
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = spec.kernel_size, spec.stride, spec.padding, spec.dilation
        steps: list[tirx.Stmt] = []
        for s in range(kh):
            h = oh * sh - ph + s * dh
            weights = []
            for t in range(kw):
                var = tirx.Var(f"w{s}_{t}", f"{ACC}x{lanes}")
                steps.append(tirx.Bind(var, self._widened(self.buffers["weight"][s, t, self._vector(c0)])))
                weights.append(var)
            readers: dict[int, list[tuple[int, int]]] = {}
            for p in range(cols):
                for t in range(kw):
                    readers.setdefault(p * sw + t * dw, []).append((p, t))
            for offset in sorted(readers):
                x = tirx.Var(f"x{s}_{offset}", f"{ACC}x{lanes}")
                steps.append(tirx.Bind(x, self._input(b, h, ow0 * sw - pw + offset, c0, guarded)))
                for p, t in readers[offset]:
                    ramp = tirx.Ramp(p * lanes, 1, lanes)
                    steps.append(tirx.BufferStore(acc, acc[ramp] + x * weights[t], [ramp]))
        return tirx.SeqStmt(steps)

    def _write_back(self, b, oh, ow0, cols: int, c0, acc) -> list[tirx.Stmt]:
        buffers, spec = self.buffers, self.spec
        stores = []
        for p in range(cols):
            j = tirx.Var("j", "int32")
            c = c0 + j
            scale, bias, out_params = buffers["scale"][c], buffers["bias"][c], buffers.get("out_params")
            value = epilogue(acc[p * self.chunk + j], scale, bias, spec.activation, out_params)
            store = tirx.BufferStore(buffers["out"], value, [b, oh, ow0 + p, c])
            stores.append(tirx.For(j, 0, self.chunk, ForKind.VECTORIZED, store))
        return stores

    def register_tile(self, b, oh, ow0, cols: int) -> tirx.Stmt:
        """Every channel vector of ``cols`` pixels from column ``ow0``: zero, reduce, write back."""
        lanes = self.chunk
        vector = tirx.Var("channel_vector", "int32")
        c0 = vector * lanes
        acc = tirx.decl_buffer((cols * lanes,), ACC, "acc", scope=ACCUMULATOR_SCOPE)
        zero = tirx.Broadcast(tirx.const(0, ACC), lanes)
        init = [tirx.BufferStore(acc, zero, [tirx.Ramp(p * lanes, 1, lanes)]) for p in range(cols)]
        reduction = border_split(
            any(self.spec.padding),
            self._tile_is_interior(oh, ow0, cols),
            lambda guarded: self._reduction(b, oh, ow0, cols, c0, acc, guarded),
        )
        body = tirx.SeqStmt([tirx.AllocBuffer(acc), *init, reduction, *self._write_back(b, oh, ow0, cols, c0, acc)])
        return tirx.For(vector, 0, self.spec.channels // lanes, ForKind.SERIAL, body)

    def row(self, b, oh) -> tirx.Stmt:
        """Every tile of output row ``oh``: whole tiles in a loop, then the narrower last one."""
        cols, width = self.cols, self.spec.out_width
        whole, rest = divmod(width, cols)
        parts = []
        if whole == 1:
            parts.append(self.register_tile(b, oh, tirx.const(0, "int32"), cols))
        elif whole > 1:
            column_tile = tirx.Var("column_tile", "int32")
            parts.append(
                tirx.For(column_tile, 0, whole, ForKind.SERIAL, self.register_tile(b, oh, column_tile * cols, cols))
            )
        if rest:
            parts.append(self.register_tile(b, oh, tirx.const(whole * cols, "int32"), rest))
        return parts[0] if len(parts) == 1 else tirx.SeqStmt(parts)

    def body(self) -> tirx.Stmt:
        task = tirx.Var("task", "int32")
        height = self.spec.out_height
        return tirx.For(task, 0, self.spec.batch * height, ForKind.PARALLEL, self.row(task // height, task % height))


def depthwise_int8_primfunc(
    spec: DepthwiseInt8Spec, isa_or_target: Int8Path | Target, cols: int | None = None
) -> tirx.PrimFunc:
    """The kernel as a PrimFunc with buffer arguments ``spec.argument_shapes()`` (output last),
    vectorised over the int32 lanes of ``isa_or_target``'s :class:`Int8Path` (or a TVM target's
    :func:`int8_path`); ``cols``: pixels per register tile (None: :func:`depthwise_int8_tile_cols`).
    Raises :class:`KernelSpecError` for a spec that is not a :class:`DepthwiseInt8Spec` or a
    ``cols`` outside 1..out_width."""
    if not isinstance(spec, DepthwiseInt8Spec):
        raise KernelSpecError(f"spec must be a DepthwiseInt8Spec, got {spec!r}")
    path = resolve_path(isa_or_target)
    cols = depthwise_int8_tile_cols(spec, path) if cols is None else cols
    if isinstance(cols, bool) or not isinstance(cols, int) or not 1 <= cols <= spec.out_width:
        raise KernelSpecError(f"cols must be an integer in 1..out_width={spec.out_width}, got {cols!r}")
    builder = _Builder(spec, path, cols)
    func = tirx.PrimFunc(list(builder.buffers.values()), builder.body())
    return func.with_attr("tirx.noalias", True)
