"""Load balance of the compiled block-sparse convs: uniform SUBP rows vs the 1xN method's rows.

For every sparse conv of the paper configurations (recipes/*-n16.yaml, shapes from
``subp_fx.passes.dry_run`` at the paper's prune rate, batch 1, 224x224), two masks keep the same
number of blocks:

- uniform (SUBP): every block-row keeps K;
- non-uniform (1xN, Lin et al.): the layer's blocks ranked by L1 norm, the top R*K kept
  layer-wide, on a synthetic weight (``subp_fx.tools.load_balance.block_l1_norms``): "kaiming_iid"
  (random init, the least spread an L1 ranking leaves) and "trained_like" (lognormal scale per
  block-row, ``--row-sigma``, and per block, ``--block-sigma``: assumptions, swept for
  sensitivity on ResNet-18).

SIMULATED: work per thread under TVM's static schedule for 1..64 threads, on the parallel loop
and register tile the compiled program uses by default (``heuristic_tile``: its parallel mode
and tile rows), using ``subp_fx.tools.load_balance`` (MAC counts, no timing).
MEASURED (unless ``--no-measure``), for one layer per ResNet-18 stage: the uniform kernel at 1
and 2 threads (2-thread scaling); the same kernel with K = the 1xN mask's longest row (what a
uniform-ELL kernel pays to run a non-uniform mask); and the 1xN mask's 2-thread split emulated
by timing its heavier half against the uniform half (see ``measure``).

    python benchmarks/load_balance.py             # simulation + measurement (~2 min on 2 cores)
    python benchmarks/load_balance.py --no-measure

Writes benchmarks/results/load_balance.{md,json,png}.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from affinity import pin_caller  # benchmarks/ is on sys.path when this script runs
from paper_configs import describe_machine

from subp_fx.codegen.defaults import DEFAULT_TARGET
from subp_fx.codegen.kernels.isa import vector_isa
from subp_fx.codegen.kernels.spec import BlockSparseConvSpec
from subp_fx.codegen.kernels.tiling import heuristic_tile
from subp_fx.codegen.target import parse_target
from subp_fx.codegen.threads import get_num_threads, set_num_threads
from subp_fx.codegen.tuning.build import build_block_sparse_conv
from subp_fx.models import build_model
from subp_fx.passes import dry_run
from subp_fx.recipes.schema import load_recipe
from subp_fx.tools.load_balance import SparseConvLayer, block_l1_norms, l1_1xn_row_counts, layer_balance, thread_work

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
CONFIGS = ("resnet18-n16", "resnet34-n16", "resnet50-2.0g-n16", "resnet50-1.0g-n16", "mobilenetv1-n16")
THREADS = (1, 2, 4, 8, 16, 32, 64)
IID = "kaiming_iid"
TRAINED_LIKE = "trained_like"
SWEEP_ROW_SIGMAS = (0.1, 0.2, 0.4)
SWEEP_BLOCK_SIGMAS = (0.25, 0.5, 1.0)
SWEEP_THREADS = (2, 8, 64)
MEASURED_LAYERS = ("layer1.0.conv2", "layer2.0.conv2", "layer3.0.conv2", "layer4.0.conv2")


@functools.cache
def conv_specs(config: str) -> tuple[list[BlockSparseConvSpec], list[str], float]:
    """The kernel spec (batch 1) of every sparse conv of a paper configuration, their names,
    and the prune rate. Input sizes and stride/padding come from one forward pass with hooks."""
    recipe = load_recipe(REPO / "recipes" / f"{config}.yaml")
    model = build_model(recipe.model.name, num_classes=recipe.model.num_classes).eval()
    plans = dry_run(model, recipe.sparsity).selected
    modules = dict(model.named_modules())
    input_hw: dict[str, tuple[int, int]] = {}
    hooks = [
        modules[plan.name].register_forward_hook(
            lambda m, args, out, name=plan.name: input_hw.__setitem__(name, tuple(args[0].shape[2:]))
        )
        for plan in plans
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    for hook in hooks:
        hook.remove()
    specs = []
    for plan in plans:
        conv = modules[plan.name]
        out_channels, in_channels, kh, kw = plan.weight_shape
        specs.append(
            BlockSparseConvSpec(
                batch=1,
                height=input_hw[plan.name][0],
                width=input_hw[plan.name][1],
                in_channels=in_channels,
                out_channels=out_channels,
                block_size=plan.N,
                kept_per_row=plan.kept_per_row,
                kernel_size=(kh, kw),
                stride=tuple(conv.stride),
                padding=tuple(conv.padding),
            )
        )
    return tuple(specs), tuple(plan.name for plan in plans), recipe.sparsity.prune_rate


def simulated_layer(spec: BlockSparseConvSpec, name: str, isa) -> SparseConvLayer:
    tile = heuristic_tile(spec, isa)
    return SparseConvLayer(
        name=name,
        in_channels=spec.in_channels,
        out_channels=spec.out_channels,
        block_size=spec.block_size,
        kernel_size=spec.kernel_size,
        out_height=spec.out_height,
        out_width=spec.out_width,
        kept_per_row=spec.kept_per_row,
        parallel=tile.parallel,
        tile_rows=tile.rows,
    )


def simulate(config: str, mask_models: dict[str, tuple[float, float]], isa, seed: int) -> dict:
    """Per layer and whole model (sum of the sparse convs' busiest-thread MACs)."""
    specs, names, prune_rate = conv_specs(config)
    layers = []
    model = {mask: {t: {"uniform": 0, "nonuniform": 0, "total": 0} for t in THREADS} for mask in mask_models}
    for index, (spec, name) in enumerate(zip(specs, names)):
        layer = simulated_layer(spec, name, isa)
        entry = {
            "name": name,
            "in_channels": spec.in_channels,
            "out_channels": spec.out_channels,
            "kernel": list(spec.kernel_size),
            "out_hw": [spec.out_height, spec.out_width],
            "K": spec.kept_per_row,
            "parallel": layer.parallel,
            "tile_rows": layer.tile_rows,
            "tasks": len(layer.task_work(layer.uniform_row_counts())),
            "masks": {},
        }
        for mask, (row_sigma, block_sigma) in mask_models.items():
            rng = np.random.default_rng([seed, index])
            counts = l1_1xn_row_counts(block_l1_norms(layer, rng, row_sigma, block_sigma), layer.kept_blocks)
            balance = layer_balance(layer, counts, THREADS)
            entry["masks"][mask] = {
                "row_counts": counts.tolist(),
                "row_count_min_max": [int(counts.min()), int(counts.max())],
                "row_count_cv": float(counts.std() / counts.mean()),
                "by_threads": {str(t): balance[t] for t in THREADS},
            }
            total = sum(layer.task_work(counts))
            for t in THREADS:
                model[mask][t]["uniform"] += balance[t]["uniform_max_thread_macs"]
                model[mask][t]["nonuniform"] += balance[t]["nonuniform_max_thread_macs"]
                model[mask][t]["total"] += total
        layers.append(entry)
    whole = {
        mask: {
            str(t): {
                "uniform_max_over_mean": v["uniform"] * t / v["total"],
                "nonuniform_max_over_mean": v["nonuniform"] * t / v["total"],
                "speed_loss": v["nonuniform"] / v["uniform"],
            }
            for t, v in by_t.items()
        }
        for mask, by_t in model.items()
    }
    return {"prune_rate": prune_rate, "layers": layers, "sparse_convs": whole}


def _median_times(
    kernels: dict[str, object], thread_counts: tuple[int, ...], rounds: int
) -> dict[tuple[str, int], float]:
    """Median ms of each kernel at each thread count, rounds interleaved across all of them (a
    burst of load from elsewhere then hits every kernel alike)."""
    pool = get_num_threads()
    times: dict[tuple[str, int], list[float]] = {}
    try:
        for _ in range(rounds):
            for threads in thread_counts:
                set_num_threads(threads)
                pin_caller()  # after configuring the pool, which frees the caller (see affinity.py)
                for label, kernel in kernels.items():
                    times.setdefault((label, threads), []).append(min(kernel.time_ms(repeats=1, repeat_ms=20)))
    finally:
        set_num_threads(pool)
    return {key: statistics.median(values) for key, values in times.items()}


def measure(simulation: dict, rounds: int) -> list[dict]:
    """For one ResNet-18 layer per stage (all "block_rows" mode), timed at 1 and 2 threads:

    - the uniform kernel (K): its 2-thread scaling;
    - the uniform kernel with K = the 1xN mask's longest row: the cost of running the non-uniform
      mask on a uniform-ELL kernel (every row padded);
    - the 2-thread split of the non-uniform mask, emulated: with an even number of block-rows the
      static schedule gives thread 0 the first R/2 rows and thread 1 the rest, so the layer's
      2-thread time is the heavier half's. That half is run for real, on one thread, as a uniform
      kernel of R/2 rows keeping the half's mean count (rounded up), next to the uniform mask's
      half (K). Their ratio is the measured counterpart of the simulated 2-thread slowdown
      (it leaves out the cores' contention for shared cache and memory).
    """
    specs, names, _ = conv_specs("resnet18-n16")
    layers = {entry["name"]: entry for entry in simulation["layers"]}
    target = parse_target(DEFAULT_TARGET)
    isa = vector_isa(target)
    rows = []
    for spec, name in zip(specs, names):
        if name not in MEASURED_LAYERS:
            continue
        layer = layers[name]
        counts = np.array(layer["masks"][TRAINED_LIKE]["row_counts"])
        half = len(counts) // 2
        heavier_half_mean = max(counts[:half].sum(), counts[half:].sum()) / half
        k_heavier = min(spec.in_channels, int(np.ceil(heavier_half_mean)))
        k_max = int(counts.max())
        tile = heuristic_tile(spec, isa)
        half_spec = dataclasses.replace(spec, out_channels=half * spec.block_size)
        kernels = {
            "uniform": build_block_sparse_conv(spec, target, tile),
            "padded_to_max_row": build_block_sparse_conv(dataclasses.replace(spec, kept_per_row=k_max), target, tile),
            "uniform_half": build_block_sparse_conv(half_spec, target, tile),
            "nonuniform_heavier_half": build_block_sparse_conv(
                dataclasses.replace(half_spec, kept_per_row=k_heavier), target, tile
            ),
        }
        full = _median_times({k: kernels[k] for k in ("uniform", "padded_to_max_row")}, (1, 2), rounds)
        halves = _median_times({k: kernels[k] for k in ("uniform_half", "nonuniform_heavier_half")}, (1,), rounds)
        simulated = layer["masks"][TRAINED_LIKE]["by_threads"]["2"]["speed_loss"]
        rows.append(
            {
                "name": name,
                "K": spec.kept_per_row,
                "K_max_nonuniform": k_max,
                "K_heavier_half_nonuniform": heavier_half_mean,
                "tile": {"rows": tile.rows, "cols": tile.cols, "parallel": tile.parallel},
                "gflops_uniform_2t": spec.flops / full[("uniform", 2)] / 1e6,
                "ms": {f"{label}_{threads}t": ms for (label, threads), ms in {**full, **halves}.items()},
                "two_thread_scaling_uniform": full[("uniform", 1)] / full[("uniform", 2)],
                "padded_over_uniform_2t": full[("padded_to_max_row", 2)] / full[("uniform", 2)],
                "emulated_2t_slowdown_nonuniform": halves[("nonuniform_heavier_half", 1)] / halves[("uniform_half", 1)],
                "simulated_2t_slowdown_nonuniform": simulated,
                "rounds": rounds,
            }
        )
        row = rows[-1]
        print(
            f"  measured {name}: 2t scaling {row['two_thread_scaling_uniform']:.2f}x, "
            f"1xN 2t slowdown emulated {row['emulated_2t_slowdown_nonuniform']:.2f} vs simulated {simulated:.2f}",
            flush=True,
        )
    return rows


def sensitivity(isa, seed: int) -> list[dict]:
    """ResNet-18 whole-model slowdown of the 1xN masks over a grid of the two assumed sigmas."""
    rows = []
    for row_sigma in SWEEP_ROW_SIGMAS:
        for block_sigma in SWEEP_BLOCK_SIGMAS:
            whole = simulate("resnet18-n16", {"sweep": (row_sigma, block_sigma)}, isa, seed)["sparse_convs"]["sweep"]
            rows.append(
                {
                    "row_sigma": row_sigma,
                    "block_sigma": block_sigma,
                    "speed_loss": {str(t): whole[str(t)]["speed_loss"] for t in SWEEP_THREADS},
                }
            )
    return rows


def _header(first: str) -> list[str]:
    return [f"| {first} | " + " | ".join(f"T={t}" for t in THREADS) + " |", "|---|" + "---|" * len(THREADS)]


def _whole_model_rows(results: dict, mask: str, cell) -> list[str]:
    """One table row per config: ``cell`` of its whole-model balance under ``mask`` per thread count."""
    return [
        f"| {name} | " + " | ".join(cell(result["sparse_convs"][mask][str(t)]) for t in THREADS) + " |"
        for name, result in results["configs"].items()
    ]


def markdown(results: dict) -> str:
    row_sigma, block_sigma = results["mask_models"][TRAINED_LIKE]
    lines = [
        "# Load balance: uniform SUBP rows vs L1-ranked 1xN rows",
        "",
        f"Generated by `benchmarks/load_balance.py` on {results['date']}. Batch 1, 224x224, N=16, paper prune rates",
        "(recipes/*-n16.yaml), every sparse conv of each model.",
        "",
        "- **Simulated** (all tables but the last): MACs per thread under TVM's static schedule (the kernel's parallel",
        "  loop split into contiguous ceil(E/T) chunks, as codegen_cpu.cc does), on the parallel mode and tile the",
        "  compiled program uses by default (`heuristic_tile`). max/mean = busiest thread over mean per thread",
        "  (1 = perfect); slowdown = non-uniform busiest thread over uniform busiest thread (both keep the same blocks",
        "  in total, so this is the parallel-time ratio). Whole model = sums over the sparse convs only.",
        "- Non-uniform masks: the layer's blocks ranked by L1 norm, top R*K kept layer-wide (the 1xN method), on",
        f"  synthetic weights. `{TRAINED_LIKE}`: kaiming-normal x lognormal per-block-row scale (sigma={row_sigma}) x",
        f"  lognormal per-block scale (sigma={block_sigma}); an assumption (no trained weights here), swept below.",
        f"  `{IID}`: plain kaiming init, nearly random ranking: the least spread an L1 ranking leaves.",
        '- "pixels"-mode layers (each task computes all block-rows of a pixel tile) are insensitive to row counts;',
        "  their imbalance is task quantisation only, the same for both masks.",
        "",
        f"## Whole model, {TRAINED_LIKE} masks",
        "",
        *_header("config"),
    ]
    lines += _whole_model_rows(
        results,
        TRAINED_LIKE,
        lambda v: (
            f"{v['uniform_max_over_mean']:.2f} / {v['nonuniform_max_over_mean']:.2f} "
            f"({(v['speed_loss'] - 1) * 100:+.0f}%)"
        ),
    )
    lines += ["", "Cells: uniform max/mean / non-uniform max/mean (non-uniform slowdown).", ""]
    lines += [f"## Whole model, {IID} masks (random init: near-hypergeometric row counts)", "", *_header("config")]
    lines += _whole_model_rows(
        results, IID, lambda v: f"{v['nonuniform_max_over_mean']:.2f} ({(v['speed_loss'] - 1) * 100:+.0f}%)"
    )
    lines += ["", "Cells: non-uniform max/mean (slowdown vs uniform).", ""]
    lines += [
        "## Sensitivity: resnet18-n16 whole-model slowdown vs the assumed sigmas",
        "",
        "| row sigma | block sigma | " + " | ".join(f"T={t}" for t in SWEEP_THREADS) + " |",
        "|---|---|" + "---|" * len(SWEEP_THREADS),
    ]
    for row in results["sensitivity"]:
        cells = [f"{(row['speed_loss'][str(t)] - 1) * 100:+.0f}%" for t in SWEEP_THREADS]
        lines.append(f"| {row['row_sigma']} | {row['block_sigma']} | " + " | ".join(cells) + " |")
    lines += ["", f"## Per layer, resnet18-n16, {TRAINED_LIKE} masks", ""]
    lines += [
        "| layer | shape | K | kept per row min-max | mode, tasks | " + " | ".join(f"T={t}" for t in THREADS) + " |"
    ]
    lines += ["|---|---|---|---|---|" + "---|" * len(THREADS)]
    for layer in results["configs"]["resnet18-n16"]["layers"]:
        mask = layer["masks"][TRAINED_LIKE]
        lo, hi = mask["row_count_min_max"]
        cells = []
        for t in THREADS:
            v = mask["by_threads"][str(t)]
            cells.append(f"{v['uniform_max_over_mean']:.2f}/{v['nonuniform_max_over_mean']:.2f}")
        shape = (
            f"{layer['in_channels']}->{layer['out_channels']} {layer['kernel'][0]}x{layer['kernel'][1]} "
            f"@{layer['out_hw'][0]}x{layer['out_hw'][1]}"
        )
        lines.append(
            f"| {layer['name']} | {shape} | {layer['K']} | {lo}-{hi} | {layer['parallel']}, {layer['tasks']} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", "Cells: uniform / non-uniform max/mean.", ""]
    if results.get("measured"):
        lines += [
            "## Measured on this machine (resnet18-n16, compiled uniform kernel, heuristic tile)",
            "",
            f"Median of {results['measured'][0]['rounds']} interleaved rounds (each the min over >= 20 ms of calls). "
            "The `K_max`",
            f"kernel is the uniform kernel with every row padded to the longest row of the layer's {TRAINED_LIKE} "
            "1xN mask:",
            "what a uniform-ELL kernel pays to run that mask. The kernel supports uniform K only, so a non-uniform",
            "kernel is not built; its 2-thread split is emulated instead:",
            "",
            "Emulated 2-thread 1xN slowdown: the static schedule gives each of 2 threads half the block-rows; the",
            "heavier half of the 1xN mask (as a uniform kernel of R/2 rows at that half's mean count, rounded up) "
            "and the",
            "uniform mask's half are each timed on one thread; the ratio is set beside the simulated MAC ratio.",
            "",
            "| layer | K | tile | 1t ms | 2t ms | 2t scaling | GFLOP/s 2t | K_max | K_max / K (2t) "
            "| heavier half mean K | 1xN 2t slowdown emulated | simulated |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in results["measured"]:
            ms = row["ms"]
            tile = row["tile"]
            lines.append(
                f"| {row['name']} | {row['K']} | {tile['rows']}x{tile['cols']} {tile['parallel']} | "
                f"{ms['uniform_1t']:.3f} | {ms['uniform_2t']:.3f} | {row['two_thread_scaling_uniform']:.2f}x | "
                f"{row['gflops_uniform_2t']:.0f} | {row['K_max_nonuniform']} | {row['padded_over_uniform_2t']:.2f} | "
                f"{row['K_heavier_half_nonuniform']:.1f} | {row['emulated_2t_slowdown_nonuniform']:.2f} | "
                f"{row['simulated_2t_slowdown_nonuniform']:.2f} |"
            )
        lines.append("")
    if results.get("measured"):
        lines += [
            f"Load average (1, 5, 15 min) before / after timing: {results['load_average_before_measure']} / "
            f"{results['load_average_after_measure']} (other processes shared the 2 cores if above ~0).",
            "",
        ]
    machine = results["machine"]
    lines += [
        f"Machine: {machine['cpu']} ({machine['llvm_cpu']}, {machine['vector_isa']}), "
        f"{machine['logical_cpus']} logical CPUs, "
        f"torch {machine['torch']}, tvm {machine['tvm']}.",
        "",
    ]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(18, 5.5))
    for index, (name, result) in enumerate(results["configs"].items()):
        color = f"C{index}"
        whole = result["sparse_convs"]
        left.plot(
            THREADS,
            [whole[TRAINED_LIKE][str(t)]["nonuniform_max_over_mean"] for t in THREADS],
            "o-",
            color=color,
            label=name,
        )
        left.plot(
            THREADS,
            [whole[TRAINED_LIKE][str(t)]["uniform_max_over_mean"] for t in THREADS],
            "s--",
            color=color,
            alpha=0.6,
        )
        middle.plot(
            THREADS, [whole[TRAINED_LIKE][str(t)]["speed_loss"] for t in THREADS], "o-", color=color, label=name
        )
        middle.plot(THREADS, [whole[IID][str(t)]["speed_loss"] for t in THREADS], "x:", color=color)
    for axis in (left, middle):
        axis.set_xscale("log", base=2)
        axis.set_xticks(THREADS, [str(t) for t in THREADS])
        axis.set_xlabel("threads, static schedule (simulated)")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    left.set_ylabel("busiest / mean thread MACs, sparse convs summed")
    left.set_title(f"Imbalance: SUBP uniform (dashed) vs 1xN {TRAINED_LIKE} (solid)", fontsize=10)
    middle.set_ylabel("1xN parallel time / SUBP parallel time")
    middle.set_title(f"Slowdown of 1xN masks: {TRAINED_LIKE} (solid), {IID} (dotted)", fontsize=10)

    layers = results["configs"]["resnet18-n16"]["layers"]
    layer = next(entry for entry in layers if entry["name"] == "layer2.0.conv2")
    sim = SparseConvLayer(
        name=layer["name"],
        in_channels=layer["in_channels"],
        out_channels=layer["out_channels"],
        block_size=16,
        kernel_size=tuple(layer["kernel"]),
        out_height=layer["out_hw"][0],
        out_width=layer["out_hw"][1],
        kept_per_row=layer["K"],
        parallel=layer["parallel"],
        tile_rows=layer["tile_rows"],
    )
    threads = 8
    uniform = np.array(thread_work(sim.task_work(sim.uniform_row_counts()), threads)) / 1e6
    positions = np.arange(threads)
    right.bar(positions - 0.27, uniform, 0.27, label="SUBP uniform")
    for offset, mask in ((0.0, IID), (0.27, TRAINED_LIKE)):
        work = np.array(thread_work(sim.task_work(layer["masks"][mask]["row_counts"]), threads)) / 1e6
        right.bar(positions + offset, work, 0.27, label=f"1xN L1-ranked, {mask}")
    right.set_xticks(positions)
    right.set_xlabel("thread")
    right.set_ylabel("MMACs")
    right.set_title(f"resnet18 {layer['name']}: MACs per thread, {threads} threads (simulated)", fontsize=10)
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--row-sigma", type=float, default=0.2, help="lognormal per-block-row scale of the trained-like weights"
    )
    parser.add_argument(
        "--block-sigma", type=float, default=0.5, help="lognormal per-block scale of the trained-like weights"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-measure", action="store_true", help="simulation only (no TVM builds or timing)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds per kernel")
    args = parser.parse_args()

    isa = vector_isa(parse_target(DEFAULT_TARGET))
    mask_models = {IID: (0.0, 0.0), TRAINED_LIKE: (args.row_sigma, args.block_sigma)}
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": describe_machine(),
        "mask_models": mask_models,
        "seed": args.seed,
        "threads": list(THREADS),
        "vector_isa": isa.name,
        "configs": {},
        "sensitivity": [],
        "measured": [],
    }
    for config in CONFIGS:
        print(f"simulating {config}", flush=True)
        results["configs"][config] = simulate(config, mask_models, isa, args.seed)
    results["sensitivity"] = sensitivity(isa, args.seed)
    if not args.no_measure:
        # Other processes on the cores skew the timings; the load averages record how busy it was.
        results["load_average_before_measure"] = os.getloadavg()
        results["measured"] = measure(results["configs"]["resnet18-n16"], args.rounds)
        results["load_average_after_measure"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "load_balance.json").write_text(json.dumps(results, indent=1))
    (RESULTS / "load_balance.md").write_text(markdown(results))
    plot(results, RESULTS / "load_balance.png")
    print((RESULTS / "load_balance.md").read_text())


if __name__ == "__main__":
    main()
