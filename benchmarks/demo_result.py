"""The `make demo` run as a result file: what the README's demo paragraph quotes.

Reads a finished demo run (``runs/fashion-mnist-demo`` by default: ``summary.json``,
``metrics.jsonl``, ``compiled/manifest.json``, ``compiled-eval.json``) and writes
``demo.json`` / ``demo.md`` with the machine described: top-1 after training, per-epoch time,
each pruned conv's kept channels per block-row, and the compiled model's accuracy beside PyTorch's.

Usage: ``python benchmarks/demo_result.py [RUN_DIR] [--out benchmarks/results]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_configs import REPO, describe_machine  # noqa: E402


def collect(run: Path) -> dict:
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
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, default=REPO / "runs" / "fashion-mnist-demo")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    machine = describe_machine()
    result = collect(args.run)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo.json").write_text(json.dumps({"machine": machine, **result}, indent=2) + "\n")
    text = markdown(result, machine)
    (args.out / "demo.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
