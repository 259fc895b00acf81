"""Keeping PyTorch's OpenMP threads from spinning on the cores a compiled model runs on.

Why: in one process, PyTorch's intra-op threads (GNU OpenMP on Linux) keep spinning after each
parallel region, for GOMP_SPINCOUNT = 300000 iterations of ``pause`` unless OMP_WAIT_POLICY is
set: some 3-15 ms depending on the CPU. A serving loop that preprocesses each image with torch and
then calls a compiled model therefore runs the model on cores those threads are burning. Measured
(Ice Lake server, 2 cores, ResNet-18 at 60/128 with torchvision's Resize/CenterCrop/Normalize
before each call): 17.4 ms per call against 13.2 ms for the model alone (ResNet-50 66/128: 40.6
against 36.1). Lowering the spinners' priority did not help (nice 19: 1.39x; SCHED_IDLE: 1.24x).

How, with the user changing nothing: libgomp shortens the spin to its "throttled" count (a few
microseconds) whenever it manages more threads than the process may use CPUs. So before each run,
:func:`quiet_torch_threads` runs one tiny torch op on one thread more than there are CPUs: its
threads end the region on the throttled spin and go to sleep at once, the user's spinning ones
included (the op wakes them first). Measured as above: 13.0 ms in the serving loop against 13.3
ms alone (ResNet-50: 36.8 against 36.1); the op itself takes 70-115 us. Torch's thread count is
restored at once; its own speed is unchanged.

It does nothing when torch is not imported (a deployment host without torch), when its threads
cannot spin (one thread, OMP_WAIT_POLICY=passive, GOMP_SPINCOUNT=0) or when torch's OpenMP is not
GNU's (macOS, Windows). ``SUBP_FX_QUIET_TORCH_THREADS=0`` turns it off. Never imports torch.
libgomp keeps one pool per calling thread: torch work done on another Python thread than the one
calling the model spins in that thread's pool, which this does not reach.
"""

from __future__ import annotations

import os
import sys
import threading
import time

# at::parallel_for's grain: an op gives each thread at least this many elements
_TORCH_GRAIN = 32768
OPT_OUT_VARIABLE = "SUBP_FX_QUIET_TORCH_THREADS"


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def torch_threads_may_spin(torch) -> bool:
    """Whether ``torch``'s intra-op threads are GNU OpenMP threads that spin after a region."""
    if os.environ.get(OPT_OUT_VARIABLE, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if os.environ.get("OMP_WAIT_POLICY", "").strip().lower() == "passive":
        return False
    if os.environ.get("GOMP_SPINCOUNT", "").strip() in ("0",):
        return False
    if not sys.platform.startswith("linux") or torch.get_num_threads() < 2:
        return False
    if "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return False
    return _libgomp_loaded()


def _libgomp_loaded() -> bool:
    """Whether GNU OpenMP (libgomp, which Linux torch wheels bundle) is mapped into this process."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line for line in maps)
    except OSError:
        return False


# Calls closer than this to the previous run's end skip the quieting: torch cannot have done much
# in between, and back to back the quieting op itself sometimes cost ResNet-18 0.9 ms of its 12 ms
# (bimodal across processes; never in the serving loop, where it saves 4 ms).
BACK_TO_BACK_S = 0.001


class TorchThreadQuieter:
    """Callable before a run (``after_run`` once it returns); see the module docstring. Decides
    once per process whether torch can spin."""

    def __init__(self) -> None:
        self.enabled = True  # False: do nothing (what every version before did; for comparisons)
        self._decided = False
        self._active = False
        self._buffer = None
        self._last_run_end = threading.local()

    def after_run(self) -> None:
        self._last_run_end.seconds = time.perf_counter()

    def __call__(self) -> bool:
        """Put torch's spinning OpenMP threads to sleep; True when it did anything."""
        torch = sys.modules.get("torch")
        if torch is None or not self.enabled:
            return False
        last = getattr(self._last_run_end, "seconds", None)
        if last is not None and time.perf_counter() - last < BACK_TO_BACK_S:
            return False
        if not self._decided:
            self._active = torch_threads_may_spin(torch)
            self._decided = True
        if not self._active:
            return False
        threads = torch.get_num_threads()
        if threads < 2:
            return False
        oversubscribed = max(threads, _cpus()) + 1
        if self._buffer is None or self._buffer.numel() < oversubscribed * _TORCH_GRAIN:
            self._buffer = torch.empty(oversubscribed * _TORCH_GRAIN, dtype=torch.uint8)
        torch.set_num_threads(oversubscribed)
        try:
            self._buffer.fill_(0)
        finally:
            torch.set_num_threads(threads)
        return True


quiet_torch_threads = TorchThreadQuieter()
