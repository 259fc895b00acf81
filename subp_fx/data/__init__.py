"""Datasets and loaders for training: ImageNet-style folders, Fashion-MNIST and synthetic data.

Public API: ``DataSpec`` (the recipe's ``data:`` section), ``build_datasets(spec, image_size,
in_channels) -> DataBundle`` and ``build_loaders(bundle, batch_size, workers, distributed,
seed, drop_last_train)`` (train order and augmentation follow from (seed, epoch, sample): call
``set_epoch`` on the returned ``EpochSampler`` before each epoch).
"""

from subp_fx.data.build import build_datasets
from subp_fx.data.loaders import EpochSampler, PerSampleSeeds, ShardSampler, build_loaders
from subp_fx.data.spec import DataBundle, DataSpec

__all__ = [
    "DataBundle",
    "DataSpec",
    "EpochSampler",
    "PerSampleSeeds",
    "ShardSampler",
    "build_datasets",
    "build_loaders",
]
