"""build_loaders: reproducible shuffling, distributed sharding, loader options and checks."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils.data import Dataset

from subp_fx.data import DataBundle, DataSpec, PerSampleSeeds, ShardSampler, build_datasets, build_loaders
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


def test_set_epoch_reshuffles_and_an_epoch_replays_identically():
    train_loader, _, sampler = build_loaders(index_bundle(), 4, 0, False, seed=0)
    epoch0 = epoch_order(train_loader)
    sampler.set_epoch(1)
    epoch1 = epoch_order(train_loader)
    assert epoch1 != epoch0 and sorted(epoch1) == list(range(20))
    assert epoch_order(train_loader) == epoch1, "the order depends on (seed, epoch) only"
    sampler.set_epoch(0)
    assert epoch_order(train_loader) == epoch0


def test_val_is_in_order_and_complete():
    _, val_loader, _ = build_loaders(index_bundle(), 4, 0, False, seed=0)
    assert epoch_order(val_loader) == list(range(7))


def test_last_partial_batch_is_kept_unless_drop_last_train():
    train_loader, _, _ = build_loaders(index_bundle(train_size=10), 4, 0, False, seed=0)
    assert [len(batch) for batch, _ in train_loader] == [4, 4, 2]
    assert len(train_loader) == 3
    train_loader, _, _ = build_loaders(index_bundle(train_size=10), 4, 0, False, seed=0, drop_last_train=True)
    assert len(epoch_order(train_loader)) == 8


def test_distributed_partial_batch_gives_every_rank_the_same_number_of_steps():
    """DDP needs equal step counts: with the last batch kept, DistributedSampler pads the odd
    sample out by repeating one, so both ranks run 3 steps (4 + 4 + 3) and all 21 samples are seen."""
    shards = [build_loaders(index_bundle(train_size=21), 4, 0, True, seed=0, world_size=2, rank=r) for r in (0, 1)]
    sizes = [[len(batch) for batch, _ in train_loader] for train_loader, _, _ in shards]
    assert sizes == [[4, 4, 3], [4, 4, 3]]
    seen = [i for train_loader, _, _ in shards for i in epoch_order(train_loader)]
    assert set(seen) == set(range(21)) and len(seen) == 22


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
    orders = [
        epoch_order(build_loaders(index_bundle(val_size=7), 2, 0, True, 0, world_size=3, rank=r)[1]) for r in range(3)
    ]
    assert orders == [[0, 3, 6], [1, 4], [2, 5]]


def test_shard_sampler_len_matches_iteration():
    for size in range(0, 9):
        for rank in range(3):
            sampler = ShardSampler(size, 3, rank)
            assert len(sampler) == len(list(sampler))


def test_distributed_without_process_group():
    with pytest.raises(RuntimeError, match="process group"):
        build_loaders(index_bundle(), 2, 0, True, seed=0)


def test_too_few_samples_for_one_batch_when_dropping_the_last():
    with pytest.raises(ConfigError, match="3 samples but batch_size is 4"):
        build_loaders(index_bundle(train_size=3), 4, 0, False, seed=0, drop_last_train=True)
    with pytest.raises(ConfigError, match="each training process gets 5 samples"):
        build_loaders(index_bundle(train_size=10), 8, 0, True, seed=0, drop_last_train=True, world_size=2, rank=0)
    train_loader, _, _ = build_loaders(index_bundle(train_size=3), 4, 0, False, seed=0)
    assert len(epoch_order(train_loader)) == 3


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
    """Random crops/flips in worker processes follow from the seed."""
    bundle = build_datasets(DataSpec(kind="fashion-mnist", root=str(fashion_root)))

    def first_epoch(seed: int) -> torch.Tensor:
        train_loader, _, _ = build_loaders(bundle, 4, 2, False, seed=seed)
        return torch.cat([images for images, _ in train_loader])

    first = first_epoch(1)
    assert torch.equal(first, first_epoch(1))
    assert not torch.equal(first, first_epoch(2))


def _epochs(loader, sampler, epochs) -> list[torch.Tensor]:
    batches = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        batches.append(torch.cat([images for images, _ in loader]))
    return batches


def test_a_resumed_epoch_in_fresh_persistent_workers_sees_the_uninterrupted_augmentation(fashion_root):
    """The --resume case: persistent workers are seeded once, when they start. A loader started at
    epoch 2 must still give epoch 2 the crops and flips of a loader that ran epochs 0, 1, 2."""
    bundle = build_datasets(DataSpec(kind="fashion-mnist", root=str(fashion_root)))
    straight_loader, _, straight_sampler = build_loaders(bundle, 4, 2, False, seed=5)
    assert straight_loader.persistent_workers
    straight = _epochs(straight_loader, straight_sampler, range(3))
    resumed_loader, _, resumed_sampler = build_loaders(bundle, 4, 2, False, seed=5)
    (resumed,) = _epochs(resumed_loader, resumed_sampler, [2])
    assert torch.equal(resumed, straight[2])
    assert not torch.equal(straight[1], straight[2])


def test_augmentation_does_not_depend_on_the_worker_count(fashion_root):
    bundle = build_datasets(DataSpec(kind="fashion-mnist", root=str(fashion_root)))
    loaded = []
    for workers in (0, 2):
        loader, _, sampler = build_loaders(bundle, 4, workers, False, seed=3)
        loaded.append(_epochs(loader, sampler, [0, 1]))
    for other in loaded[1:]:
        assert all(torch.equal(a, b) for a, b in zip(loaded[0], other, strict=True))


def test_in_process_augmentation_leaves_the_callers_generators_alone(fashion_root):
    bundle = build_datasets(DataSpec(kind="fashion-mnist", root=str(fashion_root)))
    loader, _, _ = build_loaders(bundle, 4, 0, False, seed=3)
    torch.manual_seed(123)
    random.seed(123)
    expected_torch, expected_python = torch.rand(3), random.random()
    torch.manual_seed(123)
    random.seed(123)
    for _ in loader:
        pass
    assert torch.equal(torch.rand(3), expected_torch) and random.random() == expected_python


def test_every_sample_draws_its_own_seed():
    dataset = PerSampleSeeds(IndexDataset(4), seed=0)
    seeds = {dataset.sample_seed(epoch, index) for epoch in range(3) for index in range(4)}
    assert len(seeds) == 12
    assert PerSampleSeeds(IndexDataset(4), seed=1).sample_seed(0, 0) not in seeds
