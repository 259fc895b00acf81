"""Side-by-side latency measurement: every contender in one process, same inputs, same threads,
runs interleaved so drift in machine load hits all of them alike.

Nothing here imports TVM: contenders are plain callables. PyTorch baselines are built here;
compiled models come from ``subp_fx.codegen``.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one contender over ``iters`` timed runs, milliseconds per batch."""

    name: str
    batch: int
    iters: int
    median_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    throughput_per_s: float
    # every timed run in the order taken (blocks of ``block`` consecutive runs): what a reader
    # needs to tell a slow block from a slow engine
    samples_ms: tuple[float, ...] = ()

    def as_dict(self) -> dict:
        return asdict(self)


def _stats(name: str, batch: int, samples_ms: list[float]) -> LatencyStats:
    ordered = np.sort(np.asarray(samples_ms))
    median = float(statistics.median(samples_ms))
    return LatencyStats(
        name=name,
        batch=batch,
        iters=len(samples_ms),
        median_ms=median,
        mean_ms=float(ordered.mean()),
        p90_ms=float(np.percentile(ordered, 90)),
        p99_ms=float(np.percentile(ordered, 99)),
        min_ms=float(ordered[0]),
        throughput_per_s=1000.0 * batch / median,
        samples_ms=tuple(float(sample) for sample in samples_ms),
    )


def measure_interleaved(
    contenders: dict[str, Callable[[], object]],
    batch: int,
    warmup: int = 5,
    iters: int = 30,
    block: int = 5,
    settle_s: float = 0.05,
    seed: int = 0,
) -> dict[str, LatencyStats]:
    """Run each contender ``warmup`` times, then ``iters`` timed runs each, taken in rounds: per
    round every contender (in an order shuffled afresh each round, from ``seed``) does one
    untimed run and then ``block`` timed ones. Returns per-contender latency statistics.

    Why blocks and not single alternating calls: a runtime that just returned keeps its worker
    threads spinning for a while (PyTorch's OpenMP pool, TVM's pool), so a call timed right after
    another runtime's measures the other's idle spinning too. ``settle_s`` of sleep and one
    untimed call at each switch let that die down; shuffling the order spreads slow machine drift
    over every contender and gives each a different predecessor from round to round (a rotation
    always puts the same engine before it).
    """
    if iters < 1 or warmup < 0 or block < 1:
        raise ValueError(
            f"need iters >= 1, warmup >= 0 and block >= 1, got iters={iters}, warmup={warmup}, block={block}"
        )
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    order = random.Random(seed)
    while any(len(samples[name]) < iters for name in names):
        for name in order.sample(names, len(names)):
            wanted = min(block, iters - len(samples[name]))
            if wanted <= 0:
                continue
            time.sleep(settle_s)
            contenders[name]()
            for _ in range(wanted):
                started = time.perf_counter()
                contenders[name]()
                samples[name].append(1000.0 * (time.perf_counter() - started))
    return {name: _stats(name, batch, samples[name]) for name in names}


def torch_eager(model: nn.Module, example: torch.Tensor) -> Callable[[], object]:
    model = model.eval()

    def run():
        with torch.inference_mode():
            return model(example)

    return run


def torch_compiled(
    model: nn.Module, example: torch.Tensor, autocast: torch.dtype | None = None
) -> Callable[[], object]:
    """``torch.compile`` (inductor) with freezing: weights become constants, BN folds into convs.
    The fastest PyTorch CPU path measured on this machine. ``autocast``: run under
    ``torch.autocast("cpu", dtype=autocast)`` (output cast back to float32)."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    compiled = torch.compile(model.eval())

    def run():
        with torch.inference_mode():
            if autocast is None:
                return compiled(example)
            with torch.autocast("cpu", dtype=autocast):
                return compiled(example).float()

    run()  # compile outside the timed region
    return run


def torch_compiled_bf16(model: nn.Module, example: torch.Tensor) -> Callable[[], object]:
    """:func:`torch_compiled` under ``torch.autocast("cpu", dtype=torch.bfloat16)``: what PyTorch
    documents for bf16 inference on CPUs (convs and linears in bf16 through oneDNN, on
    ``vdpbf16ps`` where the CPU has avx512_bf16). A contender only beside a bf16 build."""
    return torch_compiled(model, example, autocast=torch.bfloat16)


def torch_script_frozen(model: nn.Module, example: torch.Tensor) -> Callable[[], object]:
    """Traced + frozen TorchScript (deprecated upstream, still what many deploy)."""
    with torch.inference_mode():
        scripted = torch.jit.freeze(torch.jit.trace(model.eval(), example))

    def run():
        with torch.inference_mode():
            return scripted(example)

    return run


TORCH_BASELINES: dict[str, Callable[[nn.Module, torch.Tensor], Callable[[], object]]] = {
    "pytorch_eager_dense": torch_eager,
    "pytorch_compile_dense": torch_compiled,
    "pytorch_torchscript_dense": torch_script_frozen,
}
# PyTorch in a reduced precision, timed beside our builds of that precision: name -> (precision, build).
TORCH_REDUCED_BASELINES: dict[str, tuple[str, Callable[[nn.Module, torch.Tensor], Callable[[], object]]]] = {
    "pytorch_compile_bf16": ("bf16", torch_compiled_bf16),
}
