"""The `make demo` run as a result file: what the README's demo paragraph quotes.

Reads a finished demo run (``runs/fashion-mnist-demo`` by default: ``summary.json``,
``metrics.jsonl``, ``compiled/manifest.json``, ``compiled-eval.json``, and where the int8 and
bf16 builds exist ``compiled-int8/`` / ``compiled-bf16/`` with their ``-eval.json``) and writes
``demo.json`` / ``demo.md`` with the machine described: top-1 after training, per-epoch time,
each pruned conv's kept channels per block-row, the compiled model's accuracy beside PyTorch's,
and the fp32, int8 and bf16 builds side by side: top-1 on the 10,000 test images and batch-1
latency, all models timed in this process, interleaved (``tools.latency.measure_interleaved``),
on the threads each was compiled for. (``make demo`` builds bf16 only on a CPU with avx512_bf16.)

Usage: ``python benchmarks/demo_result.py [RUN_DIR] [--out benchmarks/results] [--iters 200]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_configs import REPO, describe_machine  # noqa: E402

FP32_DIR = "compiled"
# The reduced-precision builds `make demo` may make, beside the fp32 one: precision -> directory.
REDUCED_DIRS = {"int8": "compiled-int8", "bf16": "compiled-bf16"}


def kernel_precisions(manifest: dict) -> dict[str, str]:
    """Layer -> the precision its kernel ran in (``fp32`` where the table has no column)."""
    convs = (entry for entry in manifest["kernels"] if entry.get("op") == "conv2d")
    return {entry["layer"]: entry.get("precision", "fp32") for entry in convs}


def side_by_side_latency(run: Path, iters: int, precisions: list[str]) -> dict[str, dict]:
    """Batch-1 latency of the fp32 build and the ``precisions`` builds, timed interleaved in this
    process on one seeded input (latency does not depend on the values)."""
    import numpy as np

    from subp_fx.codegen.api import load_compiled
    from subp_fx.tools.latency import measure_interleaved

    directories = {"fp32": FP32_DIR} | {name: REDUCED_DIRS[name] for name in precisions}
    models = {name: load_compiled(run / directory) for name, directory in directories.items()}
    shape = models["fp32"].input_shape
    image = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    stats = measure_interleaved(
        {name: (lambda model=model: model(image)) for name, model in models.items()},
        batch=shape[0],
        warmup=20,
        iters=iters,
    )
    return {name: {**stats[name].as_dict(), "threads": models[name].threads} for name in models}


def collect_reduced(run: Path, iters: int) -> dict[str, dict]:
    """Each reduced-precision build the run has (``REDUCED_DIRS``), beside the fp32 one: its
    accuracy, calibration, kernel precisions and latency (all builds timed together)."""
    present = [name for name, directory in REDUCED_DIRS.items() if (run / directory / "manifest.json").is_file()]
    if not present:
        return {}
    latency = side_by_side_latency(run, iters, present)
    builds = {}
    for name in present:
        manifest = json.loads((run / REDUCED_DIRS[name] / "manifest.json").read_text())
        evaluation = json.loads((run / f"{REDUCED_DIRS[name]}-eval.json").read_text())
        builds[name] = {
            "compiled": evaluation["compiled"],
            "max_abs_logit_diff_to_fp32_pytorch": evaluation.get("max_abs_logit_diff"),
            "calibration": manifest.get("calibration"),
            "kernel_precision": kernel_precisions(manifest),
            "latency": {"fp32": latency["fp32"], name: latency[name]},
        }
    return builds


def collect(run: Path, iters: int = 200) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    manifest = json.loads((run / "compiled" / "manifest.json").read_text())
    evaluation = json.loads((run / "compiled-eval.json").read_text())
    last = epochs[-1]
    return {
        "recipe": summary["recipe"],
        "epochs": summary["epochs"],
        "val_top1": summary["final_val"]["top1"],
        "best_top1": summary["best_top1"],
        "masks_final_and_uniform": summary["masks_final_and_uniform"],
        "seconds_per_epoch_median": statistics.median(epoch["seconds"] for epoch in epochs),
        "kept_per_row": {name: [layer["kept_per_row"], layer["in_channels"]] for name, layer in last["layers"].items()},
        "compiled": evaluation["compiled"],
        "pytorch": evaluation.get("pytorch"),
        "max_abs_logit_diff": evaluation.get("max_abs_logit_diff"),
        "compiled_threads": evaluation["threads"],
        "compiled_kernels": {entry["layer"]: entry["kind"] for entry in manifest["kernels"]},
        **collect_reduced(run, iters),
    }


def markdown(result: dict, machine: dict) -> str:
    kept = ", ".join(f"{name} {k}/{c}" for name, (k, c) in result["kept_per_row"].items())
    lines = [
        "# `make demo` (recipes/fashion-mnist-demo.yaml)",
        "",
        f"Machine: {machine['cpu']} ({machine['llvm_cpu']}, {machine['vector_isa']}), {machine['logical_cpus']} "
        f"logical CPUs; torch {machine['torch']}, TVM {machine['tvm']}; {machine['date']}.",
        "",
        f"- {result['epochs']} epochs, {result['seconds_per_epoch_median']:.1f} s per epoch (median); final "
        f"Fashion-MNIST test top-1 {result['val_top1']:.2f}% (best {result['best_top1']:.2f}%); masks final and "
        f"uniform: {result['masks_final_and_uniform']}",
        f"- kept input channels per block-row: {kept}",
        f"- compiled ({result['compiled_threads']} threads): top-1 {result['compiled']['top1']:.2f}% over "
        f"{result['compiled']['samples']} images",
    ]
    if result["pytorch"] is not None:
        lines.append(
            f"- PyTorch eager, same weights: top-1 {result['pytorch']['top1']:.2f}%; max |logit difference| "
            f"{result['max_abs_logit_diff']:.1e}"
        )
    reduced = [name for name in REDUCED_DIRS if result.get(name) is not None]
    if reduced:
        lines += reduced_lines(result, reduced)
    return "\n".join(lines) + "\n"


def reduced_lines(result: dict, reduced: list[str]) -> list[str]:
    fp32_latency = result[reduced[0]]["latency"]["fp32"]
    rows = [("fp32", result["compiled"], fp32_latency)]
    rows += [(name, result[name]["compiled"], result[name]["latency"][name]) for name in reduced]
    notes = []
    for name in reduced:
        build = result[name]
        layers = [layer for layer, precision in build["kernel_precision"].items() if precision.startswith(name)]
        calibration = build["calibration"]
        calibrated = (
            f"calibrated on {calibration.get('calibrated_images')} {calibration.get('source')} images "
            f"({calibration.get('calibrated_batches')} batches); "
            if calibration
            else ""
        )
        notes.append(f"{name}: {calibrated}convs in {name}: {', '.join(layers) or 'none'} (the rest fp32).")
    fp32_top1, fp32_ms = result["compiled"]["top1"], fp32_latency["median_ms"]
    return [
        "",
        f"## fp32, {' and '.join(reduced)} builds of the same checkpoint (batch 1, {fp32_latency['threads']} threads)",
        "",
        *notes,
        f"Latency: median of {fp32_latency['iters']} runs each, the {len(rows)} models interleaved in one process.",
        "",
        "| build | top-1 | latency median | p90 |",
        "|---|---|---|---|",
        *(
            f"| {name} | {metrics['top1']:.2f}% | {timing['median_ms']:.3f} ms | {timing['p90_ms']:.3f} ms |"
            for name, metrics, timing in rows
        ),
        "",
        "; ".join(
            f"{name} - fp32 top-1: {result[name]['compiled']['top1'] - fp32_top1:+.2f} points, {name} / fp32 latency "
            f"{result[name]['latency'][name]['median_ms'] / fp32_ms:.2f}"
            for name in reduced
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, default=REPO / "runs" / "fashion-mnist-demo")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--iters", type=int, default=200, help="timed runs per build for the latency comparison")
    args = parser.parse_args()
    machine = describe_machine()
    result = collect(args.run, args.iters)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo.json").write_text(json.dumps({"machine": machine, **result}, indent=2) + "\n")
    text = markdown(result, machine)
    (args.out / "demo.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
