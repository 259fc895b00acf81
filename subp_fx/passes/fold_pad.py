"""The ``fold_zero_pads`` pass: a symmetric zero pad feeding a conv becomes the conv's padding.

Why: "same"-padding code (timm, TF ports) pads with ``F.pad`` before a conv with ``padding=0``;
a standalone pad copies the whole map. A conv's own zero padding costs nothing in our kernels
(bounds-checked reads), and conv(pad(x, q), padding=p) == conv(x, padding=p + q) exactly when q
is zeros on both sides of each axis.
"""

from __future__ import annotations

import copy

import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from subp_fx.algorithm.modules import SUBPConv2d
from subp_fx.passes.node_args import module_call_counts
from subp_fx.passes.trace import trace

# Key of GraphModule.meta written by this pass: folded pad node name -> conv name.
FOLDED_PADS_META_KEY = "subp_folded_pads"
_CONVS = (nn.Conv2d, SUBPConv2d)  # exact types: a subclass may pad or transform in forward


def zero_pad_amounts(gm: fx.GraphModule, node: fx.Node) -> tuple[int, int, int, int] | None:
    """(left, right, top, bottom) of a zero ``F.pad`` / ``nn.ZeroPad2d`` / zero ``nn.ConstantPad2d``
    on the last two axes, or None when ``node`` is not one (another mode or value, a negative
    pad, padding of other axes)."""
    if node.op == "call_function" and node.target is F.pad:
        bound = dict(zip(("input", "pad", "mode", "value"), node.args))
        bound.update(node.kwargs)
        pads, mode, value = bound.get("pad"), bound.get("mode", "constant"), bound.get("value")
    elif node.op == "call_module" and type(gm.get_submodule(node.target)) in (nn.ZeroPad2d, nn.ConstantPad2d):
        module = gm.get_submodule(node.target)
        pads, mode, value = module.padding, "constant", module.value
    else:
        return None
    if mode != "constant" or value not in (None, 0, 0.0) or not isinstance(pads, (list, tuple)):
        return None
    if len(pads) not in (2, 4) or not all(isinstance(p, int) and p >= 0 for p in pads):
        return None
    left, right, top, bottom = (*pads, 0, 0)[:4]
    return (left, right, top, bottom)


def _foldable_conv(gm: fx.GraphModule, pad: fx.Node, calls: dict[str, int]) -> fx.Node | None:
    users = list(pad.users)
    if len(users) != 1 or users[0].op != "call_module" or users[0].args[:1] != (pad,) or users[0].kwargs:
        return None
    conv = gm.get_submodule(users[0].target)
    if type(conv) not in _CONVS or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    return users[0] if calls[users[0].target] == 1 else None


def fold_zero_pads(gm: nn.Module) -> fx.GraphModule:
    """Fold every symmetric zero pad whose only user is a conv into that conv's padding.

    Rewrites: an ``F.pad`` / ``nn.ZeroPad2d`` / ``nn.ConstantPad2d(value=0)`` node padding H and
    W with zeros, left == right and top == bottom, whose single user is an ``nn.Conv2d`` or
    ``SUBPConv2d`` (exact types, ``padding_mode='zeros'``, numeric padding, called once): the
    conv's padding grows by the pad and the pad node is removed. Exact.
    Leaves alone: asymmetric pads (a conv's padding is symmetric: "same" padding of a stride-2
    conv on an even size pads one side only; those run the pad kernel), non-zero or non-constant
    pads, pads with other users, convs called more than once. Refuses nothing.

    ``gm`` is not modified (deep copy; a plain module is traced first).
    ``result.meta[FOLDED_PADS_META_KEY]`` maps each removed pad node to its conv.
    """
    gm = trace(copy.deepcopy(gm))
    calls = module_call_counts(gm)
    folded: dict[str, str] = {}
    for node in list(gm.graph.nodes):
        amounts = zero_pad_amounts(gm, node)
        conv_node = _foldable_conv(gm, node, calls) if amounts is not None else None
        if conv_node is None:
            continue
        left, right, top, bottom = amounts
        if left != right or top != bottom:
            continue
        conv = gm.get_submodule(conv_node.target)
        conv.padding = (conv.padding[0] + top, conv.padding[1] + left)
        conv_node.args = (node.args[0], *conv_node.args[1:])
        gm.graph.erase_node(node)
        folded[node.name] = conv_node.target
    gm.graph.lint()
    gm.recompile()
    gm.meta[FOLDED_PADS_META_KEY] = folded
    return gm
