"""The int8 1xN block-sparse conv2d (NHWC) as a hand-built TIR loop nest, VNNI where the target has it.

What it computes is :mod:`int8_spec`'s formula. How (the fp32 kernel's schedule, written out):

- parallel over fused (batch, block-row, row tile) -- or, for layers whose input dwarfs their
  weights, over (batch, row tile) with every block-row per task (``ConvTile.parallel``, chosen
  by the fp32 tiling's :func:`preferred_parallel`: the byte ratio is the same at 1 byte a value);
- a row tile is ``rows`` output rows (the last one shorter when they do not divide the height),
  cut into register tiles of ``rows x cols`` pixels x N lanes (the last tile of a row is
  narrower when ``cols`` does not divide the width: no padded work, no guard on the store).
  More than one row only where a whole row holds fewer pixels than the registers
  (:func:`int8_heuristic_tile`): ResNet-50's 7x7 layers at N=16 (Ice Lake server, 2 threads,
  interleaved medians, noisy VM): 3x3 512->512 1 x 7 tiles 149 us, 2 x 7 128 us; 1x1 2048->512
  113 / 101 us; 1x1 512->2048 124 / 106 us. Where a row already fills the registers, 2-row tiles
  were slower (3x3 at 14, 28 and 56 px: 1 x 14 1.1-1.3x faster than 2 x 7);
- the partial sums stay in vector registers for the whole reduction (kept group g, kernel row s,
  kernel column t, all unrolled but g; and but s for kernels larger than 3x3, such as a 7x7
  image stem: :data:`UNROLLED_TAPS`);
- one reduction step loads the N lanes' weights once (N/L int32xL vectors, each lane's word the
  4 int8 weights of one output channel) and, per pixel, one 32-bit word of 4 uint8 activations
  (the group's 4 channels are consecutive in NHWC), broadcast to every lane: on VNNI one
  ``vpdpbusd`` per pixel and vector (see :mod:`int8_dot` for the paths without it);
- the kept group's channel is read from ``group_starts`` once per step (a scalar load that
  LLVM keeps out of the vector code: the indirect index costs one address computation);
- padding reads the input zero point: a tile whose windows all lie inside the input runs
  unguarded code; only border tiles test each pixel's word (a scalar select, not a branch);
- the epilogue (scale, bias, residual, activation, requantisation) runs on the tile's registers
  before its one write-back, vectorised over the lanes;
- layers of outputs up to 28x28 prefetch the next block-row's weight words at each step, as the
  fp32 kernel does (``tir_passes.weight_prefetch``): in ResNet-50 at 66/128 (G=4, Zen 4, in the
  model) the int8 layer3/4 convs ran 11-27 us faster each (6.89-6.95 -> 6.42-6.53 ms), the bf16
  ones (this nest too) 23-68 us (per-layer sum 0.73 ms).

Why the 1x1 layers run at about half the 3x3 layers' rate (in ResNet-50: 180-330 against 400-540
GMAC/s): a 1x1 step needs one broadcast load per ``vpdpbusd`` (N=16: one zmm per pixel), and an
Ice Lake server core issues one 512-bit load per cycle but two ``vpdpbusd``
(``benchmarks/load_ports.py``: 5.6 ``vpdpbusd``/ns alone, 2.7/ns with a broadcast before each);
a 3x3 step shares each broadcast among up to 3 taps. Neither tile shape nor ymm halves change
that (measured: 2-row tiles, 28 ymm accumulators); N=32 halves the broadcasts (1x1 512->512 at
28 px: 241 -> 302-310 GMAC/s), as would an activation layout whose vectors hold 16 pixels of
one channel group (weights broadcast, several output channels per load). Where block-rows keep
whole runs of 16 channels (``input_group: 16`` masks), long 1x1 reductions run on
:mod:`grouped_pointwise_int8` instead (a 128-bit load feeds 4 ``vpdpbusd``).

TVM 0.27's ``tensorize`` with its shipped VNNI intrinsic crashed (segfault inside
``s_tir.Tensorize``, even for a bare 16x4 dot) and that intrinsic no longer matches LLVM 22's
``vpdpbusd`` signature, so the loop nest is built as TIR directly and emits the LLVM intrinsic
itself.

Measured (Intel Xeon Ice Lake server, AVX-512 + VNNI, TVM_NUM_THREADS=2, best of 20
time_evaluator repeats of >= 20 ms; batch 1, ResNet-50 layers at 50% keep, N=16, Kg = C_in/8,
uint8 out with ReLU; heuristic tiles on both sides; the machine's load average was 3.5-4.7 on its
2 cores while other work ran, so absolute rates are low and noisy, compare within a row):

| layer | int8 VNNI | int8 pmaddwd (skylake code) | fp32 kernel | int8 vs fp32 | int8 dense (Kg = C_in/4) |
|---|---|---|---|---|---|
| 1x1 256->64 @56 | 0.210 ms, 245 GOP/s | 0.704 ms, 73 | 0.624 ms, 82 | 2.97x | 0.386 ms, 266 |
| 1x1 64->256 @56 | 0.416 ms, 124 | 1.017 ms, 51 | 0.638 ms, 80 | 1.54x | 0.514 ms, 200 |
| 3x3 64->64 @56 | 0.257 ms, 450 | 1.999 ms, 58 | 0.737 ms, 157 | 2.87x | 0.571 ms, 405 |
| 3x3 128->128 @28 | 0.336 ms, 344 | 2.179 ms, 53 | 0.652 ms, 177 | 1.94x | 0.369 ms, 627 |
| 1x1 1024->256 @14 | 0.151 ms, 340 | 0.599 ms, 86 | 0.640 ms, 80 | 4.24x | 0.308 ms, 333 |
| 3x3 256->256 @14 | 0.184 ms, 627 | 2.107 ms, 55 | 0.639 ms, 181 | 3.47x | 0.409 ms, 565 |
| 3x3 512->512 @7 | 0.132 ms, 874 | 0.677 ms, 171 | 0.419 ms, 276 | 3.17x | 0.542 ms, 427 |
| 1x1 512->2048 @7 | 0.188 ms, 273 | 0.722 ms, 71 | 0.781 ms, 66 | 4.15x | 0.338 ms, 304 |

The 1x1 layers with few input channels (64->256: 8 kept groups a block-row) have too short a
reduction to amortise the tile's epilogue. The pmaddwd column predates that path's packed int16
weight pairs, byte-shuffled activations and fenced sums (:mod:`int8_dot`): a whole ResNet-18 in
haswell code now runs at about its fp32 speed in int8 (0.96x in ``benchmarks/int8_paths.py``; it
was 0.46x), in skylake-avx512 code at 0.86-0.89x (``isa.Int8Path.faster_than_fp32``): neither is
faster than fp32, which the compile report says.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from tvm import tirx
from tvm.target import Target
from tvm.tirx import ForKind

from subp_fx.codegen import activations
from subp_fx.codegen.errors import KernelSpecError
from subp_fx.codegen.kernels.block_sparse_conv import weight_prefetch_annotations
from subp_fx.codegen.kernels.int8_dot import WORD, accumulate, pack_weight_pairs, prepare_weights, weights_in_pairs
from subp_fx.codegen.kernels.int8_spec import GROUP, Int8ConvSpec
from subp_fx.codegen.kernels.isa import Int8Path, int8_path
from subp_fx.codegen.kernels.loops import ACCUMULATOR_SCOPE, border_split, guarded_bounds
from subp_fx.codegen.kernels.modes import PADDING_INLINE, PARALLEL_PIXELS
from subp_fx.codegen.kernels.quantize import requantized_uint8
from subp_fx.codegen.kernels.spec import ConvTile
from subp_fx.codegen.kernels.tiling import preferred_parallel

FLOAT = "float32"
# The type an activation word is loaded and bound as (see WordConvNest._kernel_row).
BOUND_WORD = "uint32"
# Kernels of up to this many taps (3x3) are unrolled over every tap; larger ones (the 7x7 image
# stem) keep kernel row s a serial loop and unroll its columns and pixels. The ResNet stem 7x7/2
# 4->64 at 224 (N=32, 7-pixel tiles; Ice Lake, 2 threads, under load): unrolled 530-550 us and
# 1.9 s to compile, the row loop 475-500 us and 0.6 s (fp32 stem 1590-1750 us in the same run).
UNROLLED_TAPS = 9


def resolve_path(isa_or_target: Int8Path | Target) -> Int8Path:
    """The :class:`Int8Path` given, or the one a TVM target has (:func:`int8_path`)."""
    if isinstance(isa_or_target, Int8Path):
        return isa_or_target
    if isinstance(isa_or_target, Target):
        return int8_path(isa_or_target)
    raise KernelSpecError(f"isa_or_target must be an Int8Path or a tvm.target.Target, got {isa_or_target!r}")


def vectors_per_pixel(spec: Int8ConvSpec, path: Int8Path) -> int:
    """int32xL accumulators that hold one pixel's N output channels."""
    return math.ceil(spec.block_size / path.lanes)


def int8_heuristic_tile(spec: Int8ConvSpec, path: Int8Path, vectors: int | None = None) -> ConvTile:
    """Tiles of as many pixels as ``path.max_accumulators`` allows, in the parallel mode that
    streams fewer bytes: one row of pixels evened out over the row (56 -> 4 x 14; 15 -> 8 + 7),
    or, where a whole row holds fewer, as many whole rows as fit, evened out over the height
    (7x7 at N=16: 2 rows x 7, the last tile 1 row). ``vectors``: accumulators a pixel takes
    (default :func:`vectors_per_pixel`)."""
    vectors = vectors_per_pixel(spec, path) if vectors is None else vectors
    cap = max(1, path.max_accumulators // vectors)
    tiles = math.ceil(spec.out_width / cap)
    cols = math.ceil(spec.out_width / tiles)
    rows = max(1, min(spec.out_height, cap // cols))
    rows = math.ceil(spec.out_height / math.ceil(spec.out_height / rows))
    return ConvTile(rows, cols, PADDING_INLINE, preferred_parallel(spec.float_equivalent()))


def _check_tile(spec: Int8ConvSpec, tile: ConvTile, path: Int8Path) -> None:
    if not isinstance(tile, ConvTile):
        raise KernelSpecError(f"tile must be a ConvTile, got {tile!r}")
    if tile.padding != PADDING_INLINE:
        heuristic = int8_heuristic_tile(spec, path)
        raise KernelSpecError(
            f"the int8 kernel takes tiles with inline padding, got {tile!r}; "
            f"e.g. ConvTile({heuristic.rows}, {heuristic.cols})"
        )
    if spec.block_size % path.lanes:
        raise KernelSpecError(f"N={spec.block_size} is not a multiple of the {path.name} path's {path.lanes} lanes")


def argument_shapes(spec: Int8ConvSpec, path: Int8Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """The kernel's buffer arguments on ``path``: :meth:`Int8ConvSpec.argument_shapes`, but where
    the path takes its weights in int16 pairs (:func:`int8_dot.weights_in_pairs`), values int16
    (R, Kg, kh, kw, 2, N, 2) as :func:`kernel_values` packs them."""
    shapes = spec.argument_shapes()
    if weights_in_pairs(path):
        shapes["values"] = ((*spec.values_shape[:-2], 2, spec.block_size, 2), "int16")
    return shapes


def kernel_values(values: np.ndarray, path: Int8Path) -> np.ndarray:
    """int8 values (R, Kg, kh, kw, N, 4) as the kernel on ``path`` reads them (:func:`argument_shapes`)."""
    return pack_weight_pairs(values) if weights_in_pairs(path) else values


def epilogue_value(spec: Int8ConvSpec, buffers: dict, acc_value, b, oh, ow, co):
    """What the kernel stores for output channel ``co`` of pixel (b, oh, ow) from its int32 sum
    ``acc_value``: :mod:`int8_spec`'s epilogue (scale, bias, residual, activation, requantisation)
    on the argument ``buffers`` (name -> buffer, :meth:`Int8ConvSpec.argument_shapes`)."""
    value = tirx.Cast(FLOAT, acc_value) * buffers["scale"][co] + buffers["bias"][co]
    if spec.residual == "float32":
        value = value + buffers["residual"][b, oh, ow, co]
    elif spec.residual == "uint8":
        params = buffers["residual_params"]
        term = (tirx.Cast(FLOAT, buffers["residual"][b, oh, ow, co]) - params[1]) * params[0]
        # The dequantised residual is rounded to float32 before the add, as the fake-quant
        # reference adds it (quantize.reference): the fence keeps LLVM from contracting the
        # product and the add into one FMA, which rounds once and flipped a code now and
        # then (torchvision ResNeXt-50 / ResNet-50: 3 of 6 inputs off by up to 1.2% of the
        # max logit; exact with the fence). It costs a vaddps: vmulps + vaddps for one FMA.
        value = value + tirx.call_llvm_pure_intrin(FLOAT, "llvm.arithmetic.fence", term)
    if spec.out_dtype == "uint8":
        return requantized_uint8(value, buffers["out_params"], spec.activation)
    return activations.expression(spec.activation)(value)


class WordConvNest:
    """Emits the int8 kernel's loop nest for one (spec, tile, path); one instance per PrimFunc.

    The loop nest reads activations and weights as 32-bit words of ``channels_per_word``
    channels and accumulates in ``acc_dtype`` lanes; the word-level arithmetic is in the hooks
    (``_weight_forms``, ``_word_operand``, ``_accumulate``, ``_epilogue``), which the bf16 kernel
    (:mod:`block_sparse_conv_bf16`) overrides with the same nest.
    """

    channels_per_word = GROUP
    word_dtype = BOUND_WORD  # how an activation word is loaded and bound (see _kernel_row)
    acc_dtype = WORD
    starts_buffer = "group_starts"  # the argument holding each block-row's kept words' first channels

    def __init__(self, spec, tile: ConvTile, path) -> None:
        self.spec, self.tile, self.path = spec, tile, path
        self.vectors = self._vectors_per_pixel()  # accumulators of one pixel
        self.buffers = {
            name: tirx.decl_buffer(shape, dtype, name) for name, (shape, dtype) in self._argument_shapes().items()
        }
        data, values = self.buffers["data"], self.buffers["values"]
        # The same memory read as 32-bit words: the channels of one word of a pixel (uint32, see
        # _kernel_row) / the weights of one lane.
        words = spec.in_channels // self.channels_per_word
        self.data_words = tirx.decl_buffer((*spec.data_shape[:3], words), self.word_dtype, "data_words", data=data.data)
        self.value_words = tirx.decl_buffer(values.shape[:-1], WORD, "value_words", data=values.data)
        self.zero_word = self._zero_word()  # what padding reads

    # --- the hooks (int8 here) -----------------------------------------------------------------
    def _argument_shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return argument_shapes(self.spec, self.path)

    def _vectors_per_pixel(self) -> int:
        return vectors_per_pixel(self.spec, self.path)

    def _kept_words(self) -> int:
        """Words (kept groups) each block-row reduces over."""
        return self.spec.kept_groups

    def _zero_word(self):
        return tirx.const(self.spec.input_zero_point * 0x01010101, BOUND_WORD)

    def _weight_forms(self, r, g, s, t, v: int) -> list:
        """The forms of weight vector ``v`` of step (g, s, t) that :meth:`_accumulate` takes."""
        lanes = self.path.lanes
        lane_range = tirx.Ramp(v * lanes, 1, lanes)
        if weights_in_pairs(self.path):  # int16 pairs in memory: the forms pmaddwd takes, as loaded
            pair_type = f"int16x{2 * lanes}"
            return [tirx.reinterpret(pair_type, self.value_words[r, g, s, t, i, lane_range]) for i in (0, 1)]
        return prepare_weights(self.path, self.value_words[r, g, s, t, lane_range])

    def _accumulate(self, acc_vector, word, forms: list):
        return accumulate(self.path, acc_vector, word, forms)

    def _epilogue(self, acc_value, b, oh, ow, co):
        return epilogue_value(self.spec, self.buffers, acc_value, b, oh, ow, co)

    # --- the reduction -------------------------------------------------------------------------
    def _inside(self, h, w):
        spec = self.spec
        (kh, kw), (sh, sw), (ph, pw) = spec.kernel_size, spec.stride, spec.padding
        last = ((spec.out_height - 1) * sh + kh - 1 - ph, (spec.out_width - 1) * sw + kw - 1 - pw)
        return guarded_bounds(h, w, spec.height, spec.width, (ph, pw), last)

    def _tile_is_interior(self, oh0, ow0, rows: int, cols: int):
        spec = self.spec
        (kh, kw), (sh, sw), (ph, pw) = spec.kernel_size, spec.stride, spec.padding
        first_h, first_w = oh0 * sh - ph, ow0 * sw - pw
        return tirx.all(
            first_h >= 0,
            first_h + (rows - 1) * sh + kh - 1 < spec.height,
            first_w >= 0,
            first_w + (cols - 1) * sw + kw - 1 < spec.width,
        )

    def _reduction(self, b, r, oh0, ow0, rows: int, cols: int, acc, guarded: bool) -> tirx.Stmt:
        """The tile's sums over kept group g (a loop) and the kernel taps: every tap unrolled
        for kernels of up to :data:`UNROLLED_TAPS` taps, else kernel row s a serial loop."""
        kh, kw = self.spec.kernel_size
        g = tirx.Var("g", "int32")
        word_index = tirx.Var("group_word", "int32")
        first_channel = self.buffers[self.starts_buffer][r, g]
        steps: list[tirx.Stmt] = [tirx.Bind(word_index, first_channel // self.channels_per_word)]
        if kh * kw <= UNROLLED_TAPS:
            for s in range(kh):
                steps += self._kernel_row(b, r, g, word_index, s, oh0, ow0, rows, cols, acc, guarded)
        else:
            s = tirx.Var("s", "int32")
            row = self._kernel_row(b, r, g, word_index, s, oh0, ow0, rows, cols, acc, guarded)
            steps.append(tirx.For(s, 0, kh, ForKind.SERIAL, tirx.SeqStmt(row)))
        words = self.value_words
        ahead = weight_prefetch_annotations(self.spec, words.name, math.prod(words.shape[1:]))
        return tirx.For(g, 0, self._kept_words(), ForKind.SERIAL, tirx.SeqStmt(steps), None, ahead)

    def _kernel_row(
        self, b, r, g, word_index, s, oh0, ow0, rows: int, cols: int, acc, guarded: bool
    ) -> list[tirx.Stmt]:
        """The steps of kernel row ``s`` (an int or a loop variable), its columns t and the
        tile's pixels (rows x cols) unrolled."""
        spec, lanes = self.spec, self.path.lanes
        kw, (sh, sw), (ph, pw) = spec.kernel_size[1], spec.stride, spec.padding
        steps: list[tirx.Stmt] = []
        for t in range(kw):
            prepared = []
            for v in range(self.vectors):
                forms = []
                for index, form in enumerate(self._weight_forms(r, g, s, t, v)):
                    var = tirx.Var(f"w{s}_{t}_{v}_{index}", str(form.ty))
                    steps.append(tirx.Bind(var, form))
                    forms.append(var)
                prepared.append(forms)
            for q, p in itertools.product(range(rows), range(cols)):
                h = (oh0 + q) * sh + s - ph
                w = (ow0 + p) * sw + t - pw
                # The word is bound as a uint32, not an int32: TVM's CompactBufferAllocation keeps
                # every int32 Bind of the function as an index variable and, at each access to
                # the accumulator buffer, evaluates the access region over all of them (quadratic
                # in taps x pixels): a 3x3 N=16 kernel took 15-18 s to compile, the 7x7 ResNet
                # stem 395 s; bound as uint32, 0.5 s and 1.9 s (0.6 s with its row loop), with
                # the same instructions on every path (VNNI, both pmaddwd, int32).
                word = self.data_words[b, h, w, word_index]
                condition = self._inside(h, w) if guarded else None
                if condition is not None:
                    word = tirx.if_then_else(condition, word, self.zero_word)
                word_var = tirx.Var(f"x{s}_{t}_{q}_{p}", self.word_dtype)
                steps.append(tirx.Bind(word_var, word))
                word = self._word_operand(word_var)
                for v in range(self.vectors):
                    lane_range = tirx.Ramp(((q * cols + p) * self.vectors + v) * lanes, 1, lanes)
                    value = self._accumulate(acc[lane_range], word, prepared[v])
                    steps.append(tirx.BufferStore(acc, value, [lane_range]))
        return steps

    def _word_operand(self, word):
        """The int32 the dot product takes for a bound uint32 ``word``: the same bits. Where a
        padded tap's word is known statically, TVM substitutes the zero-point constant for
        ``word``; it refuses to build the cast of a constant of 2^31 and above, and LLVM
        codegen the reinterpret of a constant 0, so zero points below 128 take the cast and
        the others the reinterpret (both are no instruction)."""
        if self.spec.input_zero_point < 128:
            return tirx.Cast(WORD, word)
        return tirx.reinterpret(WORD, word)

    # --- the epilogue --------------------------------------------------------------------------
    def _write_back(self, b, r, oh0, ow0, rows: int, cols: int, acc) -> list[tirx.Stmt]:
        spec, lanes = self.spec, self.path.lanes
        stores = []
        for q, p, v in itertools.product(range(rows), range(cols), range(self.vectors)):
            j = tirx.Var("j", "int32")
            co = r * spec.block_size + v * lanes + j
            oh, ow = oh0 + q, ow0 + p
            acc_value = acc[((q * cols + p) * self.vectors + v) * lanes + j]
            value = self._epilogue(acc_value, b, oh, ow, co)
            store = tirx.BufferStore(self.buffers["out"], value, [b, oh, ow, co])
            stores.append(tirx.For(j, 0, lanes, ForKind.VECTORIZED, store))
        return stores

    # --- the nest ------------------------------------------------------------------------------
    def register_tile(self, b, r, oh0, ow0, rows: int, cols: int) -> tirx.Stmt:
        """One register tile of ``rows x cols`` pixels from (``oh0``, ``ow0``): zero, reduce,
        write back."""
        lanes = self.path.lanes
        count = rows * cols * self.vectors
        acc = tirx.decl_buffer((count * lanes,), self.acc_dtype, "acc", scope=ACCUMULATOR_SCOPE)
        zero = tirx.Broadcast(tirx.const(0, self.acc_dtype), lanes)
        init = [tirx.BufferStore(acc, zero, [tirx.Ramp(index * lanes, 1, lanes)]) for index in range(count)]
        reduction = border_split(
            any(self.spec.padding),
            self._tile_is_interior(oh0, ow0, rows, cols),
            lambda guarded: self._reduction(b, r, oh0, ow0, rows, cols, acc, guarded),
        )
        write_back = self._write_back(b, r, oh0, ow0, rows, cols, acc)
        return tirx.SeqStmt([tirx.AllocBuffer(acc), *init, reduction, *write_back])

    def tile_row(self, b, r, oh0, rows: int) -> tirx.Stmt:
        """Every tile of the ``rows`` output rows from ``oh0`` of block-row ``r``: whole tiles in
        a loop, then the narrower last one."""
        cols, width = self.tile.cols, self.spec.out_width
        whole, rest = divmod(width, cols)
        parts = []
        if whole == 1:
            parts.append(self.register_tile(b, r, oh0, tirx.const(0, "int32"), rows, cols))
        elif whole > 1:
            column_tile = tirx.Var("column_tile", "int32")
            tile = self.register_tile(b, r, oh0, column_tile * cols, rows, cols)
            parts.append(tirx.For(column_tile, 0, whole, ForKind.SERIAL, tile))
        if rest:
            parts.append(self.register_tile(b, r, oh0, tirx.const(whole * cols, "int32"), rows, rest))
        return parts[0] if len(parts) == 1 else tirx.SeqStmt(parts)

    def row_tile(self, b, r, index) -> tirx.Stmt:
        """Row tile ``index`` (``tile.rows`` output rows; the last one shorter when they do not
        divide the height) of block-row ``r``."""
        rows = self.tile.rows
        whole, rest = divmod(self.spec.out_height, rows)
        if not rest:
            return self.tile_row(b, r, index * rows, rows)
        if not whole:
            return self.tile_row(b, r, index * rows, rest)
        return tirx.IfThenElse(
            index < whole, self.tile_row(b, r, index * rows, rows), self.tile_row(b, r, index * rows, rest)
        )

    def body(self) -> tirx.Stmt:
        spec = self.spec
        task = tirx.Var("task", "int32")
        height, rows = math.ceil(spec.out_height / self.tile.rows), spec.block_rows
        if self.tile.parallel == PARALLEL_PIXELS:
            r = tirx.Var("block_row", "int32")
            inner = tirx.For(r, 0, rows, ForKind.SERIAL, self.row_tile(task // height, r, task % height))
            tasks = spec.batch * height
        else:
            inner = self.row_tile(task // (rows * height), task // height % rows, task % height)
            tasks = spec.batch * rows * height
        return tirx.SeqStmt(
            [
                tirx.DeclBuffer(self.data_words, data=self.buffers["data"].data),
                tirx.DeclBuffer(self.value_words, data=self.buffers["values"].data),
                tirx.For(task, 0, tasks, ForKind.PARALLEL, inner),
            ]
        )


def block_sparse_conv2d_int8_primfunc(
    spec: Int8ConvSpec, tile: ConvTile | None, isa_or_target: Int8Path | Target
) -> tirx.PrimFunc:
    """The int8 kernel as a PrimFunc with buffer arguments ``spec.argument_names()`` (output last),
    for the dot-product path of ``isa_or_target`` (an :class:`Int8Path`, or a TVM target whose
    :func:`int8_path` is taken). ``tile``: a one-row :class:`ConvTile` with inline padding, or
    None for :func:`int8_heuristic_tile`. The path's name is the function attribute
    ``subp_fx.int8_path``. Raises :class:`KernelSpecError` for another tile or spec."""
    if not isinstance(spec, Int8ConvSpec):
        raise KernelSpecError(f"spec must be an Int8ConvSpec, got {spec!r}")
    path = resolve_path(isa_or_target)
    tile = int8_heuristic_tile(spec, path) if tile is None else tile
    _check_tile(spec, tile, path)
    builder = WordConvNest(spec, tile, path)
    func = tirx.PrimFunc(list(builder.buffers.values()), builder.body())
    return func.with_attr("tirx.noalias", True).with_attr("subp_fx.int8_path", path.name)
