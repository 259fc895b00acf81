"""The compiled artefact of ``subp-fx compile``: what goes in, and the directory that comes out.

``load_compile_source`` turns a checkpoint or a recipe into the model to compile;
``compile_to_directory`` compiles it (and its dense twin) and writes the directory; ``eval``
(``tools.evaluate``) and ``bench`` (``tools.benchmark``) read it back. A compiled artefact is a directory:
  model.so, manifest.json     the sparse model (``subp_fx.codegen``'s export)
  dense/                      the same model compiled with every conv dense (our dense baseline)
  pytorch_model.pt            the same weights as a stock PyTorch model (SUBP convs -> nn.Conv2d
                              with the masked weight, batch norms unfolded): PyTorch's baselines
  subp_model.pt               the SUBP model itself, so `bench --batch` can recompile both builds
  source.json                 where it came from: checkpoint or recipe, recipe, imposed sparsity,
                              precision and calibration data (int8)
It is built in a temporary sibling directory and renamed into place only when complete.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.fx as fx

from subp_fx.errors import ConfigError
from subp_fx.fileio import staged_directory
from subp_fx.recipes.schema import Recipe, load_recipe
from subp_fx.tools.calibration_spec import CalibrationSpec
from subp_fx.train.checkpoint import load_trained

if TYPE_CHECKING:
    from subp_fx.codegen.progress import CompileProgress

# Names of the two models compiled, as a progress observer is told them.
SPARSE_LABEL = "sparse model"
DENSE_LABEL = "dense baseline"

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
    source: str,
    batch: int = 1,
    image_size: int | None = None,
    impose_sparsity: float | None = None,
    seed: int = 0,
    recipe_overrides: tuple[str, ...] = (),
) -> CompileSource:
    """A checkpoint (trained masks) or a recipe (random weights; random uniform masks at the
    recipe's prune rate, or at ``impose_sparsity``) as an eval-mode GraphModule to compile.
    Weights and masks drawn for a recipe depend only on ``seed``. ``recipe_overrides``: ``--set``
    style assignments applied to a recipe (e.g. ``sparsity.input_group=4``)."""
    from subp_fx.passes import impose_random_masks, prepare
    from subp_fx.recipes.model import nominal_input_shape, recipe_model

    path = Path(source)
    if not path.exists():
        raise ConfigError(
            f"{source!r} does not exist; "
            "pass a checkpoint written by `subp-fx prune` (last.pt / best.pt) or a recipe YAML"
        )
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    if image_size is not None and image_size < 8:
        raise ConfigError(f"--image-size must be >= 8, got {image_size}")
    if _is_recipe(path):
        recipe = load_recipe(path, recipe_overrides)
        # The same command must give the same artefact: the random weights come from ``seed`` too.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gm = prepare(recipe_model(recipe), recipe.sparsity)
        _, channels, height, _ = nominal_input_shape(recipe)
        rate = recipe.sparsity.prune_rate if impose_sparsity is None else impose_sparsity
        origin = f"recipe {path} (random weights)"
    else:
        gm, recipe, checkpoint = load_trained(path)
        channels, height = checkpoint.in_channels, checkpoint.image_size
        rate = impose_sparsity
        origin = f"checkpoint {path} (epoch {checkpoint.epoch})"
    if rate is not None:
        gm = impose_random_masks(gm, prune_rate=rate, N=recipe.sparsity.N, seed=seed, G=recipe.sparsity.input_group)
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
    progress: Callable[[str], CompileProgress] | None = None,
    precision: str = "fp32",
    calibration: CalibrationSpec | None = None,
    sub_batch: int | None = None,
    winograd: bool = True,
):
    """Compile ``source`` (and its dense twin) and write the artefact directory atomically.
    Returns the sparse ``CompiledModel``. ``tuning_log``: see ``codegen.compile``. ``progress``:
    makes the observer of each model's compile from its label (``SPARSE_LABEL``, ``DENSE_LABEL``).
    ``precision`` / ``calibration``: both builds in that precision, calibrated on the same batches
    (``CalibrationSpec``, required for int8), recorded in ``source.json``. ``sub_batch``: see
    ``codegen.compile`` (both builds), as is ``winograd``."""
    from subp_fx.codegen.api import compile as compile_model
    from subp_fx.passes import strip_masks

    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise ConfigError(
            f"output directory {str(out_dir)!r} already exists; choose another -o, or pass --force to replace it"
        )
    example = np.zeros(source.input_shape, dtype=np.float32)
    options = {"target": target, "threads": threads, "tune_tiles": tune_tiles, "tuning_log": tuning_log}
    options["precision"] = precision
    options["sub_batch"] = sub_batch
    options["winograd"] = winograd
    if calibration is not None:
        options["calibration"] = calibration.batches_for(source.input_shape)
        options["calibration_info"] = calibration.to_json()
    sparse = compile_model(
        source.model, example, **options, progress=progress(SPARSE_LABEL) if progress is not None else None
    )
    dense_model = strip_masks(source.model).eval()
    dense = (
        compile_model(dense_model, example, **options, progress=progress(DENSE_LABEL) if progress is not None else None)
        if dense_baseline
        else None
    )

    with staged_directory(out_dir) as staging:
        sparse.export(staging, force=True)
        if dense is not None:
            dense.export(staging / DENSE_DIR)
        torch.save(dense_model, staging / PYTORCH_MODEL_FILE)
        torch.save(source.model, staging / SUBP_MODEL_FILE)
        (staging / SOURCE_FILE).write_text(
            json.dumps(
                {
                    "origin": source.origin,
                    "input_shape": list(source.input_shape),
                    "imposed_prune_rate": source.imposed_prune_rate,
                    "precision": precision,
                    "winograd": winograd,
                    "calibration": None if calibration is None else calibration.to_json(),
                    "recipe": source.recipe.model_dump(),
                },
                indent=2,
            )
            + "\n"
        )
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
