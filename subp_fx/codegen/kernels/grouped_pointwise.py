"""The fp32 1x1 block-sparse conv for block-rows whose kept input channels come in aligned groups of 4.

What it computes is the block-sparse conv's formula (:mod:`block_sparse_conv`) for a 1x1 kernel
without padding, N = 16, any stride: ``out = act(x[b, oh*sh, ow*sw, kept] @ values + bias + residual)``.
It applies where every block-row's kept channels are whole aligned groups ``4g .. 4g+3``: SUBP's
``input_group: 4`` masks and every dense layer (K = C_in, C_in a multiple of 4); block-rows of
N = 32 or more run as rows of 16 that keep the same channels (:func:`narrow_block_rows`).

Why a kernel of its own: the general kernel broadcasts one activation per FMA (one zmm of N=16
output channels a pixel), and an Ice Lake server core issues about one 512-bit broadcast load per
cycle against two FMAs (``benchmarks/load_ports.py``), so 1x1 convs ran at about half the FMA
rate. Here one 128-bit load, broadcast to the four 128-bit lanes (``vbroadcastf32x4``), brings a
group's 4 activations of one pixel, and it feeds 4 FMAs: accumulator q of a pixel holds, in lane
``4*o' + c``, the partial sum of output channel ``4*o' + q`` over the group's channel c (the weights
are packed so). A tile of :data:`TILE_PIXELS` pixels keeps 24 accumulators and loads 4 weight
vectors and 6 activation groups per 24 FMAs (0.42 loads an FMA, against 1.07). After the
reduction each pixel's 4 accumulators are summed across their channel lanes by 6 ``vshufps``
and 3 ``vaddps`` into the 16 output channels in order, and the epilogue (bias, residual,
activation) runs on it before the one store.

Measured first as a C loop (one thread, best of 30 interleaved rounds, Intel Xeon Ice Lake
server, ResNet-50's 1x1 shapes at 50% keep in groups of 4): 1.23x (64->256 at 56x56, K=32, where
the 9 reduction instructions per pixel weigh most) to 1.98x (1024->256 at 14x14, K=512: 5.6 FMA/ns,
near the core's 2 a cycle) the general kernel's rate. As built here (2 threads, best of 15,
interleaved with the general kernel's heuristic tile): 1.35x (1x1/2 256->128 at 56x56) to 1.89x
(1024->256 at 14x14: 187 against 354 us, 137 GMAC/s against a measured FMA peak of 158-173).

The pixels are flattened over (batch, output row, output column), so a tile may run across a
row's end and no width is wasted; the last tile of the map holds the remainder. Parallel over
fused (tile, block-row), so that even a 7x7 map's 9 tiles split evenly over the threads (x R
tasks), in one of two orders (:func:`parallel_mode`, by the weights' size): tiles outer, where a
thread's run of tasks keeps one tile's activations (6 pixels x C_in floats) in L1 while the
block-rows' weights stream past, or block-rows outer, where one block-row's weights stay while the
tiles stream past.

AVX-512 only: with 8-lane ymm registers a group would fill a register with 2 output channels,
and 16 registers cannot hold a useful tile (:func:`applies`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from tvm import tirx
from tvm.tirx import ForKind

from subp_fx.codegen import activations
from subp_fx.codegen.errors import KernelSpecError
from subp_fx.codegen.kernels.block_sparse_conv import weight_prefetch_annotations
from subp_fx.codegen.kernels.isa import VectorISA
from subp_fx.codegen.kernels.loops import ACCUMULATOR_SCOPE, DTYPE
from subp_fx.codegen.kernels.modes import PARALLEL_BLOCK_ROWS, PARALLEL_MODES, PARALLEL_PIXELS
from subp_fx.codegen.kernels.spec import INDEX_DTYPE, BlockSparseConvSpec

GROUP = 4  # input channels per 128-bit load
LANES = 16  # float32 lanes of a zmm register
BLOCK_SIZE = LANES  # N: one block-row is one zmm of outputs, 4 accumulators a pixel
# Pixels a register tile: 4 accumulators each, + 4 weight vectors + the broadcast group = 29 of
# the 32 zmm registers (7 pixels would need 33).
TILE_PIXELS = 6


def fits(spec: BlockSparseConvSpec, isa: VectorISA) -> bool:
    """Whether ``spec``'s shape suits this kernel on ``isa``: a 16-lane ISA, a 1x1 kernel without
    padding, N = 16, K a multiple of 4 (which channels are kept: :func:`kept_groups`)."""
    return isa.lanes == LANES and not _problems(spec)


def applies(spec: BlockSparseConvSpec, indices: np.ndarray, isa: VectorISA) -> bool:
    """Whether this kernel can run ``spec`` with ``indices`` (R, K): :func:`fits`, and every
    block-row's kept channels in aligned groups of 4."""
    return fits(spec, isa) and kept_groups(indices) is not None


def kept_groups(indices: np.ndarray) -> np.ndarray | None:
    """The (R, K/4) first channels of the aligned groups of 4 that ``indices`` (R, K) keep, or None
    where some block-row's kept channels are not whole aligned groups (sorted, as packed)."""
    return aligned_runs(indices, GROUP, 1)


def aligned_runs(items: np.ndarray, length: int, step: int) -> np.ndarray | None:
    """The (R, M/length) first items of ``items`` (R, M) cut into runs of ``length``, where every
    run is ``first, first + step, ...`` with ``first`` a multiple of ``length * step``; else None.
    Kept channels in aligned groups of 4 (step 1), or kept groups of 4 in aligned runs of 16
    channels (step 4, the int8 grouped kernel's)."""
    rows, count = items.shape
    if count % length:
        return None
    runs = items.reshape(rows, count // length, length)
    starts = runs[:, :, 0]
    if np.any(starts % (length * step)) or np.any(runs != starts[:, :, None] + step * np.arange(length)):
        return None
    return starts.astype(INDEX_DTYPE)


def narrow_block_rows(values: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Block-sparse weights of N = 16m, values (R, K, kh, kw, N) and indices (R, K), as the same
    weights in block-rows of 16: each row split into m rows that keep its channels. The outputs
    are the same channels in the same order, so an N=32 model's 1x1 convs run on this kernel."""
    rows, kept, kh, kw, block_size = values.shape
    if block_size % BLOCK_SIZE:
        raise KernelSpecError(f"N={block_size} is not a multiple of {BLOCK_SIZE}")
    parts = block_size // BLOCK_SIZE
    split = values.reshape(rows, kept, kh, kw, parts, BLOCK_SIZE).transpose(0, 4, 1, 2, 3, 5)
    narrowed = np.ascontiguousarray(split.reshape(rows * parts, kept, kh, kw, BLOCK_SIZE))
    return narrowed, np.repeat(indices, parts, axis=0)


def pack_values(values: np.ndarray) -> np.ndarray:
    """Block-sparse values (R, K, 1, 1, 16) in the kernel's layout (R, K/4, 4, 16): for kept group j,
    accumulator q's lane ``4*o' + c`` is the weight of output ``4*o' + q`` on the group's channel c."""
    rows, kept, kh, kw, block_size = values.shape
    if (kh, kw) != (1, 1) or block_size != BLOCK_SIZE or kept % GROUP:
        raise KernelSpecError(f"values of shape {values.shape} are not (R, K, 1, 1, 16) with K a multiple of 4")
    # [r, j, c, o] with o = 4*o' + q  ->  [r, j, q, o', c]
    by_group = values.reshape(rows, kept // GROUP, GROUP, GROUP, GROUP)  # r, j, c, o', q
    return np.ascontiguousarray(by_group.transpose(0, 1, 4, 3, 2).reshape(rows, kept // GROUP, GROUP, LANES))


def argument_shapes(spec: BlockSparseConvSpec) -> dict[str, tuple[tuple[int, ...], str]]:
    """Buffer name -> (shape, dtype) of the kernel's arguments, in order (output last)."""
    groups = spec.kept_per_row // GROUP
    shapes = {
        "data": (spec.data_shape, DTYPE),
        "values": ((spec.block_rows, groups, GROUP, LANES), DTYPE),
        "group_starts": ((spec.block_rows, groups), INDEX_DTYPE),
    }
    if spec.bias:
        shapes["bias"] = ((spec.out_channels,), DTYPE)
    if spec.residual:
        shapes["residual"] = (spec.out_shape, DTYPE)
    shapes["out"] = (spec.out_shape, DTYPE)
    return shapes


def pointwise_problems(spec) -> list[str]:
    """What a conv ``spec`` (either precision) lacks for a grouped 1x1 kernel's shape, each as
    "needs ..." text: a 1x1 kernel without padding, N = 16."""
    problems = []
    if spec.kernel_size != (1, 1) or any(spec.padding):
        problems.append(f"a 1x1 kernel without padding (got {spec.kernel_size}, padding {spec.padding})")
    if spec.block_size != BLOCK_SIZE:
        problems.append(f"N={BLOCK_SIZE} (got N={spec.block_size})")
    return problems


def _problems(spec: BlockSparseConvSpec) -> list[str]:
    """What ``spec`` lacks for this kernel, each as "needs ..." text; empty when it fits."""
    problems = pointwise_problems(spec)
    if spec.kept_per_row % GROUP:
        problems.append(f"K a multiple of {GROUP} (got K={spec.kept_per_row})")
    return problems


def _check(spec: BlockSparseConvSpec) -> None:
    if not isinstance(spec, BlockSparseConvSpec):
        raise KernelSpecError(f"spec must be a BlockSparseConvSpec, got {spec!r}")
    problems = _problems(spec)
    if problems:
        raise KernelSpecError("the grouped 1x1 kernel needs " + " and ".join(problems))


def sum_channel_lanes(accumulators: list) -> tirx.PrimExpr:
    """16 output channels in order from one pixel's 4 accumulators (see the module docstring; any
    16-lane type: the int8 kernel's int32 sums are laid out the same way):
    each 128-bit lane k of accumulator q holds output 4k+q's 4 channel partials; two rounds of
    pairwise shuffles (``vshufps`` even / odd lanes) and adds leave lane 4k+q = their sum."""

    def pair_sums(first, second):
        evens, odds = [], []
        for block in range(LANES // 4):
            base = 4 * block
            evens += [base, base + 2, LANES + base, LANES + base + 2]
            odds += [base + 1, base + 3, LANES + base + 1, LANES + base + 3]
        as_lanes = lambda lanes: [tirx.const(lane, "int32") for lane in lanes]  # noqa: E731
        return tirx.Shuffle([first, second], as_lanes(evens)) + tirx.Shuffle([first, second], as_lanes(odds))

    a0, a1, a2, a3 = accumulators
    return pair_sums(pair_sums(a0, a1), pair_sums(a2, a3))


def flat_pixel(spec, flat) -> tuple:
    """(b, oh, ow) of output pixel ``flat`` of ``spec``'s output, pixels flattened over
    (batch, row, column)."""
    map_pixels = spec.out_height * spec.out_width
    return flat // map_pixels, flat % map_pixels // spec.out_width, flat % spec.out_width


def tile_tasks(
    spec, parallel: str, register_tile: Callable[[tirx.PrimExpr, tirx.PrimExpr, int], tirx.Stmt]
) -> tirx.For:
    """The parallel loop over fused (tile of :data:`TILE_PIXELS` flat pixels, block-row) tasks of
    ``spec`` (a conv spec of either precision), in ``parallel`` order, each task
    ``register_tile(first flat pixel, block-row, pixels)``; the last tile holds the remainder."""
    total = spec.batch * spec.out_height * spec.out_width
    whole, rest = divmod(total, TILE_PIXELS)
    tiles, rows = math.ceil(total / TILE_PIXELS), spec.block_rows
    task = tirx.Var("task", "int32")
    if parallel == PARALLEL_PIXELS:
        tile, r = task // rows, task % rows
    else:
        tile, r = task % tiles, task // tiles
    first = tile * TILE_PIXELS
    if not rest:
        inner = register_tile(first, r, TILE_PIXELS)
    elif not whole:
        inner = register_tile(first, r, rest)
    else:
        inner = tirx.IfThenElse(tile < whole, register_tile(first, r, TILE_PIXELS), register_tile(first, r, rest))
    return tirx.For(task, 0, tiles * rows, ForKind.PARALLEL, inner)


class _Builder:
    """Emits the loop nest for one spec; one instance per PrimFunc."""

    def __init__(self, spec: BlockSparseConvSpec, parallel: str) -> None:
        self.spec, self.parallel = spec, parallel
        self.buffers = {
            name: tirx.decl_buffer(shape, dtype, name) for name, (shape, dtype) in argument_shapes(spec).items()
        }
        self.activation = activations.expression(spec.activation)

    def register_tile(self, first, r, pixels: int) -> tirx.Stmt:
        """Output pixels ``first .. first+pixels-1`` (flat) of block-row ``r``: zero, reduce, write back."""
        spec, buffers = self.spec, self.buffers
        sh, sw = spec.stride
        # One buffer of 4 accumulators a pixel: TVM makes a "global" buffer of 1 KiB or more a heap
        # workspace, allocated and zeroed (memset) by calls in every tile, where smaller ones stay
        # on the stack, in registers. The 24 accumulators in one 1.5 KiB buffer ran ResNet-50's
        # 1x1 shapes 1.2-2x slower (Ice Lake server, 2 threads).
        accs = [tirx.decl_buffer((GROUP * LANES,), DTYPE, f"acc{p}", scope=ACCUMULATOR_SCOPE) for p in range(pixels)]

        def lanes_of(q):
            return tirx.Ramp(q * LANES, 1, LANES)

        zero = tirx.Broadcast(tirx.const(0.0, DTYPE), LANES)
        init = [tirx.BufferStore(acc, zero, [lanes_of(q)]) for acc in accs for q in range(GROUP)]

        coordinates = [flat_pixel(spec, first + p) for p in range(pixels)]
        g = tirx.Var("g", "int32")
        start = tirx.Var("start", "int32")
        steps: list[tirx.Stmt] = [tirx.Bind(start, buffers["group_starts"][r, g])]
        weights = []
        for q in range(GROUP):
            weight = tirx.Var(f"w{q}", f"{DTYPE}x{LANES}")
            steps.append(tirx.Bind(weight, buffers["values"][r, g, q, tirx.Ramp(0, 1, LANES)]))
            weights.append(weight)
        for p, (b, oh, ow) in enumerate(coordinates):
            group = buffers["data"][b, oh * sh, ow * sw, tirx.Ramp(start, 1, GROUP)]
            broadcast = tirx.Shuffle([group] * (LANES // GROUP), [tirx.const(lane, "int32") for lane in range(LANES)])
            x = tirx.Var(f"x{p}", f"{DTYPE}x{LANES}")
            steps.append(tirx.Bind(x, broadcast))
            for q in range(GROUP):
                at = lanes_of(q)
                steps.append(tirx.BufferStore(accs[p], accs[p][at] + x * weights[q], [at]))
        values = buffers["values"]
        ahead = weight_prefetch_annotations(spec, values.name, math.prod(values.shape[1:]))
        reduction = tirx.For(g, 0, spec.kept_per_row // GROUP, ForKind.SERIAL, tirx.SeqStmt(steps), None, ahead)

        # The epilogue is a scalar expression in a vectorised loop over the 16 channels, as in the
        # other kernels: activations that bind a scalar (sigmoid, SiLU) cannot take a vector.
        stores, sums = [], []
        for p, (b, oh, ow) in enumerate(coordinates):
            summed = tirx.decl_buffer((BLOCK_SIZE,), DTYPE, f"sum{p}", scope=ACCUMULATOR_SCOPE)
            sums.append(summed)
            total = sum_channel_lanes([accs[p][lanes_of(q)] for q in range(GROUP)])
            stores.append(tirx.BufferStore(summed, total, [tirx.Ramp(0, 1, BLOCK_SIZE)]))
            j = tirx.Var("j", "int32")
            channel = r * BLOCK_SIZE + j
            value = summed[j]
            if spec.bias:
                value = value + buffers["bias"][channel]
            if spec.residual:
                value = value + buffers["residual"][b, oh, ow, channel]
            store = tirx.BufferStore(buffers["out"], self.activation(value), [b, oh, ow, channel])
            stores.append(tirx.For(j, 0, BLOCK_SIZE, ForKind.VECTORIZED, store))
        allocations = [tirx.AllocBuffer(buffer) for buffer in accs + sums]
        return tirx.SeqStmt([*allocations, *init, reduction, *stores])

    def body(self) -> tirx.Stmt:
        return tile_tasks(self.spec, self.parallel, self.register_tile)


# Above this many bytes of weights, block-rows go outer ("block_rows"). Measured with cold weights
# (a fresh copy each call, as in a model run: Ice Lake server, 2 threads): tiles outer was as fast
# or 1.1-1.4x faster at 56 and 28 px (weights of 32-256 KiB), the two within 5% at 14 px with
# 0.5 MiB, block-rows outer 1.3x faster at 14 px with 1 MiB (dense 1024->256) and 1.3-1.7x at 7 px
# (2-8 MiB). Chunks of 2-16 tiles per block-row in between were never faster than the better end.
WEIGHTS_KEPT_IN_L2 = 512 * 1024


def parallel_mode(spec: BlockSparseConvSpec) -> str:
    """The task order: tiles outer ("pixels": a tile's activations stay in L1 while all the weights
    stream past, from L2 when they fit there) unless the weights exceed
    :data:`WEIGHTS_KEPT_IN_L2`; then block-rows outer ("block_rows": a block-row's weights stay
    while the tiles stream past)."""
    weight_bytes = 4 * spec.out_channels * spec.kept_per_row
    return PARALLEL_BLOCK_ROWS if weight_bytes > WEIGHTS_KEPT_IN_L2 else PARALLEL_PIXELS


def grouped_pointwise_primfunc(spec: BlockSparseConvSpec, parallel: str | None = None) -> tirx.PrimFunc:
    """The kernel as a PrimFunc with buffer arguments :func:`argument_shapes` (output last), tasks
    in ``parallel`` order (:data:`modes.PARALLEL_MODES`; default :func:`parallel_mode`).
    Raises :class:`KernelSpecError` for a spec it cannot run (see :func:`applies`)."""
    _check(spec)
    parallel = parallel_mode(spec) if parallel is None else parallel
    if parallel not in PARALLEL_MODES:
        raise KernelSpecError(f"parallel must be one of {PARALLEL_MODES}, got {parallel!r}")
    builder = _Builder(spec, parallel)
    return tirx.PrimFunc(list(builder.buffers.values()), builder.body()).with_attr("tirx.noalias", True)


def describe(parallel: str) -> str:
    """The kernel table's tile text, beside the general kernel's ``1x14px inline-pad pixels``."""
    return f"{TILE_PIXELS}px grouped-{GROUP} {parallel}"


__all__ = [
    "GROUP",
    "aligned_runs",
    "TILE_PIXELS",
    "applies",
    "argument_shapes",
    "describe",
    "fits",
    "flat_pixel",
    "grouped_pointwise_primfunc",
    "kept_groups",
    "narrow_block_rows",
    "pack_values",
    "parallel_mode",
    "pointwise_problems",
    "sum_channel_lanes",
    "tile_tasks",
]
