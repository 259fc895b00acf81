"""``quantize_kernel_weights``: a conv's fp32 kernel weights as the int8 kernel's constants.

The int8 kernel multiplies uint8 activations by int8 weights with VNNI, which sums the products
of 4 consecutive bytes per 32-bit lane. In NHWC, 4 consecutive bytes of a pixel are 4 consecutive
input channels, so the kernel reads input channels in *aligned groups of 4* [4g, 4g+4): one
32-bit load per pixel and group. A block-row's kept channels are therefore regrouped: every
aligned group holding at least one kept channel of the row is stored, with zero weights for the
channels of the group the row does not keep.

What sparsity that leaves: a model trained with input groups of 4 (``sparsity.input_group: 4``,
G=4) keeps whole groups, so Kg = K/4 groups per row, exactly the sparse work. A G=1 model keeps
arbitrary channels: at 50% random keep a group of 4 is entirely pruned with probability about
1/16, so almost every group is stored and the int8 kernel does nearly dense work. int8 speed
from sparsity needs input groups of 4. Groups of 16 (``input_group: 16``) keep runs of 4 stored
groups, which the lowering's grouped int8 1x1 kernel reads with one 128-bit load.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from subp_fx.quantize.params import ActivationQuant, output_scales, quantize_weight

CHANNEL_GROUP = 4  # input channels per VNNI 32-bit lane


@dataclass(frozen=True)
class Int8KernelWeights:
    """One conv's int8 kernel constants (numpy), for R block-rows of N output channels:

    - ``values`` int8 (R, Kg, kh, kw, N, 4): ``values[r, g, s, t, j, c]`` is the int8 weight of
      output channel r*N+j and input channel ``group_starts[r, g] + c`` at tap (s, t), 0 where row
      r does not keep that channel;
    - ``group_starts`` int32 (R, Kg): the first input channel (a multiple of 4) of each stored
      group, strictly ascending per row; a row with fewer kept groups than Kg is padded with
      all-zero groups at the lowest groups it does not use;
    - ``scale`` float32 (R*N,): ``s_x * s_w[co]``; ``bias`` float32 (R*N,): the folded
      ``b[co] - scale[co] * zp_x * weight_sums[co]`` (computed in float64), so that
      ``y = float32(sum q_x * q_w) * scale + bias``;
    - ``weight_scales`` float32 (R*N,) (s_w), ``weight_sums`` int64 (R*N,) (sum of q_w),
      ``kept_groups_per_row`` int64 (R,) (groups holding a kept channel, before padding),
      ``input_quant`` and ``in_channels``.
    """

    values: np.ndarray
    group_starts: np.ndarray
    scale: np.ndarray
    bias: np.ndarray
    weight_scales: np.ndarray
    weight_sums: np.ndarray
    kept_groups_per_row: np.ndarray
    input_quant: ActivationQuant
    in_channels: int

    @property
    def rows(self) -> int:
        return self.values.shape[0]

    @property
    def groups_per_row(self) -> int:
        """Kg: the 4-channel groups every row stores (padding included)."""
        return self.values.shape[1]

    @property
    def block_size(self) -> int:
        """N: output channels per block-row."""
        return self.values.shape[4]

    def to_dense_int8(self) -> np.ndarray:
        """The int8 weight as a dense (R*N, C_in, kh, kw) array (zeros where no channel is kept)."""
        rows, groups, kh, kw, N, lanes = self.values.shape
        dense = np.zeros((rows, N, self.in_channels, kh, kw), dtype=np.int8)
        channels = self.group_starts[:, :, None] + np.arange(lanes)  # (R, Kg, 4)
        by_channel = self.values.transpose(0, 1, 5, 4, 2, 3)  # (R, Kg, 4, N, kh, kw)
        # A row's group starts are distinct, so every (row, channel) is written once.
        dense.transpose(0, 2, 1, 3, 4)[np.arange(rows)[:, None, None], channels] = by_channel
        return dense.reshape(rows * N, self.in_channels, kh, kw)


def _check_inputs(values, indices, bias, in_channels, input_quant) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    values = np.asarray(values)
    indices = np.asarray(indices)
    if values.ndim != 5 or not np.issubdtype(values.dtype, np.floating):
        raise ValueError(f"values must be a float (R, K, kh, kw, N) array, got {values.dtype} of shape {values.shape}")
    rows, kept, _, _, N = values.shape
    if indices.shape != (rows, kept) or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(
            f"indices must be an integer (R, K) = ({rows}, {kept}) array, got {indices.dtype} of shape {indices.shape}"
        )
    if isinstance(in_channels, bool) or not isinstance(in_channels, numbers.Integral) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
    if in_channels % CHANNEL_GROUP:
        raise ValueError(
            f"in_channels={in_channels} is not a multiple of {CHANNEL_GROUP}; the int8 kernel reads input channels "
            f"in aligned groups of {CHANNEL_GROUP} (such a conv stays fp32, see plan_int8)"
        )
    if indices.size and (indices.min() < 0 or indices.max() >= in_channels):
        raise ValueError(f"indices must lie in [0, in_channels={in_channels}), got [{indices.min()}, {indices.max()}]")
    if not (np.diff(indices, axis=1) > 0).all():
        raise ValueError("indices must be strictly ascending within every block-row")
    if not isinstance(input_quant, ActivationQuant):
        raise ValueError(f"input_quant must be an ActivationQuant, got {type(input_quant).__name__}")
    if bias is None:
        bias = np.zeros(rows * N, dtype=np.float32)
    bias = np.asarray(bias, dtype=np.float32)
    if bias.shape != (rows * N,):
        raise ValueError(f"bias must have shape (R*N,) = ({rows * N},) or be None, got {bias.shape}")
    return values.astype(np.float32, copy=False), indices.astype(np.int64), bias


def _group_starts(indices: np.ndarray, in_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(R, Kg) int32 starts of each row's stored groups (padded with its lowest unused groups),
    and the (R,) count of groups that hold a kept channel."""
    kept_groups = [np.unique(row // CHANNEL_GROUP) for row in indices]
    counts = np.array([len(groups) for groups in kept_groups], dtype=np.int64)
    width = int(counts.max(initial=0))
    starts = np.empty((len(kept_groups), width), dtype=np.int32)
    all_groups = np.arange(in_channels // CHANNEL_GROUP)
    for row, groups in enumerate(kept_groups):
        padding = np.setdiff1d(all_groups, groups)[: width - len(groups)]
        starts[row] = np.sort(np.concatenate([groups, padding])) * CHANNEL_GROUP
    return starts, counts


def quantize_channels(
    by_channel: np.ndarray, bias: np.ndarray, input_quant: ActivationQuant
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The per-output-channel int8 arithmetic every int8 kernel's constants share, for float32
    weights ``by_channel`` (output channel first) and a float32 ``bias`` (one per channel) read
    with ``input_quant``: ``(codes, s_w, sums, scale, bias)`` -- the int8 codes (same shape) and
    their float32 scales (``quantize_weight``), each channel's int64 code sum, ``scale = s_x * s_w``
    (``output_scales``) and the bias with the input's zero point folded in,
    ``b - scale * zp_x * sum`` (computed in float64, stored float32), so that a kernel multiplying
    the raw uint8 codes (padding reads the zero point) computes ``float32(acc) * scale + bias``."""
    codes, scales = quantize_weight(by_channel)
    sums = codes.reshape(codes.shape[0], -1).sum(axis=1, dtype=np.int64)
    scale = output_scales(input_quant, scales)
    folded = bias.astype(np.float64) - scale.astype(np.float64) * input_quant.zero_point * sums
    return codes, scales, sums, scale, folded.astype(np.float32)


def quantize_kernel_weights(
    values: np.ndarray,
    indices: np.ndarray,
    bias: np.ndarray | None,
    in_channels: int,
    input_quant: ActivationQuant,
) -> Int8KernelWeights:
    """The int8 constants (``Int8KernelWeights``) of a conv given in the fp32 kernel layout the
    compiler uses for sparse and dense convs alike: ``values`` float32 (R, K, kh, kw, N),
    ``indices`` (R, K) sorted kept input channels (a dense conv: K = C_in, ``arange``), ``bias``
    (R*N,) or None (a zero bias is folded then), ``in_channels`` C_in, and ``input_quant`` the
    uint8 parameters of the conv's input.

    Weights are quantised per output channel from that channel's kept fp32 values, which gives
    the same s_w and codes as quantising the dense weight (pruned weights are zeros). Refuses
    (``ValueError`` naming the argument): shapes that do not fit together, indices out of range
    or not strictly ascending, C_in not a multiple of 4, non-finite weights.
    """
    values, indices, bias = _check_inputs(values, indices, bias, in_channels, input_quant)
    rows, kept, kh, kw, N = values.shape
    by_channel = values.transpose(0, 4, 1, 2, 3).reshape(rows * N, kept, kh, kw)
    codes, scales, sums, scale, folded = quantize_channels(by_channel, bias, input_quant)
    starts, counts = _group_starts(indices, in_channels)
    group_of = indices - indices % CHANNEL_GROUP  # each kept channel's group start
    position = np.stack([np.searchsorted(row_starts, row) for row_starts, row in zip(starts, group_of)])
    packed = np.zeros((rows, starts.shape[1], kh, kw, N, CHANNEL_GROUP), dtype=np.int8)
    row_index = np.arange(rows)[:, None]
    by_row = codes.reshape(rows, N, kept, kh, kw).transpose(0, 2, 3, 4, 1)  # (R, K, kh, kw, N)
    # kept channel k of row r lands at [r, its group's position, :, :, :, its lane in the group]
    packed[row_index, position, :, :, :, indices % CHANNEL_GROUP] = by_row
    return Int8KernelWeights(
        values=packed,
        group_starts=starts,
        scale=scale,
        bias=folded,
        weight_scales=scales,
        weight_sums=sums,
        kept_groups_per_row=counts,
        input_quant=input_quant,
        in_channels=int(in_channels),
    )
