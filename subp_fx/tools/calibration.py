"""Calibration inputs for the int8 peers: whatever iterable of NCHW float batches the caller has, as float32 arrays
of exactly a model's input shape: a model exported for one input shape (as the benchmark peers'
ONNX files are) accepts only that shape, so the samples are regrouped into batches of the model's
batch size. Nothing here imports an inference engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from subp_fx.errors import DataError


def _as_float_array(batch: object, index: int, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().cpu().numpy()
    array = np.asarray(batch)
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(
            f"calibration batch {index} has dtype {array.dtype}; give float batches preprocessed exactly as the "
            f"model's inputs (e.g. normalised images), not raw integer pixels"
        )
    if array.ndim != 4 or tuple(array.shape[1:]) != tuple(shape[1:]):
        raise DataError(
            f"calibration batch {index} has shape {tuple(array.shape)}; the model takes NCHW batches of shape "
            f"(any N, {', '.join(str(size) for size in shape[1:])})"
        )
    if not np.isfinite(array).all():
        raise DataError(f"calibration batch {index} holds NaN or infinite values")
    return array.astype(np.float32, copy=False)


def model_shaped_batches(batches: Iterable[object], shape: Sequence[int]) -> list[np.ndarray]:
    """The samples of ``batches`` (any iterable of NCHW float numpy arrays or torch tensors, any batch
    sizes) as contiguous float32 arrays of exactly ``shape`` (N, C, H, W), in order.

    Samples are regrouped into batches of N; a last, partial batch is filled up with samples from
    the start. A repeated sample cannot move a min/max range, so MinMax calibration over the result
    sees exactly the ranges of the samples given. Refuses (DataError) an empty iterable, a batch
    that is not 4-D with the model's C, H and W, a non-float dtype, and NaN or infinite values.
    """
    shape = tuple(int(size) for size in shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"shape must be a model input shape (N, C, H, W) of positive sizes, got {shape}")
    samples = [_as_float_array(batch, index, shape) for index, batch in enumerate(batches)]
    samples = [array for array in samples if array.shape[0] > 0]
    if not samples:
        raise DataError("no calibration data: int8 quantisation needs at least one input batch")
    pool = np.concatenate(samples)
    count, size = pool.shape[0], shape[0]
    fill = -count % size
    if fill:
        pool = np.concatenate([pool, np.resize(pool, (fill, *shape[1:]))])
    return [np.ascontiguousarray(pool[start : start + size]) for start in range(0, pool.shape[0], size)]
