"""The TVM runtime's CPU thread pool: its default size, and setting the threads a kernel uses.

Why this module exists: TVM 0.27 sizes its pool once, when a thread first launches parallel
work, to ``TVM_NUM_THREADS`` (else ``OMP_NUM_THREADS``, else *half* the hardware threads, on the
assumption that x86 cores are hyper-threaded). On a 2-core machine with one thread per core that
default is a single thread, and parallel kernels silently run serially. The pool can later use
fewer threads than it was created with, never more.

So importing this module (``subp_fx.codegen`` does it first) sets ``TVM_NUM_THREADS`` to the
number of physical cores this process may run on, unless the user already set
``TVM_NUM_THREADS`` or ``OMP_NUM_THREADS``. :func:`set_num_threads` then chooses how many of the
pool's threads kernels use, through the runtime's ``runtime.config_threadpool``.

The pool is per calling OS thread (TVM keeps it thread-local): these functions configure the pool
of the Python thread that calls them.
"""

from __future__ import annotations

import os
from pathlib import Path

from subp_fx.codegen.errors import ThreadConfigError

POOL_SIZE_VARIABLES = ("TVM_NUM_THREADS", "OMP_NUM_THREADS")

# TVM's threading::ThreadGroup::AffinityMode kBig: use the fast cores, the main thread runs
# task 0. On x86 every core counts as "big".
_AFFINITY_BIG_CORES = 1
# Asking for more threads than any pool can hold returns the pool's real size.
_MORE_THREADS_THAN_ANY_POOL = 1 << 15


def physical_core_count() -> int:
    """Physical cores among the CPUs this process may run on (SMT siblings counted once)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return len(cpus)
        cores.add((package, core))
    return max(1, len(cores))


def _default_pool_size_to_physical_cores() -> None:
    if not any(name in os.environ for name in POOL_SIZE_VARIABLES):
        os.environ["TVM_NUM_THREADS"] = str(physical_core_count())


_default_pool_size_to_physical_cores()


def _runtime_function(name: str):
    import tvm

    return tvm.get_global_func(name)


def get_num_threads() -> int:
    """Threads the TVM runtime's pool runs parallel kernels with (for the calling thread)."""
    return int(_runtime_function("runtime.NumThreads")())


def thread_pool_capacity() -> int:
    """The most threads :func:`set_num_threads` can give: the pool's size, fixed at its creation."""
    current = get_num_threads()
    configure = _runtime_function("runtime.config_threadpool")
    configure(_AFFINITY_BIG_CORES, _MORE_THREADS_THAN_ANY_POOL)
    capacity = get_num_threads()
    configure(_AFFINITY_BIG_CORES, current)
    return capacity


def set_num_threads(n: int) -> None:
    """Run the calling thread's subsequent TVM parallel kernels on ``n`` threads.

    Raises :class:`ThreadConfigError` when ``n`` is not a positive integer or exceeds the pool's
    capacity (set ``TVM_NUM_THREADS`` before the first TVM kernel runs to get a larger pool).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ThreadConfigError(f"set_num_threads needs an integer n >= 1, got {n!r}")
    capacity = thread_pool_capacity()
    if n > capacity:
        raise ThreadConfigError(
            f"set_num_threads({n}) exceeds the TVM thread pool's {capacity} threads; the pool's size is "
            f"fixed when it is first used, from TVM_NUM_THREADS (now "
            f"{os.environ.get('TVM_NUM_THREADS', 'unset')}): valid n are 1..{capacity}, or set "
            f"TVM_NUM_THREADS={n} before the process runs its first TVM kernel"
        )
    _runtime_function("runtime.config_threadpool")(_AFFINITY_BIG_CORES, n)
    applied = get_num_threads()
    if applied != n:
        raise ThreadConfigError(f"the TVM runtime accepted set_num_threads({n}) but uses {applied} threads")
