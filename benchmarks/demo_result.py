"""The `make demo` run as a result file: what the README's demo paragraph quotes.

Reads a finished demo run (``runs/fashion-mnist-demo`` by default: ``summary.json``,
``metrics.jsonl``, ``compiled/manifest.json``, ``compiled-eval.json``, and where the int8 build
exists ``compiled-int8/`` with ``compiled-int8-eval.json``) and writes ``demo.json`` /
``demo.md`` with the machine described: top-1 after training, per-epoch time, each pruned conv's
kept channels per block-row, the compiled model's accuracy beside PyTorch's, and the fp32 and
int8 builds side by side: top-1 on the 10,000 test images and batch-1 latency, both models timed
in this process, interleaved (``tools.latency.measure_interleaved``), on the threads each was
compiled for.

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
INT8_DIR = "compiled-int8"


def kernel_precisions(manifest: dict) -> dict[str, str]:
    """Layer -> the precision its kernel ran in (``fp32`` where the table has no column)."""
    convs = (entry for entry in manifest["kernels"] if entry.get("op") == "conv2d")
    return {entry["layer"]: entry.get("precision", "fp32") for entry in convs}


def side_by_side_latency(run: Path, iters: int) -> dict[str, dict]:
    """Batch-1 latency of the fp32 and int8 builds, timed interleaved in this process on one
    seeded input (latency does not depend on the values)."""
    import numpy as np

    from subp_fx.codegen.api import load_compiled
    from subp_fx.tools.latency import measure_interleaved

    models = {name: load_compiled(run / directory) for name, directory in (("fp32", FP32_DIR), ("int8", INT8_DIR))}
    shape = models["fp32"].input_shape
    image = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    stats = measure_interleaved(
        {name: (lambda model=model: model(image)) for name, model in models.items()},
        batch=shape[0],
        warmup=20,
        iters=iters,
    )
    return {name: {**stats[name].as_dict(), "threads": models[name].threads} for name in models}


def collect_int8(run: Path, iters: int) -> dict | None:
    """The int8 build beside the fp32 one, or None when the run has no int8 build."""
    if not (run / INT8_DIR / "manifest.json").is_file():
        return None
    manifest = json.loads((run / INT8_DIR / "manifest.json").read_text())
    evaluation = json.loads((run / f"{INT8_DIR}-eval.json").read_text())
    return {
        "compiled": evaluation["compiled"],
        "max_abs_logit_diff_to_fp32_pytorch": evaluation.get("max_abs_logit_diff"),
        "calibration": manifest.get("calibration"),
        "kernel_precision": kernel_precisions(manifest),
        "latency": side_by_side_latency(run, iters),
    }


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
        "int8": collect_int8(run, iters),
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
    if result["int8"] is not None:
        lines += int8_lines(result)
    return "\n".join(lines) + "\n"


def int8_lines(result: dict) -> list[str]:
    int8 = result["int8"]
    latency = int8["latency"]
    calibration = int8["calibration"] or {}
    in_int8 = [layer for layer, precision in int8["kernel_precision"].items() if precision.startswith("int8")]
    fp32_top1, int8_top1 = result["compiled"]["top1"], int8["compiled"]["top1"]
    rows = [
        ("fp32", result["compiled"], latency["fp32"]),
        ("int8", int8["compiled"], latency["int8"]),
    ]
    return [
        "",
        f"## fp32 and int8 builds of the same checkpoint (batch 1, {latency['fp32']['threads']} threads)",
        "",
        f"int8: calibrated on {calibration.get('calibrated_images')} {calibration.get('source')} images "
        f"({calibration.get('calibrated_batches')} batches); convs in int8: {', '.join(in_int8) or 'none'} "
        f"(the rest fp32). Latency: median of {latency['fp32']['iters']} runs each, the two models interleaved "
        "in one process.",
        "",
        "| build | top-1 | latency median | p90 |",
        "|---|---|---|---|",
        *(
            f"| {name} | {metrics['top1']:.2f}% | {timing['median_ms']:.3f} ms | {timing['p90_ms']:.3f} ms |"
            for name, metrics, timing in rows
        ),
        "",
        f"int8 - fp32 top-1: {int8_top1 - fp32_top1:+.2f} points; int8 / fp32 latency "
        f"{latency['int8']['median_ms'] / latency['fp32']['median_ms']:.2f}",
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
