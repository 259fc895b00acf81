"""What a block-sparse conv kernel is: its static shape (``BlockSparseConvSpec``) and one schedule
choice for it (``ConvTile``), with the padding and parallel modes a schedule can take.

The tiling cost model, the tuning log and the kernel generator all speak this vocabulary; the
modes themselves are in ``modes`` (pure Python, shared with the load-balance simulation).
"""

from __future__ import annotations

from dataclasses import dataclass

from subp_fx.algorithm.conv_geometry import int_pair
from subp_fx.codegen.activations import FUSABLE_ACTIVATIONS
from subp_fx.codegen.errors import KernelSpecError
from subp_fx.codegen.kernels.isa import VectorISA, vectors_per_pixel
from subp_fx.codegen.kernels.modes import (
    PADDING_INLINE,
    PADDING_MODES,
    PADDING_STAGE,
    PARALLEL_BLOCK_ROWS,
    PARALLEL_MODES,
)

INDEX_DTYPE = "int32"


@dataclass(frozen=True)
class ConvTile:
    """One schedule choice: a register tile of ``rows x cols`` output pixels, how padding is done,
    and what a parallel task computes.

    ``padding``: ``"inline"`` reads the unpadded input under a bounds condition (no copy);
    ``"stage"`` first copies the input into a zero-padded buffer inside the same kernel (a
    parallel, vectorised pass) so the hot loop has no condition. ``parallel``: see
    :data:`PARALLEL_MODES` (``"block_rows"`` or ``"pixels"``). ``pixel_pad``: float32 elements
    left unused after each pixel's channels in a copy of the input the kernel reads instead (the
    zero-padded copy with "stage", a plain one read under the bounds condition with "inline"), so
    that a tile's input pixels, whose NHWC addresses lie a multiple of 1 KiB apart in deep layers,
    fall into different L1 sets (``cache``).
    """

    rows: int
    cols: int
    padding: str = PADDING_INLINE
    parallel: str = PARALLEL_BLOCK_ROWS
    pixel_pad: int = 0

    def __post_init__(self) -> None:
        for name in ("rows", "cols"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise KernelSpecError(f"ConvTile.{name} must be an integer >= 1, got {value!r}")
        if self.padding not in PADDING_MODES:
            raise KernelSpecError(f"ConvTile.padding must be one of {', '.join(PADDING_MODES)}, got {self.padding!r}")
        if self.parallel not in PARALLEL_MODES:
            raise KernelSpecError(
                f"ConvTile.parallel must be one of {', '.join(PARALLEL_MODES)}, got {self.parallel!r}"
            )
        if isinstance(self.pixel_pad, bool) or not isinstance(self.pixel_pad, int) or self.pixel_pad < 0:
            raise KernelSpecError(f"ConvTile.pixel_pad must be an integer >= 0, got {self.pixel_pad!r}")

    @property
    def pixels(self) -> int:
        return self.rows * self.cols

    def accumulators(self, N: int, isa: VectorISA) -> int:
        """Vector registers holding the tile's partial sums."""
        return self.pixels * vectors_per_pixel(N, isa)


def computed_output_extent(spec: ConvGeometry, tile: ConvTile) -> tuple[int, int]:
    """Output rows and columns the kernel computes for ``tile``: the output padded to whole tiles
    (the extra pixels are computed and never written back)."""
    return -(-spec.out_height // tile.rows) * tile.rows, -(-spec.out_width // tile.cols) * tile.cols


def padded_input_extent(spec: ConvGeometry, tile: ConvTile) -> tuple[int, int]:
    """Rows and columns of zero-padded input the kernel reads for ``tile``: the output is padded
    to whole tiles, and the last tile's window may reach past the input's padding (the "stage"
    copy's shape)."""
    (kh, kw), (sh, sw) = spec.kernel_size, spec.stride
    computed_height, computed_width = computed_output_extent(spec, tile)
    return (computed_height - 1) * sh + kh, (computed_width - 1) * sw + kw


def zero_pads_a_copy(spec: ConvGeometry, tile: ConvTile) -> bool:
    """Whether the kernel reads a zero-padded copy of its input (no bounds checks in the hot
    loop): ``padding="stage"`` where the tile's windows read outside the input (padding, or the
    last tile's overhang)."""
    if tile.padding != PADDING_STAGE:
        return False
    height, width = padded_input_extent(spec, tile)
    pad_h, pad_w = spec.padding
    return pad_h > 0 or pad_w > 0 or height > spec.height + pad_h or width > spec.width + pad_w


def copies_input(spec: ConvGeometry, tile: ConvTile) -> bool:
    """Whether the kernel first copies its input into a buffer of its own: to zero-pad it
    (:func:`zero_pads_a_copy`) or to lengthen its pixels (``tile.pixel_pad``)."""
    return zero_pads_a_copy(spec, tile) or tile.pixel_pad > 0


class ConvGeometry:
    """The shape checks and derived shapes every conv kernel spec shares (fp32, int8 and bf16).

    A spec dataclass that mixes this in has the fields ``batch``, ``height``, ``width``,
    ``in_channels``, ``out_channels``, ``block_size``, ``kernel_size``, ``stride``, ``padding``
    and ``activation``; its ``__post_init__`` calls the two checks.
    """

    def _check_geometry(self, positive: tuple[str, ...]) -> None:
        """``positive`` fields are integers >= 1; kernel, stride and padding become (h, w)
        pairs; N divides C_out. Raises :class:`KernelSpecError` naming the field."""
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise KernelSpecError(f"{type(self).__name__}.{name} must be an integer >= 1, got {value!r}")
        object.__setattr__(self, "kernel_size", int_pair(self.kernel_size, "kernel_size", 1, KernelSpecError))
        object.__setattr__(self, "stride", int_pair(self.stride, "stride", 1, KernelSpecError))
        object.__setattr__(self, "padding", int_pair(self.padding, "padding", 0, KernelSpecError))
        if self.out_channels % self.block_size != 0:
            raise KernelSpecError(
                f"block_size N={self.block_size} does not divide out_channels={self.out_channels}; "
                f"valid N divide {self.out_channels}"
            )

    def _check_activation_and_fit(self) -> None:
        """The activation is fusable and the kernel window fits the padded input."""
        if self.activation not in FUSABLE_ACTIVATIONS:
            raise KernelSpecError(
                f"activation must be one of {', '.join(FUSABLE_ACTIVATIONS)}, got {self.activation!r}"
            )
        if self.out_height < 1 or self.out_width < 1:
            raise KernelSpecError(
                f"a {self.kernel_size} kernel with padding {self.padding} does not fit "
                f"a {self.height}x{self.width} input"
            )

    @property
    def block_rows(self) -> int:
        """R = C_out / N."""
        return self.out_channels // self.block_size

    @property
    def out_height(self) -> int:
        return (self.height + 2 * self.padding[0] - self.kernel_size[0]) // self.stride[0] + 1

    @property
    def out_width(self) -> int:
        return (self.width + 2 * self.padding[1] - self.kernel_size[1]) // self.stride[1] + 1

    @property
    def data_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.height, self.width, self.in_channels)

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.out_height, self.out_width, self.out_channels)


@dataclass(frozen=True)
class BlockSparseConvSpec(ConvGeometry):
    """Everything static about one block-sparse conv kernel: shapes, stride, padding, epilogue.

    ``block_size`` is N (output channels per block), ``kept_per_row`` is K (input channels each
    block-row keeps; K = in_channels is a dense conv). ``kernel_size``, ``stride`` and
    ``padding`` take an int or an (h, w) pair, as torch's Conv2d does (padding is symmetric).
    """

    batch: int
    height: int
    width: int
    in_channels: int
    out_channels: int
    block_size: int
    kept_per_row: int
    kernel_size: int | tuple[int, int] = 3
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    bias: bool = False
    residual: bool = False
    activation: str = "none"

    def __post_init__(self) -> None:
        self._check_geometry(("batch", "height", "width", "in_channels", "out_channels", "block_size", "kept_per_row"))
        if self.kept_per_row > self.in_channels:
            raise KernelSpecError(
                f"kept_per_row K={self.kept_per_row} exceeds in_channels={self.in_channels}; "
                f"valid K are 1..{self.in_channels}"
            )
        self._check_activation_and_fit()

    @property
    def values_shape(self) -> tuple[int, int, int, int, int]:
        return (self.block_rows, self.kept_per_row, *self.kernel_size, self.block_size)

    @property
    def indices_shape(self) -> tuple[int, int]:
        return (self.block_rows, self.kept_per_row)

    @property
    def flops(self) -> int:
        """Multiply-adds x 2 actually needed (pruned blocks excluded, no padding work)."""
        kh, kw = self.kernel_size
        return 2 * self.batch * self.out_height * self.out_width * self.out_channels * self.kept_per_row * kh * kw

    def argument_names(self) -> list[str]:
        """The kernel's buffer arguments, in call order (the output last, destination-passing)."""
        names = ["data", "values", "indices"]
        names += ["bias"] if self.bias else []
        names += ["residual"] if self.residual else []
        return names + ["out"]


class WordConvGeometry(ConvGeometry):
    """What the int8 and bf16 kernels' specs share beside :class:`ConvGeometry`: their kernels read
    each block-row's kept input channels as aligned words (4 uint8 or 2 bf16 channels), have a
    choice of residual and output dtypes, and list their buffers in ``argument_shapes()``. A spec
    that mixes this in has those and the property ``kept_channels`` (input channels each block-row
    multiplies: kept words x channels a word)."""

    def _check_block_size(self, kernel: str, sizes: tuple[int, ...]) -> None:
        if self.block_size not in sizes:
            raise KernelSpecError(
                f"block_size N={self.block_size} is not supported by the {kernel} kernel; valid N are {sizes}"
            )

    def _check_kinds(self, kinds: dict[str, tuple[str, ...]]) -> None:
        """Each field named in ``kinds`` (e.g. residual, out_dtype) holds one of its values."""
        for name, allowed in kinds.items():
            if getattr(self, name) not in allowed:
                raise KernelSpecError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    def argument_names(self) -> list[str]:
        """The kernel's buffer arguments, in call order (the output last, destination-passing)."""
        return list(self.argument_shapes())

    def float_equivalent(self) -> BlockSparseConvSpec:
        """The fp32 kernel's spec of the same layer (K = the kept channels, bias, residual): for
        comparing the kernels, and for the fp32 tiling's parallel-mode choice."""
        return BlockSparseConvSpec(
            self.batch,
            self.height,
            self.width,
            self.in_channels,
            self.out_channels,
            self.block_size,
            self.kept_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            bias=True,
            residual=self.residual != "none",
            activation=self.activation,
        )
