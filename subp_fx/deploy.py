"""What ``subp-fx compile``, ``eval`` and ``bench`` do, on top of the compile API.

A compiled artefact is a directory:
  model.so, manifest.json     the sparse model (``subp_fx.codegen``'s export)
  dense/                      the same model compiled with every conv dense (our dense baseline)
  pytorch_model.pt            the same weights as a stock PyTorch model (SUBP convs -> nn.Conv2d
                              with the masked weight, batch norms unfolded): PyTorch's baselines
  subp_model.pt               the SUBP model itself, so `bench --batch` can recompile both builds
  source.json                 where it came from: checkpoint or recipe, recipe, imposed sparsity
It is built in a temporary sibling directory and renamed into place only when complete.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.fx as fx

from subp_fx.errors import CheckpointError, ConfigError
from subp_fx.fileio import publish_directory
from subp_fx.recipe import Recipe, load_recipe

SOURCE_FILE = "source.json"
PYTORCH_MODEL_FILE = "pytorch_model.pt"
SUBP_MODEL_FILE = "subp_model.pt"
DENSE_DIR = "dense"


@dataclass
class CompileSource:
    """The model to compile, its input shape and where it came from."""

    model: fx.GraphModule
    input_shape: tuple[int, int, int, int]
    recipe: Recipe
    origin: str
    imposed_prune_rate: float | None


def _is_recipe(path: Path) -> bool:
    return path.suffix in (".yaml", ".yml")


def load_compile_source(
    source: str, batch: int = 1, image_size: int | None = None, impose_sparsity: float | None = None, seed: int = 0
) -> CompileSource:
    """A checkpoint (trained masks) or a recipe (random weights; random uniform masks at the
    recipe's prune rate, or at ``impose_sparsity``) as an eval-mode GraphModule to compile.
    Weights and masks drawn for a recipe depend only on ``seed``."""
    from subp_fx.passes import impose_random_masks, prepare
    from subp_fx.recipe_model import nominal_input_shape, recipe_model

    path = Path(source)
    if not path.exists():
        raise ConfigError(f"{source!r} does not exist; pass a checkpoint written by `subp-fx prune` (last.pt / best.pt) or a recipe YAML")
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    if image_size is not None and image_size < 8:
        raise ConfigError(f"--image-size must be >= 8, got {image_size}")
    if _is_recipe(path):
        recipe = load_recipe(path)
        # The same command must give the same artefact: the random weights come from ``seed`` too.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gm = prepare(recipe_model(recipe), recipe.sparsity)
        _, channels, height, _ = nominal_input_shape(recipe)
        rate = recipe.sparsity.prune_rate if impose_sparsity is None else impose_sparsity
        origin = f"recipe {path} (random weights)"
    else:
        from subp_fx.train.trainer import load_trained

        try:
            gm, recipe, payload = load_trained(path)
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None
        channels, height = payload["in_channels"], payload["image_size"]
        rate = impose_sparsity
        origin = f"checkpoint {path} (epoch {payload['epoch']})"
    if rate is not None:
        gm = impose_random_masks(gm, prune_rate=rate, N=recipe.sparsity.N, seed=seed)
    size = image_size or height
    return CompileSource(gm.eval(), (batch, channels, size, size), recipe, origin, rate)


def compile_to_directory(
    source: CompileSource,
    out_dir: str | Path,
    target: str,
    threads: int | None = None,
    force: bool = False,
    dense_baseline: bool = True,
    tune_tiles: bool = False,
    tuning_log: str | Path | None = None,
):
    """Compile ``source`` (and its dense twin) and write the artefact directory atomically.
    Returns the sparse ``CompiledModel``. ``tuning_log``: see ``codegen.compile``."""
    from subp_fx.codegen.api import compile as compile_model
    from subp_fx.passes import strip_masks

    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise ConfigError(f"output directory {str(out_dir)!r} already exists; choose another -o, or pass --force to replace it")
    example = np.zeros(source.input_shape, dtype=np.float32)
    sparse = compile_model(source.model, example, target=target, threads=threads, tune_tiles=tune_tiles, tuning_log=tuning_log)
    dense_model = strip_masks(source.model).eval()
    dense = (
        compile_model(dense_model, example, target=target, threads=threads, tune_tiles=tune_tiles, tuning_log=tuning_log)
        if dense_baseline else None
    )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        sparse.export(staging, force=True)
        if dense is not None:
            dense.export(staging / DENSE_DIR)
        torch.save(dense_model, staging / PYTORCH_MODEL_FILE)
        torch.save(source.model, staging / SUBP_MODEL_FILE)
        (staging / SOURCE_FILE).write_text(json.dumps({
            "origin": source.origin,
            "input_shape": list(source.input_shape),
            "imposed_prune_rate": source.imposed_prune_rate,
            "recipe": source.recipe.model_dump(),
        }, indent=2) + "\n")
        publish_directory(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sparse


def read_source(out_dir: Path) -> dict:
    path = Path(out_dir) / SOURCE_FILE
    if not path.is_file():
        raise ConfigError(f"{str(out_dir)!r} is not a directory written by `subp-fx compile` (no {SOURCE_FILE})")
    return json.loads(path.read_text())


def load_pytorch_model(out_dir: Path, file_name: str = PYTORCH_MODEL_FILE) -> torch.nn.Module:
    # Our own artefact (a pickled GraphModule), written by compile_to_directory.
    path = Path(out_dir) / file_name
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} is missing; recompile the artefact with `subp-fx compile`")
    return torch.load(path, map_location="cpu", weights_only=False).eval()


def _contenders_for_batch(out_dir: Path, batch: int, threads: int | None):
    """(sparse, dense or None) compiled models for ``batch``: the artefact's own when its batch
    matches, otherwise both rebuilt for ``batch`` from the stored models with the same target."""
    from subp_fx.codegen.api import compile as compile_model
    from subp_fx.codegen.api import load_compiled

    sparse = load_compiled(out_dir, threads=threads)
    has_dense = (out_dir / DENSE_DIR).is_dir()
    if batch is None or batch == sparse.input_shape[0]:
        return sparse, load_compiled(out_dir / DENSE_DIR, threads=sparse.threads) if has_dense else None
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    shape = (batch, *sparse.input_shape[1:])
    target, threads = sparse.manifest.target, sparse.threads
    rebuilt = compile_model(load_pytorch_model(out_dir, SUBP_MODEL_FILE), shape, target=target, threads=threads)
    dense = compile_model(load_pytorch_model(out_dir), shape, target=target, threads=threads) if has_dense else None
    return rebuilt, dense


def _val_loader(out_dir: Path, input_shape: tuple[int, ...], kind: str | None, root: str | None, val_subset: int | None):
    from subp_fx.data import build_datasets

    recipe = Recipe.model_validate(read_source(out_dir)["recipe"])
    updates = {key: value for key, value in (("kind", kind), ("root", root), ("val_subset", val_subset)) if value is not None}
    data = recipe.data.model_copy(update=updates)
    if kind is not None and root is None and kind != recipe.data.kind:
        data = data.model_copy(update={"root": None})
    bundle = build_datasets(data, image_size=input_shape[2], in_channels=input_shape[1])
    return torch.utils.data.DataLoader(bundle.val, batch_size=input_shape[0], shuffle=False)


def _padded_batch(images: torch.Tensor, batch: int) -> np.ndarray:
    """The compiled model has a static batch: the last, short batch is zero-padded."""
    array = np.zeros((batch, *images.shape[1:]), dtype=np.float32)
    array[: images.shape[0]] = images.numpy()
    return array


def evaluate_compiled(
    out_dir: str | Path,
    kind: str | None = None,
    root: str | None = None,
    val_subset: int | None = None,
    threads: int | None = None,
    compare_pytorch: bool = False,
) -> dict:
    """Top-1 / top-5 / loss of the compiled model on a validation set (the recipe's, unless
    ``kind`` / ``root`` say otherwise); with ``compare_pytorch`` also of the same weights in
    PyTorch eager, and the largest logit difference between the two."""
    from subp_fx.codegen.api import load_compiled
    from subp_fx.train.metrics import RunningSums

    out_dir = Path(out_dir)
    compiled = load_compiled(out_dir, threads=threads)
    loader = _val_loader(out_dir, compiled.input_shape, kind, root, val_subset)
    reference = load_pytorch_model(out_dir) if compare_pytorch else None
    criterion = torch.nn.CrossEntropyLoss()
    sums, reference_sums, max_logit_diff, max_logit = RunningSums(), RunningSums(), 0.0, 0.0
    for images, targets in loader:
        count = images.shape[0]
        logits = torch.from_numpy(compiled(_padded_batch(images, compiled.input_shape[0]))[:count])
        sums.add(float(criterion(logits, targets)), logits, targets)
        if reference is not None:
            with torch.inference_mode():
                expected = reference(images)
            reference_sums.add(float(criterion(expected, targets)), expected, targets)
            max_logit_diff = max(max_logit_diff, float((expected - logits).abs().max()))
            max_logit = max(max_logit, float(expected.abs().max()))
    result = {"compiled": RunningSums.summary(sums.as_list()), "threads": compiled.threads}
    if reference is not None:
        result["pytorch"] = RunningSums.summary(reference_sums.as_list())
        result["max_abs_logit_diff"] = max_logit_diff
        result["max_abs_logit"] = max_logit
    return result


SPARSE_NAME = "subp_sparse"
DENSE_NAME = "subp_dense"

# What every field of `subp-fx bench --json` means (also printed by `subp-fx bench --explain`).
BENCH_FIELDS = {
    "results.<name>": "latency of one contender, ms per batch: median_ms, mean_ms, p90_ms, p99_ms, min_ms over iters timed runs; throughput_per_s = batch * 1000 / median_ms",
    "subp_sparse": "this compiled model (1xN block-sparse kernels)",
    "subp_dense": "the same weights compiled by subp-fx with every conv dense (same kernels, K = C_in)",
    "pytorch_eager_dense": "the same weights in PyTorch eager (pruned weights as zeros, batch norm unfolded)",
    "pytorch_compile_dense": "torch.compile (inductor) with torch._inductor.config.freezing = True",
    "pytorch_torchscript_dense": "torch.jit.trace + torch.jit.freeze",
    "macs_sparse / macs_dense": "multiply-accumulates per batch actually executed by the sparse / dense build (kernel tables)",
    "flop_ideal_speedup": "macs_dense / macs_sparse: the speed-up over our dense build if time were proportional to MACs",
    "flop_ideal_ms": "subp_dense median * macs_sparse / macs_dense",
    "speedup_vs.<name>": "<name> median / subp_sparse median (> 1: the sparse model is faster)",
    "threads": "TVM runtime threads and torch intra-op threads, both set to the same count",
}


def bench_compiled(
    out_dir: str | Path,
    threads: int | None = None,
    warmup: int = 10,
    iters: int = 50,
    torch_compile: bool = True,
    batch: int | None = None,
) -> dict:
    """Median / p90 / p99 latency of the sparse model beside our dense build and PyTorch's dense
    paths, interleaved in one process on the same input with the same thread count. ``batch``
    other than the artefact's recompiles both builds for it (the compiled batch is static)."""
    from subp_fx.bench import TORCH_BASELINES, measure_interleaved

    out_dir = Path(out_dir)
    sparse, dense = _contenders_for_batch(out_dir, batch, threads)
    threads = sparse.threads
    torch.set_num_threads(threads)
    shape = tuple(sparse.input_shape)
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    array = example.numpy()
    contenders = {SPARSE_NAME: lambda: sparse(array)}
    macs_sparse = sum(entry.macs for entry in sparse.kernel_table)
    macs_dense = None
    if dense is not None:
        contenders[DENSE_NAME] = lambda: dense(array)
        macs_dense = sum(entry.macs for entry in dense.kernel_table)
    reference = load_pytorch_model(out_dir)
    for name, build in TORCH_BASELINES.items():
        if name == "pytorch_compile_dense" and not torch_compile:
            continue
        contenders[name] = build(reference, example)
    stats = measure_interleaved(contenders, batch=shape[0], warmup=warmup, iters=iters)
    sparse_median = stats[SPARSE_NAME].median_ms
    result = {
        "artefact": str(out_dir),
        "input_shape": list(shape),
        "batch": shape[0],
        "threads": {"tvm": threads, "torch": torch.get_num_threads()},
        "warmup": warmup,
        "iters": iters,
        "results": {name: value.as_dict() for name, value in stats.items()},
        "speedup_vs": {name: value.median_ms / sparse_median for name, value in stats.items() if name != SPARSE_NAME},
        "macs_sparse": macs_sparse,
        "macs_dense": macs_dense,
    }
    if macs_dense:
        result["flop_ideal_speedup"] = macs_dense / macs_sparse
        result["flop_ideal_ms"] = stats[DENSE_NAME].median_ms * macs_sparse / macs_dense
    return result


def format_bench(result: dict) -> str:
    from tabulate import tabulate

    rows = [
        [name, f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['throughput_per_s']:.1f}",
         "1.00x" if name == SPARSE_NAME else f"{result['speedup_vs'][name]:.2f}x"]
        for name, r in result["results"].items()
    ]
    if "flop_ideal_ms" in result:
        rows.append(["flop_ideal (sparse MACs at our dense speed)", f"{result['flop_ideal_ms']:.2f}", "", "", "",
                     f"{result['flop_ideal_speedup']:.2f}x vs subp_dense"])
    header = (
        f"input {tuple(result['input_shape'])}, threads: TVM {result['threads']['tvm']}, torch {result['threads']['torch']}; "
        f"{result['iters']} interleaved runs after {result['warmup']} warm-up runs each\n"
    )
    table = tabulate(rows, headers=["contender", "median ms", "p90 ms", "p99 ms", "images/s", "sparse speed-up"], tablefmt="github")
    return header + table
