"""Where a compiled model's time goes, measured inside the model: every kernel call of a real run.

Isolated, warm kernels (``benchmarks/per_layer.py``) say what a layer *can* do; they do not add
up to the model's latency, because in the model each kernel starts with the previous one's
output in cache and its own weights cold. Here the model itself runs, with a VM instrument (TVM's
``VirtualMachine.set_instrument``) timing each ``call_tir`` between the VM's before and after
callbacks, so every time is the kernel in place. The profile is checked against the model's
own, uninstrumented latency (``coverage``): the per-call times plus the VM's bookkeeping should
sum to it. Each call is also held against its limit (:mod:`limits`: its multiply-adds at this
machine's measured peak for its arithmetic, or its argument bytes at the measured streaming
rate, whichever is longer), and the calls below ``limits.EFFICIENT_SHARE`` of theirs are named.

Part of each callback's own cost falls inside the interval it times; that part is estimated as
the time measured around the cheapest VM builtin (``vm.builtin.null_value``, which does
nothing) and subtracted from every call (``callback_overhead_us``, reported); the instrumented
run's whole latency is reported too.

Each call is matched to the layer it computes through the kernel table: the i-th call of a
kernel name is the i-th layer, in execution order (``KernelEntry.call_order``), compiled to
that kernel name, counted anew in each sub-batch of a batch run in sub-batches (whose calls of
the sub-batch function itself are containers, not kernels: left out). Calls that are not
a conv or linear layer (layout changes, pooling, quantisation, elementwise ops) keep the kernel
name as their label.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass

import numpy as np
import tvm
from tvm import relax

from subp_fx.codegen.runtime.caller_affinity import caller_pinning
from subp_fx.codegen.runtime.compiled import CompiledModel, as_float32_array
from subp_fx.codegen.runtime.limits import EFFICIENT_SHARE, MachineLimits, measure_limits
from subp_fx.codegen.runtime.manifest import SUB_BATCH_FUNCTION
from subp_fx.codegen.runtime.torch_threads import quiet_torch_threads

# VM builtins (allocation, shape checks, views) are not kernels: summed as "vm" time.
_BUILTIN_PREFIX = "vm.builtin."


@dataclass(frozen=True)
class KernelCall:
    """One kernel call of the model, in execution order, with its median time over the runs."""

    index: int
    kernel: str
    layer: str | None
    kind: str  # the kernel table's kind (sparse / dense / depthwise / grouped), or "other"
    precision: str
    macs: int | None
    median_us: float
    # Bytes of the call's arguments (inputs, weights and output, each counted once), and its
    # limit (limits.MachineLimits.limit_us) with the bound that sets it; None when not measured.
    nbytes: int | None = None
    limit_us: float | None = None
    bound: str | None = None

    @property
    def gmacs_per_s(self) -> float | None:
        return None if not self.macs else self.macs / (self.median_us * 1e3)

    @property
    def share_of_limit(self) -> float | None:
        """limit / measured time: 1.0 is as fast as this machine allows."""
        return None if self.limit_us is None else self.limit_us / self.median_us


@dataclass(frozen=True)
class ModelProfile:
    """The calls, the VM's own time, and the model's uninstrumented median latency."""

    calls: list[KernelCall]
    vm_us: float
    instrumented_us: float
    latency_us: float
    runs: int
    callback_overhead_us: float = 0.0
    limits: MachineLimits | None = None

    @property
    def kernels_us(self) -> float:
        return sum(call.median_us for call in self.calls)

    @property
    def limits_us(self) -> float | None:
        """The sum of the calls' limits: the kernels' time were each at its limit."""
        return None if self.limits is None else sum(call.limit_us for call in self.calls)

    def below_limit(self, share: float = EFFICIENT_SHARE) -> list[KernelCall]:
        """The calls below ``share`` of their limit, the most time lost first."""
        slow = [call for call in self.calls if call.share_of_limit is not None and call.share_of_limit < share]
        return sorted(slow, key=lambda call: call.limit_us - call.median_us)

    @property
    def coverage(self) -> float:
        """(kernel time + VM bookkeeping) / the model's uninstrumented latency."""
        return (self.kernels_us + self.vm_us) / self.latency_us

    def to_json(self) -> dict:
        return {
            "runs": self.runs,
            "latency_us": self.latency_us,
            "instrumented_us": self.instrumented_us,
            "kernels_us": self.kernels_us,
            "vm_us": self.vm_us,
            "callback_overhead_us": self.callback_overhead_us,
            "coverage": self.coverage,
            "limits": None if self.limits is None else self.limits.to_json(),
            "limits_us": self.limits_us,
            "efficient_share": EFFICIENT_SHARE,
            "calls": [
                asdict(call) | {"gmacs_per_s": call.gmacs_per_s, "share_of_limit": call.share_of_limit}
                for call in self.calls
            ],
        }


def _layers_by_kernel(compiled: CompiledModel) -> dict[str, list]:
    by_kernel: dict[str, list] = defaultdict(list)
    ordered = sorted(
        enumerate(compiled.kernel_table),
        key=lambda pair: pair[1].call_order if pair[1].call_order is not None else pair[0],
    )
    for _, entry in ordered:
        by_kernel[entry.kernel].append(entry)
    return by_kernel


def _tensor_bytes(value) -> int:
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is None or dtype is None:
        return 0
    return int(np.prod([int(extent) for extent in shape], dtype=np.int64)) * np.dtype(str(dtype)).itemsize


class _ByteCounter:
    """The VM instrument of one untimed run: the bytes of each call's tensor arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, func, symbol: str, before: bool, ret, *args) -> int:  # noqa: ARG002 (the VM's signature)
        if before:
            self.calls.append((str(symbol), sum(_tensor_bytes(arg) for arg in args)))
        return 0


class _CallTimer:
    """The VM instrument: records (symbol, ns) for every call of one run."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self._started = 0

    def __call__(self, func, symbol: str, before: bool, ret, *args) -> int:  # noqa: ARG002 (the VM's signature)
        now = time.perf_counter_ns()
        if before:
            self._started = now
        else:
            self.calls.append((str(symbol), now - self._started))
        return 0  # VMInstrumentReturnKind.kNoOp: go on


def profile_model(
    compiled: CompiledModel, x=None, runs: int = 20, warmup: int = 5, limits: bool = True
) -> ModelProfile:
    """Run ``compiled`` ``runs`` times on ``x`` (default: seeded normal input) with every kernel
    call timed, and ``runs`` times without (the latency the profile is checked against); medians.
    ``limits``: also measure this machine's limits for the model's target and threads
    (:func:`limits.measure_limits`, about a second, before and again after the timed runs, the
    faster of each rate kept) and hold each call against its own."""
    array = (
        as_float32_array(x)
        if x is not None
        else np.random.default_rng(0).standard_normal(compiled.input_shape).astype(np.float32)
    )
    data = tvm.runtime.tensor(array)
    compiled._apply_threads()
    plain = relax.VirtualMachine(tvm.runtime.load_module(str(compiled._library)), tvm.cpu())["main"]
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(compiled._library)), tvm.cpu())
    counter = _ByteCounter()
    vm.set_instrument(counter)
    vm["main"](data)
    machine = measure_limits(compiled.target, compiled.threads) if limits else None
    timer = _CallTimer()
    vm.set_instrument(timer)
    instrumented = vm["main"]
    plain_ns, instrumented_ns, per_run = [], [], []
    for run in range(warmup + runs):
        # Alternate whole runs of the two, so that load drift hits both alike.
        for function, totals in ((plain, plain_ns), (instrumented, instrumented_ns)):
            timer.calls = []
            quiet_torch_threads()
            previous_cpus = compiled.pin_caller()  # as a call of the model does
            started = time.perf_counter_ns()
            function(data)
            elapsed = time.perf_counter_ns() - started
            caller_pinning.restore(previous_cpus)
            if run >= warmup:
                totals.append(elapsed)
                if function is instrumented:
                    per_run.append(list(timer.calls))
    if limits:  # again after the runs: a probe that hit a slow moment of the machine is replaced
        machine = measure_limits(compiled.target, compiled.threads, again=True)
    by_kernel = _layers_by_kernel(compiled)
    seen: dict[str, int] = defaultdict(int)
    medians = [statistics.median(run[index][1] for run in per_run) / 1e3 for index in range(len(per_run[0]))]
    builtins = [us for (symbol, _), us in zip(per_run[0], medians) if symbol.startswith(_BUILTIN_PREFIX)]
    overhead = min(builtins, default=0.0)
    calls, vm_us = [], 0.0
    for (symbol, _), measured, (_, nbytes) in zip(per_run[0], medians, counter.calls):
        median_us = max(measured - overhead, 0.0)
        if symbol.startswith(_BUILTIN_PREFIX):
            vm_us += median_us
            continue
        if symbol == SUB_BATCH_FUNCTION:
            continue
        entries = by_kernel.get(symbol, [])
        entry = entries[seen[symbol] % len(entries)] if entries else None
        seen[symbol] += 1
        macs, precision = (entry.work_macs // entry.calls, entry.precision) if entry else (None, "-")
        limit_us, bound = machine.limit_us(macs, precision, nbytes) if machine else (None, None)
        calls.append(
            KernelCall(
                index=len(calls),
                kernel=symbol,
                layer=entry.layer if entry else None,
                kind=entry.kind if entry else "other",
                precision=precision,
                macs=macs,
                median_us=median_us,
                nbytes=nbytes,
                limit_us=limit_us,
                bound=bound,
            )
        )
    return ModelProfile(
        calls=calls,
        vm_us=vm_us,
        instrumented_us=statistics.median(instrumented_ns) / 1e3,
        latency_us=statistics.median(plain_ns) / 1e3,
        runs=runs,
        callback_overhead_us=overhead,
        limits=machine,
    )


def _limit_cells(call: KernelCall) -> tuple[str, str, str]:
    if call.limit_us is None:
        return ("", "", "")
    return (f"{call.limit_us:.1f}", f"{100 * call.share_of_limit:.0f}%", call.bound)


def format_profile(profile: ModelProfile, top: int | None = None, named: int = 8) -> str:
    """A plain-text table of the calls (slowest first when ``top`` is given), then the totals and,
    where limits were measured, the calls below ``EFFICIENT_SHARE`` of theirs (the ``named`` that
    lose the most time by name)."""
    calls = sorted(profile.calls, key=lambda call: -call.median_us)[:top] if top else profile.calls
    header = ("#", "layer / kernel", "kind", "precision", "us", "share", "GMAC/s")
    with_limits = profile.limits is not None
    rows = [header + (("limit us", "of limit", "bound") if with_limits else ())]
    for call in calls:
        rate = call.gmacs_per_s
        rows.append(
            (
                str(call.index),
                call.layer or call.kernel,
                call.kind,
                call.precision,
                f"{call.median_us:.1f}",
                f"{100 * call.median_us / profile.latency_us:.1f}%",
                "" if rate is None else f"{rate:.1f}",
            )
            + (_limit_cells(call) if with_limits else ())
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    convs = sum(call.median_us for call in profile.calls if call.macs)
    lines.append(
        f"model {profile.latency_us / 1e3:.3f} ms uninstrumented (median of {profile.runs}); kernels "
        f"{profile.kernels_us / 1e3:.3f} ms ({convs / 1e3:.3f} ms in conv/linear layers) + VM "
        f"{profile.vm_us / 1e3:.3f} ms = {100 * profile.coverage:.1f}% of it (each call less "
        f"{profile.callback_overhead_us:.2f} us of callback); instrumented run {profile.instrumented_us / 1e3:.3f} ms"
    )
    if with_limits:
        slow = profile.below_limit()
        lost = sum(call.median_us - call.limit_us for call in slow)
        names = ", ".join(
            f"{call.layer or call.kernel} {100 * call.share_of_limit:.0f}% ({call.bound})" for call in slow[:named]
        )
        lines.append(profile.limits.describe())
        lines.append(
            f"the kernels at their limits would take {profile.limits_us / 1e3:.3f} ms; "
            f"{len(slow)} of {len(profile.calls)} calls run below {100 * EFFICIENT_SHARE:.0f}% of their limit, "
            f"{lost / 1e3:.3f} ms above it" + (f"; most time lost: {names}" if names else "")
        )
    return "\n".join(lines)


__all__ = ["KernelCall", "ModelProfile", "format_profile", "profile_model"]
