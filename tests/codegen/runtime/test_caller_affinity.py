"""The calling thread is kept off the TVM workers' cores for the duration of a call."""

from __future__ import annotations

import os

import numpy as np
import pytest

from subp_fx.codegen.runtime import caller_affinity
from subp_fx.codegen.runtime.caller_affinity import (
    CallerPinning,
    busy_worker_cpus,
    caller_cpus,
    tvm_cpu_order,
    tvm_pins_workers,
)

linux_affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity (Linux)")


def test_cpu_order_is_tvms_fastest_first_then_by_number(monkeypatch):
    frequencies = {0: 3_000_000, 1: 4_000_000, 2: 3_000_000, 3: 4_000_000, 4: 0}
    monkeypatch.setattr(caller_affinity, "_max_frequency_khz", frequencies.__getitem__)
    assert tvm_cpu_order(5) == [1, 3, 0, 2, 4]


def test_a_machine_without_cpufreq_keeps_cpu_numbers_in_order(monkeypatch):
    monkeypatch.setattr(caller_affinity, "_max_frequency_khz", lambda cpu: 0)
    assert tvm_cpu_order(4) == [0, 1, 2, 3]


def test_workers_take_the_cpus_after_the_first():
    assert busy_worker_cpus(1, [0, 1, 2, 3]) == frozenset()
    assert busy_worker_cpus(3, [2, 0, 1, 3]) == {0, 1}


def test_the_caller_keeps_what_the_workers_leave():
    order = [0, 1, 2, 3]
    assert caller_cpus(frozenset({0, 1}), 2, order) == {0}
    assert caller_cpus(frozenset({0, 1, 2, 3}), 2, order) == {0, 2, 3}
    assert caller_cpus(frozenset({0, 1, 2, 3}), 1, order) is None  # no workers
    assert caller_cpus(frozenset({2, 3}), 2, order) is None  # no worker core among them: unchanged
    assert caller_cpus(frozenset({1}), 2, order) is None  # the user pinned it there: theirs to choose


def test_tvm_pins_workers_unless_told_not_to_or_oversubscribed(monkeypatch):
    monkeypatch.delenv("TVM_BIND_THREADS", raising=False)
    assert tvm_pins_workers(2, cpu_count=2)
    assert not tvm_pins_workers(3, cpu_count=2)  # TVM leaves an oversubscribed pool unpinned
    monkeypatch.setenv("TVM_BIND_THREADS", "0")
    assert not tvm_pins_workers(2, cpu_count=2)
    monkeypatch.setenv("TVM_BIND_THREADS", "1")
    assert tvm_pins_workers(2, cpu_count=2)


def _fake_machine(monkeypatch, cpus: int) -> None:
    monkeypatch.delenv("TVM_BIND_THREADS", raising=False)
    monkeypatch.setattr(caller_affinity.os, "cpu_count", lambda: cpus)
    monkeypatch.setattr(caller_affinity, "_max_frequency_khz", lambda cpu: 0)


@linux_affinity
def test_pin_narrows_the_mask_and_restore_gives_it_back(monkeypatch):
    original = os.sched_getaffinity(0)
    if len(original) < 2:
        pytest.skip("this process may run on one CPU only")
    _fake_machine(monkeypatch, max(original) + 1)
    order = tvm_cpu_order()
    pinning = CallerPinning()
    pinning._current_cpu = lambda: order[1]  # the call starts on the worker's core
    previous = pinning.pin(threads=2, pool_size=2)
    try:
        during = os.sched_getaffinity(0)
    finally:
        pinning.restore(previous)
    worker_core = order[1]
    if worker_core in original:
        assert previous == original and during == original - {worker_core}
    else:
        assert previous is None and during == original
    assert os.sched_getaffinity(0) == original


@linux_affinity
def test_a_caller_off_the_workers_cores_is_left_where_it_is(monkeypatch):
    original = os.sched_getaffinity(0)
    _fake_machine(monkeypatch, max(original) + 1)
    pinning = CallerPinning()
    pinning._current_cpu = lambda: tvm_cpu_order()[0]
    assert pinning.pin(threads=2, pool_size=2) is None and os.sched_getaffinity(0) == original


def test_the_current_cpu_comes_from_libc():
    getcpu = caller_affinity._sched_getcpu()
    if getcpu is None:
        pytest.skip("no sched_getcpu in this libc")
    assert getcpu() in os.sched_getaffinity(0)


@linux_affinity
def test_pin_changes_nothing_when_off_single_threaded_or_unbound(monkeypatch):
    original = os.sched_getaffinity(0)
    _fake_machine(monkeypatch, max(original) + 1)
    off = CallerPinning()
    off.enabled = False
    assert off.pin(threads=2, pool_size=2) is None
    assert CallerPinning().pin(threads=1, pool_size=2) is None
    monkeypatch.setenv("TVM_BIND_THREADS", "0")
    assert CallerPinning().pin(threads=2, pool_size=2) is None
    monkeypatch.setenv(caller_affinity.OPT_OUT_VARIABLE, "0")
    assert not CallerPinning().enabled
    assert os.sched_getaffinity(0) == original


@linux_affinity
def test_a_model_call_runs_off_the_worker_cores_and_restores_the_mask(monkeypatch):
    """What a call that starts on the worker's core does to the caller's mask, seen from inside
    the call (the VM function is wrapped to record it); the output is the model's own."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("tvm")
    from subp_fx.codegen.api import compile
    from subp_fx.codegen.threads import thread_pool_capacity

    original = os.sched_getaffinity(0)
    if thread_pool_capacity() < 2 or len(original) < 2:
        pytest.skip("needs a 2-thread TVM pool and two CPUs")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
    example = torch.randn(1, 3, 10, 10)
    compiled = compile(model, example, threads=2)
    expected = compiled(example)
    seen = []
    main = compiled._main

    def recording(*args):
        seen.append(os.sched_getaffinity(0))
        return main(*args)

    compiled._main = recording
    before = os.sched_getaffinity(0)  # configuring TVM's pool may have widened it
    worker_core = tvm_cpu_order()[1]
    if worker_core not in before:
        pytest.skip(f"TVM's worker core {worker_core} is not among this thread's CPUs {sorted(before)}")
    # the call starts on the worker's core (said, not arranged: the OS may move a thread at any time)
    monkeypatch.setattr(caller_affinity.caller_pinning, "_current_cpu", lambda: worker_core)
    np.testing.assert_array_equal(compiled(example), expected)
    assert seen and worker_core not in seen[0] and seen[0] < before
    assert os.sched_getaffinity(0) == before
