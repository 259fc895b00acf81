"""The handler table: which fx nodes the lowering supports, how each is checked and lowered.

Three tables, keyed the way fx names a call: ``MODULE_RULES`` by the called module's exact type,
``FUNCTION_RULES`` by the called function, ``METHOD_RULES`` by the tensor method's name. Each
:class:`NodeRule` has a ``problem`` check (why *this* node cannot be lowered, or None) and a
``lower`` that emits it. :func:`unsupported_nodes` runs every check over the whole graph so that
one error lists everything a model would need; :func:`supported_ops` says what would be valid.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import StochasticDepth, stochastic_depth

from subp_fx.algorithm.block_sparse import BlockSparseConv2d
from subp_fx.codegen.activations import ACTIVATIONS
from subp_fx.codegen.lowering import channels as channel_lowering
from subp_fx.codegen.lowering import conv as conv_lowering
from subp_fx.codegen.lowering import layer_norm as layer_norm_lowering
from subp_fx.codegen.lowering import linear as linear_lowering
from subp_fx.codegen.lowering import ops as op_lowering
from subp_fx.codegen.lowering import permute as permute_lowering
from subp_fx.codegen.lowering import resample as resample_lowering
from subp_fx.codegen.lowering.context import LoweringContext
from subp_fx.codegen.lowering.fusion import FusionAbility
from subp_fx.codegen.lowering.graph_view import GraphView
from subp_fx.passes.node_args import ADD_FUNCTIONS, ADD_METHODS, MAX_POOL_FUNCTIONS, MAX_POOL_MODULES


def _no_problem(view: GraphView, node: fx.Node) -> str | None:
    return None


def _never_fuses(view: GraphView, node: fx.Node) -> FusionAbility:
    return FusionAbility.NONE


def _fuses_residual_and_activation(view: GraphView, node: fx.Node) -> FusionAbility:
    return FusionAbility.RESIDUAL


def _fuses_activation(view: GraphView, node: fx.Node) -> FusionAbility:
    return FusionAbility.ACTIVATION


@dataclass(frozen=True)
class NodeRule:
    """How one kind of node is lowered.

    ``what``: a short description for the list of supported ops; ``problem``: why a given node of
    this kind cannot be lowered (None when it can); ``lower``: emits it and returns its value;
    ``fusion``: what its kernel's epilogue can absorb (convs and linear layers only);
    ``takes_constants``: its handler reads graph constants (``get_attr`` nodes) among its
    arguments itself (``GraphView.constant``); a constant used by any other node is refused.
    """

    what: str
    lower: Callable[[LoweringContext, fx.Node], Any]
    problem: Callable[[GraphView, fx.Node], str | None] = _no_problem
    fusion: Callable[[GraphView, fx.Node], FusionAbility] = _never_fuses
    takes_constants: bool = False


def _activation_rule(names: list[str]) -> NodeRule:
    return NodeRule("/".join(names), op_lowering.lower_activation, op_lowering.activation_problem)


def _activation_spellings(field: str) -> dict:
    """Each torch spelling (module type, function or method name) of the registry's activations ->
    one rule naming the activations it can mean (GELU's two forms share theirs)."""
    names: dict[Any, list[str]] = {}
    for activation in ACTIVATIONS.values():
        for spelling in getattr(activation, field):
            names.setdefault(spelling, []).append(activation.name)
    return {spelling: _activation_rule(spelled) for spelling, spelled in names.items()}


# The rules of the activation registry, under each of its torch spellings.
_ACTIVATION_MODULES = _activation_spellings("modules")
_ACTIVATION_FUNCTIONS = _activation_spellings("functions")
_ACTIVATION_METHODS = _activation_spellings("methods")
_ADD = NodeRule("add of two same-shape tensors", op_lowering.lower_add, op_lowering.add_problem)
_SUB = NodeRule("subtract of two same-shape tensors", op_lowering.lower_sub, op_lowering.sub_problem)
_FLATTEN = NodeRule("flatten/view/reshape to (B, features)", op_lowering.lower_flatten, op_lowering.flatten_problem)
_IDENTITY = NodeRule("identity", op_lowering.lower_passthrough)
_ADAPTIVE_AVG_POOL = NodeRule(
    "adaptive average pool (any output size)",
    op_lowering.lower_adaptive_avg_pool,
    op_lowering.adaptive_avg_pool_problem,
)

_MAX_POOL = NodeRule("max pool (no return_indices)", op_lowering.lower_max_pool, op_lowering.max_pool_problem)
_AVG_POOL = NodeRule(
    "average pool (ceil_mode only where it changes nothing)", op_lowering.lower_avg_pool, op_lowering.avg_pool_problem
)
_MUL = NodeRule(
    "multiply of two same-shape maps, of a map by a per-channel gate, or of a tensor by a per-axis constant",
    op_lowering.lower_mul,
    op_lowering.mul_problem,
    takes_constants=True,
)
_PERMUTE = NodeRule(
    "permute (a change of storage order, no copy)", permute_lowering.lower_permute, permute_lowering.permute_problem
)
_LAYER_NORM = NodeRule(
    "layer norm over the last axis",
    layer_norm_lowering.lower_layer_norm,
    layer_norm_lowering.layer_norm_problem,
    takes_constants=True,
)
_STOCHASTIC_DEPTH = NodeRule(
    "stochastic depth in eval mode (identity)", op_lowering.lower_passthrough, op_lowering.stochastic_depth_problem
)
_MEAN = NodeRule("mean over the spatial axes (2, 3)", op_lowering.lower_mean, op_lowering.mean_problem)
_PAD = NodeRule("constant pad of H/W (pads >= 0)", resample_lowering.lower_pad, resample_lowering.pad_problem)
_UPSAMPLE = NodeRule(
    "nearest upsampling by integer factors", resample_lowering.lower_upsample, resample_lowering.upsample_problem
)
_CHANNEL_SHUFFLE = NodeRule(
    "channel shuffle of a (B, C, H, W) tensor",
    channel_lowering.lower_channel_shuffle,
    channel_lowering.channel_shuffle_problem,
)
_SPLIT = NodeRule("chunk/split on channels", channel_lowering.lower_split, channel_lowering.split_problem)

MODULE_RULES: dict[type, NodeRule] = {
    BlockSparseConv2d: NodeRule(
        "1xN block-sparse conv (dilation 1)",
        conv_lowering.lower_block_sparse_conv,
        conv_lowering.block_sparse_conv_problem,
        _fuses_residual_and_activation,
    ),
    nn.Conv2d: NodeRule(
        "conv: dense or grouped (dilation 1), or depthwise (groups=C_in=C_out)",
        conv_lowering.lower_conv2d,
        conv_lowering.conv2d_problem,
        conv_lowering.conv2d_fusion_ability,
    ),
    nn.Linear: NodeRule(
        "linear on (B, features), or over the last axis of a 4-d tensor",
        linear_lowering.lower_linear,
        linear_lowering.linear_problem,
        _fuses_activation,
    ),
    nn.LayerNorm: _LAYER_NORM,
    **_ACTIVATION_MODULES,
    **{module: _MAX_POOL for module in MAX_POOL_MODULES},
    nn.AvgPool2d: _AVG_POOL,
    nn.AdaptiveAvgPool2d: _ADAPTIVE_AVG_POOL,
    nn.Flatten: _FLATTEN,
    nn.Identity: _IDENTITY,
    nn.Dropout: NodeRule("dropout in eval mode (identity)", op_lowering.lower_passthrough, op_lowering.dropout_problem),
    StochasticDepth: _STOCHASTIC_DEPTH,
    nn.BatchNorm2d: NodeRule(
        "batch norm in eval mode (when not folded)", op_lowering.lower_batchnorm, op_lowering.batchnorm_problem
    ),
    **{module: _PAD for module in resample_lowering.PAD_MODULES},
    **{module: _UPSAMPLE for module in resample_lowering.UPSAMPLE_MODULES},
    nn.ChannelShuffle: _CHANNEL_SHUFFLE,
}

FUNCTION_RULES: dict[Callable, NodeRule] = {
    **{function: _ADD for function in ADD_FUNCTIONS},
    **{function: _SUB for function in op_lowering.SUB_FUNCTIONS},
    **_ACTIVATION_FUNCTIONS,
    torch.flatten: _FLATTEN,
    F.adaptive_avg_pool2d: _ADAPTIVE_AVG_POOL,
    **{function: _MAX_POOL for function in MAX_POOL_FUNCTIONS},
    F.avg_pool2d: _AVG_POOL,
    **{function: _MUL for function in op_lowering.MUL_FUNCTIONS},
    torch.mean: _MEAN,
    stochastic_depth: _STOCHASTIC_DEPTH,
    torch.cat: NodeRule("concat on channels", op_lowering.lower_concat, op_lowering.concat_problem),
    **{function: _PAD for function in resample_lowering.PAD_FUNCTIONS},
    **{function: _UPSAMPLE for function in resample_lowering.UPSAMPLE_FUNCTIONS},
    **{function: _CHANNEL_SHUFFLE for function in channel_lowering.CHANNEL_SHUFFLE_FUNCTIONS},
    **{function: _SPLIT for function in channel_lowering.SPLIT_FUNCTIONS},
    operator.getitem: NodeRule(
        "a part of a chunk/split, or a slice of a tensor (contiguous channels, any step on batch / H / W)",
        channel_lowering.lower_getitem,
        channel_lowering.getitem_problem,
    ),
    torch.permute: _PERMUTE,
    F.layer_norm: _LAYER_NORM,
}

METHOD_RULES: dict[str, NodeRule] = {
    **{method: _ADD for method in ADD_METHODS},
    **{method: _SUB for method in op_lowering.SUB_METHODS},
    **_ACTIVATION_METHODS,
    "flatten": _FLATTEN,
    "view": _FLATTEN,
    "reshape": _FLATTEN,
    # Value-preserving no-ops: a compiled tensor is contiguous, float32 and without autograd, and
    # no kernel writes its inputs (so a clone never needs its own copy).
    "contiguous": _IDENTITY,
    "clone": _IDENTITY,
    "detach": _IDENTITY,
    "float": NodeRule(
        "float() of a float32 tensor (identity)", op_lowering.lower_passthrough, op_lowering.float_problem
    ),
    **{method: _SPLIT for method in channel_lowering.SPLIT_METHODS},
    **{method: _MUL for method in op_lowering.MUL_METHODS},
    "mean": _MEAN,
    "permute": _PERMUTE,
}


def rule_for(view: GraphView, node: fx.Node) -> NodeRule | None:
    """The rule lowering ``node``, or None when the node's kind is not supported."""
    lookups: dict[str, Callable[[], NodeRule | None]] = {
        "call_module": lambda: MODULE_RULES.get(type(view.module(node))),
        "call_function": lambda: FUNCTION_RULES.get(node.target),
        "call_method": lambda: METHOD_RULES.get(node.target),
    }
    lookup = lookups.get(node.op)
    return lookup() if lookup is not None else None


def _graph_problem(view: GraphView, node: fx.Node) -> str | None:
    """Why a placeholder / output / get_attr node cannot be lowered (None when it can)."""
    if node.op == "placeholder":
        shape, dtype = view.shape(node), view.dtype(node)
        if shape is None or len(shape) != 4 or dtype != torch.float32:
            return f"the model input is {dtype} of shape {shape}; a float32 (B, C, H, W) image batch is supported"
        return None
    if node.op == "output":
        result = node.args[0]
        if not view.is_tensor(result):
            return "the model returns something other than one tensor; one output tensor is supported"
        return None
    if node.op == "get_attr":
        if view.constant(node) is None:
            return "reads an attribute that is not a tensor; only tensor constants are supported"
        readers = [user for user in node.users if not getattr(rule_for(view, user), "takes_constants", False)]
        if readers:
            return (
                f"a constant of the model read by {', '.join(user.name for user in readers)}; constants are supported "
                "as layer norm weight / bias and as per-axis multipliers (e.g. a layer scale) only"
            )
    return None


def node_problem(view: GraphView, node: fx.Node) -> str | None:
    """Why ``node`` cannot be lowered, or None."""
    if node.op in ("placeholder", "output", "get_attr"):
        return _graph_problem(view, node)
    rule = rule_for(view, node)
    if rule is None:
        return "no lowering for this op"
    return rule.problem(view, node)


def unsupported_nodes(view: GraphView) -> list[str]:
    """One line per node that cannot be lowered: the node, its op, target and module type, and why."""
    lines = [f"{view.describe(node)}: {problem}" for node in view.nodes if (problem := node_problem(view, node))]
    placeholders = [node for node in view.nodes if node.op == "placeholder"]
    if len(placeholders) != 1:
        lines.append(f"the model takes {len(placeholders)} inputs; exactly one image batch is supported")
    return lines


def _name(thing: Any) -> str:
    if isinstance(thing, type):
        return f"nn.{thing.__name__}" if thing.__module__.startswith("torch.nn") else thing.__name__
    module = getattr(thing, "__module__", None) or ""
    prefix = {"torch.nn.functional": "F.", "torch": "torch.", "_operator": "operator.", "builtins": ""}.get(module, "")
    return prefix + getattr(thing, "__name__", str(thing))


def supported_ops() -> str:
    """What the lowering supports, for error messages."""
    modules = ", ".join(f"{_name(kind)} ({rule.what})" for kind, rule in MODULE_RULES.items())
    functions = ", ".join(sorted({_name(function) for function in FUNCTION_RULES}))
    methods = ", ".join(f"Tensor.{name}" for name in METHOD_RULES)
    return f"modules: {modules}; functions: {functions}; methods: {methods}"
