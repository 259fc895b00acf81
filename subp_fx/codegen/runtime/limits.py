"""The most this machine can do, measured where a model runs: the limits its profile is held against.

A kernel call's *limit* is the time an ideal kernel would take for it on this machine, target and
thread count: its multiply-adds at the peak rate of the arithmetic it does, or its bytes (every
argument read or written once) at the streaming rate of a working set that size, whichever is
longer (a roofline). A call at 100% of its limit cannot be made faster without doing less work or
moving fewer bytes; the profile names the calls below :data:`EFFICIENT_SHARE` of theirs.

The rates are not taken from a datasheet but measured in the profiling process with three small
TVM kernels compiled for the model's own target and run on its thread pool (so a target with a
smaller ISA than the host, e.g. ``-mcpu=haswell`` on an AVX-512 machine, is held against its own
ISA, and a virtual machine's real speed is what counts):

- fp32: :data:`CHAINS` independent FMA chains per thread on registers (float32 x the ISA's lanes);
- int8: the same with the target's int8 dot step (:mod:`int8_dot`: ``vpdpbusd`` on VNNI, the
  ``pmaddwd`` pairs or plain int32 elsewhere), 4 multiply-adds per int32 lane and step;
- bf16 (targets with avx512_bf16 only): the same with ``vdpbf16ps`` (:mod:`bf16_dot`), 2
  multiply-adds per float32 lane and step;
- bandwidth: a parallel vector copy of working sets from 32 KiB to 32 MiB (bytes read plus
  written per second), the best of several runs, so that each size streams from the cache level
  it fits.

Which arithmetic a layer does is its kernel table precision: ``int8/<dot path>`` convs and linears
use the int8 dot rate, ``bf16/<path>`` convs the bf16 rate; fp32 layers and the int8 depthwise
convs (which sum exact integers in float32 FMAs) the fp32 rate. Ops without multiply-adds (layout,
pooling, quantisation) have only a memory limit.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import tvm
from tvm import tirx
from tvm.target import Target
from tvm.tirx import ForKind

from subp_fx.codegen.kernels import bf16_dot
from subp_fx.codegen.kernels.int8_dot import WORD, accumulate, prepare_weights
from subp_fx.codegen.kernels.isa import bf16_path, int8_path, vector_isa
from subp_fx.codegen.runtime.kernel_table import INT8_DEPTHWISE_PRECISION

# A call at or above this share of its limit is efficient; the profile names the others.
EFFICIENT_SHARE = 0.85
# Independent accumulator chains per thread in the arithmetic probes: enough to cover the FMA
# latency (4 cycles) on two ports (8 in flight) with room; within every ISA's register file.
CHAINS = 12
# Probe steps per chain and thread: about 0.1 ms a run (each timing repeats runs for 50 ms).
STEPS = 20000
# Working-set sizes of the bandwidth probe, bytes read + written (a copy of half that size):
# 32 KiB (in L1) to 32 MiB (past the L2 of every core seen, in or past the L3).
BANDWIDTH_SIZES = tuple(32 * 1024 * 4**power for power in range(6))
COMPUTE = "compute"
MEMORY = "memory"


@dataclass(frozen=True)
class MachineLimits:
    """Measured peak rates for one target and thread count (all threads together).

    ``fp32_macs_per_us``: float32 multiply-adds per microsecond; ``int8_macs_per_us``: int8 ones
    on the target's dot path (``int8_path`` names it); ``bf16_macs_per_us``: bf16 ones
    (``vdpbf16ps``), None on a target without avx512_bf16; ``bandwidth``: (working-set bytes,
    bytes per microsecond) pairs, ascending in size.
    """

    target: str
    threads: int
    vector_isa: str
    int8_path: str
    fp32_macs_per_us: float
    int8_macs_per_us: float
    bandwidth: tuple[tuple[int, float], ...]
    bf16_macs_per_us: float | None = None

    def bytes_per_us(self, nbytes: int) -> float:
        """The streaming rate of the smallest measured working set that holds ``nbytes`` (the
        largest one's for bigger)."""
        sizes = [size for size, _ in self.bandwidth]
        index = min(bisect.bisect_left(sizes, nbytes), len(sizes) - 1)
        return self.bandwidth[index][1]

    def macs_per_us(self, precision: str) -> float:
        """The multiply-add rate of the arithmetic a layer of kernel table ``precision`` does."""
        if precision.startswith("int8/") and not precision.startswith(INT8_DEPTHWISE_PRECISION):
            return self.int8_macs_per_us
        if precision.startswith("bf16/") and self.bf16_macs_per_us is not None:
            return self.bf16_macs_per_us
        return self.fp32_macs_per_us

    def limit_us(self, macs: int | None, precision: str, nbytes: int) -> tuple[float, str]:
        """(the call's limit in microseconds, which bound sets it: "compute" or "memory")."""
        memory = nbytes / self.bytes_per_us(nbytes)
        compute = macs / self.macs_per_us(precision) if macs else 0.0
        return (compute, COMPUTE) if compute >= memory else (memory, MEMORY)

    def best_of(self, other: MachineLimits) -> MachineLimits:
        """Each rate the faster of this and ``other``'s, measured for the same target, threads and
        sizes: on a VM whose speed drifts, a probe that ran in a slow moment would otherwise put
        kernels that ran in a fast one above 100% of their limit."""
        if (other.target, other.threads, [size for size, _ in other.bandwidth]) != (
            self.target,
            self.threads,
            [size for size, _ in self.bandwidth],
        ):
            raise ValueError("best_of needs limits of the same target, thread count and sizes")
        return replace(
            self,
            fp32_macs_per_us=max(self.fp32_macs_per_us, other.fp32_macs_per_us),
            int8_macs_per_us=max(self.int8_macs_per_us, other.int8_macs_per_us),
            bf16_macs_per_us=None
            if self.bf16_macs_per_us is None or other.bf16_macs_per_us is None
            else max(self.bf16_macs_per_us, other.bf16_macs_per_us),
            bandwidth=tuple(
                (size, max(mine, theirs)) for (size, mine), (_, theirs) in zip(self.bandwidth, other.bandwidth)
            ),
        )

    def to_json(self) -> dict:
        return asdict(self) | {"bandwidth": [list(pair) for pair in self.bandwidth]}

    def describe(self) -> str:
        rates = ", ".join(f"{_size_text(size)} {rate / 1e3:.0f}" for size, rate in self.bandwidth)
        return (
            f"limits measured here ({self.threads} threads, {self.vector_isa}): "
            f"fp32 {self.fp32_macs_per_us / 1e3:.0f} GMAC/s, int8 {self.int8_macs_per_us / 1e3:.0f} GMAC/s "
            f"({self.int8_path}); "
            + (f"bf16 {self.bf16_macs_per_us / 1e3:.0f} GMAC/s; " if self.bf16_macs_per_us is not None else "")
            + f"copy GB/s by working set: {rates}"
        )


def _size_text(size: int) -> str:
    return f"{size // 1024} KiB" if size < 1024 * 1024 else f"{size // (1024 * 1024)} MiB"


def _arithmetic_probe(lanes: int, dtype: str, step, threads: int) -> tirx.PrimFunc:
    """``threads`` parallel tasks, each running CHAINS chains of STEPS ``step(acc, operand, word)``
    updates on registers (``operand``: a vector loaded once; ``word``: an int32 scalar that
    changes every step, so no step is loop-invariant); the chains go to ``out`` at the end so
    that nothing is dead code."""
    vector = f"{dtype}x{lanes}"
    seed = tirx.decl_buffer((lanes,), dtype, "seed")
    out = tirx.decl_buffer((threads, CHAINS * lanes), dtype, "out")
    task, index = tirx.Var("task", "int32"), tirx.Var("step", "int32")
    acc = tirx.decl_buffer((CHAINS * lanes,), dtype, "acc", scope="global")  # on the stack: registers
    operand, word = tirx.Var("operand", vector), tirx.Var("word", WORD)

    def chain(c):
        return tirx.Ramp(c * lanes, 1, lanes)

    init = [tirx.BufferStore(acc, seed[tirx.Ramp(0, 1, lanes)], [chain(c)]) for c in range(CHAINS)]
    steps = [tirx.Bind(word, index * 0x01030507 + task)]
    steps += [tirx.BufferStore(acc, step(acc[chain(c)], operand, word), [chain(c)]) for c in range(CHAINS)]
    loop = tirx.For(index, 0, STEPS, ForKind.SERIAL, tirx.SeqStmt(steps))
    stores = [tirx.BufferStore(out, acc[chain(c)], [task, chain(c)]) for c in range(CHAINS)]
    body = tirx.SeqStmt([tirx.AllocBuffer(acc), *init, tirx.Bind(operand, seed[tirx.Ramp(0, 1, lanes)]), loop, *stores])
    func = tirx.PrimFunc([seed, out], tirx.For(task, 0, threads, ForKind.PARALLEL, body))
    return func.with_attr("tirx.noalias", True)


def _fp32_probe(lanes: int, threads: int) -> tirx.PrimFunc:
    # one FMA per chain and step (operand is 1.0 at run time, unknown to the compiler)
    return _arithmetic_probe(lanes, "float32", lambda acc, operand, _word: acc * operand + operand, threads)


def _int8_probe(target: Target, threads: int) -> tuple[tirx.PrimFunc, int]:
    """The int8 kernels' step: one activation word (shared by every chain, as a pixel's word is
    shared by the vectors of its tile) against a weight vector prepared once."""
    path = int8_path(target)

    def step(acc, operand, word):
        return accumulate(path, acc, word, prepare_weights(path, operand))

    return _arithmetic_probe(path.lanes, WORD, step, threads), path.lanes


def _bf16_probe(threads: int) -> tirx.PrimFunc:
    """The bf16 kernel's step: a broadcast pair of activations (one word) against a weight vector."""

    def step(acc, operand, word):
        weights = tirx.reinterpret(f"int32x{bf16_dot.LANES}", operand)
        return bf16_dot.dot(acc, tirx.Broadcast(word, bf16_dot.LANES), weights)

    func = _arithmetic_probe(bf16_dot.LANES, "float32", step, threads)
    return func.with_body(bf16_dot.importing_dot(func.body))


def _copy_probe(elements: int, lanes: int, threads: int) -> tirx.PrimFunc:
    source = tirx.decl_buffer((elements,), "float32", "source")
    destination = tirx.decl_buffer((elements,), "float32", "destination")
    per_task = elements // threads
    task, index = tirx.Var("task", "int32"), tirx.Var("vector", "int32")
    at = tirx.Ramp(task * per_task + index * lanes, 1, lanes)
    body = tirx.For(index, 0, per_task // lanes, ForKind.SERIAL, tirx.BufferStore(destination, source[at], [at]))
    func = tirx.PrimFunc([source, destination], tirx.For(task, 0, threads, ForKind.PARALLEL, body))
    return func.with_attr("tirx.noalias", True)


def _best_seconds(function, arguments, budget_s: float = 0.05, repeats: int = 5) -> float:
    """The fastest of ``repeats`` timings, each the mean over enough calls to last ``budget_s``."""
    function(*arguments)
    started = time.perf_counter()
    function(*arguments)
    once = max(time.perf_counter() - started, 1e-7)
    calls = max(1, int(budget_s / once))
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            function(*arguments)
        best = min(best, (time.perf_counter() - started) / calls)
    return best


_MEASURED: dict[tuple[str, int], MachineLimits] = {}


def measure_limits(target: Target, threads: int, again: bool = False) -> MachineLimits:
    """The :class:`MachineLimits` of ``target`` on the current TVM thread pool of ``threads``
    threads (the caller sets it): about a second of compiling and timing, once per process for
    each (target, threads). ``again``: measure once more and keep, rate by rate, the faster of
    this and the earlier measurement (:meth:`MachineLimits.best_of`)."""
    key = (str(target), threads)
    if key in _MEASURED and not again:
        return _MEASURED[key]
    isa, path = vector_isa(target), int8_path(target)
    int8_func, int8_lanes = _int8_probe(target, threads)
    functions = {"fp32": _fp32_probe(isa.lanes, threads), "int8": int8_func}
    if bf16_path(target) is not None:
        functions["bf16"] = _bf16_probe(threads)
    step = isa.lanes * threads
    # float32 elements of each copy: a copy moves each one twice (read and written)
    copies = {f"copy{size}": max(step, size // 8 // step * step) for size in BANDWIDTH_SIZES}
    for name, elements in copies.items():
        functions[name] = _copy_probe(elements, isa.lanes, threads)
    module = tvm.compile(
        tvm.IRModule({name: f.with_attr("global_symbol", name) for name, f in functions.items()}), target
    )
    device = tvm.cpu()

    def arithmetic(name: str, dtype: str, lanes: int) -> float:
        seed = tvm.runtime.tensor(np.ones(lanes, dtype), device)
        out = tvm.runtime.empty((threads, CHAINS * lanes), dtype, device)
        return _best_seconds(module[name], (seed, out))

    fp32_macs = threads * CHAINS * STEPS * isa.lanes / (arithmetic("fp32", "float32", isa.lanes) * 1e6)
    int8_macs = threads * CHAINS * STEPS * 4 * int8_lanes / (arithmetic("int8", WORD, int8_lanes) * 1e6)
    bf16_macs = None
    if "bf16" in functions:
        lanes = bf16_dot.LANES
        bf16_macs = threads * CHAINS * STEPS * 2 * lanes / (arithmetic("bf16", "float32", lanes) * 1e6)
    bandwidth = []
    for name, elements in copies.items():
        source = tvm.runtime.tensor(np.ones(elements, np.float32), device)
        destination = tvm.runtime.empty((elements,), "float32", device)
        seconds = _best_seconds(module[name], (source, destination))
        bandwidth.append((8 * elements, 8 * elements / (seconds * 1e6)))
    limits = MachineLimits(
        target=str(target),
        threads=threads,
        vector_isa=isa.name,
        int8_path=path.name,
        fp32_macs_per_us=fp32_macs,
        int8_macs_per_us=int8_macs,
        bandwidth=tuple(bandwidth),
        bf16_macs_per_us=bf16_macs,
    )
    if key in _MEASURED:
        limits = _MEASURED[key].best_of(limits)
    _MEASURED[key] = limits
    return limits


__all__ = ["COMPUTE", "EFFICIENT_SHARE", "MEMORY", "MachineLimits", "measure_limits"]
