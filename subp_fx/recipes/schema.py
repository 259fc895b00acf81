"""Recipes: the YAML files ``subp-fx prune`` runs, validated at load time.

Every key is checked here, at the boundary: unknown keys, wrong types and out-of-range values
fail with the key path, the value and what is allowed, before anything is trained or written.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from subp_fx.algorithm.config import SparsityConfig, format_validation_error
from subp_fx.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    name: str = Field(description="resnet18 | resnet34 | resnet50 | mobilenet_v1 | torchvision.<builder>")
    num_classes: int | None = Field(default=None, ge=2, description="default: the dataset's class count")
    small_input: bool = Field(default=False, description="stem for 28x28 / 32x32 images")
    pretrained: str | None = Field(default=None, description="local torchvision-format state_dict to start from")


class DataSection(_Section):
    kind: Literal["imagefolder", "fashion-mnist", "synthetic"]
    root: str | None = Field(
        default=None, description="imagefolder: folder with train/ and val/; fashion-mnist: folder of the IDX files"
    )
    image_size: int | None = Field(default=None, ge=8)
    num_classes: int | None = Field(default=None, ge=2, description="synthetic only")
    synthetic_train_size: int = Field(default=512, ge=1)
    synthetic_val_size: int = Field(default=128, ge=1)
    augment: bool = True
    lighting: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="std of AlexNet-style PCA lighting noise on training images (ImageNet RGB eigenbasis), 0 = off",
    )
    train_subset: int | None = Field(default=None, ge=1, description="use only the first k training samples")
    val_subset: int | None = Field(default=None, ge=1, description="use only the first k validation samples")

    @model_validator(mode="after")
    def _root_needed(self) -> DataSection:
        if self.kind == "imagefolder" and not self.root:
            raise ValueError("data.kind 'imagefolder' needs data.root: a folder holding train/ and val/")
        if self.lighting > 0 and self.kind != "imagefolder":
            raise ValueError(
                f"data.lighting ({self.lighting}) adds noise along ImageNet's RGB principal components and applies "
                f"to data.kind 'imagefolder' only, not {self.kind!r}; set data.lighting to 0"
            )
        if self.lighting > 0 and not self.augment:
            raise ValueError(
                f"data.lighting ({self.lighting}) is a training augmentation but data.augment is false; "
                "set data.augment to true or data.lighting to 0"
            )
        return self


class OptimSection(_Section):
    lr: float = Field(default=0.1, gt=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(default=1e-4, ge=0.0)
    no_decay_bn_bias: bool = Field(default=True, description="no weight decay on batch-norm and bias parameters")
    label_smoothing: float = Field(default=0.1, ge=0.0, lt=1.0)
    scheduler: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = Field(
        default=0.0, ge=0.0, description="linear warm-up from ~0 to lr, in epochs (fractions allowed)"
    )
    min_lr: float = Field(default=0.0, ge=0.0)
    lr_step: Literal["iteration", "epoch"] = Field(
        default="iteration",
        description="iteration: the schedule moves every optimiser step; epoch: the learning rate is set once at the "
        "start of each epoch and held (the SUBP authors' training)",
    )

    @model_validator(mode="after")
    def _warmup_fits_the_step(self) -> OptimSection:
        if self.lr_step == "epoch" and self.warmup_epochs != int(self.warmup_epochs):
            raise ValueError(
                f"optim.warmup_epochs ({self.warmup_epochs}) must be a whole number of epochs when optim.lr_step is "
                "'epoch' (the rate changes only between epochs); round it or set optim.lr_step to 'iteration'"
            )
        return self


class TrainSection(_Section):
    epochs: int = Field(default=200, ge=1)
    batch_size: int = Field(default=256, ge=1, description="per process")
    workers: int = Field(default=4, ge=0)
    amp: bool = Field(default=True, description="mixed precision on CUDA; ignored on CPU")
    amp_dtype: Literal["float16", "bfloat16"] = Field(
        default="float16",
        description="autocast dtype when amp is on: float16 (with a gradient scaler) or bfloat16 (no scaler needed)",
    )
    channels_last: bool = Field(
        default=False, description="model and input batches in channels_last (NHWC) memory format: faster convs on GPUs"
    )
    seed: int = Field(default=42, ge=0, description="the SUBP authors' default")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_steps_per_epoch: int | None = Field(
        default=None, ge=1, description="cap on training steps per epoch (smoke tests, quick looks)"
    )
    max_eval_batches: int | None = Field(default=None, ge=1)
    log_every: int = Field(default=50, ge=1, description="steps between log lines")
    threads: int | None = Field(default=None, ge=1, description="torch intra-op threads on CPU (default: all cores)")
    drop_last: bool = Field(
        default=False, description="drop each epoch's last, incomplete training batch (the authors keep it)"
    )
    sync_batchnorm: bool = Field(
        default=False,
        description="batch-norm statistics over the global batch of all processes (CUDA under torchrun only)",
    )
    cudnn_benchmark: bool = Field(default=True, description="CUDA: let cuDNN time and pick conv algorithms")
    tf32: bool = Field(default=True, description="CUDA: TF32 tensor cores for fp32 matmuls and convs")


class OutputSection(_Section):
    dir: str = "runs/subp"


class Recipe(_Section):
    """A whole recipe. ``sparsity`` is the same model ``prepare`` validates."""

    name: str = "subp"
    model: ModelSection
    data: DataSection
    sparsity: SparsityConfig = Field(default_factory=SparsityConfig)
    optim: OptimSection = Field(default_factory=OptimSection)
    train: TrainSection = Field(default_factory=TrainSection)
    output: OutputSection = Field(default_factory=OutputSection)

    @model_validator(mode="after")
    def _schedule_fits_training(self) -> Recipe:
        if self.sparsity.prune_rate > 0 and self.sparsity.decay_end >= self.train.epochs:
            raise ValueError(
                f"sparsity.decay_end ({self.sparsity.decay_end}) must be before the last epoch "
                f"(train.epochs={self.train.epochs}, so at most {self.train.epochs - 1}): the final, uniform mask "
                "must be in force for at least one epoch of training"
            )
        return self


def _parse_override(assignment: str) -> tuple[list[str], object]:
    key, sep, raw_value = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {assignment!r} is not KEY=VALUE (example: --set train.epochs=2)")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else None
    except yaml.YAMLError:
        value = raw_value
    return key.strip().split("."), value


def apply_overrides(raw: dict, assignments: list[str]) -> dict:
    """``["train.epochs=2", "sparsity.layers.exclude=['re:.*fc']"]`` applied to a raw recipe dict;
    values are parsed as YAML scalars/lists. Unknown keys are caught later by validation."""
    raw = copy.deepcopy(raw)
    for assignment in assignments:
        path, value = _parse_override(assignment)
        section = raw
        for part in path[:-1]:
            child = section.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {assignment!r}: {part!r} is a value, not a section")
            section = child
        section[path[-1]] = value
    return raw


def validate_recipe(raw: object, source: str = "recipe") -> Recipe:
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: a recipe must be a YAML mapping of sections (model, data, sparsity, optim, train, output), "
            f"got {type(raw).__name__}"
        )
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source} is invalid:\n{format_validation_error(exc)}") from None


def read_recipe_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file {str(path)!r} does not exist; pass the path of a YAML recipe (see recipes/)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        position = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(f"recipe {str(path)!r} is not valid YAML{position}: {getattr(exc, 'problem', exc)}") from None
    return raw if raw is not None else {}


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe file."""
    raw = read_recipe_yaml(path)
    if overrides:
        if not isinstance(raw, dict):
            raise ConfigError(f"recipe {str(path)!r} is not a mapping, cannot apply overrides")
        raw = apply_overrides(raw, list(overrides))
    return validate_recipe(raw, source=f"recipe {str(path)!r}")
