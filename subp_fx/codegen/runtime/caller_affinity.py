"""Keeping the thread that calls a compiled model off the cores TVM's workers are pinned to.

Why: TVM's pool runs task 0 of every parallel kernel on the calling thread and tasks 1..n-1 on
workers it pins one to a core (worker i to the (i+1)-th CPU of its list: CPUs sorted by maximum
frequency, then by number), while configuring the pool hands the caller every CPU. The OS may
then leave the caller on a worker's core: caller and worker share that core while another idles,
and a 2-thread model runs at nearly 1-thread speed for as long as the OS keeps it there. Measured
(AMD Zen 4, 2 cores, ResNet-18 at 60/128 kept, 20 calls a block, 3 blocks each): a caller that
starts a call on the worker's core stays there, 17.6-19.7 ms a call (median of a block) against
10.2-11.2 ms when it starts on the other core; pinned as below, 10.3-11.2 ms from either core. How
often the OS leaves it there depends on what else ran: in interleaved benchmarks (PyTorch, ONNX
Runtime and OpenVINO between our blocks) the medians pinned and free agreed within noise (10.11
vs 10.04 ms). ``TVM_BIND_THREADS=0`` (nothing pinned) made it slower still: 11.0-11.3 ms blocks.

How: a call that starts on a busy worker's core (``sched_getcpu``, tens of nanoseconds) narrows
the calling thread's CPU mask, for its duration, to the CPUs it may use minus the busy workers'
cores, and restores the mask it had afterwards. Only then: narrowing and restoring the mask on
every call cost more than the two system calls (15 us) and moved the thread between cores each
time: MobileNetV1 called back to back, 20 blocks of 10, took 3.31 ms a call (median of block
medians) pinned every call against 3.15 ms unpinned (Zen 4, 2 threads). Where ``sched_getcpu`` is
not available every call is pinned. It does nothing when the model runs on one
thread, when TVM does not pin its workers (``TVM_BIND_THREADS`` other than 1, or a pool larger
than the machine's CPUs), when the caller's mask holds no CPU but the workers' (a process the
user pinned there: their choice stands), and off Linux. ``SUBP_FX_PIN_CALLER=0`` turns it off.
Each Python thread has its own TVM pool whose workers are pinned to the same cores, so several
threads calling models at once share those cores whatever this does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

OPT_OUT_VARIABLE = "SUBP_FX_PIN_CALLER"


def _max_frequency_khz(cpu: int) -> int:
    """What TVM sorts its CPU list by: cpuinfo_max_freq, 0 when the file is absent (virtual
    machines often lack it), -1 when it is unreadable as a number."""
    try:
        text = Path(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq").read_text()
    except OSError:
        return 0
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return -1


def tvm_cpu_order(cpu_count: int | None = None) -> list[int]:
    """CPUs in the order TVM's pool assigns them (``InitSortedOrder``: all the machine's CPUs by
    maximum frequency, fastest first, ties by number); the caller's task is first, worker i takes
    position i + 1."""
    count = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return sorted(range(count), key=lambda cpu: (-_max_frequency_khz(cpu), cpu))


def tvm_pins_workers(pool_size: int, cpu_count: int | None = None) -> bool:
    """Whether TVM pins a pool of ``pool_size`` threads' workers to cores (its kBig mode)."""
    bind = os.environ.get("TVM_BIND_THREADS")
    if bind is not None and bind.strip() != "1":
        return False
    count = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return pool_size <= count


def busy_worker_cpus(threads: int, order: list[int]) -> frozenset[int]:
    """The cores of the workers that run tasks 1..threads-1 of a kernel on ``threads`` threads."""
    return frozenset(order[1:threads])


def caller_cpus(allowed: frozenset[int], threads: int, order: list[int]) -> frozenset[int] | None:
    """The CPUs the caller should keep to while a model runs on ``threads`` threads: ``allowed``
    less the busy workers' cores; None when there is nothing to change (one thread, no worker
    core among ``allowed``, or nothing left)."""
    if threads < 2:
        return None
    busy = busy_worker_cpus(threads, order)
    free = allowed - busy
    if not free or free == allowed:
        return None
    return free


def _sched_getcpu():
    """libc's ``sched_getcpu`` (the CPU the calling thread runs on), or None where there is none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        getcpu = libc.sched_getcpu
    except (OSError, AttributeError):
        return None
    getcpu.restype = ctypes.c_int
    getcpu.argtypes = []
    return getcpu


class CallerPinning:
    """``pin(threads, pool_size)`` before a run returns the mask to give back to ``restore`` (None:
    nothing was changed). Decides once per process whether pinning applies at all."""

    def __init__(self) -> None:
        self.enabled = os.environ.get(OPT_OUT_VARIABLE, "1").strip().lower() not in ("0", "false", "no", "off")
        self._order: list[int] | None = None
        self._free: dict[tuple[frozenset[int], int], frozenset[int] | None] = {}
        self._busy_cpus: dict[int, frozenset[int]] = {}
        self._current_cpu = _sched_getcpu()

    def _busy(self, threads: int) -> frozenset[int]:
        if threads not in self._busy_cpus:
            self._busy_cpus[threads] = busy_worker_cpus(threads, self._order)
        return self._busy_cpus[threads]

    def _supported(self) -> bool:
        return hasattr(os, "sched_getaffinity") and hasattr(os, "sched_setaffinity")

    def pin(self, threads: int, pool_size: int) -> frozenset[int] | None:
        if not self.enabled or threads < 2 or not self._supported():
            return None
        if not tvm_pins_workers(pool_size):
            return None
        if self._order is None:
            self._order = tvm_cpu_order()
        if self._current_cpu is not None and self._current_cpu() not in self._busy(threads):
            return None  # not on a worker's core: nothing to move (module docstring)
        allowed = frozenset(os.sched_getaffinity(0))
        key = (allowed, threads)
        if key not in self._free:
            self._free[key] = caller_cpus(allowed, threads, self._order)
        free = self._free[key]
        if free is None:
            return None
        try:
            os.sched_setaffinity(0, free)
        except OSError:  # a cgroup changed under us: run as TVM left the caller
            return None
        return allowed

    def restore(self, previous: frozenset[int] | None) -> None:
        if previous is None:
            return
        try:
            os.sched_setaffinity(0, previous)
        except OSError:
            pass


caller_pinning = CallerPinning()
