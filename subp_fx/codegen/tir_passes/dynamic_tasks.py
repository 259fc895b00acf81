"""Parallel loops that share their tasks out as the threads go, not in fixed halves.

TVM runs a ``T.parallel`` loop of n iterations on T pool threads by giving thread k the k-th
contiguous n/T of them, fixed before it starts; the kernel ends when the slowest thread does. On
this project's machines (2-core KVM guests) one core is often slower than the other for seconds
at a time (another tenant on its sibling, host frequency): a plain FMA loop pinned to each core
ran at 0.81-1.22 of its mean, the two cores independently. Every kernel then waits for the slow
core, and whole models ran 15-20% slower for minutes while OpenVINO, whose threads take work
as they go, held its time. With a process busy 1 ms in every 5 on the second core, ResNet-50
66/128 (G=4, fp32) with fixed halves ran 1.52x slower than quiet, OpenVINO 1.30x; busy 2 ms in
every 4, 2.37x against 1.78x; with this rewrite 1.21x and 1.81x, and 1.03x faster quiet
(``benchmarks/contention.py``, ``benchmarks/results/contention.md``).

The rewrite (after TVM's TIR lowering, so every kernel gets it, scheduled or hand-built): a
parallel loop ``for task in T.parallel(n): body`` becomes

- ``units`` of ``chunk`` consecutive tasks each, at most :data:`UNITS_PER_WORKER` per worker
  (each claim costs one locked instruction; consecutive tasks keep the kernel's locality: a
  block-row's weights, a row of pixels);
- a bitmap of claimed units, zeroed by the calling thread before the launch;
- ``for worker in T.parallel(workers)``: each worker walks its own contiguous share of the units
  forward, then every unit from the last one backward (so that it takes over the far end of a
  slower worker's share), and runs a unit's tasks when its bit was clear: a plain read first
  (claimed units cost no locked instruction), then ``lock bts`` (LLVM's
  ``llvm.x86.atomic.bts.rm``), whose old bit says who won.

Every task runs exactly once, on whichever worker claimed it; the tasks' own code is unchanged.
TVM's LLVM backend has no atomic add on CPUs ("CPU backend does not support atomic add yet"),
hence the bit-test-and-set; x86 only (other targets keep TVM's split). ``workers`` is fixed at
compile time: a pool with fewer threads runs several workers one after another (the later ones
find their units claimed), a pool with more leaves the extra threads idle in these loops.
"""

from __future__ import annotations

import math

import tvm
from tvm import tirx
from tvm.target import Target
from tvm.tirx import ForKind

from subp_fx.codegen.tir_passes.rewrite import rewrite_outermost

# Claims per worker: the coarsest split that still evens out a slow core to within 1/16 of a
# worker's share, at one locked instruction per claim.
UNITS_PER_WORKER = 16
# Bitmap words per allocation step: one 64-byte cache line of int32 words.
_WORDS_PER_LINE = 16
_INDEX = "int32"
_X86_ARCHITECTURES = ("x86_64", "amd64", "i386", "i486", "i586", "i686", "x86")


def _const(value: int):
    return tirx.const(value, _INDEX)


def targets_with_dynamic_tasks(target: Target) -> bool:
    """Whether the rewrite applies to ``target``: LLVM on x86 (the only ``lock bts`` there is)."""
    if target.kind.name != "llvm":
        return False
    triple = str(target.attrs.get("mtriple", "") or "")
    return triple.split("-", 1)[0] in _X86_ARCHITECTURES


def is_task_loop(stmt) -> bool:
    """The pattern: a parallel loop of a known trip count above 1."""
    return (
        isinstance(stmt, tirx.For)
        and stmt.kind == ForKind.PARALLEL
        and isinstance(stmt.extent, tirx.IntImm)
        and int(stmt.extent) > 1
    )


def _bit_is_set(bitmap, unit):
    word = bitmap[tirx.shift_right(unit, _const(5))]
    return tirx.bitwise_and(tirx.shift_right(word, tirx.bitwise_and(unit, _const(31))), _const(1))


def _test_and_set(bitmap, unit):
    """``lock bts``: sets ``unit``'s bit and returns its old value (int8 0 or 1)."""
    address = tirx.call_intrin("handle", "tirx.address_of", bitmap[tirx.shift_right(unit, _const(5))])
    return tirx.call_llvm_intrin("int8", "llvm.x86.atomic.bts.rm", address, tirx.bitwise_and(unit, _const(31)))


def claim_tasks_dynamically(loop: tirx.For, workers: int) -> tirx.Stmt:
    """The rewrite of one :func:`is_task_loop` loop for ``workers`` workers (module docstring)."""
    tasks = int(loop.extent)
    chunk = max(1, math.ceil(tasks / (workers * UNITS_PER_WORKER)))
    units = math.ceil(tasks / chunk)
    words = _WORDS_PER_LINE * math.ceil(units / (32 * _WORDS_PER_LINE))
    bitmap = tirx.decl_buffer((words,), _INDEX, "claimed_units")
    worker, step, unit, word = (tirx.Var(name, _INDEX) for name in ("worker", "step", "unit", "word"))

    first, end = worker * units // workers, (worker + 1) * units // workers
    own = end - first
    back = step - own  # steps after the worker's own share: units from the last one down, its own skipped
    unit_at_step = tirx.Select(
        step < own, first + step, tirx.Select(back < units - end, units - 1 - back, units - 1 - back - own)
    )
    start = loop.min + unit * chunk
    count = _const(chunk) if tasks % chunk == 0 else tirx.min(_const(tasks), unit * chunk + chunk) - unit * chunk
    run_unit = tirx.For(loop.loop_var, start, count, ForKind.SERIAL, loop.body)
    # Two nested conditions, not one conjunction: TIR evaluates both sides of an `and`, and LLVM
    # then placed the plain read after the bts, where it always saw the bit set (no task ran).
    claim = tirx.IfThenElse(
        _bit_is_set(bitmap, unit) == 0,
        tirx.IfThenElse(_test_and_set(bitmap, unit) == tirx.const(0, "int8"), run_unit, None),
        None,
    )
    walk = tirx.For(step, 0, units, ForKind.SERIAL, tirx.SeqStmt([tirx.Bind(unit, unit_at_step), claim]))
    clear = tirx.For(word, 0, words, ForKind.SERIAL, tirx.BufferStore(bitmap, _const(0), [word]))
    return tirx.SeqStmt([tirx.AllocBuffer(bitmap), clear, tirx.For(worker, 0, workers, ForKind.PARALLEL, walk)])


def dynamic_tasks(workers: int) -> tvm.transform.Pass:
    """The PrimFunc pass: every task loop of every function, for ``workers`` workers. Run it after
    TVM's TIR lowering (blocks gone, buffers flat) and before its host finalisation (which turns
    the bitmap into a stack allocation and the parallel loop into a pool launch)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"dynamic_tasks needs workers >= 1, got {workers!r}")

    @tvm.tirx.transform.prim_func_pass(opt_level=0, name="subp_fx.DynamicTasks")
    def _pass(func, _mod, _ctx):
        body = rewrite_outermost(func.body, is_task_loop, lambda loop: claim_tasks_dynamically(loop, workers))
        return func if body.same_as(func.body) else func.with_body(body)

    return _pass


__all__ = ["UNITS_PER_WORKER", "claim_tasks_dynamically", "dynamic_tasks", "is_task_loop", "targets_with_dynamic_tasks"]
