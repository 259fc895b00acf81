"""build_loaders: reproducible shuffling, distributed sharding, loader options and checks."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from subp_fx.data import DataBundle, DataSpec, ShardSampler, build_datasets, build_loaders
from subp_fx.errors import ConfigError


class IndexDataset(Dataset):
    """Returns its own index, so a loader's order is directly visible."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.tensor(index), index % 2


def index_bundle(train_size: int = 20, val_size: int = 7) -> DataBundle:
    return DataBundle(IndexDataset(train_size), IndexDataset(val_size), 2, 1, 1, ("even", "odd"))


def epoch_order(loader) -> list[int]:
    return [int(i) for batch, _ in loader for i in batch]


def test_same_seed_same_order_other_seed_other_order():
    first = epoch_order(build_loaders(index_bundle(), 4, 0, False, seed=7)[0])
    again = epoch_order(build_loaders(index_bundle(), 4, 0, False, seed=7)[0])
    other = epoch_order(build_loaders(index_bundle(), 4, 0, False, seed=8)[0])
    assert first == again and sorted(first) == list(range(20))
    assert first != other


def test_epochs_reshuffle():
    train_loader, _, sampler = build_loaders(index_bundle(), 4, 0, False, seed=0)
    assert sampler is None
    assert epoch_order(train_loader) != epoch_order(train_loader)


def test_val_is_in_order_and_complete():
    _, val_loader, _ = build_loaders(index_bundle(), 4, 0, False, seed=0)
    assert epoch_order(val_loader) == list(range(7))


def test_drop_last_train():
    train_loader, _, _ = build_loaders(index_bundle(train_size=10), 4, 0, False, seed=0)
    assert len(epoch_order(train_loader)) == 8
    train_loader, _, _ = build_loaders(index_bundle(train_size=10), 4, 0, False, seed=0, drop_last_train=False)
    assert len(epoch_order(train_loader)) == 10


def test_distributed_train_shards_are_disjoint_and_follow_set_epoch():
    shards = [build_loaders(index_bundle(), 2, 0, True, seed=3, world_size=2, rank=rank) for rank in (0, 1)]
    epoch0 = [epoch_order(train_loader) for train_loader, _, _ in shards]
    assert not set(epoch0[0]) & set(epoch0[1]) and sorted(epoch0[0] + epoch0[1]) == list(range(20))
    for _, _, sampler in shards:
        sampler.set_epoch(1)
    epoch1 = [epoch_order(train_loader) for train_loader, _, _ in shards]
    assert epoch1 != epoch0
    assert epoch_order(shards[0][0]) == epoch1[0], "same epoch must give the same order"


def test_distributed_val_covers_every_sample_exactly_once():
    orders = [epoch_order(build_loaders(index_bundle(val_size=7), 2, 0, True, 0, world_size=3, rank=r)[1]) for r in range(3)]
    assert orders == [[0, 3, 6], [1, 4], [2, 5]]


def test_shard_sampler_len_matches_iteration():
    for size in range(0, 9):
        for rank in range(3):
            sampler = ShardSampler(size, 3, rank)
            assert len(sampler) == len(list(sampler))


def test_distributed_without_process_group():
    with pytest.raises(RuntimeError, match="process group"):
        build_loaders(index_bundle(), 2, 0, True, seed=0)


def test_too_few_samples_for_one_batch():
    with pytest.raises(ConfigError, match="3 samples but batch_size is 4"):
        build_loaders(index_bundle(train_size=3), 4, 0, False, seed=0)
    with pytest.raises(ConfigError, match="each training process gets 5 samples"):
        build_loaders(index_bundle(train_size=10), 8, 0, True, seed=0, world_size=2, rank=0)


@pytest.mark.parametrize("batch_size,workers,field", [(0, 0, "batch_size"), (4, -1, "workers")])
def test_invalid_arguments(batch_size, workers, field):
    with pytest.raises(ConfigError, match=field):
        build_loaders(index_bundle(), batch_size, workers, False, seed=0)


def test_worker_options_and_pin_memory():
    train_loader, val_loader, _ = build_loaders(index_bundle(), 4, 2, False, seed=0)
    assert train_loader.persistent_workers and val_loader.persistent_workers
    assert train_loader.pin_memory == torch.cuda.is_available()
    in_process, _, _ = build_loaders(index_bundle(), 4, 0, False, seed=0)
    assert not in_process.persistent_workers


def test_worker_augmentation_is_reproducible_from_seed(fashion_root):
    """Random crops/flips in worker processes are seeded from the loader's generator."""
    bundle = build_datasets(DataSpec(kind="fashion-mnist", root=str(fashion_root)))

    def first_epoch(seed: int) -> torch.Tensor:
        train_loader, _, _ = build_loaders(bundle, 4, 2, False, seed=seed)
        return torch.cat([images for images, _ in train_loader])

    first = first_epoch(1)
    assert torch.equal(first, first_epoch(1))
    assert not torch.equal(first, first_epoch(2))
