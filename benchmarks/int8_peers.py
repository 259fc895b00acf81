"""Latency of the int8 dense peers beside their fp32 runs: torchvision ResNets (random weights, eval)
exported once, quantised once by ONNX Runtime (QDQ, per-channel int8 weights, uint8 activations,
MinMax over synthetic normal calibration batches), run by ONNX Runtime and by OpenVINO; interleaved
blocks, medians. Also records how far each int8 output is from PyTorch eager's (relative L2 and
max |difference| / max |logit|), the quantisation time and the machine's load average, since other
processes share these cores.

    python benchmarks/int8_peers.py                                  # ResNet-18 and -50, about 2 minutes
    python benchmarks/int8_peers.py --models resnet18 --iters 10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_flags, cpu_model_name  # benchmarks/ is on sys.path when this script runs

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
ENGINES = ["onnxruntime_fp32", "onnxruntime_int8", "openvino_fp32", "openvino_int8"]


def measure_model(name: str, threads: int, calibration_batches: int, iters: int) -> dict:
    import numpy as np
    import torch
    import torchvision

    from subp_fx.tools.latency import measure_interleaved
    from subp_fx.tools.peers import peer_contenders

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    example = torch.randn(1, 3, 224, 224)
    generator = torch.Generator().manual_seed(1)
    calibration = [torch.randn(1, 3, 224, 224, generator=generator) for _ in range(calibration_batches)]
    with tempfile.TemporaryDirectory(prefix="subp-fx-int8-peers-") as scratch:
        started = time.perf_counter()
        built = peer_contenders(model, example, threads, Path(scratch), engines=ENGINES, calibration=calibration)
        build_s = time.perf_counter() - started
        missing = [engine for engine in ENGINES if engine not in built.runs]
        if missing:
            raise SystemExit(f"{name}: not built: {', '.join(f'{e} ({built.skipped.get(e)})' for e in missing)}")
        with torch.inference_mode():
            expected = model(example).numpy()
        agreement = {}
        for engine, run in built.runs.items():
            got = np.asarray(run.run())
            agreement[engine] = {
                "relative_l2": float(np.linalg.norm(got - expected) / np.linalg.norm(expected)),
                "max_abs_diff_over_max_abs": float(np.abs(got - expected).max() / np.abs(expected).max()),
                "argmax_equal": bool(got.argmax() == expected.argmax()),
            }
        load_before = os.getloadavg()
        stats = measure_interleaved({engine: run.run for engine, run in built.runs.items()}, batch=1, iters=iters)
        load_after = os.getloadavg()
    return {
        "model": name,
        "quantize_s": built.quantize_s,
        "build_s_all_engines": build_s,
        "precision": {engine: run.precision for engine, run in built.runs.items()},
        "engine_versions": {engine: run.engine for engine, run in built.runs.items()},
        "median_ms": {engine: entry.median_ms for engine, entry in stats.items()},
        "p90_ms": {engine: entry.p90_ms for engine, entry in stats.items()},
        "agreement_with_eager": agreement,
        "loadavg_1_5_15_before": load_before,
        "loadavg_1_5_15_after": load_after,
    }


def markdown(machine: dict, rows: list[dict]) -> str:
    lines = [
        "# int8 dense peers beside fp32 (batch 1, 224 px, random weights)",
        "",
        f"{machine['cpu']}; avx512_vnni {machine['avx512_vnni']}, avx512_bf16 {machine['avx512_bf16']}; "
        f"{machine['threads']} threads per engine, {machine['iters']} timed runs each in interleaved blocks; "
        f"{machine['calibration_batches']} calibration batches of normal noise. Other processes may share "
        "these cores: the load average around each timing is listed.",
        "",
        "| model | " + " | ".join(ENGINES) + " | quantize_static (s) | load avg (1 min) before / after |",
        "|---|" + "---|" * (len(ENGINES) + 2),
    ]
    for row in rows:
        cells = [f"{row['median_ms'][e]:.2f} ms ({row['precision'][e]})" for e in ENGINES]
        load = f"{row['loadavg_1_5_15_before'][0]:.2f} / {row['loadavg_1_5_15_after'][0]:.2f}"
        lines.append(f"| {row['model']} | " + " | ".join(cells) + f" | {row['quantize_s']:.1f} | {load} |")
    lines += ["", "int8 output vs PyTorch eager fp32 (relative L2; max |difference| / max |logit|):", ""]
    for row in rows:
        for engine in ("onnxruntime_int8", "openvino_int8"):
            entry = row["agreement_with_eager"][engine]
            lines.append(
                f"- {row['model']} {engine}: {entry['relative_l2']:.4f}; {entry['max_abs_diff_over_max_abs']:.4f}; "
                f"argmax {'equal' if entry['argmax_equal'] else 'differs'}"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration-batches", type=int, default=8)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS / "int8_peers")
    args = parser.parse_args(argv)
    flags = cpu_flags()
    machine = {
        "cpu": cpu_model_name(),
        "avx512_vnni": "yes" if "avx512_vnni" in flags else "no",
        "avx512_bf16": "yes" if "avx512_bf16" in flags else "no",
        "threads": args.threads,
        "iters": args.iters,
        "calibration_batches": args.calibration_batches,
        "date": time.strftime("%Y-%m-%d"),
    }
    rows = [measure_model(name, args.threads, args.calibration_batches, args.iters) for name in args.models]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"machine": machine, "results": rows}, indent=2) + "\n")
    table = markdown(machine, rows)
    args.out.with_suffix(".md").write_text(table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
