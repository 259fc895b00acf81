"""Calibration batches: any iterable of NCHW float batches, regrouped into the model's input shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from subp_fx.errors import DataError
from subp_fx.tools.calibration import model_shaped_batches


def test_samples_are_regrouped_in_order_and_a_partial_batch_is_filled_from_the_start():
    samples = np.arange(5 * 2 * 1 * 1, dtype=np.float64).reshape(5, 2, 1, 1)
    given = (
        batch for batch in (torch.from_numpy(samples[:2]), samples[2:3], samples[3:])
    )  # tensors, arrays, a generator
    batches = model_shaped_batches(given, (2, 2, 1, 1))
    assert [batch.shape for batch in batches] == [(2, 2, 1, 1)] * 3
    assert all(batch.dtype == np.float32 and batch.flags.c_contiguous for batch in batches)
    regrouped = np.concatenate(batches)
    np.testing.assert_array_equal(regrouped[:5], samples)
    np.testing.assert_array_equal(regrouped[5], samples[0])


def test_fewer_samples_than_one_batch_are_repeated_to_fill_it():
    batches = model_shaped_batches(
        [np.ones((1, 3, 2, 2), np.float32), np.zeros((1, 3, 2, 2), np.float32)], (4, 3, 2, 2)
    )
    assert len(batches) == 1
    np.testing.assert_array_equal(batches[0][:, 0, 0, 0], [1, 0, 1, 0])


@pytest.mark.parametrize(
    ("batches", "match"),
    [
        ([], "no calibration data"),
        ([np.zeros((0, 3, 4, 4), np.float32)], "no calibration data"),
        ([np.zeros((1, 3, 4, 4)), np.zeros((1, 1, 4, 4))], r"batch 1 has shape \(1, 1, 4, 4\).*\(any N, 3, 4, 4\)"),
        ([np.zeros((3, 4, 4), np.float32)], r"batch 0 has shape \(3, 4, 4\)"),
        ([np.zeros((1, 3, 4, 4), np.uint8)], "dtype uint8.*float"),
        ([np.full((1, 3, 4, 4), np.nan, np.float32)], "NaN or infinite"),
    ],
)
def test_bad_calibration_data_is_refused_naming_the_batch(batches, match):
    with pytest.raises(DataError, match=match):
        model_shaped_batches(batches, (1, 3, 4, 4))


def test_a_shape_that_is_not_nchw_is_a_caller_error():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        model_shaped_batches([np.zeros((1, 3, 4, 4), np.float32)], (3, 4, 4))
