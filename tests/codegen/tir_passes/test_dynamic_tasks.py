"""Parallel loops whose tasks the workers claim as they go (``tir_passes.dynamic_tasks``): every
task exactly once, for any pool size, the pattern and the rewrite, the targets it applies to."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from tvm import tirx  # noqa: E402
from tvm.tirx import ForKind  # noqa: E402

from subp_fx.codegen.target import parse_target  # noqa: E402
from subp_fx.codegen.threads import get_num_threads, set_num_threads, thread_pool_capacity  # noqa: E402
from subp_fx.codegen.tir_passes.dynamic_tasks import (  # noqa: E402
    UNITS_PER_WORKER,
    dynamic_tasks,
    is_task_loop,
    targets_with_dynamic_tasks,
)
from subp_fx.codegen.tir_passes.pipeline import DEFAULT, tir_pipeline  # noqa: E402

HOST = parse_target("llvm -mcpu=native")
X86 = targets_with_dynamic_tasks(HOST)


def _counting_kernel(tasks: int, start: int = 0) -> tirx.PrimFunc:
    """``for i in T.parallel(start, start + tasks): runs[i] += 1; order[i] = i * 3``: a task that
    ran twice shows as 2, one that never ran as 0."""
    runs = tirx.decl_buffer((start + tasks,), "int32", "runs")
    order = tirx.decl_buffer((start + tasks,), "int32", "order")
    i = tirx.Var("i", "int32")
    body = tirx.SeqStmt(
        [
            tirx.BufferStore(runs, runs[i] + 1, [i]),
            tirx.BufferStore(order, i * 3, [i]),
        ]
    )
    loop = tirx.For(i, start, tasks, ForKind.PARALLEL, body)
    return tirx.PrimFunc([runs, order], loop).with_attr("global_symbol", "count")


def _run(tasks: int, workers: int, start: int = 0, threads: int | None = None):
    name = tir_pipeline(HOST, workers)
    module = tvm.compile(tvm.IRModule({"count": _counting_kernel(tasks, start)}), target=HOST, tir_pipeline=name)
    runs = tvm.runtime.tensor(np.zeros(start + tasks, "int32"))
    order = tvm.runtime.tensor(np.zeros(start + tasks, "int32"))
    before = get_num_threads()
    set_num_threads(threads or before)
    try:
        for _ in range(3):  # the bitmap is cleared on every call
            module["count"](runs, order)
    finally:
        set_num_threads(before)
    return runs.numpy(), order.numpy(), module


needs_x86 = pytest.mark.skipif(not X86, reason="lock bts is x86 only; other hosts keep TVM's split")


@needs_x86
@pytest.mark.parametrize("tasks", [2, 7, 31, 32, 33, 224, 1000])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_every_task_runs_exactly_once_per_call(tasks, workers):
    runs, order, _ = _run(tasks, workers)
    assert (runs == 3).all(), np.flatnonzero(runs != 3)
    assert (order == 3 * np.arange(tasks)).all()


@needs_x86
def test_a_loop_that_does_not_start_at_zero_keeps_its_range():
    runs, order, _ = _run(50, 2, start=5)
    assert (runs[:5] == 0).all() and (runs[5:] == 3).all()
    assert (order[5:] == 3 * np.arange(5, 55)).all()


@needs_x86
def test_a_pool_with_fewer_threads_than_workers_still_runs_everything():
    runs, _, _ = _run(100, workers=4, threads=1)
    assert (runs == 3).all()


@needs_x86
@pytest.mark.skipif(thread_pool_capacity() < 2, reason="needs a pool of 2 threads")
def test_two_threads_share_the_tasks():
    runs, _, _ = _run(224, workers=2, threads=2)
    assert (runs == 3).all()


@needs_x86
def test_the_kernel_claims_with_lock_bts():
    _, _, module = _run(64, 2)
    asm = module.mod.inspect_source("asm")
    assert "lock" in asm and "bts" in asm


def test_the_pattern_is_a_parallel_loop_of_a_known_count_above_one():
    i = tirx.Var("i", "int32")
    body = tirx.Evaluate(0)
    assert is_task_loop(tirx.For(i, 0, 8, ForKind.PARALLEL, body))
    assert not is_task_loop(tirx.For(i, 0, 1, ForKind.PARALLEL, body))
    assert not is_task_loop(tirx.For(i, 0, 8, ForKind.SERIAL, body))
    assert not is_task_loop(tirx.For(i, 0, tirx.Var("n", "int32"), ForKind.PARALLEL, body))


def test_the_rewrite_claims_at_most_units_per_worker_chunks():
    func = _counting_kernel(1000)
    module = dynamic_tasks(2)(tvm.IRModule({"count": func}))
    text = module["count"].script()
    # 1000 tasks over 2 x 16 units: chunks of 32 tasks, 32 units, one bitmap line of 16 words
    assert UNITS_PER_WORKER == 16
    assert "T.parallel(2)" in text and "range(32)" in text and "(16,)" in text
    assert "llvm.x86.atomic.bts.rm" in text


def test_functions_without_a_task_loop_are_left_as_they_are():
    out = tirx.decl_buffer((4,), "int32", "out")
    i = tirx.Var("i", "int32")
    func = tirx.PrimFunc([out], tirx.For(i, 0, 4, ForKind.SERIAL, tirx.BufferStore(out, i, [i])))
    module = tvm.IRModule({"main": func})
    assert dynamic_tasks(2)(module)["main"].body.same_as(func.body)


@pytest.mark.parametrize(
    ("target", "applies"),
    [
        ("llvm -mcpu=icelake-server", True),
        ("llvm -mcpu=znver3", True),
        ("llvm -mtriple=aarch64-linux-gnu -mcpu=neoverse-n1", False),
    ],
)
def test_only_x86_targets_get_the_rewrite(target, applies):
    parsed = parse_target(target)
    assert targets_with_dynamic_tasks(parsed) is applies
    assert ("dynamic_tasks" in tir_pipeline(parsed, 2)) is applies
    assert tir_pipeline(parsed, 2) != DEFAULT  # every LLVM target gets the weight prefetch


def test_bad_worker_counts_are_refused():
    with pytest.raises(ValueError, match="workers >= 1"):
        dynamic_tasks(0)
