"""The ``fold_batchnorm`` pass: merge each eval-mode BatchNorm2d into the conv feeding it."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.fx as fx
import torch.nn as nn

from subp_fx.algorithm.block_sparse import BlockSparseConv2d
from subp_fx.algorithm.modules import SUBPConv2d
from subp_fx.errors import ConversionError
from subp_fx.passes.trace import trace

# Keys of GraphModule.meta written by this pass.
FOLDED_META_KEY = "subp_folded_batchnorms"
UNFOLDED_META_KEY = "subp_unfolded_batchnorms"


def _conv_weight(conv: nn.Conv2d) -> tuple[torch.Tensor, tuple[int, ...]]:
    return conv.weight, (-1, 1, 1, 1)


def _block_values(conv: BlockSparseConv2d) -> tuple[torch.Tensor, tuple[int, ...]]:
    # values (R, K, kh, kw, N): output channel r*N + j sits at [r, ..., j].
    return conv.values, (conv.rows, 1, 1, 1, conv.N)


# Conv types whose output channel c is exactly (weight of channel c) applied to the input, plus
# bias[c]: each maps to its weight parameter and the shape that broadcasts a per-output-channel
# vector over it. Keyed by exact type, since a subclass may transform its weight in forward
# (weight standardisation, ...) and scaling the stored weight would then be wrong. SUBPConv2d
# keeps its block mask: scaling whole output channels never moves a block in or out.
_OUTPUT_CHANNEL_WEIGHT: dict[type, Callable[[nn.Module], tuple[torch.Tensor, tuple[int, ...]]]] = {
    nn.Conv2d: _conv_weight,
    SUBPConv2d: _conv_weight,
    BlockSparseConv2d: _block_values,
}


def output_channel_weight(module: nn.Module) -> tuple[torch.Tensor, tuple[int, ...]] | None:
    """The weight of a conv whose output channel c is (weight of channel c) applied to the input
    plus bias[c], and the shape broadcasting a per-output-channel vector over it; None for any
    other module (see the table above)."""
    reader = _OUTPUT_CHANNEL_WEIGHT.get(type(module))
    return reader(module) if reader is not None else None


def _call_counts(gm: fx.GraphModule) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            counts[node.target] = counts.get(node.target, 0) + 1
    return counts


def _concat_inputs(node: fx.Node) -> list | None:
    """The tensors of a ``torch.cat`` on dim 1 (the channels: a BatchNorm2d input is 4-d), else None."""
    if node.op != "call_function" or node.target is not torch.cat:
        return None
    names = ("tensors", "dim")
    bound = {"dim": 0, **dict(zip(names, node.args)), **node.kwargs}
    tensors = bound.get("tensors")
    if set(bound) - set(names) or bound["dim"] not in (1, -3) or not isinstance(tensors, (list, tuple)):
        return None
    return list(tensors)


def _conv_reason(gm: fx.GraphModule, source, calls: dict[str, int], bn_node: fx.Node) -> str | None:
    """Why the batch norm cannot be folded into the conv call ``source`` (None when it can)."""
    if not isinstance(source, fx.Node) or source.op != "call_module":
        return "its input is not the output of a module call (or a channel concat of such calls)"
    conv = gm.get_submodule(source.target)
    if type(conv) not in _OUTPUT_CHANNEL_WEIGHT:
        return (
            f"its input comes from {source.target!r}, a {type(conv).__name__}, "
            f"not one of {', '.join(t.__name__ for t in _OUTPUT_CHANNEL_WEIGHT)}"
        )
    if len(source.users) != 1:
        return f"the output of {source.target!r} has other users, which need it without batch norm"
    if calls[source.target] != 1 or calls[bn_node.target] != 1:
        return f"{source.target!r} or the batch norm is called more than once (shared weights)"
    return None


def _unfoldable_reason(gm: fx.GraphModule, bn_node: fx.Node, calls: dict[str, int]) -> str | None:
    """Why this BatchNorm2d call cannot be folded into its input, or None if it can."""
    bn = gm.get_submodule(bn_node.target)
    source = bn_node.args[0] if len(bn_node.args) == 1 and not bn_node.kwargs else None
    parts = _concat_inputs(source) if isinstance(source, fx.Node) else None
    if parts is None:
        reason = _conv_reason(gm, source, calls, bn_node)
    elif len(source.users) != 1:
        reason = "the channel concat feeding it has other users, which need it without batch norm"
    elif len(set(parts)) != len(parts):
        reason = "the channel concat feeding it joins one tensor more than once"
    else:
        reason = next((why for part in parts if (why := _conv_reason(gm, part, calls, bn_node))), None)
        if reason is None and sum(gm.get_submodule(part.target).out_channels for part in parts) != bn.num_features:
            reason = "the convs the channel concat joins do not have the batch norm's channel count"
    if reason is not None:
        return reason
    if not bn.track_running_stats or bn.running_mean is None:
        return "it has no running statistics (it normalises with batch statistics even in eval mode)"
    return None


def _scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) in float64 with bn(y) = scale * y + shift per channel."""
    # scale = gamma / sqrt(var + eps), shift = beta - mean * scale
    mean = bn.running_mean.double()
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    beta = torch.zeros_like(mean)
    if bn.affine:
        scale = scale * bn.weight.double()
        beta = bn.bias.double()
    return scale, beta - mean * scale


@torch.no_grad()
def _fold(conv: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> None:
    # bn(conv(x)) = scale * conv_no_bias(x) + (scale * bias + shift): computed in float64, rounded once.
    old_bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    weight, per_output_channel = _OUTPUT_CHANNEL_WEIGHT[type(conv)](conv)
    weight.mul_(scale.to(weight.dtype).reshape(per_output_channel))
    new_bias = (old_bias * scale + shift).to(device=weight.device, dtype=weight.dtype)
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias)
    else:
        conv.bias.copy_(new_bias)


def batchnorm_plan(gm: fx.GraphModule) -> tuple[list[fx.Node], dict[str, str]]:
    """The ``BatchNorm2d`` calls of ``gm`` that :func:`fold_batchnorm` would fold, and the others
    with the reason each stays. Reads ``gm`` only."""
    calls = _call_counts(gm)
    foldable: list[fx.Node] = []
    unfolded: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and type(gm.get_submodule(node.target)) is nn.BatchNorm2d:
            reason = _unfoldable_reason(gm, node, calls)
            if reason is None:
                foldable.append(node)
            else:
                unfolded[node.target] = reason
    return foldable, unfolded


def fold_batchnorm(gm: nn.Module) -> fx.GraphModule:
    """Fold every eval-mode ``BatchNorm2d`` into the conv that feeds it.

    Rewrites: each ``call_module`` BatchNorm2d whose only input is the output of an ``nn.Conv2d``,
    ``SUBPConv2d`` or ``BlockSparseConv2d`` call that has no other user, or a ``torch.cat`` on
    the channels (dim 1) of such calls (timm's MixedConv2d: convs of several kernel sizes, one
    batch norm after) that has no other user and whose convs' channels add up to the BN's. The
    conv's weight (or ``values``) is scaled per output channel and its bias (created if absent)
    absorbs the BN's shift (each conv of a concat by its own slice of the BN's channels); the BN
    node is removed (its users read the conv or the concat) and the BN module deleted. A SUBP
    conv keeps its block mask unchanged. A non-affine BN folds too (gamma 1, beta 0).
    Leaves alone, recorded with the reason: a BN fed by anything else, by a conv (or a concat)
    whose output has other users, by a conv or BN called more than once, by a concat joining a
    tensor twice, or without running statistics.
    Refuses: a foldable BN in training mode (``ConversionError`` naming it: folding freezes the
    running statistics, so call ``.eval()`` first); this pass never changes a module's mode.

    ``gm`` is not modified: the result is built from a deep copy (a plain ``nn.Module`` is traced
    first). The result's ``meta[FOLDED_META_KEY]`` maps each folded BN's name to its conv's name
    (the convs of a concat joined by ``+``),
    ``meta[UNFOLDED_META_KEY]`` each BatchNorm2d left in the graph to the reason.
    """
    gm = trace(copy.deepcopy(gm))
    foldable, unfolded = batchnorm_plan(gm)
    training = [node.target for node in foldable if gm.get_submodule(node.target).training]
    if training:
        raise ConversionError(
            f"batch norm {training[0]!r}{f' (and {len(training) - 1} more)' if len(training) > 1 else ''} is in "
            "training mode; folding uses the running statistics an eval-mode model normalises with. "
            "Call model.eval() before fold_batchnorm."
        )
    folded: dict[str, str] = {}
    for bn_node in foldable:
        source = bn_node.args[0]
        scale, shift = _scale_shift(gm.get_submodule(bn_node.target))
        convs = _concat_inputs(source) or [source]
        start = 0
        for conv_node in convs:
            conv = gm.get_submodule(conv_node.target)
            stop = start + conv.out_channels
            _fold(conv, scale[start:stop], shift[start:stop])
            start = stop
        bn_node.replace_all_uses_with(source)
        gm.graph.erase_node(bn_node)
        gm.delete_submodule(bn_node.target)
        folded[bn_node.target] = "+".join(conv_node.target for conv_node in convs)
    gm.graph.lint()
    gm.recompile()
    gm.meta[FOLDED_META_KEY] = folded
    gm.meta[UNFOLDED_META_KEY] = unfolded
    return gm
