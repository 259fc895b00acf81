"""What an int8 block-sparse conv kernel is: ``Int8ConvSpec``, its static shape and epilogue.

The arithmetic (fixed; the torch side's calibration and packing produce exactly these arguments)::

    acc[b, oh, ow, r*N + j] = sum_{g, s, t, i} int32(data[b, oh*sh + s - ph, ow*sw + t - pw, group_starts[r, g] + i])
                                             * int32(values[r, g, s, t, j, i])
    y   = float32(acc) * scale[co] + bias[co]           (the zero-point correction is folded into bias)
    y   = y + residual                                   (fp32, or uint8 dequantised: (float32(q) - zp_r) * s_r)
    y   = act(y)
    out = y  (float32)   or   clamp(rint(y * float32(1 / s_out)) + zp_out, 0, 255)  (uint8, ties to even)

``data`` is uint8 NHWC with a per-tensor zero point (padding reads it, so padded taps add
``zp_x * w``, which the folded bias cancels); ``values`` int8 (R, Kg, kh, kw, N, 4): each block-row
keeps Kg aligned groups of 4 input channels (``group_starts`` int32 (R, Kg), multiples of 4), the 4
channels of one group being one 32-bit word of an NHWC pixel. Uint8 activations because VNNI's
``vpdpbusd`` multiplies unsigned by signed bytes. ``residual_params`` / ``out_params`` are float32
(2,) buffers ``[scale, zero_point]``: arguments, not constants, so one compiled kernel serves every
layer of the same shape. Pure Python, no TVM.
"""

from __future__ import annotations

from dataclasses import dataclass

from subp_fx.codegen.errors import KernelSpecError
from subp_fx.codegen.kernels.spec import WordConvGeometry
from subp_fx.quantize.plan import INT8_BLOCK_SIZES  # one registry: the plan decides with it

# Input channels per kept group: one 32-bit word of uint8 activations, one VNNI dot product.
GROUP = 4
RESIDUAL_KINDS = ("none", "float32", "uint8")
OUT_DTYPES = ("float32", "uint8")


@dataclass(frozen=True)
class Int8ConvSpec(WordConvGeometry):
    """Everything static about one int8 1xN block-sparse conv kernel (see the module docstring).

    ``block_size`` is N (16 or 32), ``kept_groups`` Kg (aligned groups of 4 input channels each
    block-row keeps; Kg = in_channels / 4 is a dense conv). ``kernel_size``, ``stride`` and
    ``padding`` take an int or an (h, w) pair. ``input_zero_point`` (0..255) is what padding reads.
    """

    batch: int
    height: int
    width: int
    in_channels: int
    out_channels: int
    block_size: int
    kept_groups: int
    kernel_size: int | tuple[int, int] = 3
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    input_zero_point: int = 0
    residual: str = "none"
    activation: str = "none"
    out_dtype: str = "float32"

    def __post_init__(self) -> None:
        self._check_geometry(("batch", "height", "width", "in_channels", "out_channels", "block_size", "kept_groups"))
        if self.in_channels % GROUP:
            raise KernelSpecError(
                f"in_channels={self.in_channels} is not a multiple of {GROUP}; the int8 kernel reads input "
                f"channels in aligned groups of {GROUP} (pad the channels, or run this layer in fp32)"
            )
        self._check_block_size("int8", INT8_BLOCK_SIZES)
        if self.kept_groups > self.groups:
            raise KernelSpecError(
                f"kept_groups Kg={self.kept_groups} exceeds the {self.groups} groups of {GROUP} in "
                f"in_channels={self.in_channels}; valid Kg are 1..{self.groups}"
            )
        zero_point = self.input_zero_point
        if isinstance(zero_point, bool) or not isinstance(zero_point, int) or not 0 <= zero_point <= 255:
            raise KernelSpecError(f"input_zero_point must be an integer in 0..255, got {zero_point!r}")
        self._check_kinds({"residual": RESIDUAL_KINDS, "out_dtype": OUT_DTYPES})
        self._check_activation_and_fit()

    @property
    def kept_channels(self) -> int:
        return self.kept_groups * GROUP

    @property
    def groups(self) -> int:
        """Aligned groups of 4 in the input channels (C_in / 4)."""
        return self.in_channels // GROUP

    @property
    def values_shape(self) -> tuple[int, ...]:
        return (self.block_rows, self.kept_groups, *self.kernel_size, self.block_size, GROUP)

    @property
    def group_starts_shape(self) -> tuple[int, int]:
        return (self.block_rows, self.kept_groups)

    @property
    def ops(self) -> int:
        """Multiply-adds x 2 the kernel actually does (pruned groups excluded; padded taps
        included, as the kernel multiplies the zero point there)."""
        kh, kw = self.kernel_size
        macs = self.batch * self.out_height * self.out_width * self.out_channels * self.kept_channels * kh * kw
        return 2 * macs

    def argument_shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Every buffer argument's (shape, dtype), in call order (the output last)."""
        shapes: dict[str, tuple[tuple[int, ...], str]] = {
            "data": (self.data_shape, "uint8"),
            "values": (self.values_shape, "int8"),
            "group_starts": (self.group_starts_shape, "int32"),
            "scale": ((self.out_channels,), "float32"),
            "bias": ((self.out_channels,), "float32"),
        }
        if self.residual != "none":
            shapes["residual"] = (self.out_shape, self.residual)
        if self.residual == "uint8":
            shapes["residual_params"] = ((2,), "float32")
        if self.out_dtype == "uint8":
            shapes["out_params"] = ((2,), "float32")
        shapes["out"] = (self.out_shape, self.out_dtype)
        return shapes
