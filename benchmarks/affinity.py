"""Keeping the benchmark's calling thread off the TVM workers' cores.

TVM pins its pool's workers (worker i to the (i+1)-th core of its frequency-sorted list: with
equal frequencies, the (i+1)-th lowest-numbered CPU) and leaves the calling thread, which runs
task 0 of every parallel kernel, free to run anywhere. Whenever the OS leaves the caller on a
worker's core, as it did here after PyTorch's pool had run, caller and worker share that core
while the other idles: a 2-thread kernel of 0.05-0.5 ms then runs at 1-thread speed for whole
blocks of runs (seen in /proc/<tid>/schedstat: both threads on CPU 1, each waiting as long as it
ran). A compiled model's call does the same for its own duration (``subp_fx/codegen/runtime/
caller_affinity.py``, measured there on whole models); this module pins kernels timed outside a
compiled model for the whole benchmark.

Configuring the pool (``set_num_threads``) hands the caller every core again, so pin after it.
"""

from __future__ import annotations

import os


def caller_core() -> int:
    """The core TVM's pool leaves to the calling thread (its workers take the next ones)."""
    return min(os.sched_getaffinity(0))


def pin_caller() -> None:
    """Keep the calling thread on :func:`caller_core`. Create PyTorch's thread pool before the
    first call: threads inherit the affinity of the thread that creates them."""
    os.sched_setaffinity(0, {caller_core()})
