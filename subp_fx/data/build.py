"""``build_datasets``: pick the builder for ``spec.kind``, then apply the recipe-wide options."""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import Dataset, Subset

from subp_fx.data.fashion_mnist import build_fashion_mnist
from subp_fx.data.imagefolder import build_imagefolder
from subp_fx.data.spec import DEFAULT_IMAGE_SIZE, DataBundle
from subp_fx.data.synthetic import build_synthetic
from subp_fx.errors import ConfigError

# kind -> builder(spec, image_size, in_channels) returning the full (un-subsetted) splits.
DatasetBuilder = Callable[[object, int, int | None], DataBundle]
BUILDERS: dict[str, DatasetBuilder] = {
    "imagefolder": build_imagefolder,
    "fashion-mnist": build_fashion_mnist,
    "synthetic": build_synthetic,
}

# Spec fields that must be positive when set (None means "not used / default").
_POSITIVE_FIELDS = (
    "image_size",
    "num_classes",
    "synthetic_train_size",
    "synthetic_val_size",
    "train_subset",
    "val_subset",
)


def build_datasets(spec, image_size: int | None = None, in_channels: int | None = None) -> DataBundle:
    """Train/val datasets described by ``spec`` (a ``DataSpec`` or the recipe's equivalent model).

    ``image_size``: when given, overrides ``spec.image_size`` (e.g. a size the model requires);
    otherwise ``spec.image_size``, otherwise the kind's default (imagefolder 224, fashion-mnist 28,
    synthetic 32). ``in_channels``: the model's input channels; ``None`` means the data's native
    count (3 for imagefolder and synthetic, 1 for fashion-mnist). Fashion-MNIST can also feed 3
    channels (gray repeated) and ImageFolder 1 (grayscale); anything else is a ``ConfigError``.
    ``train_subset`` / ``val_subset`` keep the first k samples (all of them when k exceeds the split).
    Note that ImageFolder samples are ordered by class, so a small ``train_subset`` there covers
    only the first classes; Fashion-MNIST and synthetic samples are class-mixed.
    """
    builder = BUILDERS.get(spec.kind)
    if builder is None:
        raise ConfigError(f"data.kind is {spec.kind!r}; valid kinds are {', '.join(sorted(BUILDERS))}.")
    _check_positive_fields(spec)
    if in_channels is not None and in_channels < 1:
        raise ConfigError(f"in_channels is {in_channels}; it must be a positive channel count.")
    _check_lighting(spec)
    resolved_size = _first_given(image_size, spec.image_size, DEFAULT_IMAGE_SIZE[spec.kind])
    if resolved_size < 1:
        raise ConfigError(f"image_size is {resolved_size}; it must be a positive pixel count.")
    bundle = builder(spec, resolved_size, in_channels)
    _check_num_classes(spec, bundle)
    bundle.train = first_samples(bundle.train, spec.train_subset)
    bundle.val = first_samples(bundle.val, spec.val_subset)
    return bundle


def first_samples(dataset: Dataset, count: int | None) -> Dataset:
    """The first ``count`` samples of ``dataset``, or the dataset itself when ``count`` is None or
    not smaller than it (a subset bigger than the data is still a valid quick run)."""
    if count is None or count >= len(dataset):
        return dataset
    return Subset(dataset, range(count))


def _first_given(*candidates: int | None) -> int:
    return next(value for value in candidates if value is not None)


def _check_positive_fields(spec) -> None:
    for field in _POSITIVE_FIELDS:
        value = getattr(spec, field)
        if value is not None and value < 1:
            raise ConfigError(f"data.{field} is {value}; it must be a positive integer (or omitted).")


def _check_lighting(spec) -> None:
    lighting = getattr(spec, "lighting", 0.0)
    if lighting < 0:
        raise ConfigError(f"data.lighting is {lighting}; it must be 0 (off) or a positive standard deviation.")
    if lighting > 0 and spec.kind != "imagefolder":
        raise ConfigError(
            f"data.lighting is {lighting} but PCA lighting uses ImageNet's RGB principal components and applies to "
            f"imagefolder data only, not {spec.kind!r}; set data.lighting to 0."
        )
    if lighting > 0 and not spec.augment:
        raise ConfigError(
            f"data.lighting is {lighting} but data.augment is false; lighting noise is a training augmentation, "
            "so turn data.augment on or set data.lighting to 0."
        )


def _check_num_classes(spec, bundle: DataBundle) -> None:
    """For data-defined classes, a ``num_classes`` in the recipe is a claim that must hold."""
    if spec.num_classes is not None and spec.num_classes != bundle.num_classes:
        raise ConfigError(
            f"data.num_classes is {spec.num_classes} but the {spec.kind} data has {bundle.num_classes} "
            f"classes ({', '.join(bundle.class_names[:5])}{', ...' if bundle.num_classes > 5 else ''}). "
            f"num_classes only chooses the class count for synthetic data; remove it or set it to "
            f"{bundle.num_classes}."
        )
