"""The ``drop_identities`` pass: calls that return their input unchanged leave the graph.

``nn.Identity`` placeholders (timm's MLP ``norm`` when there is none, a block's ``shortcut``)
and eval-mode dropout sit between a layer and what the folding passes look for after it:
timm's ConvNeXt block computes ``fc2 -> drop2 -> mul(gamma)``, so ``fold_layer_scale`` saw a
Dropout, not the conv, and left the multiply as a kernel of its own. Removing them first lets
each fold see the layer itself; the lowering would have passed them through anyway.
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import StochasticDepth

from subp_fx.passes.trace import trace

# Key of GraphModule.meta written by this pass: the names of the module calls removed.
DROPPED_IDENTITIES_META_KEY = "subp_dropped_identities"

# Exact types: a subclass may do more in its forward.
_ALWAYS_IDENTITY = (nn.Identity,)
# The identity in eval mode only.
_EVAL_IDENTITY = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    StochasticDepth,
)


# Functional dropouts: each -> (position, name, default) of its training flag. The identity when
# the traced call passed training=False (``F.dropout(x, p, training=self.training)`` in eval).
_DROPOUT_FUNCTIONS = {
    **{
        function: (2, "training", True)
        for function in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout)
    },
    torch.dropout: (2, "train", None),
}


# x + 0, x - 0, x * 1, x / 1 (and 0 + x, 1 * x) with a literal number: FastViT's MobileOne block
# adds a Python 0 where a branch is absent. Operand positions that may hold the neutral value.
_NEUTRAL_OPERANDS = {
    operator.add: (0, (0, 1)),
    torch.add: (0, (0, 1)),
    operator.sub: (0, (1,)),
    torch.sub: (0, (1,)),
    operator.mul: (1, (0, 1)),
    torch.mul: (1, (0, 1)),
    operator.truediv: (1, (1,)),
    torch.div: (1, (1,)),
}


def _is_identity(module: nn.Module) -> bool:
    if type(module) in _ALWAYS_IDENTITY:
        return True
    return type(module) in _EVAL_IDENTITY and not module.training


def _identity_input(gm: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """The tensor an identity call returns unchanged, or None when ``node`` is no such call."""
    if node.op == "call_function" and node.target in _NEUTRAL_OPERANDS and len(node.args) == 2 and not node.kwargs:
        return _neutral_operation_input(node)
    source = node.args[0] if node.args else None
    if not isinstance(source, fx.Node):
        return None
    if node.op == "call_module":
        identity = len(node.args) == 1 and not node.kwargs and _is_identity(gm.get_submodule(node.target))
        return source if identity else None
    if node.op == "call_function" and node.target in _DROPOUT_FUNCTIONS:
        position, name, default = _DROPOUT_FUNCTIONS[node.target]
        training = node.kwargs.get(name, node.args[position] if len(node.args) > position else default)
        return source if training is False else None
    return None


def _neutral_operation_input(node: fx.Node) -> fx.Node | None:
    """The tensor operand of ``x + 0`` / ``x * 1``-like calls (a new tensor equal to ``x``), unless
    a user changes the result in place (it would then change ``x`` as well)."""
    neutral, positions = _NEUTRAL_OPERANDS[node.target]
    for position in positions:
        value, operand = node.args[position], node.args[1 - position]
        if type(value) in (int, float) and value == neutral and isinstance(operand, fx.Node):
            in_place = any(str(getattr(user.target, "__name__", user.target)).endswith("_") for user in node.users)
            return None if in_place else operand
    return None


def drop_identities(gm: nn.Module) -> fx.GraphModule:
    """Remove each call of an identity module: its users read its input instead.

    Removes: ``call_module`` nodes of exactly ``nn.Identity``, and of exactly ``nn.Dropout`` (1d,
    2d, 3d, alpha, feature-alpha) or torchvision's ``StochasticDepth`` in eval mode, called
    with one positional tensor argument; functional dropout (``F.dropout`` and its 1d / 2d / 3d /
    alpha / feature-alpha forms, ``torch.dropout``) called with ``training=False`` (GhostNet's
    ``F.dropout(x, p, training=self.training)`` traced in eval mode). Leaves alone: those modules
    in training mode, subclasses, module calls with other arguments, functional dropout whose
    training flag is True, left out (``F.dropout`` defaults to True) or computed in the graph. The
    modules stay on the model (they may be called elsewhere). Also removes ``x + 0``, ``0 + x``,
    ``x - 0``, ``x * 1``, ``1 * x``, ``x / 1`` with a literal Python number (``operator`` or
    ``torch`` functions, no keywords) unless a user of the result changes it in place. Refuses
    nothing.

    ``gm`` is not modified: the result is built from a deep copy (a plain ``nn.Module`` is traced
    first). ``meta[DROPPED_IDENTITIES_META_KEY]`` lists the removed calls' node names.
    """
    gm = trace(copy.deepcopy(gm))
    dropped: list[str] = []
    for node in list(gm.graph.nodes):
        source = _identity_input(gm, node)
        if source is None:
            continue
        node.replace_all_uses_with(source)
        gm.graph.erase_node(node)
        dropped.append(node.name)
    gm.graph.lint()
    gm.recompile()
    gm.meta[DROPPED_IDENTITIES_META_KEY] = dropped
    return gm


__all__ = ["DROPPED_IDENTITIES_META_KEY", "drop_identities"]
