"""Fixtures shared across test folders: tiny on-disk datasets and small recipes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parent.parent

try:
    from hypothesis import settings
except ImportError:  # the property tests skip without it
    settings = None
if settings is not None:
    # The suite is a gate, so a property test runs the same examples on every run and machine
    # (derandomize: the examples come from a hash of the test) and keeps no example database
    # (no .hypothesis/ folder). HYPOTHESIS_PROFILE=explore draws fresh random examples instead,
    # to hunt for new counterexamples by hand.
    settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
    settings.register_profile("explore", derandomize=False, database=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def write_imagefolder(root: Path, classes: int = 2, per_class: int = 3, size: int = 40, seed: int = 0) -> Path:
    """root/train and root/val with ``classes`` folders of random RGB PNGs (class-tinted, so the
    task is learnable)."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for label in range(classes):
            for index in range(per_class):
                pixels = rng.integers(0, 128, (size, size, 3), dtype=np.uint8)
                pixels[..., label % 3] += 100
                path = root / split / f"class{label}" / f"{index}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path)
    return root


@pytest.fixture
def tiny_imagefolder(tmp_path: Path) -> Path:
    return write_imagefolder(tmp_path / "imagenet")


def small_recipe(output_dir: Path, **sections) -> dict:
    """A synthetic-data SmallCNN recipe that trains in seconds; ``sections`` update it."""
    recipe = {
        "name": "tiny",
        "model": {"name": "small_cnn"},
        "data": {"kind": "synthetic", "synthetic_train_size": 64, "synthetic_val_size": 32, "image_size": 16},
        "sparsity": {"N": 16, "prune_rate": 0.5, "decay_start": 0, "decay_end": 1, "criterion": "BPAR"},
        "optim": {"lr": 0.05},
        "train": {"epochs": 3, "batch_size": 16, "workers": 0, "seed": 0, "threads": 1},
        "output": {"dir": str(output_dir)},
    }
    for section, values in sections.items():
        recipe[section] = {**recipe.get(section, {}), **values}
    return recipe


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path
