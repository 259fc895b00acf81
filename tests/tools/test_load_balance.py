import numpy as np
import pytest

from subp_fx.tools.load_balance import (
    PARALLEL_BLOCK_ROWS,
    PARALLEL_PIXELS,
    SparseConvLayer,
    block_l1_norms,
    imbalance,
    l1_1xn_row_counts,
    layer_balance,
    static_chunks,
    thread_work,
)


def _layer(parallel=PARALLEL_BLOCK_ROWS, out_height=4, out_channels=64, kept=8):
    return SparseConvLayer(
        name="conv",
        in_channels=16,
        out_channels=out_channels,
        block_size=16,
        kernel_size=(3, 3),
        out_height=out_height,
        out_width=5,
        kept_per_row=kept,
        parallel=parallel,
    )


def test_static_chunks_match_tvm_ceil_split():
    # 10 tasks on 4 threads: step ceil(10/4) = 3 -> 3, 3, 3, 1.
    assert [len(chunk) for chunk in static_chunks(10, 4)] == [3, 3, 3, 1]
    # More threads than tasks: the extra threads are idle.
    assert [len(chunk) for chunk in static_chunks(2, 4)] == [1, 1, 0, 0]
    assert sum(len(c) for c in static_chunks(37, 8)) == 37


@pytest.mark.parametrize("threads", [1, 2, 4, 8, 16])
def test_uniform_rows_balance_perfectly_when_threads_divide_the_tasks(threads):
    layer = _layer()  # 4 block-rows x 4 row tiles = 16 tasks
    work = thread_work(layer.task_work(layer.uniform_row_counts()), threads)
    assert imbalance(work) == 1.0
    assert sum(work) == 4 * 8 * 9 * 16 * 4 * 5


def test_known_nonuniform_case_matches_hand_computation():
    # 4 block-rows keeping 12, 4, 8, 8 (mean 8), one row tile each; 2 threads get rows {0, 1}
    # and {2, 3}: 16 vs 16 -> balanced. 4 threads: one row each, busiest 12 vs mean 8 -> 1.5.
    layer = _layer(out_height=1)
    counts = [12, 4, 8, 8]
    assert imbalance(thread_work(layer.task_work(counts), 2)) == 1.0
    assert imbalance(thread_work(layer.task_work(counts), 4)) == pytest.approx(1.5)
    balance = layer_balance(layer, counts, [4])[4]
    assert balance["uniform_max_over_mean"] == 1.0
    assert balance["speed_loss"] == pytest.approx(12 / 8)


def test_pixels_mode_is_insensitive_to_row_counts():
    layer = _layer(parallel=PARALLEL_PIXELS)
    assert layer.task_work([12, 4, 8, 8]) == layer.task_work(layer.uniform_row_counts())


def test_l1_ranking_keeps_the_largest_blocks_and_the_total():
    norms = np.array([[9.0, 8.0, 7.0], [1.0, 2.0, 3.0]])
    assert l1_1xn_row_counts(norms, 4).tolist() == [3, 1]
    layer = _layer(out_channels=256, kept=7)
    counts = l1_1xn_row_counts(block_l1_norms(layer, np.random.default_rng(0), 0.2, 0.5), layer.kept_blocks)
    assert counts.sum() == layer.kept_blocks
    assert counts.max() > counts.min()  # the 1xN ranking leaves rows unequal
