"""The ``fold_layer_scale`` pass: merge a constant per-channel multiply into the layer feeding it.

ConvNeXt (and CaiT-style blocks) end each residual branch with ``layer_scale * branch``, a
learned per-channel constant of shape (C, 1, 1) times the output of a Linear (seen through a
permute back to (B, C, H, W)) or a conv. Like a folded batch norm, that is exactly the layer
with output channel c's weights and bias scaled by ``layer_scale[c]``, so the compiled model
does one pass over memory less per block.
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx as fx
import torch.nn as nn

from subp_fx.passes.fold_batchnorm import output_channel_weight
from subp_fx.passes.fold_static_shapes import tensor_ranks
from subp_fx.passes.node_args import graph_constant, module_call_counts, normalised_permutation, permute_dims
from subp_fx.passes.trace import trace

# Key of GraphModule.meta written by this pass: each folded multiply's node name -> the layer's name.
FOLDED_LAYER_SCALES_META_KEY = "subp_folded_layer_scales"

_MUL_FUNCTIONS = (operator.mul, torch.mul)
_PERMUTES = (("call_method", "permute"), ("call_function", torch.permute))


def _permute_dims(node: fx.Node) -> tuple[int, ...] | None:
    dims = permute_dims(node)
    return normalised_permutation(dims, len(dims)) if dims is not None else None


def _layer(gm: fx.GraphModule, node) -> tuple[fx.Node, nn.Module] | None:
    """(node, module) when ``node`` calls a Linear or a conv that output_channel_weight knows."""
    if not isinstance(node, fx.Node) or node.op != "call_module":
        return None
    module = gm.get_submodule(node.target)
    if type(module) is nn.Linear or output_channel_weight(module) is not None:
        return node, module
    return None


def _scale_vector(
    constant: torch.Tensor, channel_from_end: int, rank: int | None, channels: int
) -> torch.Tensor | None:
    """The (channels,) scale when ``constant`` multiplies a tensor (of ``rank``, None when
    unknown) whose output channel sits at ``channel_from_end`` (-1 last), per channel only and
    without adding axes; else None."""
    limit = rank if rank is not None else -channel_from_end
    if constant.dim() > limit:
        return None
    for k in range(1, constant.dim() + 1):
        size = constant.shape[-k]
        if size != 1 and (-k != channel_from_end or size != channels):
            return None
    return constant.detach().reshape(-1).expand(channels) if constant.numel() in (1, channels) else None


def _fold_plan(gm: fx.GraphModule, mul: fx.Node, calls: dict[str, int], ranks: dict[fx.Node, int]):
    """(layer node, module, scale vector, multiplied node) when ``mul`` folds, else None.
    ``ranks``: the rank of each tensor node, where known (empty without an example shape)."""
    is_mul = (mul.op == "call_function" and mul.target in _MUL_FUNCTIONS) or (
        mul.op == "call_method" and mul.target == "mul"
    )
    if not is_mul or len(mul.args) != 2 or mul.kwargs:
        return None
    for constant_node, tensor in (mul.args, mul.args[::-1]):
        constant = graph_constant(gm, constant_node)
        if constant is None or graph_constant(gm, tensor) is not None or not isinstance(tensor, fx.Node):
            continue
        dims = None
        source = tensor
        if (tensor.op, tensor.target) in _PERMUTES:
            dims = _permute_dims(tensor)
            source = tensor.args[0] if dims is not None else None
        found = _layer(gm, source)
        if found is None:
            return None
        layer_node, module = found
        if len(tensor.users) != 1 or len(layer_node.users) != 1 or calls.get(layer_node.target, 0) != 1:
            return None
        weight = module.weight if type(module) is nn.Linear else output_channel_weight(module)[0]
        if constant.dtype != weight.dtype or not constant.is_floating_point():
            return None
        # The layer's output channel axis, counted from the end: a Linear's last, a conv's third
        # last ((B, C, H, W) or unbatched (C, H, W)); through a permute of rank r, where it went.
        from_end = -1 if type(module) is nn.Linear else -3
        rank = ranks.get(tensor)
        if dims is not None:
            rank = len(dims)
            if rank < -from_end:
                return None
            from_end = dims.index(rank + from_end) - rank
        channels = module.out_features if type(module) is nn.Linear else module.out_channels
        scale = _scale_vector(constant, from_end, rank, channels)
        return None if scale is None else (layer_node, module, scale, tensor)
    return None


@torch.no_grad()
def _scale_layer(module: nn.Module, scale: torch.Tensor) -> None:
    if type(module) is nn.Linear:
        weight, per_output_channel = module.weight, (-1, 1)
    else:
        weight, per_output_channel = output_channel_weight(module)
    scale = scale.double()
    weight.copy_((weight.double() * scale.reshape(per_output_channel)).to(weight.dtype))
    if module.bias is not None:
        module.bias.copy_((module.bias.double() * scale).to(module.bias.dtype))


def fold_layer_scale(gm: nn.Module, example_input_shape: tuple[int, ...] | None = None) -> fx.GraphModule:
    """Fold each constant per-channel multiply of a layer's output into that layer.

    Rewrites: a two-operand multiply (``*``, ``torch.mul``, ``Tensor.mul``) of a graph constant
    (``get_attr``) and the output of an ``nn.Linear`` or a conv (``nn.Conv2d``, ``SUBPConv2d``,
    ``BlockSparseConv2d``), directly or through one ``permute``, where the constant varies only
    along the layer's output-channel axis (as the multiply broadcasts it, e.g. ConvNeXt's
    (C, 1, 1) layer scale after the permute back to (B, C, H, W)) and adds no axes: it has at
    most as many axes as the layer's output where that rank is known (through a permute, or on
    ``example_input_shape``, where the graph is run once: timm's ``gamma.reshape(1, -1, 1, 1)``
    times a conv's (B, C, H, W) output), else as many as the axes from the channel on. The layer's
    weight and bias are scaled per output channel (in float64, rounded once; a SUBP conv's
    block mask is unchanged); the multiply is removed and its users read its tensor operand;
    a constant left unused loses its ``get_attr`` node (the attribute stays on its module).
    Leaves alone: a multiply whose layer (or permute) output has other users, whose layer is
    called more than once (shared weights), whose constant varies along another axis or has
    another dtype, and every other multiply. Refuses nothing.

    ``gm`` is not modified: the result is built from a deep copy (a plain ``nn.Module`` is
    traced first). ``meta[FOLDED_LAYER_SCALES_META_KEY]`` maps each folded multiply to its layer.
    """
    gm = trace(copy.deepcopy(gm))
    calls = module_call_counts(gm)
    ranks = tensor_ranks(gm, example_input_shape) if example_input_shape is not None else {}
    folded: dict[str, str] = {}
    for mul in list(gm.graph.nodes):
        plan = _fold_plan(gm, mul, calls, ranks)
        if plan is None:
            continue
        layer_node, module, scale, tensor = plan
        _scale_layer(module, scale)
        constants = [argument for argument in mul.args if argument is not tensor]
        mul.replace_all_uses_with(tensor)
        gm.graph.erase_node(mul)
        for constant in constants:
            if isinstance(constant, fx.Node) and not constant.users:
                gm.graph.erase_node(constant)
        folded[mul.name] = layer_node.target
    gm.graph.lint()
    gm.recompile()
    gm.meta[FOLDED_LAYER_SCALES_META_KEY] = folded
    return gm
