"""Packing a masked dense conv weight into the compact uniform 1xN layout the kernels read.

Layout (why it is this one): a SUBP weight keeps, in every block-row r (output channels
r*N .. r*N+N-1), the same number K of input channels. So it is a uniform ELL / block-sparse-row
matrix and packs into two dense arrays with no ragged rows:

- ``indices`` int32 (R, K): the kept input channels of each block-row, ascending;
- ``values`` float32 (R, K, kh, kw, N): ``values[r, k, s, t, j] = weight[r*N + j, indices[r, k], s, t]``.

The N output channels of a block are the innermost axis because the kernel vectorises over them:
one contiguous N-float load feeds N FMA lanes. Pure numpy, no TVM.

A mask trained with input-channel groups (G > 1: shape (C_out/N, C_in/G)) packs the same way once
each kept group is expanded to its G consecutive channels: K = kept groups x G and ``indices``
holds aligned runs of G, so the fp32 kernels are unchanged and an int8 kernel can read each run
as one 32-bit word.
"""

from __future__ import annotations

import numpy as np

from subp_fx.codegen.errors import BlockLayoutError


def _check_weight(weight: np.ndarray, N: int) -> None:
    if weight.ndim != 4:
        raise BlockLayoutError(f"weight must be a 4-d conv weight (C_out, C_in, kh, kw), got shape {weight.shape}")
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise BlockLayoutError(f"N must be a positive integer, got {N!r}")
    if weight.shape[0] % N != 0:
        raise BlockLayoutError(
            f"N={N} does not divide C_out={weight.shape[0]} of a weight of shape {weight.shape}; "
            f"valid N for this layer divide {weight.shape[0]}"
        )


def _describe_rows(rows: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(int(row)) for row in rows[:limit])
    return shown + (f", ... ({len(rows)} rows)" if len(rows) > limit else "")


def kept_indices(block_mask: np.ndarray) -> np.ndarray:
    """The (R, K) int32 kept input channels of a uniform 0/1 block mask of shape (R, C_in).

    Raises :class:`BlockLayoutError` naming the block-rows whose count of kept channels differs
    from the first row's (a non-uniform mask has no ELL layout).
    """
    mask = np.asarray(block_mask)
    if mask.ndim != 2:
        raise BlockLayoutError(f"block_mask must be 2-d (C_out/N, C_in), got shape {mask.shape}")
    if not np.isin(mask, (0, 1)).all():
        raise BlockLayoutError("block_mask must hold only 0 and 1")
    kept_per_row = mask.sum(axis=1).astype(np.int64)
    if kept_per_row.size == 0:
        raise BlockLayoutError(f"block_mask has no rows (shape {mask.shape})")
    expected = int(kept_per_row[0])
    differing = np.flatnonzero(kept_per_row != expected)
    if differing.size:
        raise BlockLayoutError(
            f"block_mask is not uniform: block-row 0 keeps {expected} input channels but block-rows "
            f"{_describe_rows(differing)} keep {sorted({int(kept_per_row[row]) for row in differing})}; "
            f"every block-row must keep the same number of input channels"
        )
    if expected == 0:
        raise BlockLayoutError("block_mask keeps no input channel in any block-row; every row must keep at least one")
    rows, channels = np.nonzero(mask)
    return channels.reshape(mask.shape[0], expected).astype(np.int32)


def pack_block_sparse(weight: np.ndarray, block_mask: np.ndarray, N: int, G: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(values (R, K, kh, kw, N) float32, indices (R, K) int32) of ``weight`` under ``block_mask``.

    ``block_mask`` has shape (C_out/N, C_in/G), 0/1, uniform (every row keeps K/G blocks of G
    consecutive input channels; G=1: K channels). Weights of masked-out blocks are dropped,
    whatever their value.
    """
    weight = np.asarray(weight, dtype=np.float32)
    _check_weight(weight, N)
    c_out, c_in, kh, kw = weight.shape
    if isinstance(G, bool) or not isinstance(G, (int, np.integer)) or G < 1 or c_in % G != 0:
        raise BlockLayoutError(f"G must be a positive integer dividing C_in={c_in}, got G={G!r}")
    expected_mask_shape = (c_out // N, c_in // G)
    if np.shape(block_mask) != expected_mask_shape:
        raise BlockLayoutError(
            f"block_mask has shape {np.shape(block_mask)}; for a weight of shape {weight.shape}, N={N} and G={G} "
            f"it must be {expected_mask_shape}"
        )
    indices = kept_indices(np.repeat(np.asarray(block_mask), G, axis=1))
    rows = c_out // N
    blocks = weight.reshape(rows, N, c_in, kh, kw)
    # blocks[r, j, indices[r, k], s, t] -> values[r, k, s, t, j]
    gathered = np.take_along_axis(blocks, indices[:, None, :, None, None], axis=2)
    values = np.ascontiguousarray(gathered.transpose(0, 2, 3, 4, 1))
    return values, indices


def dense_as_block_sparse(weight: np.ndarray, N: int) -> tuple[np.ndarray, np.ndarray]:
    """A dense weight in the block-sparse layout: K = C_in, ``indices[r] = arange(C_in)``."""
    weight = np.asarray(weight, dtype=np.float32)
    _check_weight(weight, N)
    return pack_block_sparse(weight, np.ones((weight.shape[0] // N, weight.shape[1]), dtype=np.int8), N)


def unpack_block_sparse(values: np.ndarray, indices: np.ndarray, in_channels: int) -> np.ndarray:
    """The dense (C_out, C_in, kh, kw) weight that ``values``/``indices`` encode; pruned blocks are 0."""
    values = np.asarray(values, dtype=np.float32)
    indices = np.asarray(indices)
    if values.ndim != 5 or indices.shape != values.shape[:2]:
        raise BlockLayoutError(
            f"values must be (R, K, kh, kw, N) and indices (R, K); got values {values.shape}, indices {indices.shape}"
        )
    if indices.size and (indices.min() < 0 or indices.max() >= in_channels):
        raise BlockLayoutError(
            f"indices must lie in [0, in_channels={in_channels}), got range [{indices.min()}, {indices.max()}]"
        )
    rows, kept, kh, kw, N = values.shape
    blocks = np.zeros((rows, N, in_channels, kh, kw), dtype=np.float32)
    np.put_along_axis(blocks, indices[:, None, :, None, None].astype(np.int64), values.transpose(0, 4, 1, 2, 3), axis=2)
    return blocks.reshape(rows * N, in_channels, kh, kw)


def grouped_as_block_sparse(weight: np.ndarray, groups: int, N: int) -> tuple[np.ndarray, np.ndarray]:
    """A grouped conv's (C_out, C_in/groups, kh, kw) weight in the block-sparse layout.

    Why this fits the uniform layout exactly: output channel c of a grouped conv reads the
    C_in/groups input channels of its group, so every block-row (N output channels of one group)
    keeps the same K = C_in/groups channels, ``indices[r] = group(r) * K + arange(K)``. N must
    divide C_out/groups, so that a block-row never straddles two groups.
    """
    weight = np.asarray(weight, dtype=np.float32)
    _check_weight(weight, N)
    out_channels, per_group = weight.shape[:2]
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1 or out_channels % groups:
        raise BlockLayoutError(f"groups={groups!r} must be a positive integer dividing C_out={out_channels}")
    out_per_group = out_channels // groups
    if out_per_group % N:
        raise BlockLayoutError(
            f"N={N} does not divide the {out_per_group} output channels of each of the {groups} groups; a block-row "
            "must lie within one group"
        )
    rows = out_channels // N
    # weight[r*N + j, k, s, t] -> values[r, k, s, t, j]
    values = np.ascontiguousarray(weight.reshape(rows, N, *weight.shape[1:]).transpose(0, 2, 3, 4, 1))
    group_of_row = np.arange(rows) * N // out_per_group
    indices = (group_of_row[:, None] * per_group + np.arange(per_group)[None, :]).astype(np.int32)
    return values, indices
