"""kernels.packing.grouped_as_block_sparse: a grouped conv is a uniform block-sparse conv."""

from __future__ import annotations

import numpy as np
import pytest

from subp_fx.codegen.errors import BlockLayoutError
from subp_fx.codegen.kernels.packing import grouped_as_block_sparse, unpack_block_sparse


@pytest.mark.parametrize(
    ("out_channels", "in_channels", "groups", "N"), [(32, 16, 4, 8), (48, 48, 6, 8), (64, 32, 2, 16)]
)
def test_grouped_weight_unpacks_to_the_block_diagonal_dense_weight(out_channels, in_channels, groups, N):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((out_channels, in_channels // groups, 3, 3)).astype(np.float32)
    values, indices = grouped_as_block_sparse(weight, groups, N)
    assert values.shape == (out_channels // N, in_channels // groups, 3, 3, N)
    dense = np.zeros((out_channels, in_channels, 3, 3), np.float32)
    out_per_group, in_per_group = out_channels // groups, in_channels // groups
    for g in range(groups):
        rows = slice(g * out_per_group, (g + 1) * out_per_group)
        dense[rows, g * in_per_group : (g + 1) * in_per_group] = weight[rows]
    np.testing.assert_array_equal(unpack_block_sparse(values, indices, in_channels), dense)


def test_a_block_row_straddling_two_groups_is_refused():
    with pytest.raises(BlockLayoutError, match="N=16 does not divide the 8 output channels of each of the 4 groups"):
        grouped_as_block_sparse(np.zeros((32, 4, 3, 3), np.float32), 4, 16)


def test_groups_not_dividing_c_out_is_refused():
    with pytest.raises(BlockLayoutError, match="groups=3 must be a positive integer dividing C_out=32"):
        grouped_as_block_sparse(np.zeros((32, 4, 3, 3), np.float32), 3, 8)
