"""Dropping the zero channels a conv kernel computed beyond the layer's real C_out.

A kernel works in whole blocks of N output channels; a layer whose C_out no block size divides
is computed padded with zero-weight channels, and the extras are sliced off after the call (one
copy of the output, cheaper than a kernel with a ragged last block).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from subp_fx.codegen.kernels.layout import slice_channels_primfunc

if TYPE_CHECKING:
    from subp_fx.codegen.lowering.context import LoweringContext


def slice_padded_channels(ctx: LoweringContext, output, out_shape: tuple[int, ...], keep: int):
    """``output`` (NHWC ``out_shape``, float32) without its channels from ``keep`` on; ``output``
    itself when there are none."""
    if out_shape[3] == keep:
        return output
    return ctx.program.call(
        ("slice_channels", out_shape, keep),
        f"slice_channels_{out_shape[3]}to{keep}",
        lambda: slice_channels_primfunc(out_shape, keep, ctx.lanes),
        [output],
        (*out_shape[:3], keep),
    )
