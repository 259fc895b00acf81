"""What a bf16 block-sparse conv kernel is: ``Bf16ConvSpec``, its static shape and epilogue.

The arithmetic (what ``vdpbf16ps`` computes; ``bf16(v)`` is ``v`` rounded to bfloat16, to
nearest even, and every product of two bf16 values is exact in float32)::

    acc[b, oh, ow, r*N + j] = sum_{g, s, t, i} float32(data[b, oh*sh + s - ph, ow*sw + t - pw, pair_starts[r, g] + i])
                                             * float32(values[r, g, s, t, j, i])         (float32 sums)
    y   = acc + bias[co]  (+ residual, float32 or bf16)
    y   = act(y)
    out = y  (float32)   or   bf16(y)  (stored as its 16 bits, uint16)

``data`` is bf16 NHWC (stored as uint16; C_in even; padding reads 0.0); ``values`` bf16 (R, Kg,
kh, kw, N, 2): each block-row keeps Kg aligned *pairs* of input channels (``pair_starts`` int32
(R, Kg), even channel indices), the 2 channels of a pair being one 32-bit word of an NHWC pixel,
which ``vdpbf16ps`` multiplies with a lane's 2 weights and adds to its float32 sum. A 1xN
mask whose kept channels do not come in pairs is packed with the unkept partner's weight 0
(``lowering.bf16.pack_pairs``).

``pairs_per_word=2`` (block-rows keeping aligned groups of 4 channels, ``input_group: 4``): the
kernel broadcasts a 64-bit word, the group's 2 pairs, so lane 2c + h of a vector sums pair h of
output channel c (8 channels a vector): one broadcast feeds N/8 ``vdpbf16ps`` instead of N/16,
and the write-back adds each lane pair. ``values`` is then (R, Kg/2, kh, kw, N/8, 16, 2) and
``pair_starts`` (R, Kg/2) holds each group's first channel (a multiple of 4). Pure Python, no TVM.
"""

from __future__ import annotations

from dataclasses import dataclass

from subp_fx.codegen.errors import KernelSpecError
from subp_fx.codegen.kernels.spec import WordConvGeometry

# Input channels per kept pair: one 32-bit word of bf16 activations, one vdpbf16ps lane's 2 products.
PAIR = 2
# Kept pairs per activation word the kernel broadcasts: 1 (32 bits), or 2 (64 bits: an aligned group
# of 4 channels, each lane summing one of the two pairs for one output channel; see the module doc).
PAIRS_PER_WORD = (1, 2)
# N the kernel takes: whole zmm registers of 16 float32 sums.
BF16_BLOCK_SIZES = (16, 32)
BF16 = "uint16"  # how a bf16 tensor is stored and passed (its 16 bits; TVM legalises real bf16 away)
RESIDUAL_KINDS = ("none", "float32", "bfloat16")
OUT_DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class Bf16ConvSpec(WordConvGeometry):
    """Everything static about one bf16 1xN block-sparse conv kernel (see the module docstring).

    ``block_size`` is N (16 or 32), ``kept_pairs`` Kg (aligned pairs of input channels each
    block-row keeps; Kg = in_channels / 2 is a dense conv). ``kernel_size``, ``stride`` and
    ``padding`` take an int or an (h, w) pair.
    """

    batch: int
    height: int
    width: int
    in_channels: int
    out_channels: int
    block_size: int
    kept_pairs: int
    kernel_size: int | tuple[int, int] = 3
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    residual: str = "none"
    activation: str = "none"
    out_dtype: str = "float32"
    pairs_per_word: int = 1

    def __post_init__(self) -> None:
        self._check_geometry(("batch", "height", "width", "in_channels", "out_channels", "block_size", "kept_pairs"))
        if self.pairs_per_word not in PAIRS_PER_WORD:
            raise KernelSpecError(f"pairs_per_word must be one of {PAIRS_PER_WORD}, got {self.pairs_per_word!r}")
        if self.pairs_per_word > 1 and (self.in_channels % self.word_channels or self.kept_pairs % self.pairs_per_word):
            raise KernelSpecError(
                f"pairs_per_word={self.pairs_per_word} reads aligned groups of {self.word_channels} input channels: "
                f"in_channels ({self.in_channels}) and 2 x kept_pairs ({2 * self.kept_pairs}) must be multiples "
                f"of {self.word_channels}"
            )
        if self.in_channels % PAIR:
            raise KernelSpecError(
                f"in_channels={self.in_channels} is odd; the bf16 kernel reads input channels in aligned pairs "
                "(store the input with one zero channel more)"
            )
        self._check_block_size("bf16", BF16_BLOCK_SIZES)
        if self.kept_pairs > self.pairs:
            raise KernelSpecError(
                f"kept_pairs Kg={self.kept_pairs} exceeds the {self.pairs} pairs in in_channels={self.in_channels}; "
                f"valid Kg are 1..{self.pairs}"
            )
        self._check_kinds({"residual": RESIDUAL_KINDS, "out_dtype": OUT_DTYPES})
        self._check_activation_and_fit()

    @property
    def kept_channels(self) -> int:
        return self.kept_pairs * PAIR

    @property
    def pairs(self) -> int:
        """Aligned pairs in the input channels (C_in / 2)."""
        return self.in_channels // PAIR

    @property
    def word_channels(self) -> int:
        """Input channels of one activation word: 2 (32 bits), or 4 (64 bits) at ``pairs_per_word=2``."""
        return PAIR * self.pairs_per_word

    @property
    def kept_words(self) -> int:
        return self.kept_pairs // self.pairs_per_word

    @property
    def values_shape(self) -> tuple[int, ...]:
        if self.pairs_per_word == 2:
            return (self.block_rows, self.kept_words, *self.kernel_size, self.block_size // 8, 16, PAIR)
        return (self.block_rows, self.kept_pairs, *self.kernel_size, self.block_size, PAIR)

    @property
    def pair_starts_shape(self) -> tuple[int, int]:
        return (self.block_rows, self.kept_words)

    @property
    def ops(self) -> int:
        """Multiply-adds x 2 the kernel does (pruned pairs excluded, a kept pair's zero partner
        and padded taps included)."""
        kh, kw = self.kernel_size
        return 2 * self.batch * self.out_height * self.out_width * self.out_channels * self.kept_channels * kh * kw

    def argument_shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Every buffer argument's (shape, dtype), in call order (the output last)."""
        shapes: dict[str, tuple[tuple[int, ...], str]] = {
            "data": (self.data_shape, BF16),
            "values": (self.values_shape, BF16),
            "pair_starts": (self.pair_starts_shape, "int32"),
            "bias": ((self.out_channels,), "float32"),
        }
        if self.residual != "none":
            shapes["residual"] = (self.out_shape, "float32" if self.residual == "float32" else BF16)
        shapes["out"] = (self.out_shape, "float32" if self.out_dtype == "float32" else BF16)
        return shapes
