"""DataLoaders whose shuffling and augmentation are reproducible from one seed, single-process or
distributed, with or without worker processes.

Training order and augmentation depend on (seed, epoch, sample index) alone: each epoch's order is
a permutation drawn from (seed, epoch) (``DistributedSampler`` under torch.distributed), and every
training sample is loaded with torch's and Python's global generators seeded from (seed, epoch,
index) (``PerSampleSeeds``). So an epoch replayed after ``--resume`` gets the same images, crops
and flips as the uninterrupted run even though persistent workers were seeded only once, and the
data does not depend on ``workers`` (0, 2 or 16 give the same batches).

Distributed evaluation: the val set is split into disjoint shards (rank r gets samples
r, r + W, r + 2W, ...) with no padding, so every val sample is evaluated exactly once across
ranks. Shards may differ in size by one sample; the trainer must therefore sum (correct, count)
over its shard and ``all_reduce`` those two numbers once after the loop, and must not issue
per-batch collectives during evaluation (ranks can run a different number of batches).
``DistributedSampler`` is not used for val because it pads by repeating samples, which skews
accuracy whenever the val size is not a multiple of the world size.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from subp_fx.algorithm.seeding import derived_seed
from subp_fx.data.spec import DataBundle
from subp_fx.errors import ConfigError


class ShardSampler(Sampler[int]):
    """In-order, non-overlapping, unpadded shard ``rank::world_size`` of ``range(dataset_size)``."""

    def __init__(self, dataset_size: int, world_size: int, rank: int):
        self.dataset_size = dataset_size
        self.world_size = world_size
        self.rank = rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.dataset_size, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.dataset_size, self.world_size))


class EpochShuffleSampler(Sampler[int]):
    """A permutation of ``range(size)`` drawn from (``seed``, epoch) alone; ``set_epoch`` picks the
    epoch (the single-process counterpart of ``DistributedSampler(shuffle=True)``)."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch) & (2**63 - 1))
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class EpochSampler(Sampler[tuple[int, int]]):
    """The training sampler: yields ``(epoch, index)`` for each index of ``indices`` (an
    ``EpochShuffleSampler`` or a ``DistributedSampler``), so each sample knows the epoch it is
    loaded for, even in a persistent worker. Call ``set_epoch`` before iterating an epoch."""

    def __init__(self, indices: EpochShuffleSampler | DistributedSampler):
        self.indices = indices
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.indices.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, index) for index in self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class PerSampleSeeds(Dataset):
    """``dataset`` indexed by ``(epoch, index)``: loads sample ``index`` with torch's CPU generator and
    Python's ``random`` seeded from (``seed``, epoch, index), restoring both afterwards, so random
    augmentations depend on nothing else (not the worker, the worker count, nor the caller's RNG).
    numpy's global generator is not seeded: the transforms here do not use it."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def sample_seed(self, epoch: int, index: int) -> int:
        return derived_seed(self.seed, epoch, index)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        sample_seed = self.sample_seed(epoch, index)
        python_state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(sample_seed & (2**63 - 1))
            random.seed(sample_seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(python_state)


def build_loaders(
    bundle: DataBundle,
    batch_size: int,
    workers: int,
    distributed: bool,
    seed: int,
    drop_last_train: bool = False,
    *,
    world_size: int | None = None,
    rank: int | None = None,
) -> tuple[DataLoader, DataLoader, EpochSampler]:
    """(train loader, val loader, train sampler).

    The train sampler is an ``EpochSampler``: call ``set_epoch(epoch)`` on it before every epoch
    (or every epoch repeats epoch 0's order and augmentation). Its order is a permutation drawn
    from (``seed``, epoch), by a ``DistributedSampler(shuffle=True, seed=seed)`` when
    ``distributed``, and each sample's augmentation is drawn from (``seed``, epoch, index), see
    the module docstring. The last incomplete batch is kept unless ``drop_last_train``; under
    ``distributed`` the ``DistributedSampler`` then pads the split by repeating a few samples so
    every rank runs the same number of steps (DDP needs that). Val is never shuffled; see the
    module docstring for how it is sharded under ``distributed``. ``world_size`` / ``rank``
    default to the initialised process group's.
    """
    _check_loader_arguments(batch_size, workers)
    if distributed:
        world_size, rank = _resolve_world(world_size, rank)
        indices = DistributedSampler(
            bundle.train, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=drop_last_train
        )
        val_sampler = ShardSampler(len(bundle.val), world_size, rank)
    else:
        rank = 0
        indices = EpochShuffleSampler(len(bundle.train), seed)
        val_sampler = None
    train_sampler = EpochSampler(indices)
    samples_per_rank = len(indices)
    if drop_last_train and samples_per_rank < batch_size:
        raise ConfigError(
            f"each training process gets {samples_per_rank} samples but batch_size is {batch_size}; with "
            f"the last incomplete batch dropped, no training batch would be produced. Lower batch_size "
            f"or enlarge the training split (data.train_subset / data.synthetic_train_size)."
        )
    common = {
        "batch_size": batch_size,
        "num_workers": workers,
        "persistent_workers": workers > 0,
        "pin_memory": torch.cuda.is_available(),
    }
    if samples_per_rank == 0:
        raise ConfigError(
            "the training split is empty for this process; enlarge it (data.train_subset / "
            "data.synthetic_train_size) or use fewer processes."
        )
    train_loader = DataLoader(
        PerSampleSeeds(bundle.train, seed),
        shuffle=False,
        sampler=train_sampler,
        drop_last=drop_last_train,
        generator=_seeded_generator(seed, rank),
        **common,
    )
    val_loader = DataLoader(
        bundle.val,
        shuffle=False,
        sampler=val_sampler,
        drop_last=False,
        generator=_seeded_generator(seed + 1, rank),
        **common,
    )
    return train_loader, val_loader, train_sampler


def _seeded_generator(seed: int, rank: int) -> torch.Generator:
    """Seeds the loader's worker processes (nothing random is drawn from them: training samples
    are seeded per sample, validation is not augmented); distinct per rank."""
    return torch.Generator().manual_seed(seed + 1_000_003 * rank)


def _resolve_world(world_size: int | None, rank: int | None) -> tuple[int, int]:
    if world_size is not None and rank is not None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1} for world_size {world_size}")
        return world_size, rank
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "build_loaders(distributed=True) needs an initialised torch.distributed process group "
            "(or explicit world_size and rank)"
        )
    return dist.get_world_size(), dist.get_rank()


def _check_loader_arguments(batch_size: int, workers: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"batch_size is {batch_size}; it must be a positive integer.")
    if workers < 0:
        raise ConfigError(f"workers is {workers}; it must be 0 (load in the main process) or more.")
