"""int8 against fp32 on each int8 dot-product path this host can run, side by side in one process.

For one configuration (random weights, random uniform masks in aligned groups of 4 input channels
at the recipe's prune rate), compile the sparse model in fp32 and in int8 (calibrated on synthetic
images) for each ``-mcpu`` asked, whose int8 path follows from its features (``kernels.isa``:
icelake-server -> avx512-vnni, skylake-avx512 -> avx512-pmaddwd, haswell -> avx2-pmaddwd), then
time every build interleaved (``tools.latency.measure_interleaved``). Every CPU's code runs on
this host, so the host must have the largest ISA asked; that is what a CPU without VNNI gets in
int8 against fp32, measured on this host's cores, not on such a CPU. Writes
``benchmarks/results/int8_paths.{md,json}``.

    python benchmarks/int8_paths.py --config resnet18-n16 --cpus icelake-server skylake-avx512 haswell
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from paper_configs import CONFIGS, REPO, RESULTS, describe_machine, machine_line  # benchmarks/ is on sys.path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="resnet18-n16", choices=list(CONFIGS))
    parser.add_argument("--cpus", nargs="+", default=["icelake-server", "skylake-avx512", "haswell"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import numpy as np

    from subp_fx.codegen.api import compile as compile_model
    from subp_fx.codegen.kernels.isa import int8_path
    from subp_fx.codegen.target import parse_target
    from subp_fx.tools.artifact import load_compile_source
    from subp_fx.tools.calibration_spec import CalibrationSpec
    from subp_fx.tools.latency import measure_interleaved

    machine = describe_machine()
    source = load_compile_source(
        str(REPO / "recipes" / CONFIGS[args.config]), recipe_overrides=("sparsity.input_group=4",)
    )
    calibration = CalibrationSpec("synthetic")
    int8_options = {
        "precision": "int8",
        "calibration": calibration.batches_for(source.input_shape),
        "calibration_info": calibration.to_json(),
    }
    builds, paths = {}, {}
    for cpu in args.cpus:
        target = f"llvm -mcpu={cpu}"
        paths[cpu] = int8_path(parse_target(target)).name
        builds[(cpu, "fp32")] = compile_model(source.model, source.input_shape, target=target, threads=args.threads)
        builds[(cpu, "int8")] = compile_model(
            source.model, source.input_shape, target=target, threads=args.threads, **int8_options
        )
    x = np.random.default_rng(0).standard_normal(source.input_shape).astype(np.float32)
    contenders = {f"{cpu} {precision}": (lambda m=m: m(x)) for (cpu, precision), m in builds.items()}
    stats = measure_interleaved(contenders, batch=source.input_shape[0], iters=args.iters)
    rows = [
        {
            "cpu": cpu,
            "int8_path": paths[cpu],
            "fp32_ms": stats[f"{cpu} fp32"].median_ms,
            "int8_ms": stats[f"{cpu} int8"].median_ms,
            "int8_speedup": stats[f"{cpu} fp32"].median_ms / stats[f"{cpu} int8"].median_ms,
        }
        for cpu in args.cpus
    ]
    record = {"machine": machine, "config": args.config, "threads": args.threads, "rows": rows}
    (args.out / "int8_paths.json").write_text(json.dumps(record, indent=2))
    lines = [
        f"# int8 against fp32 per int8 path ({args.config}, G=4 masks, batch 1, {args.threads} threads)",
        "",
        machine_line(machine),
        "",
        "Each CPU's code run on this host, every build interleaved in one process (median ms).",
        "",
        "| -mcpu | int8 path | fp32 | int8 | int8 speed-up |",
        "|---|---|---|---|---|",
        *(
            f"| {row['cpu']} | {row['int8_path']} | {row['fp32_ms']:.2f} | {row['int8_ms']:.2f} | "
            f"{row['int8_speedup']:.2f}x |"
            for row in rows
        ),
    ]
    text = "\n".join(lines) + "\n"
    (args.out / "int8_paths.md").write_text(text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
