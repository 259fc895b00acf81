"""algorithm.seeding and algorithm.conv_geometry: the shared small pieces."""

from __future__ import annotations

import pytest
import torch

from subp_fx.algorithm.conv_geometry import explicit_padding, int_pair
from subp_fx.algorithm.seeding import seeded_generator
from subp_fx.codegen.errors import KernelSpecError


def test_seeded_generator_depends_on_the_parts_alone():
    first = torch.rand(4, generator=seeded_generator(0, 3, 7))
    assert torch.equal(first, torch.rand(4, generator=seeded_generator(0, 3, 7)))
    assert not torch.equal(first, torch.rand(4, generator=seeded_generator(0, 7, 3)))
    assert not torch.equal(first, torch.rand(4, generator=seeded_generator(1, 3, 7)))


def test_seeded_generator_keeps_the_streams_masks_were_drawn_from():
    # The mask update's and impose_random_masks' generators before the registry: same seeds.
    import numpy as np

    state = np.random.SeedSequence([5, 2]).generate_state(2, dtype=np.uint32)
    reference = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    assert torch.equal(torch.rand(8, generator=reference), torch.rand(8, generator=seeded_generator(5, 2)))


@pytest.mark.parametrize(("value", "expected"), [(3, (3, 3)), ((1, 2), (1, 2)), ([0, 4], (0, 4))])
def test_int_pair_accepts_ints_and_pairs(value, expected):
    assert int_pair(value, "stride") == expected


@pytest.mark.parametrize("value", [(1, 2, 3), True, (1.0, 2), "2"])
def test_int_pair_refuses_what_is_not_an_int_pair(value):
    with pytest.raises(ValueError, match="stride must be an integer or a pair of them"):
        int_pair(value, "stride")


def test_int_pair_checks_the_minimum_with_the_callers_error():
    with pytest.raises(KernelSpecError, match="kernel_size must be an integer >= 1"):
        int_pair((0, 3), "kernel_size", 1, KernelSpecError)


@pytest.mark.parametrize(
    ("padding", "kernel", "dilation", "expected"),
    [
        ("valid", (3, 3), (1, 1), (0, 0)),
        ("same", (3, 5), (1, 1), (1, 2)),
        ("same", (3, 3), (2, 2), (2, 2)),
        ("same", (2, 2), (1, 1), None),
        (1, (3, 3), (1, 1), (1, 1)),
        ((0, 2), (1, 5), (1, 1), (0, 2)),
    ],
)
def test_explicit_padding(padding, kernel, dilation, expected):
    assert explicit_padding(padding, kernel, dilation) == expected
