"""The 1xN block-sparse 3x3 stride-1 conv by Winograd's minimal filtering, F(m x m, 3 x 3), NHWC.

Why it keeps the sparsity: Winograd computes a conv tile as ``A^T [(G g G^T) . (B^T d B)] A``,
and the weight transform ``G g G^T`` acts on each (output channel, input channel) kernel alone.
A pruned 1xN block (N output channels x 1 input channel x the whole 3x3 kernel) therefore stays
zero in every one of the alpha x alpha transformed positions (alpha = m + 2), and the middle
step is alpha^2 independent block-sparse GEMMs with the *same* kept indices as the conv: the
1x1 form of the kernel in ``block_sparse_conv``, one per position. For m = 4 each 4x4 output tile
costs 36 multiply-adds per (kept input, output) pair against the direct conv's 144: 4x fewer.

Three stages in one PrimFunc (each a parallel loop nest; the intermediates are the kernel's own
buffers):

1. ``transformed_input`` V[xi, nu, p, c] = (B^T d_p B)[xi, nu] for every tile p and every input
   channel (all of them: which channels a block-row keeps differs by row), row by row of the
   transform with its constant coefficients folded (zeros dropped, +-1 as adds), vectorised over
   the channels (a loop nest written here: see ``_input_transform``);
2. ``gemm`` M[xi, nu, p, co] = sum_k V[xi, nu, p, indices[co // N, k]] * U[xi, nu, co // N, k,
   co % N]: parallel over (position, block-row); a register tile of ``cols`` tiles x N lanes keeps
   its partial sums in registers over the kept channels (the direct kernel's 1x1 schedule), and
   prefetches the next block-row's weights as the direct kernel does;
3. ``out`` Y = act(A^T M_p A + bias (+ residual)) per output pixel of a tile, vectorised over the
   output channels, written once.

The weights are transformed once at compile time (:func:`transform_values`, in float64, then
rounded to float32). Numerics: F(4x4, 3x3) with TVM's interpolation points (0, -1, 1, 1/2, -2)
differs from a float64 conv by 1-5e-6 of the output's scale on ResNet-18's shapes (the direct
kernel by ~1e-7); F(2x2, 3x3) by ~5e-7.

Measured in ResNet-18 at 60/128 kept (Zen 4, 2 threads, in the model, against the direct kernel
in the same hour): the 3x3 64->64 convs at 56x56 212-246 us against 541-551, 128->128 at 28x28
174-184 against 527, 256->256 at 14x14 217-219 against 520-523 (379-384 before the GEMM's weight
prefetch); the whole model 9.4 -> 6.2 ms. The 7x7 layers stay direct (:data:`MIN_TILES`).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
from tvm import s_tir, te, tirx
from tvm.tirx import ForKind

from subp_fx.codegen import activations
from subp_fx.codegen.errors import KernelSpecError
from subp_fx.codegen.kernels.block_sparse_conv import vectorize_block_lanes, weight_prefetch_annotations
from subp_fx.codegen.kernels.isa import VectorISA, vectors_per_pixel
from subp_fx.codegen.kernels.loops import ACCUMULATOR_SCOPE, DTYPE, lane_chunk
from subp_fx.codegen.kernels.spec import INDEX_DTYPE, BlockSparseConvSpec

KERNEL_SIZE = 3
# Output tile sizes m this kernel builds (F(m x m, 3 x 3)); 4 is the default (see the module).
OUTPUT_TILES = (2, 4)
DEFAULT_OUTPUT_TILE = 4


@dataclass(frozen=True)
class WinogradMatrices:
    """F(m, 3)'s transforms: ``AT`` (m, alpha), ``BT`` (alpha, alpha), ``G`` (alpha, 3), float64."""

    m: int
    AT: np.ndarray
    BT: np.ndarray
    G: np.ndarray

    @property
    def alpha(self) -> int:
        return self.m + KERNEL_SIZE - 1


@functools.cache
def winograd_matrices(m: int) -> WinogradMatrices:
    """The Cook-Toom transforms of F(m, 3) as TVM's topi builds them (its interpolation points)."""
    if m not in OUTPUT_TILES:
        raise KernelSpecError(f"Winograd output tile m={m} is not built; valid m are {OUTPUT_TILES}")
    # TVM's own generator (topi's winograd_util); its public wrapper returns TE constants, the
    # numpy matrices come from these two.
    from tvm.topi.nn.winograd_util import _cook_toom_convolution, _interpolation_points

    A, B, G = _cook_toom_convolution(_interpolation_points(m + KERNEL_SIZE - 1), m, KERNEL_SIZE)
    return WinogradMatrices(m, np.asarray(A, np.float64).T, np.asarray(B, np.float64).T, np.asarray(G, np.float64))


# The GEMM's block width: wider blocks (N = 32) run as rows of 16 (``kernel_spec``). At N=32 the
# GEMM of ResNet-18's 64->64 at 56x56 took 780-800 us against 350 at N=16 (Zen 4, 2 threads).
BLOCK_SIZE = 16
# Layers with fewer tiles (per call) than this stay on the direct kernel: each transformed weight
# is read once per tile, and the transformed weights are alpha^2 / 9 = 4x the conv's (F(4, 3)).
# ResNet-18 at 60/128 kept, in the model (Zen 4, 2 threads): the 7x7 layers (4 tiles, 17.7 MB
# of transformed weights from DRAM) took 574-589 us against 527-564 direct; the 14x14 ones (16
# tiles) 379-384 against 520-524.
MIN_TILES = 16
# Layers keeping fewer input channels per block-row than this stay direct too: the transforms' cost
# grows with the channels, the GEMM's saving with K. Alone (Zen 4, 2 threads), Winograd against
# direct: K=1 (a 1-channel stem, 28x28) 15 against 3 us, K=3 (3->64 at 224x224) 2704 against
# 1386, K=4 of 64 channels at 56x56 93 against 67, K=8 of 8 160 against 65; K=16 of 16 63
# against 127, K=32 of 64 at 14x14 24 against 33; in ResNet-50 98.5/128, K=15 of 64 at 56x56
# 140-209 us in the model against about 250 direct. The threshold lies between 8 and 15.
MIN_KEPT = 12


def problem(spec: BlockSparseConvSpec) -> str | None:
    """Why the kernel cannot run ``spec``, or None: it runs 3x3 stride-1 convs."""
    if spec.kernel_size != (KERNEL_SIZE, KERNEL_SIZE):
        return f"kernel {spec.kernel_size}; Winograd F(m, 3) runs 3x3 kernels only"
    if spec.stride != (1, 1):
        return f"stride {spec.stride}; Winograd runs stride 1 only"
    return None


def why_direct(spec: BlockSparseConvSpec, m: int = DEFAULT_OUTPUT_TILE) -> str | None:
    """Why a build runs ``spec`` on the direct kernel rather than this one, or None: the kernel
    cannot run it (:func:`problem`), it has fewer than :data:`MIN_TILES` output tiles, or its
    block-rows keep fewer than :data:`MIN_KEPT` input channels."""
    reason = problem(spec)
    tiles = tile_grid(spec, WinogradTile(m, 1)).tiles
    if reason is None and tiles < MIN_TILES:
        reason = f"{tiles} output tiles of {m}x{m}; Winograd pays for its 4x larger weights from {MIN_TILES}"
    if reason is None and spec.kept_per_row < MIN_KEPT:
        reason = f"K={spec.kept_per_row} kept input channels a row; Winograd's transforms pay from K={MIN_KEPT}"
    return reason


def kernel_spec(spec: BlockSparseConvSpec) -> BlockSparseConvSpec:
    """``spec`` as the kernel runs it: blocks wider than :data:`BLOCK_SIZE` (a multiple of it) as
    rows of that many (the weights split so: ``grouped_pointwise.narrow_block_rows``)."""
    if spec.block_size <= BLOCK_SIZE or spec.block_size % BLOCK_SIZE:
        return spec
    return dataclasses.replace(spec, block_size=BLOCK_SIZE)


@dataclass(frozen=True)
class WinogradTile:
    """One schedule choice: output tile ``m`` (F(m x m, 3 x 3)) and ``cols`` Winograd tiles per
    register tile of the GEMM stage."""

    m: int
    cols: int

    def __post_init__(self) -> None:
        if self.m not in OUTPUT_TILES:
            raise KernelSpecError(f"WinogradTile.m must be one of {OUTPUT_TILES}, got {self.m!r}")
        if isinstance(self.cols, bool) or not isinstance(self.cols, int) or self.cols < 1:
            raise KernelSpecError(f"WinogradTile.cols must be an integer >= 1, got {self.cols!r}")

    def describe(self) -> str:
        return f"winograd F({self.m}x{self.m},3x3) {self.cols}tiles"


@dataclass(frozen=True)
class WinogradShape:
    """The tile grid of ``spec`` for output tile ``m``: tiles per image (rows x cols), all tiles
    P, and P padded to whole register tiles."""

    tile_rows: int
    tile_cols: int
    tiles: int
    padded_tiles: int


def tile_grid(spec: BlockSparseConvSpec, tile: WinogradTile) -> WinogradShape:
    rows, cols = -(-spec.out_height // tile.m), -(-spec.out_width // tile.m)
    tiles = spec.batch * rows * cols
    return WinogradShape(rows, cols, tiles, -(-tiles // tile.cols) * tile.cols)


def gemm_macs(spec: BlockSparseConvSpec, m: int) -> int:
    """Multiply-adds of the GEMM stage, alpha^2 x P x C_out x K (a tile the output's edge cuts
    counts whole; the register tiles' padding does not count)."""
    alpha = m + KERNEL_SIZE - 1
    return alpha * alpha * tile_grid(spec, WinogradTile(m, 1)).tiles * spec.out_channels * spec.kept_per_row


def heuristic_tile(spec: BlockSparseConvSpec, isa: VectorISA, m: int = DEFAULT_OUTPUT_TILE) -> WinogradTile:
    """The GEMM's register tile with the fewest loads per FMA (``1/cols + 1/vectors``) times the
    padded share of tiles, within ``isa.max_accumulators``; ties to the wider tile."""
    vectors = vectors_per_pixel(spec.block_size, isa)
    tiles = tile_grid(spec, WinogradTile(m, 1)).tiles
    widest = max(1, min(isa.max_accumulators // vectors, tiles))

    def cost(cols: int) -> tuple[float, int]:
        padded = -(-tiles // cols) * cols
        return round(padded / tiles * (1 / cols + 1 / vectors), 6), -cols

    return WinogradTile(m, min(range(1, widest + 1), key=cost))


def transform_values(values: np.ndarray, m: int) -> np.ndarray:
    """(R, K, 3, 3, N) block weights -> (alpha, alpha, R, K, N): ``G g G^T`` per kernel, in float64."""
    if values.ndim != 5 or values.shape[2:4] != (KERNEL_SIZE, KERNEL_SIZE):
        raise KernelSpecError(f"values must be (R, K, 3, 3, N) 3x3 block weights, got shape {values.shape}")
    G = winograd_matrices(m).G
    return np.einsum("xi,rkijn,yj->xyrkn", G, values.astype(np.float64), G).astype(np.float32)


def values_shape(spec: BlockSparseConvSpec, m: int) -> tuple[int, ...]:
    alpha = m + KERNEL_SIZE - 1
    return (alpha, alpha, spec.block_rows, spec.kept_per_row, spec.block_size)


def _linear_combination(coefficients, terms):
    """sum(c * t) with zero coefficients dropped and +-1 as adds (constants folded in Python, so
    the stages hold no multiplication by 0 or 1 for LLVM to keep)."""
    total = None
    for coefficient, term in zip(coefficients, terms):
        if coefficient == 0:
            continue
        value = term if coefficient == 1 else -term if coefficient == -1 else term * tirx.const(coefficient, DTYPE)
        total = value if total is None else total + value
    return tirx.const(0.0, DTYPE) if total is None else total


def _separable_transform(matrix: np.ndarray, terms: list[list], name: str, emit) -> list[tirx.Stmt]:
    """Statements computing ``(matrix . terms . matrix^T)[x, y]`` for every x, y < matrix rows and
    handing each to ``emit(x, y, expression)`` (which returns a statement): row by row, the
    row's ``matrix . terms`` bound once, then each entry as a short sum of those. For F(4, 3)'s
    input transform that is 288 adds and multiplies a tile-channel against 576 written out whole."""
    rows, size = matrix.shape
    steps = []
    for x in range(rows):
        row = [tirx.Var(f"{name}{x}_{j}", DTYPE) for j in range(size)]
        for j in range(size):
            steps.append(tirx.Bind(row[j], _linear_combination(matrix[x].tolist(), [terms[i][j] for i in range(size)])))
        for y in range(rows):
            steps.append(emit(x, y, _linear_combination(matrix[y].tolist(), row)))
    return steps


def _lanes_loop(name: str, extent: int, lanes: int, body_of) -> tirx.Stmt:
    """``for chunk: for lane (vectorised): body_of(chunk * lanes + lane)`` over ``extent`` channels."""
    chunk, lane = tirx.Var(f"{name}_chunk", "int32"), tirx.Var(f"{name}_lane", "int32")
    inner = tirx.For(lane, 0, lanes, ForKind.VECTORIZED, body_of(chunk * lanes + lane))
    return tirx.For(chunk, 0, extent // lanes, ForKind.SERIAL, inner)


# The two transforms are loop nests written out here, not TE computes scheduled: a TE compute over
# the alpha x alpha positions needs a select among the 36 expressions that unrolling then folds,
# and for F(4, 3) TVM and LLVM took 7-70 s to compile one layer that way (0.4 s for F(2, 3)).
# Written out, each position is one expression of values read once per tile.


def _input_transform(spec: BlockSparseConvSpec, tile: WinogradTile, isa: VectorISA, data, out) -> tirx.Stmt:
    """V[xi, nu, p, c] = (B^T d_p B)[xi, nu], parallel over the tiles p, vectorised over c."""
    matrices, grid = winograd_matrices(tile.m), tile_grid(spec, tile)
    alpha, m, per_image = matrices.alpha, tile.m, grid.tile_rows * grid.tile_cols
    pad_h, pad_w = spec.padding
    p = tirx.Var("p", "int32")
    b, t = p // per_image, p % per_image
    top, left = t // grid.tile_cols * m - pad_h, t % grid.tile_cols * m - pad_w
    zero = tirx.const(0.0, DTYPE)

    def body(c):
        reads = [[tirx.Var(f"d{i}{j}", DTYPE) for j in range(alpha)] for i in range(alpha)]
        steps = []
        for i in range(alpha):
            for j in range(alpha):
                h, w = top + i, left + j
                inside = tirx.all(h >= 0, h < spec.height, w >= 0, w < spec.width)
                steps.append(tirx.Bind(reads[i][j], tirx.if_then_else(inside, data[b, h, w, c], zero)))
        steps += _separable_transform(
            matrices.BT, reads, "row", lambda xi, nu, value: tirx.BufferStore(out, value, [xi, nu, p, c])
        )
        return tirx.SeqStmt(steps)

    lanes = lane_chunk(spec.in_channels, isa.lanes)
    return tirx.For(p, 0, grid.tiles, ForKind.PARALLEL, _lanes_loop("c", spec.in_channels, lanes, body))


def _output_transform(spec: BlockSparseConvSpec, tile: WinogradTile, isa: VectorISA, buffers: dict, out) -> tirx.Stmt:
    """Y = act(A^T M_p A + bias (+ residual)), parallel over (image, tile row), vectorised over
    the output channels; the pixels of a partial tile past the output are not written."""
    matrices, grid = winograd_matrices(tile.m), tile_grid(spec, tile)
    alpha, m = matrices.alpha, tile.m
    row_task, tile_col = tirx.Var("row_task", "int32"), tirx.Var("tile_col", "int32")
    b, tile_row = row_task // grid.tile_rows, row_task % grid.tile_rows
    p = row_task * grid.tile_cols + tile_col
    activation = activations.expression(spec.activation)
    partial_rows, partial_cols = spec.out_height % m != 0, spec.out_width % m != 0

    def body(co):
        sums = [[tirx.Var(f"m{i}{j}", DTYPE) for j in range(alpha)] for i in range(alpha)]
        steps = [tirx.Bind(sums[i][j], buffers["gemm"][i, j, p, co]) for i in range(alpha) for j in range(alpha)]

        def write(r, s, value):
            oh, ow = tile_row * m + r, tile_col * m + s
            value = value + buffers["bias"][co] if spec.bias else value
            value = value + buffers["residual"][b, oh, ow, co] if spec.residual else value
            store = tirx.BufferStore(out, activation(value), [b, oh, ow, co])
            bounds = [oh < spec.out_height] if partial_rows and r > 0 else []
            bounds += [ow < spec.out_width] if partial_cols and s > 0 else []
            return tirx.IfThenElse(tirx.all(*bounds), store, None) if bounds else store

        return tirx.SeqStmt(steps + _separable_transform(matrices.AT, sums, "row", write))

    lanes = lane_chunk(spec.out_channels, isa.lanes)
    per_tile = tirx.For(tile_col, 0, grid.tile_cols, ForKind.SERIAL, _lanes_loop("co", spec.out_channels, lanes, body))
    return tirx.For(row_task, 0, spec.batch * grid.tile_rows, ForKind.PARALLEL, per_tile)


def _compute(spec: BlockSparseConvSpec, tile: WinogradTile, isa: VectorISA) -> list[te.Tensor]:
    """The three stages; the transforms as extern loop nests around the GEMM's TE compute."""
    N, K = spec.block_size, spec.kept_per_row
    alpha, grid = tile.m + KERNEL_SIZE - 1, tile_grid(spec, tile)
    data = te.placeholder(spec.data_shape, DTYPE, name="data")
    values = te.placeholder(values_shape(spec, tile.m), DTYPE, name="values")
    indices = te.placeholder(spec.indices_shape, INDEX_DTYPE, name="indices")
    V = te.extern(
        (alpha, alpha, grid.tiles, spec.in_channels),
        [data],
        lambda ins, outs: _input_transform(spec, tile, isa, ins[0], outs[0]),
        name="transformed_input",
        dtype=DTYPE,
    )
    kept = te.reduce_axis((0, K), name="k")
    # The GEMM runs on whole register tiles: the padded tiles read the last real tile again
    # (the clamp is invariant in the reduction loop) and their rows of M are never read.
    last = grid.tiles - 1
    M = te.compute(
        (alpha, alpha, grid.padded_tiles, spec.out_channels),
        lambda xi, nu, p, co: te.sum(
            V[xi, nu, tirx.min(p, last), indices[co // N, kept]] * values[xi, nu, co // N, kept, co % N], axis=kept
        ),
        name="gemm",
    )
    arguments = [data, values, indices]
    names = ["gemm"]
    if spec.bias:
        arguments.append(te.placeholder((spec.out_channels,), DTYPE, name="bias"))
        names.append("bias")
    if spec.residual:
        arguments.append(te.placeholder(spec.out_shape, DTYPE, name="residual"))
        names.append("residual")

    def output_transform(ins, outs):
        return _output_transform(spec, tile, isa, dict(zip(names, ins)), outs[0])

    out = te.extern(spec.out_shape, [M, *arguments[3:]], output_transform, name="out", dtype=DTYPE)
    return arguments + [out]


def _schedule_gemm(sch: s_tir.Schedule, spec: BlockSparseConvSpec, tile: WinogradTile, isa: VectorISA) -> None:
    gemm = sch.get_sblock("gemm")
    xi, nu, p, co, kept = sch.get_loops(gemm)
    register_tiles, tile_col = sch.split(p, [None, tile.cols])
    block_row, lane = sch.split(co, [None, spec.block_size])
    # Tasks over (position, block-row): each reads its U[xi, nu, row] once and the position's
    # transformed input (P x C floats: 50 KB at 56x56, F(4,3), C=64) from the L2.
    sch.reorder(xi, nu, block_row, register_tiles, kept, tile_col, lane)
    parallel = sch.fuse(xi, nu, block_row)
    sch.parallel(parallel)
    write_back = sch.cache_write(gemm, 0, ACCUMULATOR_SCOPE)
    sch.reverse_compute_at(write_back, register_tiles)
    sch.unroll(tile_col)
    vectorize_block_lanes(sch, lane, spec.block_size, isa)
    # A thread's next task is the next block-row of the same position: its weights lie K x N on.
    for key, value in weight_prefetch_annotations(spec, "values", spec.kept_per_row * spec.block_size).items():
        sch.annotate(kept, key, value)
    init = sch.decompose_reduction(gemm, kept)
    for block in (init, write_back):
        tile_loop, lane_loop = sch.get_loops(block)[-2:]
        sch.unroll(tile_loop)
        vectorize_block_lanes(sch, lane_loop, spec.block_size, isa)


def winograd_conv2d_primfunc(spec: BlockSparseConvSpec, tile: WinogradTile, isa: VectorISA) -> tirx.PrimFunc:
    """The scheduled kernel with buffer arguments ``spec.argument_names()`` (``values`` in the
    :func:`transform_values` layout, shape :func:`values_shape`); the output last."""
    reason = problem(spec)
    if reason is not None:
        raise KernelSpecError(f"the Winograd kernel cannot run this conv: {reason}")
    if not isinstance(tile, WinogradTile):
        raise KernelSpecError(f"tile must be a WinogradTile, got {tile!r}")
    sch = s_tir.Schedule(te.create_prim_func(_compute(spec, tile, isa)))
    _schedule_gemm(sch, spec, tile, isa)
    return sch.mod["main"]
