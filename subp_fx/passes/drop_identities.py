"""The ``drop_identities`` pass: module calls that return their input unchanged leave the graph.

``nn.Identity`` placeholders (timm's MLP ``norm`` when there is none, a block's ``shortcut``)
and eval-mode dropout sit between a layer and what the folding passes look for after it:
timm's ConvNeXt block computes ``fc2 -> drop2 -> mul(gamma)``, so ``fold_layer_scale`` saw a
Dropout, not the conv, and left the multiply as a kernel of its own. Removing them first lets
each fold see the layer itself; the lowering would have passed them through anyway.
"""

from __future__ import annotations

import copy

import torch.fx as fx
import torch.nn as nn
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


def _is_identity(module: nn.Module) -> bool:
    if type(module) in _ALWAYS_IDENTITY:
        return True
    return type(module) in _EVAL_IDENTITY and not module.training


def drop_identities(gm: nn.Module) -> fx.GraphModule:
    """Remove each call of an identity module: its users read its input instead.

    Removes: ``call_module`` nodes of exactly ``nn.Identity``, and of exactly ``nn.Dropout`` (1d,
    2d, 3d, alpha, feature-alpha) or torchvision's ``StochasticDepth`` in eval mode, called
    with one positional tensor argument. Leaves alone: those modules in training mode, subclasses,
    calls with other arguments, and functional dropout. The modules stay on the model (they may
    be called elsewhere). Refuses nothing.

    ``gm`` is not modified: the result is built from a deep copy (a plain ``nn.Module`` is traced
    first). ``meta[DROPPED_IDENTITIES_META_KEY]`` lists the removed calls' node names.
    """
    gm = trace(copy.deepcopy(gm))
    dropped: list[str] = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        if not isinstance(node.args[0], fx.Node) or not _is_identity(gm.get_submodule(node.target)):
            continue
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
        dropped.append(node.name)
    gm.graph.lint()
    gm.recompile()
    gm.meta[DROPPED_IDENTITIES_META_KEY] = dropped
    return gm


__all__ = ["DROPPED_IDENTITIES_META_KEY", "drop_identities"]
