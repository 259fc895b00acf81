"""Every shipped recipe runs end to end (2 training steps, 1 eval batch) on a tiny ImageFolder
written by the test, at the recipe's own image size, so the ImageNet path is really exercised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from subp_fx.recipes.schema import load_recipe
from subp_fx.train.trainer import train
from tests.conftest import REPO, write_imagefolder

PAPER_RECIPES = sorted(path for path in (REPO / "recipes").glob("*.yaml") if "fashion-mnist" not in path.stem)


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory) -> Path:
    return write_imagefolder(tmp_path_factory.mktemp("imagenet"), classes=3, per_class=2, size=48)


@pytest.mark.parametrize("path", PAPER_RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_two_steps(path, imagenet_like, tmp_path):
    recipe = load_recipe(
        path,
        [
            f"data.root={imagenet_like}",
            f"output.dir={tmp_path / 'run'}",
            "train.epochs=1",
            "train.batch_size=2",
            "train.workers=0",
            "train.max_steps_per_epoch=2",
            "train.max_eval_batches=1",
            "train.threads=2",
            "sparsity.decay_start=0",
            "sparsity.decay_end=0",
        ],
    )
    assert recipe.data.image_size == 224 and recipe.data.kind == "imagefolder"
    result = train(recipe)
    assert result.masks_final
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert record["val"]["samples"] == 2
    layers = record["layers"]
    groups = recipe.sparsity.input_group  # rates count groups of G input channels (G=1: the paper)
    assert layers and all(
        layer["kept_per_row"]
        == layer["in_channels"] - int(recipe.sparsity.prune_rate * layer["in_channels"] / groups) * groups
        for layer in layers.values()
    )
    if recipe.model.name in ("resnet18", "resnet34"):
        assert not any("downsample" in name for name in layers)
    if recipe.model.name == "resnet50":
        assert any("downsample" in name for name in layers)
    if recipe.model.name == "mobilenet_v1":
        assert all(name.endswith("pointwise") for name in layers)


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not FASHION_MNIST.is_dir(), reason="Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist)"
)
def test_demo_recipe_on_a_slice_of_real_fashion_mnist(tmp_path):
    recipe = load_recipe(
        REPO / "recipes" / "fashion-mnist-demo.yaml",
        [
            f"output.dir={tmp_path / 'run'}",
            "data.train_subset=4096",
            "data.val_subset=512",
            "train.epochs=2",
            "sparsity.decay_end=1",
            "train.threads=2",
        ],
    )
    result = train(recipe)
    assert result.masks_final
    assert result.final["val"]["samples"] == 512
    # a real signal after 64 steps on real images: far above the 10% of chance
    assert result.final["val"]["top1"] > 60.0
