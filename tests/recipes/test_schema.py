"""Recipe loading: schema validation at the YAML boundary, overrides, and every shipped recipe."""

from pathlib import Path

import pytest
import yaml

from subp_fx.errors import ConfigError
from subp_fx.recipes.schema import apply_overrides, load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))
MINIMAL = {
    "model": {"name": "small_cnn"},
    "data": {"kind": "synthetic"},
    "train": {"epochs": 3},
    "sparsity": {"decay_start": 0, "decay_end": 1},
}


def write(tmp_path: Path, content) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def test_minimal_recipe_gets_paper_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL))
    assert recipe.sparsity.N == 16 and recipe.sparsity.criterion == "BPAR" and recipe.sparsity.schedule == "cubic"
    assert recipe.optim.momentum == 0.9 and recipe.optim.label_smoothing == 0.1 and not recipe.optim.nesterov
    # the authors' training defaults: seed 42, last partial batch kept, cuDNN autotuning and TF32 on CUDA
    assert recipe.train.seed == 42 and not recipe.train.drop_last
    assert recipe.train.cudnn_benchmark and recipe.train.tf32 and not recipe.train.sync_batchnorm
    assert recipe.data.lighting == 0.0 and recipe.optim.lr_step == "iteration"


def test_lighting_and_epoch_lr_step_validate(tmp_path):
    raw = {
        **MINIMAL,
        "data": {"kind": "imagefolder", "root": "x", "lighting": 0.1},
        "optim": {"lr_step": "epoch", "warmup_epochs": 2},
    }
    recipe = load_recipe(write(tmp_path, raw))
    assert recipe.data.lighting == 0.1 and recipe.optim.lr_step == "epoch" and recipe.optim.warmup_epochs == 2


PAPER_RECIPES = [path for path in RECIPES if "fashion-mnist" not in path.stem]


@pytest.mark.parametrize("path", PAPER_RECIPES, ids=lambda p: p.stem)
def test_paper_recipes_follow_the_authors_training(path):
    """What the authors' code does (args.py, pruning_train.py, utils/net_utils.py, data/imagenet.py,
    scripts/generate_scripts.py), stated explicitly in every paper recipe."""
    raw = yaml.safe_load(path.read_text())
    recipe = load_recipe(path)
    assert raw["optim"]["lr_step"] == "epoch" and recipe.optim.scheduler == "cosine"
    assert raw["train"]["seed"] == 42 and raw["train"]["drop_last"] is False
    assert "sync_batchnorm" in raw["train"] and recipe.train.sync_batchnorm is False
    assert recipe.optim.lr == 0.1 and recipe.optim.label_smoothing == 0.1 and recipe.optim.weight_decay == 1e-4
    assert recipe.sparsity.criterion == "BPAR" and (recipe.sparsity.decay_start, recipe.sparsity.decay_end) == (10, 180)
    # torchvision pipeline with PCA lighting for MobileNetV1, DALI without it for the ResNets
    assert recipe.data.lighting == (0.1 if recipe.model.name == "mobilenet_v1" else 0.0)
    assert recipe.train.batch_size == (512 if recipe.model.name == "mobilenet_v1" else 200)
    text = path.read_text()
    for needle in ("nproc_per_node", "sync_batchnorm", "lr_step", "seed", "lighting"):
        assert needle in text.split("\nname:")[0], f"the header comment explains {needle}"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipes_validate(path):
    recipe = load_recipe(path)
    assert recipe.sparsity.decay_end < recipe.train.epochs


def test_paper_recipes_cover_the_results_table():
    names = {path.stem for path in RECIPES}
    for model in ("resnet18", "resnet34", "resnet50-2.0g", "resnet50-1.0g", "mobilenetv1"):
        for n in (16, 32):
            assert f"{model}-n{n}" in names
            recipe = load_recipe(Path(RECIPES[0].parent / f"{model}-n{n}.yaml"))
            assert recipe.sparsity.N == n and recipe.data.kind == "imagefolder" and recipe.model.num_classes == 1000


@pytest.mark.parametrize(
    "mutation, culprit",
    [
        ({"sparsity": {"N": 16, "prune_rat": 0.5}}, "sparsity.prune_rat"),
        ({"sparsity": {"prune_rate": 1.0}}, "sparsity.prune_rate"),
        ({"sparsity": {"prune_rate": -0.1}}, "sparsity.prune_rate"),
        ({"sparsity": {"criterion": "L3"}}, "sparsity.criterion"),
        ({"train": {"epochs": "many"}}, "train.epochs"),
        ({"optimizer": {"lr": 0.1}}, "optimizer"),
        ({"sparsity": {"decay_start": 0, "decay_end": 3}}, "decay_end"),
        ({"sparsity": {"decay_start": 5, "decay_end": 2}}, "decay_end"),
        ({"data": {"kind": "imagefolder"}}, "data.root"),
        ({"sparsity": {"layers": {"exclude": ["re:(unclosed"]}}}, "sparsity.layers.exclude"),
        ({"data": {"lighting": -0.1}}, "data.lighting"),
        ({"data": {"lighting": 0.1}}, "data.lighting"),  # synthetic data has no RGB PCA basis
        ({"data": {"kind": "imagefolder", "root": "x", "lighting": 0.1, "augment": False}}, "data.augment"),
        ({"optim": {"lr_step": "batch"}}, "optim.lr_step"),
        ({"optim": {"lr_step": "epoch", "warmup_epochs": 0.5}}, "optim.warmup_epochs"),
        ({"train": {"sync_batchnorm": "sometimes"}}, "train.sync_batchnorm"),
        ({"train": {"drop_last": "maybe"}}, "train.drop_last"),
        ({"train": {"tf32": 3}}, "train.tf32"),
        ({"sparsity": {"input_group": 0}}, "sparsity.input_group"),
        ({"sparsity": {"input_group": 2.5}}, "sparsity.input_group"),
        ({"sparsity": {"input_group": "four"}}, "sparsity.input_group"),
    ],
)
def test_bad_values_name_the_key(tmp_path, mutation, culprit):
    raw = {**MINIMAL, **{key: {**MINIMAL.get(key, {}), **value} for key, value in mutation.items()}}
    with pytest.raises(ConfigError) as caught:
        load_recipe(write(tmp_path, raw))
    assert culprit in str(caught.value)


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match="line 3"):
        load_recipe(write(tmp_path, "model:\n  name: [resnet18\ndata: {kind: synthetic}\n"))


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_recipe(write(tmp_path, "- just\n- a list\n"))


def test_overrides_parse_yaml_values_and_are_validated(tmp_path):
    path = write(tmp_path, MINIMAL)
    recipe = load_recipe(path, ["train.epochs=5", "sparsity.N=32", "sparsity.layers.exclude=['re:.*fc']", "name=x"])
    assert recipe.train.epochs == 5 and recipe.sparsity.N == 32 and recipe.sparsity.layers.exclude == ["re:.*fc"]
    with pytest.raises(ConfigError, match="train.epoch"):
        load_recipe(path, ["train.epoch=5"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_recipe(path, ["train.epochs"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"train": {"epochs": 3}}, ["train.epochs.x=1"])
