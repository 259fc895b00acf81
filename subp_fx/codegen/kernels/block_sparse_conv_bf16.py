"""The bf16 1xN block-sparse conv2d (NHWC) on AVX-512 BF16: the int8 kernel's loop nest, 2 channels a word.

What it computes is :mod:`bf16_spec`'s formula. How: exactly the schedule of
:mod:`block_sparse_conv_int8` (same builder: parallel tasks over block-rows and row tiles, register
tiles of up to 14 zmm of float32 partial sums, every tap unrolled for kernels up to 3x3, border
tiles guarded, the epilogue on the registers), with

- one 32-bit word of an NHWC pixel holding 2 bf16 channels (a kept pair) instead of 4 uint8;
- each lane's weight word the pair's 2 bf16 weights of one output channel;
- one ``vdpbf16ps`` per pixel and weight vector (:mod:`bf16_dot`): 32 multiply-adds where an fp32
  FMA does 16, and half the bytes of every activation and weight read;
- float32 sums: the epilogue adds the bias (batch norm is folded into the weights before they
  are rounded to bf16), the residual (float32, or bf16 widened) and the activation, and stores
  float32 or bf16 (``vcvtneps2bf16``), on whole vectors (:func:`epilogue_value`);
- ``pairs_per_word=2`` (1x1 convs of block-rows keeping aligned groups of 4 channels): a 64-bit
  word of 2 pairs broadcast once for N/8 ``vdpbf16ps``, each lane summing one of the pairs
  (:mod:`bf16_spec`).

Measured alone (AMD EPYC Zen 4, 2 threads, ``time_evaluator`` best of 7; N=16, ReLU): 3x3 128->128
at 28 px, 32 of 64 pairs kept, 255-264 us, 219-226 GMAC/s, the probe's peak (``vdpbf16ps`` from
registers: 231); 1x1 convs, whose 32-bit words need one broadcast load per ``vdpbf16ps``, ran at
153-166 GMAC/s with float32 stores (N=32, half the broadcasts: 203-224), and with 64-bit words at
163-223: 256->512 at 28 px 318 -> 246 us, 1024->256 at 14 px 155 -> 115 us, 64->256 at 56 px
(8 groups a row, where the epilogue weighs as much as the sums) 168 -> 157 us.

Only for targets with avx512_bf16 (:func:`isa.bf16_path`); nothing else is built in bf16.
"""

from __future__ import annotations

import itertools

import numpy as np
from tvm import tirx
from tvm.target import Target
from tvm.tirx import ForKind

from subp_fx.codegen import activations
from subp_fx.codegen.errors import KernelSpecError, TargetError
from subp_fx.codegen.kernels import bf16_dot
from subp_fx.codegen.kernels.bf16_spec import PAIR, Bf16ConvSpec
from subp_fx.codegen.kernels.block_sparse_conv_int8 import WordConvNest, int8_heuristic_tile
from subp_fx.codegen.kernels.isa import Bf16Path, bf16_path
from subp_fx.codegen.kernels.loops import ACCUMULATOR_SCOPE
from subp_fx.codegen.kernels.modes import PADDING_INLINE
from subp_fx.codegen.kernels.spec import ConvTile

FLOAT = "float32"
WIDE_WORD = "uint64"  # an activation word of 2 pairs (pairs_per_word=2)


def resolve_bf16_path(isa_or_target: Bf16Path | Target) -> Bf16Path:
    """The :class:`Bf16Path` given, or the target's; ``TargetError`` for a target without avx512_bf16."""
    if isinstance(isa_or_target, Bf16Path):
        return isa_or_target
    if isinstance(isa_or_target, Target):
        path = bf16_path(isa_or_target)
        if path is None:
            cpu = isa_or_target.attrs.get("mcpu", "") or "the default CPU"
            raise TargetError(f"the bf16 conv kernel needs avx512_bf16 (vdpbf16ps); the target ({cpu}) has none")
        return path
    raise KernelSpecError(f"isa_or_target must be a Bf16Path or a tvm.target.Target, got {isa_or_target!r}")


def bf16_vectors_per_pixel(spec: Bf16ConvSpec, path: Bf16Path) -> int:
    """Accumulators of one pixel: N/16, or N/8 at ``pairs_per_word=2`` (8 channels a vector)."""
    return spec.block_size * spec.pairs_per_word // path.lanes


def bf16_heuristic_tile(spec: Bf16ConvSpec, path: Bf16Path) -> ConvTile:
    """The int8 kernel's heuristic tile (:func:`int8_heuristic_tile`): the same register budget
    of 16-lane accumulators, the same parallel-mode choice on the fp32 spec."""
    return int8_heuristic_tile(spec, path, bf16_vectors_per_pixel(spec, path))


def epilogue_value(spec: Bf16ConvSpec, buffers: dict, sums, b, oh, ow, channels):
    """What the kernel stores for output ``channels`` of pixel (b, oh, ow) from their float32
    ``sums``: bias, residual (float32, or bf16 widened), activation, then float32 or bf16 bits.
    ``channels`` is a Ramp of 16 with ``sums`` a float32x16 vector (the write-back on whole
    vectors: the bf16 store is one ``vcvtneps2bf16``, :func:`bf16_dot.rounded_vector`, where the
    integer rounding LLVM made of a vectorised loop of scalars took 6 instructions; on the 1x1
    64->256 conv at 56 px, whose reduction is short, the epilogue was as long as the
    multiply-adds), or one channel (a lane of a vectorised loop), the store rounded in integer
    arithmetic (:func:`bf16_dot.rounded_bf16_bits`): for the activations that are not a clamp
    (:func:`vector_epilogue`), whose expressions bind scalar temporaries."""
    value = sums + buffers["bias"][channels]
    if spec.residual == "float32":
        value = value + buffers["residual"][b, oh, ow, channels]
    elif spec.residual == "bfloat16":
        value = value + bf16_dot.widened_bf16(buffers["residual"][b, oh, ow, channels])
    value = activations.expression(spec.activation)(value)
    if spec.out_dtype != "bfloat16":
        return value
    return bf16_dot.rounded_vector(value) if isinstance(channels, tirx.Ramp) else bf16_dot.rounded_bf16_bits(value)


def vector_epilogue(spec: Bf16ConvSpec) -> bool:
    """Whether the write-back runs on whole vectors (:func:`epilogue_value` of a Ramp): for the
    activations that are a clamp (none, ReLU, ReLU6)."""
    return activations.ACTIVATIONS[spec.activation].clamp is not None


class _Bf16Builder(WordConvNest):
    """The int8 builder's loop nest with :mod:`bf16_dot`'s step and a float32 epilogue; at
    ``pairs_per_word=2``, 64-bit words and lane-pair sums (:mod:`bf16_spec`)."""

    channels_per_word = PAIR
    acc_dtype = FLOAT
    starts_buffer = "pair_starts"

    def __init__(self, spec: Bf16ConvSpec, tile: ConvTile, path: Bf16Path) -> None:
        if spec.pairs_per_word == 2:
            self.channels_per_word, self.word_dtype = spec.word_channels, WIDE_WORD
        super().__init__(spec, tile, path)

    def _vectors_per_pixel(self) -> int:
        return bf16_vectors_per_pixel(self.spec, self.path)

    def _argument_shapes(self):
        return self.spec.argument_shapes()

    def _kept_words(self) -> int:
        return self.spec.kept_words

    def _zero_word(self):
        return tirx.const(0, self.word_dtype)  # bf16 zeros

    def _weight_forms(self, r, g, s, t, v: int) -> list:
        lanes = self.path.lanes
        if self.spec.pairs_per_word == 2:
            return [self.value_words[r, g, s, t, v, tirx.Ramp(0, 1, lanes)]]
        return [self.value_words[r, g, s, t, tirx.Ramp(v * lanes, 1, lanes)]]

    def _word_operand(self, word):
        # a cast, not a reinterpret: the same bits, and TVM's LLVM codegen refuses the reinterpret
        # of the constant 0 it substitutes for a padded tap's word (see the int8 builder)
        return tirx.Cast("int64" if self.word_dtype == WIDE_WORD else "int32", word)

    def _accumulate(self, acc_vector, word, forms: list):
        lanes = self.path.lanes
        if self.word_dtype == WIDE_WORD:  # the group's 2 pairs in every 64-bit half of the vector
            pairs = tirx.reinterpret(f"int32x{lanes}", tirx.Broadcast(word, lanes // 2))
        else:
            pairs = tirx.Broadcast(word, lanes)
        return bf16_dot.dot(acc_vector, pairs, forms[0])

    def _write_back(self, b, r, oh0, ow0, rows: int, cols: int, acc) -> list[tirx.Stmt]:
        """One vector store per 16 output channels of each pixel (:func:`epilogue_value`). At
        ``pairs_per_word=2``, lane 2c + h of accumulator 2u (2u + 1) holds pair h of output
        channel 16u + c (16u + 8 + c): the even and the odd lanes of the two, deinterleaved (one
        ``vpermt2ps`` each) and added, are the 16 channels in order."""
        spec, lanes = self.spec, self.path.lanes
        evens = [tirx.const(2 * lane, "int32") for lane in range(lanes)]
        odds = [tirx.const(2 * lane + 1, "int32") for lane in range(lanes)]
        stores: list[tirx.Stmt] = []
        for q, p, u in itertools.product(range(rows), range(cols), range(spec.block_size // lanes)):
            pixel = q * cols + p
            if spec.pairs_per_word == 2:
                first = (pixel * self.vectors + 2 * u) * lanes
                halves = [acc[tirx.Ramp(first, 1, lanes)], acc[tirx.Ramp(first + lanes, 1, lanes)]]
                sums = tirx.Shuffle(halves, evens) + tirx.Shuffle(halves, odds)
            else:
                sums = acc[tirx.Ramp((pixel * self.vectors + u) * lanes, 1, lanes)]
            first_channel = r * spec.block_size + u * lanes
            if vector_epilogue(spec):
                channels = tirx.Ramp(first_channel, 1, lanes)
                value = epilogue_value(spec, self.buffers, sums, b, oh0 + q, ow0 + p, channels)
                stores.append(tirx.BufferStore(self.buffers["out"], value, [b, oh0 + q, ow0 + p, channels]))
                continue
            # the sums through a 16-float buffer (kept in a register), then a vectorised loop of lanes
            staged = tirx.decl_buffer((lanes,), FLOAT, "sums", scope=ACCUMULATOR_SCOPE)
            j = tirx.Var("j", "int32")
            value = epilogue_value(spec, self.buffers, staged[j], b, oh0 + q, ow0 + p, first_channel + j)
            store = tirx.BufferStore(self.buffers["out"], value, [b, oh0 + q, ow0 + p, first_channel + j])
            stores += [
                tirx.AllocBuffer(staged),
                tirx.BufferStore(staged, sums, [tirx.Ramp(0, 1, lanes)]),
                tirx.For(j, 0, lanes, ForKind.VECTORIZED, store),
            ]
        return stores


def block_sparse_conv2d_bf16_primfunc(
    spec: Bf16ConvSpec, tile: ConvTile | None, isa_or_target: Bf16Path | Target
) -> tirx.PrimFunc:
    """The bf16 kernel as a PrimFunc with buffer arguments ``spec.argument_names()`` (output
    last). ``tile``: a :class:`ConvTile` with inline padding, or None for
    :func:`bf16_heuristic_tile`. Raises :class:`KernelSpecError` for another tile or spec,
    :class:`TargetError` for a target without avx512_bf16."""
    if not isinstance(spec, Bf16ConvSpec):
        raise KernelSpecError(f"spec must be a Bf16ConvSpec, got {spec!r}")
    path = resolve_bf16_path(isa_or_target)
    tile = bf16_heuristic_tile(spec, path) if tile is None else tile
    if not isinstance(tile, ConvTile) or tile.padding != PADDING_INLINE:
        raise KernelSpecError(f"the bf16 kernel takes a ConvTile with inline padding, got {tile!r}")
    builder = _Bf16Builder(spec, tile, path)
    params = [builder.buffers[name] for name in spec.argument_names()]
    func = tirx.PrimFunc(params, bf16_dot.importing_dot(builder.body()))
    return func.with_attr("tirx.noalias", True).with_attr("subp_fx.bf16_path", path.name)


def to_bf16_bits(array: np.ndarray) -> np.ndarray:
    """float32 ``array`` rounded to bf16 (nearest, ties to even), as its uint16 bits: torch's own
    conversion, so the eager reference rounds the same weights to the same values."""
    import torch

    bits = torch.from_numpy(np.ascontiguousarray(array, np.float32)).to(torch.bfloat16).view(torch.int16)
    return bits.numpy().view(np.uint16)


def from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    """The float32 values of bf16 ``bits`` (uint16)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)
