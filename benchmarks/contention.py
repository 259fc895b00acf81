"""A compiled model while another process takes part of one core: shared tasks against fixed halves.

Machines are shared: a serving host runs other work beside the model, and this project's
2-core KVM guests have cores that slow down one at a time (``tir_passes.dynamic_tasks``). A
kernel whose parallel loop is cut into fixed halves ends when its slower thread does; one whose
threads claim tasks as they go ends when the work does. For each configuration (random weights,
random uniform masks at the recipe's prune rate; ``--input-group`` as in ``paper_configs.py``):
our sparse build as ``compile`` makes it (tasks claimed as the threads go), the same build with
TVM's fixed split (``tir_passes`` switched off for that compile only), and ONNX Runtime and
OpenVINO fp32 where installed; all timed interleaved in one process (``measure_interleaved``),
first on a quiet machine, then while a busy loop pinned to the last CPU runs ``busy`` ms in every
``busy + idle`` (:data:`DUTIES`). Writes ``benchmarks/results/contention.{md,json}``.

    python benchmarks/contention.py [--configs resnet50-2.0g-n16 resnet18-n16] [--input-group 4]

Ideal under a busy loop taking a share s of one of 2 cores: 2 / (2 - s) of the quiet time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from input_groups import compile_variant  # noqa: E402
from paper_configs import CONFIGS, REPO, RESULTS, describe_machine, machine_line  # noqa: E402

# (busy ms, idle ms) of the competing process
DUTIES = {"quiet": None, "busy 1 ms in 5": (1, 4), "busy 2 ms in 4": (2, 2)}
BUSY_LOOP = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
busy, idle = float(sys.argv[2]) / 1e3, float(sys.argv[3]) / 1e3
while True:
    end = time.perf_counter() + busy
    while time.perf_counter() < end:
        pass
    time.sleep(idle)
"""


@contextlib.contextmanager
def fixed_split():
    """Compiles inside build their kernels with TVM's own TIR pipeline (fixed halves)."""
    from subp_fx.codegen import pipeline
    from subp_fx.codegen.tir_passes.pipeline import DEFAULT

    saved = pipeline.tir_pipeline
    pipeline.tir_pipeline = lambda target, workers: DEFAULT
    try:
        yield
    finally:
        pipeline.tir_pipeline = saved


@contextlib.contextmanager
def busy_core(duty: tuple[float, float] | None):
    if duty is None:
        yield
        return
    import os

    cpu = max(os.sched_getaffinity(0))
    process = subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(cpu), *(str(value) for value in duty)])
    try:
        time.sleep(0.3)
        yield
    finally:
        process.kill()
        process.wait()


def run_config(name: str, input_group: int, threads: int, iters: int) -> dict:
    import numpy as np
    import torch

    from subp_fx.tools.artifact import load_compile_source
    from subp_fx.tools.latency import measure_interleaved
    from subp_fx.tools.peers import peer_contenders

    shared, shape = compile_variant(name, "fp32", input_group, threads)
    with fixed_split():
        fixed, _ = compile_variant(name, "fp32", input_group, threads)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if np.abs(shared(x) - fixed(x)).max() != 0:
        raise AssertionError(f"{name}: the two builds disagree")
    contenders = {"subp sparse, shared tasks": lambda: shared(x), "subp sparse, fixed halves": lambda: fixed(x)}
    overrides = (f"sparsity.input_group={input_group}",) if input_group > 1 else ()
    source = load_compile_source(str(REPO / "recipes" / CONFIGS[name]), recipe_overrides=overrides)
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as workdir:
        engines = ["onnxruntime_fp32", "openvino_fp32"]
        peers = peer_contenders(source.model.eval(), torch.from_numpy(x), threads, Path(workdir), engines=engines)
        contenders.update({peer: run.run for peer, run in peers.runs.items()})
        rows = {}
        for label, duty in DUTIES.items():
            with busy_core(duty):
                stats = measure_interleaved(contenders, batch=shape[0], iters=iters)
            rows[label] = {contender: stats[contender].median_ms for contender in contenders}
    return {"config": name, "input_group": input_group, "threads": threads, "rows": rows, "skipped": peers.skipped}


def markdown(results: list[dict], machine: dict) -> str:
    lines = [
        machine_line(machine),
        "",
        "Median ms, batch 1, every contender interleaved in one process, fp32. 'shared tasks': the build "
        "`subp-fx compile` makes (threads claim a kernel's tasks as they go); 'fixed halves': the same build "
        "with TVM's fixed split. The busy loop is pinned to the last CPU; the ideal slowdown under it is "
        "2 / (2 - share of the core it takes).",
        "",
    ]
    for result in results:
        contenders = list(next(iter(result["rows"].values())))
        lines += [
            f"**{result['config']}** (G={result['input_group']}, {result['threads']} threads)",
            "",
            "| load | " + " | ".join(contenders) + " | shared vs fixed | ideal slowdown |",
            "|---|" + "---|" * (len(contenders) + 2),
        ]
        quiet = result["rows"]["quiet"]
        for label, row in result["rows"].items():
            duty = DUTIES[label]
            ideal = 1.0 if duty is None else 2 / (2 - duty[0] / sum(duty))
            cells = [f"{row[c]:.2f} ({row[c] / quiet[c]:.2f}x)" for c in contenders]
            ratio = row["subp sparse, fixed halves"] / row["subp sparse, shared tasks"]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio:.2f}x | {ideal:.2f}x |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["resnet50-2.0g-n16", "resnet18-n16"], choices=list(CONFIGS))
    parser.add_argument("--input-group", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    machine = describe_machine()
    results = [run_config(name, args.input_group, args.threads, args.iters) for name in args.configs]
    (args.out / "contention.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    text = "# A compiled model beside a busy process\n\n" + markdown(results, machine)
    (args.out / "contention.md").write_text(text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
