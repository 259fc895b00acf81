"""DataLoaders whose shuffling is reproducible from one seed, single-process or distributed.

Distributed evaluation: the val set is split into disjoint shards (rank r gets samples
r, r + W, r + 2W, ...) with no padding, so every val sample is evaluated exactly once across
ranks. Shards may differ in size by one sample; the trainer must therefore sum (correct, count)
over its shard and ``all_reduce`` those two numbers once after the loop, and must not issue
per-batch collectives during evaluation (ranks can run a different number of batches).
``DistributedSampler`` is not used for val because it pads by repeating samples, which skews
accuracy whenever the val size is not a multiple of the world size.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Sampler

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


def build_loaders(
    bundle: DataBundle,
    batch_size: int,
    workers: int,
    distributed: bool,
    seed: int,
    drop_last_train: bool = True,
    *,
    world_size: int | None = None,
    rank: int | None = None,
) -> tuple[DataLoader, DataLoader, DistributedSampler | None]:
    """(train loader, val loader, train sampler).

    Train is shuffled: by a ``DistributedSampler(shuffle=True, seed=seed)`` when ``distributed``
    (the returned sampler; call ``set_epoch(epoch)`` on it every epoch, or every epoch repeats
    the same order), otherwise by a ``torch.Generator`` seeded with ``seed`` (returned sampler is
    ``None``). Each loader also gets its own seeded generator, so worker RNG seeds, and thus
    random augmentations in workers, follow from ``seed`` too; with ``workers == 0`` augmentations
    draw from the global torch RNG, which the trainer seeds. Val is never shuffled; see the module
    docstring for how it is sharded under ``distributed``. ``world_size`` / ``rank`` default to
    the initialised process group's.
    """
    _check_loader_arguments(batch_size, workers)
    if distributed:
        world_size, rank = _resolve_world(world_size, rank)
        train_sampler = DistributedSampler(
            bundle.train, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=drop_last_train
        )
        val_sampler = ShardSampler(len(bundle.val), world_size, rank)
        samples_per_rank = len(train_sampler)
    else:
        rank = 0
        train_sampler = None
        val_sampler = None
        samples_per_rank = len(bundle.train)
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
    train_loader = DataLoader(
        bundle.train,
        shuffle=train_sampler is None,
        sampler=train_sampler,
        drop_last=drop_last_train,
        generator=_seeded_generator(seed, rank),
        **common,
    )
    val_loader = DataLoader(
        bundle.val, shuffle=False, sampler=val_sampler, drop_last=False,
        generator=_seeded_generator(seed + 1, rank), **common,
    )
    return train_loader, val_loader, train_sampler


def _seeded_generator(seed: int, rank: int) -> torch.Generator:
    """Distinct per rank so workers on different ranks draw different augmentations."""
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
