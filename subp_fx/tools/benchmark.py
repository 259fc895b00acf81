"""``subp-fx bench``: latency of a compiled artefact beside our dense build and PyTorch's dense
paths, interleaved in one process (``tools.latency``)."""

from __future__ import annotations

from pathlib import Path

import torch

from subp_fx.errors import ConfigError
from subp_fx.tools.artifact import DENSE_DIR, SUBP_MODEL_FILE, load_pytorch_model


def _contenders_for_batch(out_dir: Path, batch: int, threads: int | None):
    """(sparse, dense or None) compiled models for ``batch``: the artefact's own when its batch
    matches, otherwise both rebuilt for ``batch`` from the stored models with the same target."""
    from subp_fx.codegen.api import compile as compile_model
    from subp_fx.codegen.api import load_compiled

    sparse = load_compiled(out_dir, threads=threads)
    has_dense = (out_dir / DENSE_DIR).is_dir()
    if batch is None or batch == sparse.input_shape[0]:
        return sparse, load_compiled(out_dir / DENSE_DIR, threads=sparse.threads) if has_dense else None
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    shape = (batch, *sparse.input_shape[1:])
    target, threads = sparse.manifest.target, sparse.threads
    rebuilt = compile_model(load_pytorch_model(out_dir, SUBP_MODEL_FILE), shape, target=target, threads=threads)
    dense = compile_model(load_pytorch_model(out_dir), shape, target=target, threads=threads) if has_dense else None
    return rebuilt, dense


SPARSE_NAME = "subp_sparse"
DENSE_NAME = "subp_dense"

# What every field of `subp-fx bench --json` means (also printed by `subp-fx bench --explain`).
BENCH_FIELDS = {
    "results.<name>": "latency of one contender, ms per batch: median_ms, mean_ms, p90_ms, p99_ms, min_ms over iters timed runs; throughput_per_s = batch * 1000 / median_ms",
    "subp_sparse": "this compiled model (1xN block-sparse kernels)",
    "subp_dense": "the same weights compiled by subp-fx with every conv dense (same kernels, K = C_in)",
    "pytorch_eager_dense": "the same weights in PyTorch eager (pruned weights as zeros, batch norm unfolded)",
    "pytorch_compile_dense": "torch.compile (inductor) with torch._inductor.config.freezing = True",
    "pytorch_torchscript_dense": "torch.jit.trace + torch.jit.freeze",
    "macs_sparse / macs_dense": "multiply-accumulates per batch actually executed by the sparse / dense build (kernel tables)",
    "flop_ideal_speedup": "macs_dense / macs_sparse: the speed-up over our dense build if time were proportional to MACs",
    "flop_ideal_ms": "subp_dense median * macs_sparse / macs_dense",
    "speedup_vs.<name>": "<name> median / subp_sparse median (> 1: the sparse model is faster)",
    "threads": "TVM runtime threads and torch intra-op threads, both set to the same count",
}


def bench_compiled(
    out_dir: str | Path,
    threads: int | None = None,
    warmup: int = 10,
    iters: int = 50,
    torch_compile: bool = True,
    batch: int | None = None,
) -> dict:
    """Median / p90 / p99 latency of the sparse model beside our dense build and PyTorch's dense
    paths, interleaved in one process on the same input with the same thread count. ``batch``
    other than the artefact's recompiles both builds for it (the compiled batch is static)."""
    from subp_fx.tools.latency import TORCH_BASELINES, measure_interleaved

    out_dir = Path(out_dir)
    sparse, dense = _contenders_for_batch(out_dir, batch, threads)
    threads = sparse.threads
    torch.set_num_threads(threads)
    shape = tuple(sparse.input_shape)
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    array = example.numpy()
    contenders = {SPARSE_NAME: lambda: sparse(array)}
    macs_sparse = sum(entry.macs for entry in sparse.kernel_table)
    macs_dense = None
    if dense is not None:
        contenders[DENSE_NAME] = lambda: dense(array)
        macs_dense = sum(entry.macs for entry in dense.kernel_table)
    reference = load_pytorch_model(out_dir)
    for name, build in TORCH_BASELINES.items():
        if name == "pytorch_compile_dense" and not torch_compile:
            continue
        contenders[name] = build(reference, example)
    stats = measure_interleaved(contenders, batch=shape[0], warmup=warmup, iters=iters)
    sparse_median = stats[SPARSE_NAME].median_ms
    result = {
        "artefact": str(out_dir),
        "input_shape": list(shape),
        "batch": shape[0],
        "threads": {"tvm": threads, "torch": torch.get_num_threads()},
        "warmup": warmup,
        "iters": iters,
        "results": {name: value.as_dict() for name, value in stats.items()},
        "speedup_vs": {name: value.median_ms / sparse_median for name, value in stats.items() if name != SPARSE_NAME},
        "macs_sparse": macs_sparse,
        "macs_dense": macs_dense,
    }
    if macs_dense:
        result["flop_ideal_speedup"] = macs_dense / macs_sparse
        result["flop_ideal_ms"] = stats[DENSE_NAME].median_ms * macs_sparse / macs_dense
    return result


def format_bench(result: dict) -> str:
    from tabulate import tabulate

    rows = [
        [name, f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['throughput_per_s']:.1f}",
         "1.00x" if name == SPARSE_NAME else f"{result['speedup_vs'][name]:.2f}x"]
        for name, r in result["results"].items()
    ]
    if "flop_ideal_ms" in result:
        rows.append(["flop_ideal (sparse MACs at our dense speed)", f"{result['flop_ideal_ms']:.2f}", "", "", "",
                     f"{result['flop_ideal_speedup']:.2f}x vs subp_dense"])
    header = (
        f"input {tuple(result['input_shape'])}, threads: TVM {result['threads']['tvm']}, torch {result['threads']['torch']}; "
        f"{result['iters']} interleaved runs after {result['warmup']} warm-up runs each\n"
    )
    table = tabulate(rows, headers=["contender", "median ms", "p90 ms", "p99 ms", "images/s", "sparse speed-up"], tablefmt="github")
    return header + table
