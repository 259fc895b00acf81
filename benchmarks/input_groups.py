"""The same sparse model at different input-channel groups G, side by side in one process.

For each configuration: random weights, random uniform masks at the recipe's prune rate in aligned
groups of G input channels for each G asked (``sparsity.input_group``; kept counts rounded to whole
groups), compiled in one precision, and, with ``--ablate-grouped-int8``, the largest G's int8 build
once more with the grouped int8 1x1 kernel switched off (its ``MIN_KEPT_GROUPS`` raised above any
layer for that compile only: every conv then runs on the general int8 kernel), so the kernel's own
share of the gain shows apart from the masks'. Then every build is timed interleaved in this
process (``tools.latency.measure_interleaved``: blocks of 5, a pause at each switch, the same input
and thread count). Writes ``benchmarks/results/input_groups_<precision>.{md,json}``.

    python benchmarks/input_groups.py --configs resnet50-2.0g-n16 mobilenetv1-n16 --ablate-grouped-int8

Why one process: this VM's speed drifts by up to 1.5x between runs minutes apart
(``results/README.md``), more than the differences measured here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from paper_configs import CONFIGS, REPO, RESULTS, describe_machine, machine_line  # benchmarks/ is on sys.path


@contextlib.contextmanager
def grouped_int8_kernel_off():
    """No layer takes the grouped int8 1x1 kernel while this holds (compiles inside run on the
    general int8 kernel only)."""
    from subp_fx.codegen.kernels import grouped_pointwise_int8

    saved = grouped_pointwise_int8.MIN_KEPT_GROUPS
    grouped_pointwise_int8.MIN_KEPT_GROUPS = sys.maxsize
    try:
        yield
    finally:
        grouped_pointwise_int8.MIN_KEPT_GROUPS = saved


def compile_variant(name: str, precision: str, input_group: int, threads: int):
    from subp_fx.codegen.api import compile as compile_model
    from subp_fx.tools.artifact import load_compile_source
    from subp_fx.tools.calibration_spec import CalibrationSpec

    overrides = (f"sparsity.input_group={input_group}",) if input_group > 1 else ()
    source = load_compile_source(str(REPO / "recipes" / CONFIGS[name]), recipe_overrides=overrides)
    options = {}
    if precision == "int8":
        calibration = CalibrationSpec("synthetic")
        options = {
            "precision": "int8",
            "calibration": calibration.batches_for(source.input_shape),
            "calibration_info": calibration.to_json(),
        }
    elif precision != "fp32":
        options = {"precision": precision}
    compiled = compile_model(source.model, source.input_shape, threads=threads, **options)
    return compiled, source.input_shape


def run_config(name: str, precision: str, groups: list[int], ablate: bool, threads: int, iters: int) -> dict:
    import numpy as np

    from subp_fx.tools.latency import measure_interleaved

    variants, macs, shape = {}, {}, None
    for group in groups:
        variants[f"G={group}"], shape = compile_variant(name, precision, group, threads)
    if ablate:
        with grouped_int8_kernel_off():
            variants[f"G={max(groups)}, grouped int8 kernel off"], _ = compile_variant(
                name, precision, max(groups), threads
            )
    for label, compiled in variants.items():
        macs[label] = sum(entry.macs for entry in compiled.kernel_table)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    stats = measure_interleaved(
        {label: (lambda m=m: m(x)) for label, m in variants.items()}, batch=shape[0], iters=iters
    )
    first = f"G={groups[0]}"
    rows = [
        {
            "build": label,
            "median_ms": stats[label].median_ms,
            "p90_ms": stats[label].p90_ms,
            "macs": macs[label],
            "speedup_vs_first": stats[first].median_ms / stats[label].median_ms,
        }
        for label in variants
    ]
    return {"config": name, "precision": precision, "threads": threads, "batch": shape[0], "rows": rows}


def markdown(results: list[dict], machine: dict) -> str:
    lines = [
        machine_line(machine),
        "",
        "Batch 1, the builds of each configuration interleaved in one process (median of the timed runs). "
        "Random uniform masks at the recipe's prune rate in aligned groups of G input channels.",
        "",
        "| config | precision | build | median ms | p90 ms | MMACs | vs the first G |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for row in result["rows"]:
            lines.append(
                f"| {result['config']} | {result['precision']} | {row['build']} | {row['median_ms']:.3f} | "
                f"{row['p90_ms']:.3f} | {row['macs'] / 1e6:.0f} | {row['speedup_vs_first']:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["resnet50-2.0g-n16"], choices=list(CONFIGS))
    parser.add_argument("--precision", choices=("fp32", "int8"), default="int8")
    parser.add_argument("--groups", nargs="+", type=int, default=[4, 16])
    parser.add_argument("--ablate-grouped-int8", action="store_true", help="also the largest G without the kernel")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.ablate_grouped_int8 and args.precision != "int8":
        parser.error("--ablate-grouped-int8 needs --precision int8")
    machine = describe_machine()
    results = [
        run_config(name, args.precision, args.groups, args.ablate_grouped_int8, args.threads, args.iters)
        for name in args.configs
    ]
    stem = args.out / f"input_groups_{args.precision}"
    Path(f"{stem}.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    text = f"# Input-channel groups side by side ({args.precision})\n\n" + markdown(results, machine)
    Path(f"{stem}.md").write_text(text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
