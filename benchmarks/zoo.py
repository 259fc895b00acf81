"""Every torchvision classification CNN family, compiled by subp-fx sparse and dense, checked
against PyTorch eager and timed beside it.

For each model (random weights with random batch-norm statistics, so that folding and every
branch carry signal; 1000 classes): the sparse model is ``impose_random_masks(0.5, N=16)`` (SUBP
wherever a conv is eligible), the dense model the same weights unpruned. Both are compiled at
SIZE px for batch 1 (timed) and batch 4 (numerics only) and compared with eager on the same
weights: max |compiled - eager| / max |eager| must stay <= 1e-4. Then, batch 1, THREADS threads,
interleaved blocks (``tools.latency.measure_interleaved``): our sparse build, our dense build,
PyTorch eager (dense) and torch.compile with freezing (dense), all fp32. The speed floor the
issue sets: our dense no slower than eager, our sparse faster than our dense.

Writes ``zoo.md`` / ``zoo.json`` under ``--out`` (default benchmarks/results) after every model,
so an interrupted run keeps what it measured.

    python benchmarks/zoo.py                       # one model per family at 224 px (about an hour on 2 cores)
    python benchmarks/zoo.py --models resnet18 mobilenet_v3_small --size 224
    python benchmarks/zoo.py --all-variants        # every variant of every family (many hours)

Run it on an otherwise idle machine: every contender shares the same cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the repository root, for tests.toy_models
from paper_configs import RESULTS, describe_machine, machine_line  # noqa: E402

# family -> its variants, the first one being the representative the default run measures
FAMILIES = {
    "alexnet": ["alexnet"],
    "vgg_bn": ["vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"],
    "resnet": ["resnet50", "resnet18", "resnet34", "resnet101", "resnet152"],
    "resnext": ["resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d"],
    "wide_resnet": ["wide_resnet50_2", "wide_resnet101_2"],
    "squeezenet": ["squeezenet1_1", "squeezenet1_0"],
    "densenet": ["densenet121", "densenet161", "densenet169", "densenet201"],
    "googlenet": ["googlenet"],
    "inception": ["inception_v3"],
    "mobilenet_v2": ["mobilenet_v2"],
    "mobilenet_v3": ["mobilenet_v3_large", "mobilenet_v3_small"],
    "mnasnet": ["mnasnet1_0", "mnasnet0_5", "mnasnet0_75", "mnasnet1_3"],
    "shufflenet_v2": ["shufflenet_v2_x1_0", "shufflenet_v2_x0_5", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"],
    "efficientnet": [f"efficientnet_b{i}" for i in range(8)],
    "efficientnet_v2": ["efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l"],
    "regnet_x": ["regnet_x_400mf", "regnet_x_800mf", "regnet_x_1_6gf", "regnet_x_3_2gf", "regnet_x_8gf"],
    "regnet_y": ["regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf", "regnet_y_3_2gf", "regnet_y_8gf"],
    "convnext": ["convnext_tiny", "convnext_small", "convnext_base", "convnext_large"],
}
RELATIVE_TOLERANCE = 1e-4
PRUNE_RATE, BLOCK_SIZE = 0.5, 16
CONTENDERS = ("subp_sparse", "subp_dense", "pytorch_eager_dense", "pytorch_compile_dense")


def build_model(name: str, seed: int = 0):
    import torch
    import torchvision

    from tests.toy_models import randomise_batchnorms  # the tests' helper: one definition of "random BN"

    torch.manual_seed(seed)
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("inception_v3", "googlenet") else {}
    model = getattr(torchvision.models, name)(weights=None, **kwargs)
    return randomise_batchnorms(model, seed)


def relative_error(compiled, model, x) -> float:
    import numpy as np
    import torch

    with torch.inference_mode():
        expected = model(x).numpy()
    got = np.asarray(compiled(x.numpy()))
    if got.shape != expected.shape:
        return float("inf")
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def measure(name: str, size: int, threads: int, warmup: int, iters: int, torch_compile: bool) -> dict:
    import torch

    import subp_fx
    from subp_fx.tools.latency import TORCH_BASELINES, measure_interleaved

    torch.set_num_threads(threads)
    row: dict = {"model": name, "size": size, "threads": threads}
    dense = build_model(name)
    sparse = subp_fx.impose_random_masks(dense, PRUNE_RATE, BLOCK_SIZE).eval()
    generator = torch.Generator().manual_seed(1)
    builds, errors, compile_seconds = {}, {}, {}
    for batch in (1, 4):
        x = torch.randn(batch, 3, size, size, generator=generator)
        for kind, model in (("sparse", sparse), ("dense", dense)):
            started = time.perf_counter()
            compiled = subp_fx.compile(model, tuple(x.shape), threads=threads)
            compile_seconds[f"{kind}_b{batch}"] = round(time.perf_counter() - started, 1)
            errors[f"{kind}_b{batch}"] = relative_error(compiled, model, x)
            if batch == 1:
                builds[kind] = compiled
    row["compile_seconds"] = compile_seconds
    row["relative_error"] = errors
    row["matched"] = all(error <= RELATIVE_TOLERANCE for error in errors.values())
    table = builds["sparse"].kernel_table
    row["sparse_layers"] = sum(entry.kind == "sparse" for entry in table)
    row["kernels"] = len(table)
    macs_sparse = sum(entry.macs for entry in table)
    macs_dense = sum(entry.macs for entry in builds["dense"].kernel_table)
    row["gmacs_dense"] = macs_dense / 1e9
    row["flop_ideal_speedup"] = macs_dense / macs_sparse

    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    array = x.numpy()
    contenders = {
        "subp_sparse": lambda: builds["sparse"](array),
        "subp_dense": lambda: builds["dense"](array),
        "pytorch_eager_dense": TORCH_BASELINES["pytorch_eager_dense"](dense, x),
    }
    if torch_compile:
        started = time.perf_counter()
        contenders["pytorch_compile_dense"] = TORCH_BASELINES["pytorch_compile_dense"](dense, x)
        row["torch_compile_seconds"] = round(time.perf_counter() - started, 1)
    stats = measure_interleaved(contenders, batch=1, warmup=warmup, iters=iters)
    row["median_ms"] = {name: value.median_ms for name, value in stats.items()}
    medians = row["median_ms"]
    row["dense_vs_eager"] = medians["pytorch_eager_dense"] / medians["subp_dense"]
    row["sparse_vs_dense"] = medians["subp_dense"] / medians["subp_sparse"]
    row["floor_met"] = row["dense_vs_eager"] >= 1.0 and row["sparse_vs_dense"] > 1.0
    return row


def markdown(rows: list[dict], machine: dict, size: int, threads: int) -> str:
    measured = [row for row in rows if "median_ms" in row]
    lines = [
        "# torchvision CNN families compiled by subp-fx: numerics and speed",
        "",
        machine_line(machine),
        "",
        f"{size} px, batch 1, {threads} threads, fp32 everywhere; random weights and batch-norm statistics; sparse = "
        f"SUBP wherever a conv is eligible, random uniform 1x{BLOCK_SIZE} masks at {PRUNE_RATE:.0%} of each "
        "block-row's input channels. Median ms of interleaved blocks. 'matched': compiled vs eager, same weights, "
        f"max |diff| / max |logit| <= {RELATIVE_TOLERANCE:g} at batch 1 and 4, sparse and dense (worst shown). "
        "'floor': our dense no slower than eager and our sparse faster than our dense.",
        "",
        f"{len(measured)} of {len(rows)} models compiled and timed; "
        f"{sum(row.get('matched', False) for row in rows)} matched eager; "
        f"{sum(row.get('floor_met', False) for row in rows)} met the speed floor.",
        "",
        "| model | GMACs dense | sparse layers | subp sparse | subp dense | PyTorch eager | torch.compile (freezing) "
        "| dense vs eager | sparse vs dense | FLOP ideal | worst rel. error | matched | floor "
        "| compile s (sparse, dense) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "median_ms" not in row:
            lines.append(f"| {row['model']} | | | | | | | | | | | | | {row.get('error', '')[:200].replace('|', '/')} |")
            continue
        medians = row["median_ms"]
        cells = [f"{medians[name]:.2f}" if name in medians else "-" for name in CONTENDERS]
        seconds = row["compile_seconds"]
        lines.append(
            f"| {row['model']} | {row['gmacs_dense']:.2f} | {row['sparse_layers']} of {row['kernels']} kernels | "
            + " | ".join(cells)
            + f" | {row['dense_vs_eager']:.2f}x | {row['sparse_vs_dense']:.2f}x | {row['flop_ideal_speedup']:.2f}x "
            f"| {max(row['relative_error'].values()):.1e} | {'yes' if row['matched'] else 'NO'} "
            f"| {'met' if row['floor_met'] else 'MISSED'} | {seconds['sparse_b1']}, {seconds['dense_b1']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", help="torchvision model names (default: one per family)")
    parser.add_argument("--all-variants", action="store_true", help="every variant of every family")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--no-torch-compile", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--append", action="store_true", help="keep the rows of --out's zoo.json for other models")
    args = parser.parse_args()
    if args.models:
        names = args.models
    elif args.all_variants:
        names = [name for variants in FAMILIES.values() for name in variants]
    else:
        names = [variants[0] for variants in FAMILIES.values()]

    machine = describe_machine()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.append and (args.out / "zoo.json").is_file():
        rows = [row for row in json.loads((args.out / "zoo.json").read_text())["rows"] if row["model"] not in names]
    for name in names:
        started = time.perf_counter()
        try:
            row = measure(name, args.size, args.threads, args.warmup, args.iters, not args.no_torch_compile)
        except Exception as error:  # one model's failure is a row of the table, not the end of the run
            row = {"model": name, "size": args.size, "error": f"{type(error).__name__}: {error}"}
            traceback.print_exc()
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(json.dumps(row)[:600], flush=True)
        (args.out / "zoo.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
        (args.out / "zoo.md").write_text(markdown(rows, machine, args.size, args.threads))
    print(markdown(rows, machine, args.size, args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
