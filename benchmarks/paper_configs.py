"""Latency of the SUBP paper's five configurations, compiled by subp-fx, beside dense baselines.

For each configuration (random weights, random uniform 1xN masks at the paper's prune rate --
speed does not depend on which blocks are kept, only on how many), at each batch size:
compile the sparse model and its dense twin with subp-fx, then for each thread count run
`subp-fx bench`'s interleaved comparison: our sparse build, our dense build, PyTorch eager,
torch.compile (inductor, freezing on), frozen TorchScript, and ONNX Runtime and OpenVINO where
installed (fp32; OpenVINO's own default precision as a separate, labelled column where it is not
fp32), all dense engines on the same weights, same input, same thread count. Writes a markdown
table and the raw JSON.

    python benchmarks/paper_configs.py                       # everything (about an hour on 2 cores)
    python benchmarks/paper_configs.py --configs resnet18-n16 --batches 1 --threads 2
    python benchmarks/paper_configs.py --precision int8      # int8 builds, int8 peers (-> paper_configs_int8.*)
    python benchmarks/paper_configs.py --input-group 4       # fp32, masks in groups of 4 (-> paper_configs_g4.*)
    python benchmarks/paper_configs.py --precision int8 --input-group 16   # (-> paper_configs_int8_g16.*)
    python benchmarks/paper_configs.py --precision bf16      # bf16 builds (avx512_bf16 CPUs) -> paper_configs_bf16.*
    python benchmarks/paper_configs.py --no-winograd --output benchmarks/results/paper_configs_direct

By default our fp32 builds run 3x3 stride-1 convs by Winograd F(4x4,3x3) (``kernels.winograd``);
``--no-winograd`` runs every conv on the direct kernel, the efficiency the FLOP ideal measures.

``--precision int8``: the masks keep input channels in aligned groups of 4
(``sparsity.input_group=4``, the kept count rounded to whole groups: ResNet-50's 66/128 pruned
keeps 64/128), both our builds are int8 calibrated on 8 batches of 16 synthetic images, and
ONNX Runtime's static int8 quantisation of the same weights (QDQ, per-channel, the same
calibration images) runs in ONNX Runtime and in OpenVINO beside the fp32 peers.
``--input-group 4`` gives fp32 builds those masks too: their 1x1 convs then run on the grouped
kernel (``kernels.grouped_pointwise``, AVX-512 targets), the same FLOPs as G=1. ``--input-group 16``
with int8 keeps runs of 16 channels, which the int8 1x1 convs of long reductions run on the grouped
int8 kernel (``kernels.grouped_pointwise_int8``, AVX-512 VNNI targets).
``--precision bf16`` (CPUs with avx512_bf16): masks in groups of 4 as for int8 (the bf16 kernel
reads aligned pairs of input channels, so G=1 masks would do up to twice their MACs), both our
builds bf16; the bf16 peer is OpenVINO at its default precision, bf16 on such a CPU.

Run it on an otherwise idle machine: every contender shares the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_flags, cpu_model_name  # benchmarks/ is on sys.path when this script runs
from tables import latency_table

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"

CONFIGS = {
    "resnet18-n16": "resnet18-n16.yaml",
    "resnet34-n16": "resnet34-n16.yaml",
    "resnet50-2.0g-n16": "resnet50-2.0g-n16.yaml",
    "resnet50-1.0g-n16": "resnet50-1.0g-n16.yaml",
    "mobilenetv1-n16": "mobilenetv1-n16.yaml",
    "resnet18-n32": "resnet18-n32.yaml",
}


def describe_machine() -> dict:
    import importlib.metadata

    import torch

    from subp_fx.codegen.target import host_cpu_name

    flags = cpu_flags()
    peers = {}
    for package in ("onnxruntime", "openvino"):
        try:
            peers[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            peers[package] = None
    return {
        "cpu": cpu_model_name(),
        "llvm_cpu": host_cpu_name(),
        "vector_isa": "avx512" if "avx512f" in flags else ("avx2+fma" if "avx2" in flags else "other"),
        "avx512_bf16": "avx512_bf16" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "tvm": __import__("tvm").__version__,
        **peers,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def run_config(
    name: str,
    batch: int,
    thread_counts: list[int],
    warmup: int,
    iters: int,
    torch_compile: bool,
    precision: str = "fp32",
    input_group: int = 1,
    winograd: bool = True,
) -> list[dict]:
    from subp_fx.codegen.defaults import DEFAULT_TARGET
    from subp_fx.tools.artifact import compile_to_directory, load_compile_source
    from subp_fx.tools.benchmark import bench_compiled
    from subp_fx.tools.calibration_spec import CalibrationSpec

    int8 = precision == "int8"
    overrides = (f"sparsity.input_group={input_group}",) if input_group > 1 else ()
    source = load_compile_source(str(REPO / "recipes" / CONFIGS[name]), batch=batch, recipe_overrides=overrides)
    calibration = CalibrationSpec("synthetic") if int8 else None
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / name
        started = time.perf_counter()
        compile_to_directory(
            source,
            out,
            target=DEFAULT_TARGET,
            threads=max(thread_counts),
            precision=precision,
            calibration=calibration,
            winograd=winograd,
        )
        compile_seconds = time.perf_counter() - started
        rows = []
        for threads in thread_counts:
            result = bench_compiled(out, threads=threads, warmup=warmup, iters=iters, torch_compile=torch_compile)
            result.update(
                config=name,
                prune_rate=source.imposed_prune_rate,
                input_group=source.recipe.sparsity.input_group,
                winograd=winograd,
                compile_seconds_sparse_and_dense=compile_seconds,
            )
            rows.append(result)
            print(
                f"{name} batch {batch} threads {threads}: "
                + ", ".join(f"{contender} {r['median_ms']:.2f} ms" for contender, r in result["results"].items()),
                flush=True,
            )
        return rows


def default_input_group(precision: str) -> int:
    """G of the masks a precision is measured with unless told: 4 for int8 (its kernel reads groups
    of 4) and bf16 (pairs), 1 -- the paper's -- for fp32."""
    return 4 if precision in ("int8", "bf16") else 1


def input_group_suffix(precision: str, input_group: int) -> str:
    """What result files of ``input_group`` add to their name: nothing for the precision's default."""
    return "" if input_group == default_input_group(precision) else f"_g{input_group}"


def machine_line(machine: dict) -> str:
    peers = ", ".join(f"{name} {machine[name]}" for name in ("onnxruntime", "openvino") if machine.get(name))
    return (
        f"Machine: {machine['cpu']} ({machine['llvm_cpu']}, {machine['vector_isa']}"
        f"{', avx512_bf16' if machine.get('avx512_bf16') else ''}), {machine['logical_cpus']} logical CPUs; "
        f"torch {machine['torch']}, TVM {machine['tvm']}{', ' + peers if peers else ''}, Python {machine['python']}; "
        f"{machine['date']}."
    )


def _algorithm_note(rows: list[dict]) -> str:
    """How our builds ran their 3x3 stride-1 convs (``--no-winograd``)."""
    if any(row.get("winograd", False) for row in rows):
        return (
            "Our builds (sparse and dense) run their fp32 3x3 stride-1 convs of at least 16 output tiles and "
            "12 kept channels by Winograd F(4x4,3x3) (`kernels.winograd`: 4x fewer multiply-adds than the "
            "direct conv the FLOP ideal counts, which is why a ratio to a peer can exceed it); every other "
            "conv, and every conv of the peers, runs directly."
        )
    return "Every conv of our builds runs on the direct kernel (`--no-winograd`)."


def markdown(rows: list[dict], machine: dict) -> str:
    group = max(row.get("input_group", 1) for row in rows)
    lines = [
        machine_line(machine),
        "Median latency in ms per batch (interleaved blocks, same input and thread count for every contender; "
        "TVM, torch, ONNX Runtime and OpenVINO threads equal). Random uniform masks at the paper's prune rates"
        + (
            f" in aligned groups of {group} input channels (`sparsity.input_group: {group}`; kept counts rounded "
            "to whole groups)"
            if group > 1
            else ""
        )
        + ". Each column's precision is in its header; ratios are against the fastest dense engine that is not "
        "ours and computes in our precision. " + _algorithm_note(rows),
        "",
        latency_table(rows, "config", lambda row: row["config"]),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--no-torch-compile", action="store_true")
    parser.add_argument("--precision", choices=("fp32", "int8", "bf16"), default="fp32")
    parser.add_argument(
        "--input-group",
        type=int,
        choices=(1, 4, 16),
        help="G, input channels per kept group of the masks (default: 4 for int8 and bf16, 1 -- the paper's -- fp32)",
    )
    parser.add_argument("--output", help="path prefix of the .md and .json written (default: by precision and G)")
    parser.add_argument(
        "--no-winograd", action="store_true", help="our builds run every conv on the direct kernel (no Winograd)"
    )
    args = parser.parse_args()
    args.input_group = args.input_group or default_input_group(args.precision)
    suffix = ("" if args.precision == "fp32" else f"_{args.precision}") + input_group_suffix(
        args.precision, args.input_group
    )
    args.output = args.output or str(RESULTS / ("paper_configs" + suffix))

    machine = describe_machine()
    rows = []
    for name in args.configs:
        for batch in args.batches:
            rows.extend(
                run_config(
                    name,
                    batch,
                    args.threads,
                    args.warmup,
                    args.iters,
                    not args.no_torch_compile,
                    args.precision,
                    args.input_group,
                    winograd=not args.no_winograd,
                )
            )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(rows, machine))
    print(markdown(rows, machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
