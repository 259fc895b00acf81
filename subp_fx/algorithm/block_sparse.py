"""BlockSparseConv2d: a trained SUBP conv holding only its kept 1xN blocks (uniform ELL layout).

Once SUBP training is final, every block-row r (output channels r*N .. r*N+N-1) of a conv keeps
the same number K of input channels. The compact module stores exactly that:

- ``values`` (R, K, kh, kw, N) float: ``values[r, k, s, t, j] = weight[r*N + j, indices[r, k], s, t]``
  (the N output channels of a block innermost, the order the compiled kernels read them in);
- ``indices`` (R, K) int64: the kept input channels of each block-row, strictly ascending; with
  input-channel groups (``G`` > 1, trained with ``sparsity.input_group``) they come in aligned runs
  of G (``c*G .. c*G+G-1``), which an int8 kernel loads as one 32-bit word per pixel when G=4;
- ``bias`` (C_out,) or None.

No TVM here: this is the eager reference the compiled code is checked against.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from subp_fx.algorithm.conv_geometry import explicit_padding, int_pair
from subp_fx.algorithm.modules import SUBPConv2d
from subp_fx.errors import ConversionError

_SHOWN_ROWS = 16


def _describe_counts(per_row: list[int]) -> str:
    shown = ", ".join(str(count) for count in per_row[:_SHOWN_ROWS])
    more = f", ... ({len(per_row)} rows)" if len(per_row) > _SHOWN_ROWS else ""
    return f"[{shown}{more}], between {min(per_row)} and {max(per_row)}"


def uniform_mask_problem(block_mask: torch.Tensor) -> str | None:
    """Why a (C_out/N, C_in) block mask has no uniform ELL layout, or None when it has one:
    entries other than 0/1, block-rows keeping different numbers of input channels (listed), or
    rows keeping none."""
    if not bool(((block_mask == 0) | (block_mask == 1)).all()):
        return "its block_mask holds values other than 0 and 1"
    per_row = [int(count) for count in block_mask.sum(dim=1).round().tolist()]
    if len(set(per_row)) > 1:
        return (
            f"its block_mask is not uniform: block-rows keep {_describe_counts(per_row)} input channels; "
            "every block-row must keep the same number (train past decay_end so the mask is final, "
            "or impose a uniform mask with impose_random_masks)"
        )
    if per_row and per_row[0] == 0:
        return "its block_mask keeps no input channel in any block-row; every row must keep at least one"
    return None


def block_sparse_problem(conv: SUBPConv2d) -> str | None:
    """Why ``conv`` has no BlockSparseConv2d form, or None: a mask without a uniform layout
    (``uniform_mask_problem``, on the per-channel mask, so counts are input channels whatever G)
    or a padding other than zeros."""
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r}; block-sparse convs support only zero padding ('zeros')"
    return uniform_mask_problem(conv.channel_mask)


class BlockSparseConv2d(nn.Module):
    """A conv whose weight is a uniform 1xN block-sparse matrix, stored compactly.

    ``forward`` scatters ``values`` into the dense (C_out, C_in, kh, kw) weight (zeros elsewhere)
    and calls ``F.conv2d``. That dense weight is, element for element, the ``weight * mask`` a
    ``SUBPConv2d`` convolves with, and the conv call is the same, so the output equals the masked
    model's bit for bit. (Gathering the kept input channels per block-row instead would run R
    small convs and sum in a different order: slower eagerly and not exact.)

    Construct from a trained conv with :meth:`from_subp`; the constructor makes an empty module of
    a given shape (zero values, each row keeping channels 0..K-1), e.g. to ``load_state_dict`` into.
    Only zero padding and ``groups == 1`` exist here, as in the compiled kernels.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        N: int,
        K: int,
        stride=1,
        padding=0,
        dilation=1,
        bias: bool = True,
        device=None,
        dtype=None,
        G: int = 1,
    ):
        super().__init__()
        if not isinstance(N, int) or N < 1 or out_channels % N != 0:
            raise ValueError(f"N must be a positive integer dividing out_channels={out_channels}, got N={N!r}")
        if not isinstance(K, int) or not 1 <= K <= in_channels:
            raise ValueError(f"K must be an integer in [1, in_channels={in_channels}], got K={K!r}")
        if isinstance(G, bool) or not isinstance(G, int) or G < 1 or in_channels % G or K % G:
            raise ValueError(
                f"G must be a positive integer dividing in_channels={in_channels} and K={K} "
                f"(kept channels come in aligned runs of G), got G={G!r}"
            )
        self._G = G
        self._in_channels = in_channels
        self._out_channels = out_channels
        self._N = N
        self._K = K
        self.kernel_size = int_pair(kernel_size, "kernel_size")
        self.stride = int_pair(stride, "stride")
        self.dilation = int_pair(dilation, "dilation")
        # An asymmetric 'same' (even kernel) stays the string, which F.conv2d pads exactly as
        # nn.Conv2d does.
        self.padding = explicit_padding(padding, self.kernel_size, self.dilation) or "same"
        rows = out_channels // N
        self.values = nn.Parameter(torch.zeros(rows, K, *self.kernel_size, N, device=device, dtype=dtype))
        self.register_buffer("indices", torch.arange(K, device=device).repeat(rows, 1))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    @property
    def in_channels(self) -> int:
        return self._in_channels

    @property
    def out_channels(self) -> int:
        return self._out_channels

    @property
    def N(self) -> int:
        """Block height: consecutive output channels per block."""
        return self._N

    @property
    def G(self) -> int:
        """Input channels per block: every row's kept channels are aligned runs of G."""
        return self._G

    @property
    def K(self) -> int:
        """Input channels kept in every block-row."""
        return self._K

    @property
    def rows(self) -> int:
        """Block-rows: C_out / N."""
        return self._out_channels // self._N

    @classmethod
    def from_subp(cls, conv: SUBPConv2d, name: str | None = None) -> BlockSparseConv2d:
        """The compact form of a SUBP conv with a uniform block mask (values copied, not shared).

        Refuses (``ConversionError`` naming ``name``, the layer's name in its model) whatever
        ``block_sparse_problem`` finds: a mask that is not uniform (listing each block-row's kept
        count), not 0/1 or keeping nothing, or a ``padding_mode`` other than ``'zeros'``.
        """
        layer = f"layer {name!r}" if name is not None else "a SUBPConv2d"
        if not isinstance(conv, SUBPConv2d):
            raise ConversionError(
                f"{layer} is a {type(conv).__name__}, not a SUBPConv2d; only SUBP convs have a block mask to compact"
            )
        problem = block_sparse_problem(conv)
        if problem:
            raise ConversionError(f"{layer} cannot be made block-sparse: {problem}")
        # The per-channel mask: with G > 1 each kept group gives G consecutive channels, so the
        # indices below come out in aligned runs of G and the compiled kernels need no change.
        channel_mask = conv.channel_mask
        rows, in_channels = channel_mask.shape
        kept = int(channel_mask[0].sum().round())
        module = cls(
            in_channels,
            conv.out_channels,
            conv.kernel_size,
            N=conv.N,
            K=kept,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            bias=conv.bias is not None,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            G=conv.G,
        )
        # nonzero() walks row-major, so each row's kept channels come out ascending.
        indices = torch.nonzero(channel_mask == 1)[:, 1].reshape(rows, kept)
        kh, kw = module.kernel_size
        blocks = conv.weight.detach().reshape(rows, conv.N, in_channels, kh, kw)
        kept_blocks = torch.gather(blocks, 2, indices[:, None, :, None, None].expand(rows, conv.N, kept, kh, kw))
        with torch.no_grad():
            module.indices.copy_(indices)
            module.values.copy_(kept_blocks.permute(0, 2, 3, 4, 1))
            if conv.bias is not None:
                module.bias.copy_(conv.bias)
        module.train(conv.training)
        return module

    def to_dense_weight(self) -> torch.Tensor:
        """The (C_out, C_in, kh, kw) weight, zero outside the kept blocks (differentiable in values)."""
        kh, kw = self.kernel_size
        rows, N, K = self.rows, self._N, self._K
        by_block = self.values.permute(0, 4, 1, 2, 3)  # (R, N, K, kh, kw)
        index = self.indices[:, None, :, None, None].expand(rows, N, K, kh, kw)
        dense = by_block.new_zeros(rows, N, self._in_channels, kh, kw).scatter(2, index, by_block)
        return dense.reshape(self._out_channels, self._in_channels, kh, kw)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.conv2d(input, self.to_dense_weight(), self.bias, self.stride, self.padding, self.dilation)

    def _indices_problem(self, indices: torch.Tensor) -> str | None:
        if indices.dtype.is_floating_point or indices.dtype == torch.bool:
            return f"must be an integer tensor, got {indices.dtype}"
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self._in_channels):
            return f"must lie in [0, in_channels={self._in_channels}), got [{int(indices.min())}, {int(indices.max())}]"
        if not bool((indices[:, 1:] > indices[:, :-1]).all()):
            return "must be strictly ascending within every block-row"
        if self._G > 1:
            runs = indices.reshape(indices.shape[0], -1, self._G)
            starts, offsets = runs[..., :1], torch.arange(self._G, device=indices.device)
            if not bool(((starts % self._G == 0) & (runs == starts + offsets)).all()):
                return f"must come in aligned runs of G={self._G} consecutive channels (c*G .. c*G+G-1)"
        return None

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        indices = state_dict.get(prefix + "indices")
        if indices is not None and tuple(indices.shape) == tuple(self.indices.shape):
            problem = self._indices_problem(indices)
            if problem:
                error_msgs.append(f"{prefix}indices {problem}")
                return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return (
            f"{self._in_channels}, {self._out_channels}, kernel_size={self.kernel_size}, N={self._N}, "
            f"{f'G={self._G}, ' if self._G != 1 else ''}"
            f"K={self._K}/{self._in_channels}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, bias={self.bias is not None}"
        )
