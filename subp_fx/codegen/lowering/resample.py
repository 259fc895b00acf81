"""Lowering of constant padding (``F.pad``, ``nn.ZeroPad2d``, ``nn.ConstantPad2d``) and nearest
upsampling by integer factors (``F.interpolate``, ``nn.Upsample``, ``nn.UpsamplingNearest2d``).

A zero pad that feeds a conv is usually gone before lowering (``passes.fold_pad`` folds the
symmetric ones into the conv); what is left (asymmetric "same" padding of stride-2 convs, pads
with other users) runs ``kernels.resample.constant_pad_primfunc``. Upsampling is checked on the
shapes torch computed (``GraphView``): the output must be an integer multiple of the input on
H and W, whatever scale_factor / size spelled it.

Refused: pads of other modes (reflect, replicate, circular), negative pads (crops), pads of the
channel or batch axes; interpolation other than nearest / nearest-exact, or to a size that is
not an integer multiple of the input.
"""

from __future__ import annotations

import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from subp_fx.codegen.kernels.resample import constant_pad_primfunc, upsample_nearest_primfunc
from subp_fx.codegen.lowering.context import LoweringContext
from subp_fx.codegen.lowering.graph_view import GraphView, LoweredTensor, bind_arguments

_PAD_PARAMETERS = ("input", "pad", "mode", "value")
_INTERPOLATE_PARAMETERS = ("input", "size", "scale_factor", "mode", "align_corners", "recompute_scale_factor")
_NEAREST = ("nearest", "nearest-exact")


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(size) for size in shape)


def _pad_parameters(view: GraphView, node: fx.Node) -> tuple[object, str, float | None]:
    """(pad amounts as torch spells them, mode, value) of a pad call or module."""
    module = view.module(node)
    if isinstance(module, nn.ConstantPad2d):
        return module.padding, "constant", module.value
    bound = bind_arguments(node, _PAD_PARAMETERS, {"mode": "constant", "value": None})
    return bound["pad"], bound["mode"], bound["value"]


def pad_problem(view: GraphView, node: fx.Node) -> str | None:
    shape = view.shape(node.args[0]) if node.args else None
    if shape is None or len(shape) != 4:
        return f"pads a tensor of shape {shape}; padding is lowered for 4-d (B, C, H, W) maps only"
    pads, mode, _ = _pad_parameters(view, node)
    if mode != "constant":
        return f"pads in mode {mode!r}; supported is constant padding (zeros or another value)"
    if not isinstance(pads, (list, tuple)) or len(pads) not in (2, 4):
        return f"pads {pads!r}; supported is padding of W or of W and H ([left, right(, top, bottom)])"
    if not all(isinstance(p, int) and p >= 0 for p in pads):
        return f"pads {list(pads)}; a negative pad crops, supported are pads >= 0"
    return None


def lower_pad(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    x = ctx.tensor(node.args[0])
    pads, _, value = _pad_parameters(ctx.view, node)
    left, right, top, bottom = (*pads, 0, 0)[:4]
    amounts = (top, bottom, left, right)
    value = float(value or 0.0)
    batch, channels, out_height, out_width = ctx.view.shape(node)
    output = ctx.program.call(
        ("pad", x.stored_shape, amounts, value),
        f"pad_{_shape_text(x.stored_shape)}_{_shape_text(amounts)}",
        lambda: constant_pad_primfunc(x.stored_shape, amounts, ctx.lanes, value),
        [x.expr],
        (batch, out_height, out_width, channels),
    )
    return LoweredTensor(output, ctx.view.shape(node))


def _interpolate_mode(view: GraphView, node: fx.Node) -> tuple[str, bool | None]:
    module = view.module(node)
    if isinstance(module, nn.Upsample):  # nn.UpsamplingNearest2d is one
        return module.mode, module.align_corners
    bound = bind_arguments(node, _INTERPOLATE_PARAMETERS, {"mode": "nearest", "align_corners": None})
    return bound["mode"], bound["align_corners"]


def _integer_scale(view: GraphView, node: fx.Node) -> tuple[int, int] | None:
    in_shape, out_shape = view.shape(node.args[0]), view.shape(node)
    if in_shape is None or out_shape is None or len(in_shape) != 4:
        return None
    (height, width), (out_height, out_width) = in_shape[2:], out_shape[2:]
    if out_height % height or out_width % width or out_shape[:2] != in_shape[:2]:
        return None
    return (out_height // height, out_width // width)


def upsample_problem(view: GraphView, node: fx.Node) -> str | None:
    mode, _ = _interpolate_mode(view, node)
    if mode not in _NEAREST:
        return f"interpolates in mode {mode!r}; supported is nearest (or nearest-exact) upsampling"
    if _integer_scale(view, node) is None:
        return (
            f"resizes {view.shape(node.args[0])} to {view.shape(node)}; supported is nearest upsampling of a 4-d map "
            "by integer factors (output H and W multiples of the input's)"
        )
    return None


def lower_upsample(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    x = ctx.tensor(node.args[0])
    scale = _integer_scale(ctx.view, node)
    batch, channels, out_height, out_width = ctx.view.shape(node)
    output = ctx.program.call(
        ("upsample_nearest", x.stored_shape, scale),
        f"upsample_nearest{scale[0]}x{scale[1]}_{_shape_text(x.stored_shape)}",
        lambda: upsample_nearest_primfunc(x.stored_shape, scale, ctx.lanes),
        [x.expr],
        (batch, out_height, out_width, channels),
    )
    return LoweredTensor(output, ctx.view.shape(node))


PAD_FUNCTIONS = (F.pad,)
PAD_MODULES = (nn.ZeroPad2d, nn.ConstantPad2d)
UPSAMPLE_FUNCTIONS = (F.interpolate,)
UPSAMPLE_MODULES = (nn.Upsample, nn.UpsamplingNearest2d)
