"""Fixtures shared across test folders: tiny on-disk datasets and small recipes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


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
