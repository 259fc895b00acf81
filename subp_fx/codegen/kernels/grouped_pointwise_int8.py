"""The int8 1x1 block-sparse conv for block-rows whose kept input channels come in aligned runs of 16.

What it computes is :mod:`int8_spec`'s formula for a 1x1 kernel without padding, N = 16, any
stride, with the same epilogue as the general int8 kernel (scale, bias, residual, activation,
requantisation: :func:`block_sparse_conv_int8.epilogue_value`). It applies where every
block-row's kept groups of 4 come in aligned runs of 4 groups (input channels ``16s .. 16s+15``):
SUBP's ``input_group: 16`` masks (any G that is a multiple of 16), N = 16. VNNI on 16 int32 lanes
only (:func:`fits`). Not for N = 32 rows, whose general kernel already shares each broadcast
between 2 ``vpdpbusd``: dense int8 1x1 convs (N = 32) split into rows of 16 on this kernel ran
0.72-1.27x their general kernel (ResNet-50's 1x1 shapes at 7-56 px, Ice Lake server, 2 threads),
no gain to take.

Why a kernel of its own: the general int8 kernel broadcasts one 32-bit word (a group's 4 uint8
activations) per ``vpdpbusd``, and an Ice Lake server core issues about one 512-bit broadcast load
a cycle against two ``vpdpbusd`` (``benchmarks/load_ports.py``: 5.6 ``vpdpbusd``/ns alone, 2.7/ns
with a broadcast before each), so its 1x1 convs ran at 29-58% of the int8 limit in ResNet-50
(``benchmarks/results/profile_resnet50-2.0g-n16_int8.md``) against 71-96% for its 3x3 convs,
which share each broadcast among taps. Here one 128-bit load brings 16 channels (4 groups) of a
pixel, broadcast to the four 128-bit lanes (``vbroadcasti32x4``), and feeds 4 ``vpdpbusd``:
accumulator q of a pixel holds, in lane ``4*o' + c``, the partial sum of output channel
``4*o' + q`` over the run's group c (the weights are packed so). The fp32 grouped kernel's scheme
(:mod:`grouped_pointwise`) with a group of 4 bytes in place of a float: a tile of
:data:`TILE_PIXELS` pixels keeps 24 accumulators and loads 4 weight vectors and 6 activation runs
per 24 dot products (0.42 loads a ``vpdpbusd``, against 1.07). After the reduction each pixel's 4
accumulators are summed across their group lanes (:func:`grouped_pointwise.sum_channel_lanes`)
into the 16 output channels in order, and the epilogue runs on them before the one store.

Pixels are flattened over (batch, output row, output column), tasks are fused (tile, block-row)
in one of two orders, as in the fp32 grouped kernel (:func:`parallel_mode`).

Measured in the model (Ice Lake server, 2 threads, batch 1, int8, ResNet-50 66/128 with
``input_group: 16`` masks; ``benchmarks/results/profile_resnet50-2.0g-n16_int8_g16.md`` beside the
G=4 profile): the 1x1 convs it takes ran at 53-84% of the int8 limit against 45-58% on the general
kernel (layer3's 1024->256 54 against 80 us); the whole model 5.88 ms against 6.24 ms with this
kernel off and 6.29 ms at G=4, interleaved in one process (``benchmarks/input_groups.py``; measured
with block-rows outer only above 512 KiB of weights, see :data:`WEIGHTS_KEPT_IN_L2`).
"""

from __future__ import annotations

import math

import numpy as np
from tvm import tirx
from tvm.tirx import ForKind

from subp_fx.codegen.errors import KernelSpecError
from subp_fx.codegen.kernels.block_sparse_conv import weight_prefetch_annotations
from subp_fx.codegen.kernels.block_sparse_conv_int8 import epilogue_value
from subp_fx.codegen.kernels.grouped_pointwise import (
    BLOCK_SIZE,
    TILE_PIXELS,
    aligned_runs,
    flat_pixel,
    pointwise_problems,
    sum_channel_lanes,
    tile_tasks,
)
from subp_fx.codegen.kernels.int8_dot import WORD
from subp_fx.codegen.kernels.int8_spec import GROUP, Int8ConvSpec
from subp_fx.codegen.kernels.isa import Int8Path
from subp_fx.codegen.kernels.loops import ACCUMULATOR_SCOPE
from subp_fx.codegen.kernels.modes import PARALLEL_BLOCK_ROWS, PARALLEL_MODES, PARALLEL_PIXELS

LANES = 16  # int32 lanes of a zmm register
RUN = 4  # groups of 4 input channels per 128-bit load: 16 channels
RUN_CHANNELS = RUN * GROUP


# Where the lowering takes this kernel over the general one: at least this many kept groups of 4
# a block-row, stride 1. Its epilogue costs more (the 4 accumulators' lane sums: 6 shuffles and 3
# adds a pixel, on the ports the dot products use), so the saved broadcasts pay only on a long
# reduction. Timed alone against the general kernel (Ice Lake server, 2 threads, best of 15, ResNet-50
# shapes, uint8 out, ReLU): Kg = 8 (64->256 at 56 px) 0.70x, Kg = 16 (128->512 at 28) 0.88x, Kg = 32
# 1.07-1.21x, Kg = 64-256 1.17-1.52x (1024->256 at 14: 62 against 95 us, 413 GMAC/s); stride 2 at
# Kg = 24-48 0.76-0.90x (256->128 at 56), 1.05x at Kg = 128 (1024->2048 at 14).
MIN_KEPT_GROUPS = 32


def fits(spec: Int8ConvSpec, path: Int8Path) -> bool:
    """Whether ``spec``'s shape suits this kernel on ``path``: VNNI on 16 lanes, a 1x1 kernel
    without padding, N = 16, kept groups a multiple of 4 (which ones: :func:`kept_runs`)."""
    return path.dot == "vpdpbusd" and path.lanes == LANES and not _problems(spec)


def preferred(spec: Int8ConvSpec, path: Int8Path) -> bool:
    """Whether the lowering takes this kernel for a layer of ``spec``'s shape on ``path`` when its
    block-rows keep whole runs (:func:`kept_runs`): it :func:`fits`, and the layer is one where it
    was measured faster than the general kernel (stride 1, at least :data:`MIN_KEPT_GROUPS` kept
    groups)."""
    return fits(spec, path) and spec.stride == (1, 1) and spec.kept_groups >= MIN_KEPT_GROUPS


def applies(spec: Int8ConvSpec, group_starts: np.ndarray, path: Int8Path) -> bool:
    """Whether the lowering runs ``spec`` with ``group_starts`` (R, Kg) on this kernel:
    :func:`preferred`, and every block-row keeps whole runs of 16 channels (:func:`kept_runs`)."""
    return preferred(spec, path) and kept_runs(group_starts) is not None


def kept_runs(group_starts: np.ndarray) -> np.ndarray | None:
    """The (R, Kg/4) first channels of the aligned runs of 16 input channels that ``group_starts``
    (R, Kg: first channels of the kept groups of 4, ascending) make up, or None where some
    block-row's groups are not whole aligned runs."""
    return aligned_runs(group_starts, RUN, GROUP)


def pack_values(values: np.ndarray) -> np.ndarray:
    """int8 kernel weights (R, Kg, 1, 1, 16, 4) in this kernel's layout (R, Kg/4, 4, 16, 4): for kept
    run s, vector q's lane ``4*o' + c`` holds the 4 weights of output ``4*o' + q`` on the run's group c."""
    rows, groups, kh, kw, block_size, group = values.shape
    if (kh, kw) != (1, 1) or block_size != BLOCK_SIZE or groups % RUN or group != GROUP:
        raise KernelSpecError(f"values of shape {values.shape} are not (R, Kg, 1, 1, 16, 4) with Kg a multiple of 4")
    # [r, s, c, o, i] with o = 4*o' + q  ->  [r, s, q, o', c, i]
    by_run = values.reshape(rows, groups // RUN, RUN, LANES // RUN, RUN, GROUP)  # r, s, c, o', q, i
    packed = by_run.transpose(0, 1, 4, 3, 2, 5).reshape(rows, groups // RUN, RUN, LANES, GROUP)
    return np.ascontiguousarray(packed)


def argument_shapes(spec: Int8ConvSpec) -> dict[str, tuple[tuple[int, ...], str]]:
    """Buffer name -> (shape, dtype) of the kernel's arguments, in order (output last): the
    general int8 kernel's, but for the packed values and the runs' first channels."""
    runs = spec.kept_groups // RUN
    shapes = spec.argument_shapes()
    shapes["values"] = ((spec.block_rows, runs, RUN, LANES, GROUP), "int8")
    shapes["group_starts"] = ((spec.block_rows, runs), "int32")
    return shapes


def _problems(spec: Int8ConvSpec) -> list[str]:
    """What ``spec`` lacks for this kernel, each as "needs ..." text; empty when it fits."""
    problems = pointwise_problems(spec)
    if spec.kept_groups % RUN:
        problems.append(f"kept groups a multiple of {RUN} (got Kg={spec.kept_groups})")
    return problems


def _check(spec: Int8ConvSpec, path: Int8Path) -> None:
    if not isinstance(spec, Int8ConvSpec):
        raise KernelSpecError(f"spec must be an Int8ConvSpec, got {spec!r}")
    problems = _problems(spec)
    if path.dot != "vpdpbusd" or path.lanes != LANES:
        problems.append(f"VNNI on {LANES} int32 lanes (got the {path.name} path)")
    if problems:
        raise KernelSpecError("the grouped int8 1x1 kernel needs " + " and ".join(problems))


class _Builder:
    """Emits the loop nest for one spec; one instance per PrimFunc."""

    def __init__(self, spec: Int8ConvSpec, path: Int8Path, parallel: str) -> None:
        self.spec, self.path, self.parallel = spec, path, parallel
        self.buffers = {
            name: tirx.decl_buffer(shape, dtype, name) for name, (shape, dtype) in argument_shapes(spec).items()
        }
        # The same memory read as 32-bit words: a group's 4 channels of a pixel / 4 weights of a lane.
        data, values = self.buffers["data"], self.buffers["values"]
        self.data_words = tirx.decl_buffer((*spec.data_shape[:3], spec.groups), WORD, "data_words", data=data.data)
        self.value_words = tirx.decl_buffer(values.shape[:-1], WORD, "value_words", data=values.data)

    def register_tile(self, first, r, pixels: int) -> tirx.Stmt:
        """Output pixels ``first .. first+pixels-1`` (flat) of block-row ``r``: zero, reduce, write back."""
        spec, buffers = self.spec, self.buffers
        sh, sw = spec.stride
        bytes_type = f"int8x{GROUP * LANES}"
        # One buffer of 4 accumulators a pixel, each under 1 KiB so that it stays on the stack, in
        # registers (see the fp32 grouped kernel: one 1.5 KiB buffer became a heap workspace).
        accs = [tirx.decl_buffer((RUN * LANES,), WORD, f"acc{p}", scope=ACCUMULATOR_SCOPE) for p in range(pixels)]

        def lanes_of(q):
            return tirx.Ramp(q * LANES, 1, LANES)

        zero = tirx.Broadcast(tirx.const(0, WORD), LANES)
        init = [tirx.BufferStore(acc, zero, [lanes_of(q)]) for acc in accs for q in range(RUN)]

        coordinates = [flat_pixel(spec, first + p) for p in range(pixels)]
        s = tirx.Var("s", "int32")
        start_word = tirx.Var("start_word", "int32")  # the run's first 32-bit word in a pixel
        steps: list[tirx.Stmt] = [tirx.Bind(start_word, buffers["group_starts"][r, s] // GROUP)]
        weights = []
        for q in range(RUN):
            weight = tirx.Var(f"w{q}", bytes_type)
            words = self.value_words[r, s, q, tirx.Ramp(0, 1, LANES)]
            steps.append(tirx.Bind(weight, tirx.reinterpret(bytes_type, words)))
            weights.append(weight)
        for p, (b, oh, ow) in enumerate(coordinates):
            run = self.data_words[b, oh * sh, ow * sw, tirx.Ramp(start_word, 1, RUN)]
            broadcast = tirx.Shuffle([run] * (LANES // RUN), [tirx.const(lane % RUN, "int32") for lane in range(LANES)])
            x = tirx.Var(f"x{p}", bytes_type)
            steps.append(tirx.Bind(x, tirx.reinterpret(bytes_type, broadcast)))
            for q in range(RUN):
                at = lanes_of(q)
                dot = tirx.call_llvm_pure_intrin(f"{WORD}x{LANES}", self.path.intrinsic, accs[p][at], x, weights[q])
                steps.append(tirx.BufferStore(accs[p], dot, [at]))
        words = self.value_words
        ahead = weight_prefetch_annotations(spec, words.name, math.prod(words.shape[1:]))
        reduction = tirx.For(s, 0, spec.kept_groups // RUN, ForKind.SERIAL, tirx.SeqStmt(steps), None, ahead)

        stores, sums = [], []
        for p, (b, oh, ow) in enumerate(coordinates):
            summed = tirx.decl_buffer((BLOCK_SIZE,), WORD, f"sum{p}", scope=ACCUMULATOR_SCOPE)
            sums.append(summed)
            total = sum_channel_lanes([accs[p][lanes_of(q)] for q in range(RUN)])
            stores.append(tirx.BufferStore(summed, total, [tirx.Ramp(0, 1, BLOCK_SIZE)]))
            j = tirx.Var("j", "int32")
            channel = r * BLOCK_SIZE + j
            value = epilogue_value(spec, buffers, summed[j], b, oh, ow, channel)
            store = tirx.BufferStore(buffers["out"], value, [b, oh, ow, channel])
            stores.append(tirx.For(j, 0, BLOCK_SIZE, ForKind.VECTORIZED, store))
        allocations = [tirx.AllocBuffer(buffer) for buffer in accs + sums]
        return tirx.SeqStmt([*allocations, *init, reduction, *stores])

    def body(self) -> tirx.Stmt:
        return tirx.SeqStmt(
            [
                tirx.DeclBuffer(self.data_words, data=self.buffers["data"].data),
                tirx.DeclBuffer(self.value_words, data=self.buffers["values"].data),
                tile_tasks(self.spec, self.parallel, self.register_tile),
            ]
        )


# Above this many bytes of weights, block-rows go outer ("block_rows"), as in the fp32 grouped
# kernel. Measured with cold weights (a fresh copy of the weights each call, as in a model run;
# Ice Lake server, 2 threads, medians, two runs): ResNet-50's 7x7 layers at G=16, 2048->512 (496 KiB)
# 61-75 against 74-86 us tiles outer, 512->2048 (512 KiB, uint8 residual) 73-100 against 97-123 us;
# 1024->256 at 14 px (124 KiB) 89-90 us either way; 512->128 at 28 px (32 KiB) tiles outer faster,
# 79 against 89 us. So the cut lies between 128 and 496 KiB. In the whole model (ResNet-50 at G=16: 5
# layer4 calls change order) the two cuts were within noise of each other (8.71 / 8.79 and 9.36 /
# 9.33 ms, interleaved, in a slow period of this VM).
WEIGHTS_KEPT_IN_L2 = 256 * 1024


def parallel_mode(spec: Int8ConvSpec) -> str:
    """The task order: tiles outer ("pixels") unless the weights exceed :data:`WEIGHTS_KEPT_IN_L2`;
    then block-rows outer ("block_rows")."""
    weight_bytes = spec.out_channels * spec.kept_channels
    return PARALLEL_BLOCK_ROWS if weight_bytes > WEIGHTS_KEPT_IN_L2 else PARALLEL_PIXELS


def grouped_pointwise_int8_primfunc(spec: Int8ConvSpec, path: Int8Path, parallel: str | None = None) -> tirx.PrimFunc:
    """The kernel as a PrimFunc with buffer arguments :func:`argument_shapes` (output last), tasks
    in ``parallel`` order (:data:`modes.PARALLEL_MODES`; default :func:`parallel_mode`).
    Raises :class:`KernelSpecError` for a spec or path it cannot run (see :func:`fits`)."""
    _check(spec, path)
    parallel = parallel_mode(spec) if parallel is None else parallel
    if parallel not in PARALLEL_MODES:
        raise KernelSpecError(f"parallel must be one of {PARALLEL_MODES}, got {parallel!r}")
    builder = _Builder(spec, path, parallel)
    func = tirx.PrimFunc(list(builder.buffers.values()), builder.body())
    return func.with_attr("tirx.noalias", True).with_attr("subp_fx.int8_path", path.name)


def describe(parallel: str) -> str:
    """The kernel table's tile text, beside the general int8 kernel's ``1x14px pixels``."""
    return f"{TILE_PIXELS}px grouped-{RUN_CHANNELS} {parallel}"


__all__ = [
    "MIN_KEPT_GROUPS",
    "RUN_CHANNELS",
    "applies",
    "argument_shapes",
    "describe",
    "fits",
    "grouped_pointwise_int8_primfunc",
    "kept_runs",
    "pack_values",
    "parallel_mode",
    "preferred",
]
