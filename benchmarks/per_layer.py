"""Per-layer breakdown of a paper configuration: each sparse conv shape as our sparse kernel, our
dense kernel and PyTorch's dense conv, against the FLOP ideal; and its 1 -> 2 thread scaling.

Why: the whole-model ratios in ``paper_configs.py`` say how far a model is from its goal, not
which layers lose the time. Here every distinct sparse conv shape of the model (from the kernel
table ``compile()`` writes for the sparse model with random uniform masks at the recipe's prune
rate) is timed alone, batch 1, interleaved (``measure_interleaved``), medians of ``--iters`` runs:

- ``sparse``: our block-sparse kernel at the layer's K, with the layer's own fused epilogue
  (bias, residual, ReLU as the kernel table lists them), at 2 threads; and again at 1 thread,
  interleaved with the rest (the TVM pool switched per block of runs);
- ``dense``: the same kernel with K = C_in and the block size N our dense build picks for the
  layer (32 on AVX-512: see ``conv_lowering.DENSE_BLOCK_SIZES``), same epilogue, 2 threads; and,
  where that N differs from the sparse layer's, the dense kernel at the sparse N too
  ("same N": what the kernel loses to sparsity alone, apart from the N=16 tile's extra loads);
- ``torch``: ``F.conv2d`` with bias, then ``add_(residual)`` and ``relu_()`` where the layer has
  them, on dense random weights, 2 torch threads; NCHW and channels_last both timed, the faster
  reported. (A one-layer module under ``torch.compile`` with freezing was slower than this on
  every ResNet-50 layer, 0.2-7.8 ms, so the whole-model benchmark carries that comparison.)

FLOP ideal = C_in / K; % of ideal = (dense / sparse) / (C_in / K) (issue 4 asks >= 85%);
2-thread scaling = sparse at 1 thread / sparse at 2 threads (issue 4 asks >= 1.85x).

    python benchmarks/per_layer.py                                # resnet18-n16, resnet50-2.0g-n16
    python benchmarks/per_layer.py --configs resnet18-n16 --iters 50

Writes benchmarks/results/per_layer_<config>.{json,md,png}. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from affinity import pin_caller  # noqa: E402
from paper_configs import CONFIGS, REPO, RESULTS, describe_machine  # noqa: E402

DEFAULT_CONFIGS = ["resnet18-n16", "resnet50-2.0g-n16"]
from subp_fx.codegen.defaults import DEFAULT_TARGET as TARGET  # noqa: E402

GOAL_FRACTION_OF_IDEAL = 0.85
GOAL_SCALING = 1.85


@dataclass(frozen=True)
class LayerShape:
    """What a conv kernel's speed depends on: shapes, K, stride and the fused epilogue."""

    in_channels: int
    kept_per_row: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    out_hw: tuple[int, int]
    block_size: int
    epilogue: str

    def describe(self) -> str:
        (kh, kw), (oh, ow) = self.kernel_size, self.out_hw
        return f"{self.in_channels}->{self.out_channels} {kh}x{kw}/{self.stride[0]} @{oh}x{ow}"

    def kernel_spec(self, kept_per_row: int):
        """The kernel spec for this layer at ``kept_per_row``. The kernel table has no padding or
        input size; every conv of these ResNets pads k // 2, so the input is out_hw * stride."""
        from subp_fx.codegen.kernels.spec import BlockSparseConvSpec

        parts = self.epilogue.split("+")
        spec = BlockSparseConvSpec(
            batch=1,
            height=self.out_hw[0] * self.stride[0],
            width=self.out_hw[1] * self.stride[1],
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            block_size=self.block_size,
            kept_per_row=kept_per_row,
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=(self.kernel_size[0] // 2, self.kernel_size[1] // 2),
            bias="bias" in parts,
            residual="residual" in parts,
            activation="relu" if "relu" in parts else "none",
        )
        if (spec.out_height, spec.out_width) != self.out_hw:
            raise ValueError(f"{self.describe()}: rebuilt spec gives {spec.out_height}x{spec.out_width}")
        return spec


def sparse_layer_shapes(config: str, threads: int) -> dict[LayerShape, list[str]]:
    """Distinct sparse conv shapes of the config's compiled sparse model -> their layer names."""
    from subp_fx.codegen.api import compile as compile_model
    from subp_fx.codegen.runtime.kernel_table import SPARSE
    from subp_fx.tools.artifact import load_compile_source

    source = load_compile_source(str(REPO / "recipes" / CONFIGS[config]), batch=1)
    compiled = compile_model(source.model, source.input_shape, target=TARGET, threads=threads)
    shapes: dict[LayerShape, list[str]] = {}
    for entry in compiled.kernel_table:
        if entry.kind == SPARSE and entry.op == "conv2d":
            shape = LayerShape(
                entry.in_channels,
                entry.kept_per_row,
                entry.out_channels,
                tuple(entry.kernel_size),
                tuple(entry.stride),
                tuple(entry.out_hw),
                entry.block_size,
                entry.epilogue,
            )
            shapes.setdefault(shape, []).append(entry.layer)
    return shapes


def tvm_contender(kernel, threads: int):
    """Call the compiled kernel on fixed random device tensors with the TVM pool at ``threads``."""
    from subp_fx.codegen.threads import get_num_threads, set_num_threads

    arguments = kernel.random_arguments()
    function = kernel.function

    def run():
        if get_num_threads() != threads:
            set_num_threads(threads)
            pin_caller()  # configuring the pool gives the caller every core again
        function(*arguments)

    return run


def torch_contender(spec, channels_last: bool):
    """PyTorch's dense conv on the layer's shape, with the layer's epilogue done as torch would."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    data = torch.randn(1, spec.in_channels, spec.height, spec.width, generator=generator).to(memory_format=layout)
    weight = torch.randn(spec.out_channels, spec.in_channels, *spec.kernel_size, generator=generator).to(
        memory_format=layout
    )
    bias = torch.randn(spec.out_channels, generator=generator) if spec.bias else None
    residual = torch.randn(1, spec.out_channels, spec.out_height, spec.out_width, generator=generator).to(
        memory_format=layout
    )

    def run():
        with torch.inference_mode():
            out = F.conv2d(data, weight, bias, stride=spec.stride, padding=spec.padding)
            if spec.residual:
                out.add_(residual)
            if spec.activation == "relu":
                out.relu_()
            return out

    return run


def dense_block_size(spec) -> int:
    """The N our dense build gives a conv of this shape (``compile`` picks it per layer)."""
    from subp_fx.codegen.kernels.cache import l1_data_cache, l2_bytes
    from subp_fx.codegen.kernels.isa import vector_isa
    from subp_fx.codegen.kernels.tiling import cheapest_block_size
    from subp_fx.codegen.lowering.conv import DENSE_BLOCK_SIZES
    from subp_fx.codegen.target import parse_target

    target = parse_target(TARGET)
    return cheapest_block_size(spec, DENSE_BLOCK_SIZES, vector_isa(target), l1_data_cache(target), l2_bytes(target))


def measure_layer(shape: LayerShape, threads: int, warmup: int, iters: int, tile) -> dict:
    from subp_fx.codegen.lowering.conv import describe_tile
    from subp_fx.codegen.tuning.build import build_block_sparse_conv
    from subp_fx.tools.latency import measure_interleaved

    sparse_spec = shape.kernel_spec(shape.kept_per_row)
    same_n_dense_spec = shape.kernel_spec(shape.in_channels)
    dense_spec = dataclasses.replace(same_n_dense_spec, block_size=dense_block_size(same_n_dense_spec))
    sparse = build_block_sparse_conv(sparse_spec, TARGET, tile=tile)
    dense = build_block_sparse_conv(dense_spec, TARGET, tile=tile)
    contenders = {
        "sparse": tvm_contender(sparse, threads),
        "dense": tvm_contender(dense, threads),
        "torch_nchw": torch_contender(dense_spec, channels_last=False),
        "torch_channels_last": torch_contender(dense_spec, channels_last=True),
        "sparse_1_thread": tvm_contender(sparse, 1),
    }
    if dense_spec.block_size != sparse_spec.block_size:
        contenders["dense_same_n"] = tvm_contender(
            build_block_sparse_conv(same_n_dense_spec, TARGET, tile=tile), threads
        )
    stats = measure_interleaved(contenders, batch=1, warmup=warmup, iters=iters)
    medians = {name: value.median_ms for name, value in stats.items()}
    medians.setdefault("dense_same_n", medians["dense"])
    torch_layout = min(("torch_nchw", "torch_channels_last"), key=medians.get)
    ideal = shape.in_channels / shape.kept_per_row
    return {
        "shape": shape.describe(),
        "in_channels": shape.in_channels,
        "kept_per_row": shape.kept_per_row,
        "out_channels": shape.out_channels,
        "kernel_size": list(shape.kernel_size),
        "stride": list(shape.stride),
        "out_hw": list(shape.out_hw),
        "block_size": shape.block_size,
        "epilogue": shape.epilogue,
        "tile_sparse": describe_tile(sparse.tile),
        "tile_dense": describe_tile(dense.tile),
        "sparse_ms": medians["sparse"],
        "dense_ms": medians["dense"],
        "torch_ms": medians[torch_layout],
        "torch_layout": torch_layout.removeprefix("torch_"),
        "sparse_1_thread_ms": medians["sparse_1_thread"],
        "flop_ideal": ideal,
        "dense_block_size": dense_spec.block_size,
        "dense_same_n_ms": medians["dense_same_n"],
        "sparse_vs_dense": medians["dense"] / medians["sparse"],
        "fraction_of_ideal": medians["dense"] / medians["sparse"] / ideal,
        "fraction_of_ideal_same_n": medians["dense_same_n"] / medians["sparse"] / ideal,
        "sparse_vs_torch": medians[torch_layout] / medians["sparse"],
        "dense_vs_torch": medians[torch_layout] / medians["dense"],
        "thread_scaling": medians["sparse_1_thread"] / medians["sparse"],
        "sparse_gflops": float(
            2
            * shape.out_channels
            * shape.kept_per_row
            * np.prod(shape.kernel_size)
            * np.prod(shape.out_hw)
            / medians["sparse"]
            / 1e6
        ),
        "all_stats": {name: value.as_dict() for name, value in stats.items()},
    }


COLUMNS = (
    "layers",
    "shape",
    "K/C_in",
    "epilogue",
    "sparse ms",
    "dense ms (N)",
    "torch ms",
    "ideal",
    "sparse/dense",
    "% ideal",
    "% ideal same N",
    "sparse/torch",
    "sparse 1t ms",
    "2t scaling",
)


def table_rows(rows: list[dict]) -> list[list[str]]:
    def flag(ok: bool) -> str:
        return "" if ok else " !"

    return [
        [
            f"{row['layers'][0]}" + (f" (+{len(row['layers']) - 1})" if len(row["layers"]) > 1 else ""),
            row["shape"],
            f"{row['kept_per_row']}/{row['in_channels']}",
            row["epilogue"],
            f"{row['sparse_ms']:.3f}",
            f"{row['dense_ms']:.3f} ({row['dense_block_size']})",
            f"{row['torch_ms']:.3f} ({row['torch_layout']})",
            f"{row['flop_ideal']:.2f}x",
            f"{row['sparse_vs_dense']:.2f}x",
            f"{100 * row['fraction_of_ideal']:.0f}%" + flag(row["fraction_of_ideal"] >= GOAL_FRACTION_OF_IDEAL),
            f"{100 * row['fraction_of_ideal_same_n']:.0f}%",
            f"{row['sparse_vs_torch']:.2f}x",
            f"{row['sparse_1_thread_ms']:.3f}",
            f"{row['thread_scaling']:.2f}x" + flag(row["thread_scaling"] >= GOAL_SCALING),
        ]
        for row in rows
    ]


def summary(rows: list[dict]) -> dict:
    """Time-weighted totals over every layer of the model (each shape counted once per layer)."""

    def total(key: str) -> float:
        return sum(row[key] * len(row["layers"]) for row in rows)

    return {
        "sparse_ms": total("sparse_ms"),
        "dense_ms": total("dense_ms"),
        "torch_ms": total("torch_ms"),
        "sparse_1_thread_ms": total("sparse_1_thread_ms"),
        "sparse_vs_dense": total("dense_ms") / total("sparse_ms"),
        "sparse_vs_torch": total("torch_ms") / total("sparse_ms"),
        "thread_scaling": total("sparse_1_thread_ms") / total("sparse_ms"),
        "below_goal_fraction_of_ideal": [
            f"{row['shape']} {row['epilogue']}" for row in rows if row["fraction_of_ideal"] < GOAL_FRACTION_OF_IDEAL
        ],
        "below_goal_scaling": [
            f"{row['shape']} {row['epilogue']}" for row in rows if row["thread_scaling"] < GOAL_SCALING
        ],
    }


def markdown(config: str, result: dict) -> str:
    from tabulate import tabulate

    machine, totals = result["machine"], result["summary"]
    return "\n".join(
        [
            f"# Per-layer breakdown: {config}",
            "",
            f"Machine: {machine['cpu']} ({machine['llvm_cpu']}, {machine['vector_isa']}), "
            f"{machine['logical_cpus']} logical CPUs; "
            f"torch {machine['torch']}, TVM {machine['tvm']}; {machine['date']}.",
            f"Batch 1, {result['threads']} threads (TVM and torch) unless a column says 1t; "
            f"median of {result['iters']} "
            f"interleaved runs after {result['warmup']} warm-up runs; tiles: {result['tile']}. "
            "Random uniform masks at prune "
            f"rate {result['prune_rate']}. sparse = our 1xN kernel at K, dense = the same kernel at K = C_in "
            "with the block "
            'size N our dense build picks (in brackets; "same N" = the dense kernel at the sparse N), both with the '
            "layer's fused epilogue; torch = F.conv2d(+bias) then add_(residual) / relu_() as the layer has them, "
            "dense "
            "weights, faster of NCHW and channels_last. ideal = C_in/K; % ideal = (dense/sparse)/ideal (goal >= 85%); "
            "2t scaling = sparse 1 thread / sparse 2 threads (goal >= 1.85x); ! marks a miss. "
            '"(+n)": n more layers of the same shape.',
            "",
            tabulate(table_rows(result["rows"]), headers=COLUMNS, tablefmt="github"),
            "",
            f"Sum over all {sum(len(row['layers']) for row in result['rows'])} sparse conv layers: "
            f"sparse {totals['sparse_ms']:.2f} ms, "
            f"our dense {totals['dense_ms']:.2f} ms ({totals['sparse_vs_dense']:.2f}x), "
            f"PyTorch {totals['torch_ms']:.2f} ms "
            f"({totals['sparse_vs_torch']:.2f}x); sparse at 1 thread {totals['sparse_1_thread_ms']:.2f} ms "
            f"(2-thread scaling {totals['thread_scaling']:.2f}x).",
            "",
            f"Below 85% of ideal: {', '.join(totals['below_goal_fraction_of_ideal']) or 'none'}.",
            f"Below 1.85x 2-thread scaling: {', '.join(totals['below_goal_scaling']) or 'none'}.",
            "",
        ]
    )


def plot(config: str, result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    positions = np.arange(len(rows))
    width = 0.38
    figure, axes = plt.subplots(figsize=(max(8.0, 0.55 * len(rows) + 3), 5.5))
    axes.bar(positions - width / 2, [row["sparse_vs_dense"] for row in rows], width, label="sparse vs our dense kernel")
    axes.bar(positions + width / 2, [row["sparse_vs_torch"] for row in rows], width, label="sparse vs PyTorch conv2d")
    axes.plot(
        positions,
        [row["flop_ideal"] for row in rows],
        "k_",
        markersize=22,
        markeredgewidth=2.5,
        label="FLOP ideal (C_in / K)",
    )
    axes.plot(
        positions,
        [GOAL_FRACTION_OF_IDEAL * row["flop_ideal"] for row in rows],
        "k_",
        markersize=22,
        markeredgewidth=1,
        alpha=0.5,
        label="85% of ideal",
    )
    axes.axhline(1.0, color="grey", linewidth=0.8)
    axes.set_xticks(
        positions, [f"{row['shape']}\n{row['epilogue']}" for row in rows], rotation=60, ha="right", fontsize=7
    )
    axes.set_ylabel("speed-up of our sparse kernel (x)")
    axes.set_title(f"{config}: per-layer speed-up, batch 1, {result['threads']} threads")
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run_config(config: str, threads: int, warmup: int, iters: int, tile, machine: dict) -> dict:
    import torch

    from subp_fx.recipes.schema import load_recipe

    torch.set_num_threads(threads)
    torch.ones(64, 64) @ torch.ones(64, 64)  # create PyTorch's pool before the caller is pinned
    shapes = sparse_layer_shapes(config, threads)
    pin_caller()
    rows = []
    for shape, layers in shapes.items():
        row = {"layers": layers, **measure_layer(shape, threads, warmup, iters, tile)}
        rows.append(row)
        print(
            f"{config} {row['shape']} {row['epilogue']} x{len(layers)}: sparse {row['sparse_ms']:.3f} ms, "
            f"dense {row['dense_ms']:.3f}, torch {row['torch_ms']:.3f}, "
            f"{100 * row['fraction_of_ideal']:.0f}% of ideal, "
            f"2t scaling {row['thread_scaling']:.2f}x",
            flush=True,
        )
    return {
        "config": config,
        "machine": machine,
        "prune_rate": load_recipe(REPO / "recipes" / CONFIGS[config]).sparsity.prune_rate,
        "threads": threads,
        "warmup": warmup,
        "iters": iters,
        "tile": "heuristic (as compile() without tune_tiles)"
        if tile == "heuristic"
        else "timed per shape (choose_tile)",
        "rows": rows,
        "summary": summary(rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument(
        "--timed-tiles",
        action="store_true",
        help="time a few tiles per shape (choose_tile) instead of the heuristic tile compile() uses by default",
    )
    args = parser.parse_args()

    from tabulate import tabulate

    machine = describe_machine()
    for config in args.configs:
        result = run_config(
            config, args.threads, args.warmup, args.iters, None if args.timed_tiles else "heuristic", machine
        )
        stem = f"per_layer_{config}"  # not Path.with_suffix: "resnet50-2.0g" has a dot
        (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / f"{stem}.md").write_text(markdown(config, result))
        plot(config, result, RESULTS / f"{stem}.png")
        print(tabulate(table_rows(result["rows"]), headers=COLUMNS, tablefmt="github"))
        print("\n".join(markdown(config, result).splitlines()[-5:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
