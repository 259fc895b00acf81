"""Work per thread of a block-sparse conv under TVM's static parallel schedule.

Why this exists: SUBP keeps exactly K input channels in every block-row so that every parallel
task of the compiled kernel does the same work. The 1xN method of Lin et al. ("1xN pattern for
pruning CNNs") instead ranks all blocks of a layer by L1 norm and keeps the top fraction
layer-wide, so block-rows keep different counts. This module computes, with no TVM and no timing,
how the work of a layer's parallel loop lands on threads for either kind of mask:

- the parallel loop is the one ``subp_fx.codegen.kernels.block_sparse_conv._schedule`` builds
  (its modes are ``codegen.kernels.modes``, shared with the kernel):
  fused (batch, block-row, output-row tile) in "block_rows" mode, fused (batch, output-row tile)
  in "pixels" mode (each task then computes every block-row of its tile);
- TVM's CPU codegen splits a parallel loop of E iterations over T threads into contiguous
  chunks of ``ceil(E / T)`` (thread t runs [t*step, min((t+1)*step, E)); codegen_cpu.cc), so
  the last threads may get less, or nothing;
- a task's work is its multiply-accumulates: K_row * kh * kw * N * (output pixels of the task).

The layer's parallel time is proportional to the busiest thread's work; ``max / mean`` thread work
is the imbalance (1 = perfect), and the non-uniform mask's speed loss is its busiest thread's
work over the uniform mask's (both masks keep the same number of blocks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from subp_fx.codegen.kernels.modes import PARALLEL_BLOCK_ROWS, PARALLEL_PIXELS


def static_chunks(task_count: int, threads: int) -> list[range]:
    """The tasks each thread runs under TVM's static schedule (contiguous ``ceil(E/T)`` chunks)."""
    if task_count < 0 or threads < 1:
        raise ValueError(f"need task_count >= 0 and threads >= 1, got {task_count}, {threads}")
    step = math.ceil(task_count / threads)
    return [range(min(t * step, task_count), min((t + 1) * step, task_count)) for t in range(threads)]


def thread_work(task_work: Sequence[int], threads: int) -> list[int]:
    """Work each of ``threads`` threads does when the tasks are split by :func:`static_chunks`."""
    prefix = np.concatenate([[0], np.cumsum(np.asarray(task_work, dtype=np.int64))])
    return [int(prefix[chunk.stop] - prefix[chunk.start]) for chunk in static_chunks(len(task_work), threads)]


def imbalance(work_per_thread: Sequence[int]) -> float:
    """Busiest thread's work over the mean over all threads (idle ones included): 1 is perfect,
    and 1/imbalance is the parallel efficiency."""
    total = sum(work_per_thread)
    return max(work_per_thread) * len(work_per_thread) / total if total else 1.0


@dataclass(frozen=True)
class SparseConvLayer:
    """The static shape of one block-sparse conv, as the compiled kernel sees it."""

    name: str
    in_channels: int
    out_channels: int
    block_size: int  # N
    kernel_size: tuple[int, int]
    out_height: int
    out_width: int
    kept_per_row: int  # SUBP's uniform K
    parallel: str = PARALLEL_BLOCK_ROWS
    tile_rows: int = 1
    batch: int = 1

    @property
    def block_rows(self) -> int:
        return self.out_channels // self.block_size

    @property
    def kept_blocks(self) -> int:
        return self.block_rows * self.kept_per_row

    def uniform_row_counts(self) -> np.ndarray:
        return np.full(self.block_rows, self.kept_per_row, dtype=np.int64)

    def task_work(self, row_counts: Sequence[int]) -> list[int]:
        """MACs of each iteration of the kernel's parallel loop, in loop order."""
        counts = np.asarray(row_counts, dtype=np.int64)
        if counts.shape != (self.block_rows,):
            raise ValueError(f"{self.name}: need {self.block_rows} row counts, got shape {counts.shape}")
        kh, kw = self.kernel_size
        row_tiles = [
            min(self.tile_rows, self.out_height - start) for start in range(0, self.out_height, self.tile_rows)
        ]
        per_kept_channel = [kh * kw * self.block_size * rows * self.out_width for rows in row_tiles]
        if self.parallel == PARALLEL_PIXELS:
            kept_total = int(counts.sum())
            return [kept_total * macs for _ in range(self.batch) for macs in per_kept_channel]
        if self.parallel == PARALLEL_BLOCK_ROWS:
            return [int(k) * macs for _ in range(self.batch) for k in counts for macs in per_kept_channel]
        raise ValueError(f"{self.name}: unknown parallel mode {self.parallel!r}")


def block_l1_norms(
    layer: SparseConvLayer, rng: np.random.Generator, row_scale_sigma: float = 0.0, block_scale_sigma: float = 0.0
) -> np.ndarray:
    """(block_rows, in_channels) L1 norms of the 1xN blocks of a synthetic weight.

    The weight is kaiming-normal (std sqrt(2 / fan_in)); each block-row is then scaled by a
    lognormal factor exp(row_scale_sigma * z) and each block by exp(block_scale_sigma * z').
    With both sigmas 0 every block's norm is a sum of N*kh*kw i.i.d. |w|, nearly equal, and the
    layer-wide ranking is close to random: per-row counts then vary only as a hypergeometric
    draw, the least spread an L1 ranking leaves. Trained weights are not like that: filters
    differ in scale from one output channel to the next (the premise of norm-based filter
    pruning), so a row's blocks tend to win or lose the ranking together, and blocks differ
    within a row (input channels differ in importance), which dilutes the row effect. How much
    rows spread depends on the ratio of the two sigmas. No trained weights are used here: both
    are assumptions, reported beside the i.i.d. case and swept for sensitivity.
    """
    kh, kw = layer.kernel_size
    fan_in = layer.in_channels * kh * kw
    weight = rng.standard_normal((layer.block_rows, layer.block_size, layer.in_channels, kh, kw)) * math.sqrt(
        2.0 / fan_in
    )
    norms = np.abs(weight).sum(axis=(1, 3, 4))
    row_scale = np.exp(row_scale_sigma * rng.standard_normal((layer.block_rows, 1)))
    block_scale = np.exp(block_scale_sigma * rng.standard_normal(norms.shape))
    return norms * row_scale * block_scale


def l1_1xn_row_counts(norms: np.ndarray, kept_blocks: int) -> np.ndarray:
    """Per-row kept counts when the ``kept_blocks`` largest blocks of the whole layer are kept
    (the 1xN method's layer-wide L1 ranking)."""
    if not 0 <= kept_blocks <= norms.size:
        raise ValueError(f"kept_blocks must lie in [0, {norms.size}], got {kept_blocks}")
    order = np.argsort(norms, axis=None, kind="stable")[::-1][:kept_blocks]
    rows = np.unravel_index(order, norms.shape)[0]
    return np.bincount(rows, minlength=norms.shape[0]).astype(np.int64)


def layer_balance(
    layer: SparseConvLayer, row_counts: Sequence[int], threads: Sequence[int]
) -> dict[int, dict[str, float]]:
    """Per thread count: uniform and given-mask imbalance, busiest-thread MACs, and the speed
    loss (given mask's busiest thread over the uniform mask's)."""
    uniform_tasks = layer.task_work(layer.uniform_row_counts())
    other_tasks = layer.task_work(row_counts)
    result = {}
    for count in threads:
        uniform = thread_work(uniform_tasks, count)
        other = thread_work(other_tasks, count)
        result[count] = {
            "uniform_max_over_mean": imbalance(uniform),
            "nonuniform_max_over_mean": imbalance(other),
            "uniform_max_thread_macs": max(uniform),
            "nonuniform_max_thread_macs": max(other),
            "speed_loss": max(other) / max(uniform),
        }
    return result
