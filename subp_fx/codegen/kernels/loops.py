"""Loop-nest helpers shared by the op schedules: vector chunks, and the parallel + vector split.

Why: every memory-bound op here (pooling, elementwise, layout) wants the same two things on a
multi-core SIMD CPU: an outer loop split across the runtime's threads, and an innermost loop of
contiguous elements that LLVM turns into vector instructions. The vector chunk must divide the
loop it splits, or TIR would add a bounds predicate that blocks vectorisation.
"""

from __future__ import annotations

from tvm import s_tir, tirx

DTYPE = "float32"
# Every register-tiled kernel (the block-sparse conv, depthwise conv, linear, pooling) keeps its
# per-tile partial sums in a buffer of this scope. It must become an LLVM stack alloca, which LLVM
# promotes to registers. TVM 0.27 turns a "local" allocation into a heap workspace
# (TVMBackendAllocWorkspace) instead, and LLVM then kept some accumulators in memory (vector
# stores in the hot loop); a "global" allocation under 1 KiB stays on the stack (every conv tile
# within VectorISA.max_accumulators is: 14 zmm = 896 B). Measured in the assembly: the N=16 x
# 14-pixel AVX-512 conv tile went from 15 stores in the hot loop to none.
ACCUMULATOR_SCOPE = "global"


def lane_chunk(extent: int, lanes: int) -> int:
    """The largest divisor of ``extent`` that is at most ``lanes``: the widest vector that tiles
    ``extent`` exactly (1 when nothing but 1 divides it)."""
    for chunk in range(min(lanes, extent), 0, -1):
        if extent % chunk == 0:
            return chunk
    return 1


def vectorize_split(sch: s_tir.Schedule, loop, extent: int, lanes: int):
    """Split ``loop`` (of ``extent``) into (outer, vector chunk) and vectorise the chunk.

    Returns the outer loop; a chunk of 1 is left as a plain loop (nothing to vectorise).
    """
    chunk = lane_chunk(extent, lanes)
    outer, inner = sch.split(loop, [None, chunk])
    if chunk > 1:
        sch.vectorize(inner)
    return outer


def unroll_then_vectorize_below(sch: s_tir.Schedule, block, depth: int) -> None:
    """Unroll every loop of ``block`` below its first ``depth`` loops, vectorise the innermost.

    For a tile stage placed by ``reverse_compute_at`` / ``decompose_reduction``: TIR drops the
    stage's unit-extent loops, so its loops are counted from the loop it was placed under, never
    from the innermost end (which would reach up into the parallel loop when the tile has unit
    extents).
    """
    inner = sch.get_loops(block)[depth:]
    if not inner:
        return
    *outer, innermost = inner
    for loop in outer:
        sch.unroll(loop)
    sch.vectorize(innermost)


def schedule_flat_parallel_vector(sch: s_tir.Schedule, block_name: str, shape: tuple[int, ...], lanes: int) -> None:
    """Schedule an injective block over ``shape`` as one flat loop: parallel chunks of vectors.

    The vector chunk divides the innermost extent, so a chunk never straddles two rows and
    per-channel operands (bias[c]) stay contiguous within it.
    """
    block = sch.get_sblock(block_name)
    fused = sch.fuse(*sch.get_loops(block))
    chunk = lane_chunk(shape[-1], lanes)
    outer, inner = sch.split(fused, [None, chunk])
    sch.parallel(outer)
    if chunk > 1:
        sch.vectorize(inner)


def _when(flag: bool, bound: int) -> int | None:
    return bound if flag else None


def bounds_condition(h, w, top: int | None, left: int | None, bottom: int | None, right: int | None):
    """The condition that input row ``h`` and column ``w`` lie inside the input: ``h >= top``,
    ``w >= left``, ``h < bottom``, ``w < right``, each clause only where its bound is given (None:
    no window crosses that side, so the clause could never fail), or None when no clause is left.

    Why only the clauses that can fail: each one is a compare in the kernel's hot loop, and a 1x1
    unpadded conv, or a pool whose windows all stay inside, then reads its input unguarded.
    """
    clauses = []
    clauses += [h >= top] if top is not None else []
    clauses += [w >= left] if left is not None else []
    clauses += [h < bottom] if bottom is not None else []
    clauses += [w < right] if right is not None else []
    return tirx.all(*clauses) if clauses else None


def guarded_bounds(h, w, height: int, width: int, pad: tuple[int, int], last: tuple[int, int]):
    """:func:`bounds_condition` for reads at unpadded input coordinates (h, w) of a
    ``height x width`` input, with ``pad`` (top, left) padding and ``last`` the largest row and
    column any window reads."""
    return bounds_condition(
        h,
        w,
        _when(pad[0] > 0, 0),
        _when(pad[1] > 0, 0),
        _when(last[0] >= height, height),
        _when(last[1] >= width, width),
    )


def border_split(padded: bool, interior, reduction) -> tirx.Stmt:
    """A register tile's reduction split on where its windows lie: ``reduction(False)`` (reads
    unguarded) when the ``interior`` condition holds, ``reduction(True)`` (each read guarded for
    the padding) otherwise; only the unguarded one when nothing is ``padded``. Most tiles of a
    large map are interior, so the bounds tests cost only at the border."""
    unguarded = reduction(False)
    if not padded:
        return unguarded
    return tirx.IfThenElse(interior, unguarded, reduction(True))
