"""The ``fold_constants`` pass: every tensor the graph computes from the model's constants alone
becomes a constant itself.

Models compute some tensors from their own parameters and buffers only, never from the input:
timm's ConvNeXt scales each block by ``self.gamma.reshape(1, -1, 1, 1)``, a weight-standardised
conv normalises its weight (``F.batch_norm`` of ``self.weight.reshape(...)``) before
``F.conv2d``. None of that depends on the input, so it is evaluated once at compile time and the
graph reads the result as a ``get_attr`` constant, which ``modularize_functional``,
``fold_layer_scale`` and the lowering's rules accept where they accept a parameter.

Why not ``torch.fx.experimental.const_fold.split_const_subgraphs``: it rebuilds the graph with
``split_module``, which renames every called submodule (``layer1.0.conv1`` -> ``layer1_0_conv1``:
the kernel report and the SUBP conv names would change), with more than one folded value the
graph reads them as ``getitem`` of one ``ParameterList`` (a pattern no rule knows), and it folds
calls with no input at all (``torch.randn(3)``).
"""

from __future__ import annotations

import copy
import operator
import re
from typing import Any

import torch
import torch.fx as fx
from torch.fx.node import map_arg

from subp_fx.passes.node_args import graph_constant
from subp_fx.passes.trace import trace

# Key of GraphModule.meta written by this pass: each replaced node's name -> the attribute now
# holding its value.
FOLDED_CONSTANTS_META_KEY = "subp_folded_constants"
# Attributes holding folded values are named after the node they replace, with this prefix.
FOLDED_ATTRIBUTE_PREFIX = "_subp_folded_"

# Calls that draw random numbers give a new value on every run: never evaluated once.
_RANDOM = re.compile(r"rand|bernoulli|normal|dropout|multinomial|poisson|exponential|cauchy|geometric|uniform")
# In-place calls on a constant change it on every run (its readers would see the changed value).
_IN_PLACE_FUNCTIONS = (operator.setitem, operator.iadd, operator.imul, operator.isub, operator.itruediv)


def _name(node: fx.Node) -> str:
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", "")


def _in_place(node: fx.Node) -> bool:
    name = _name(node)
    if node.op == "call_function" and node.target in _IN_PLACE_FUNCTIONS:
        return True
    return node.op in ("call_function", "call_method") and name.endswith("_") and not name.startswith("__")


def _evaluable(node: fx.Node) -> bool:
    """A call whose value is fixed by its arguments: pure, not random, not in place, no ``out=``."""
    if node.op not in ("call_function", "call_method") or node.is_impure() or _in_place(node):
        return False
    return "out" not in node.kwargs and not _RANDOM.search(_name(node).lower())


def _evaluate(node: fx.Node, values: dict[fx.Node, Any]) -> Any:
    args = map_arg(node.args, values.__getitem__)
    kwargs = map_arg(node.kwargs, values.__getitem__)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    return node.target(*args, **kwargs)


def _constant_values(gm: fx.GraphModule) -> dict[fx.Node, Any]:
    """Every node whose value follows from the model's tensor constants alone, with that value:
    the ``get_attr`` tensors no in-place call touches, then, in graph order, each evaluable call
    with at least one input node, all of them in this set."""
    mutated = {argument for node in gm.graph.nodes if _in_place(node) for argument in node.all_input_nodes}
    values: dict[fx.Node, Any] = {}
    with torch.no_grad():
        for node in gm.graph.nodes:
            if node.op == "get_attr":
                tensor = graph_constant(gm, node)
                if tensor is not None and node not in mutated:
                    values[node] = tensor
                continue
            inputs = node.all_input_nodes
            if not inputs or node in mutated or not _evaluable(node) or not all(n in values for n in inputs):
                continue
            values[node] = _evaluate(node, values)
    return values


def _attribute_name(gm: fx.GraphModule, node: fx.Node) -> str:
    name, suffix = f"{FOLDED_ATTRIBUTE_PREFIX}{node.name}", 0
    while hasattr(gm, name if not suffix else f"{name}_{suffix}"):
        suffix += 1
    return name if not suffix else f"{name}_{suffix}"


def fold_constants(gm: torch.nn.Module) -> fx.GraphModule:
    """Evaluate once every call that depends on the model's tensor constants only, and read its
    value as a constant.

    Rewrites: each ``call_function`` / ``call_method`` node all of whose input nodes are tensor
    constants (``get_attr`` of a parameter, buffer or tensor attribute) or such folded calls
    (literal arguments allowed), evaluated under ``no_grad``; every one of them whose value is a
    tensor and that a node outside this set reads becomes a ``get_attr`` of a new buffer on the
    root module (named ``FOLDED_ATTRIBUTE_PREFIX`` + the node's name; a contiguous copy, so a
    later pass scaling a layer's weight in place cannot change it); the folded nodes nobody reads
    any more are erased.
    Leaves alone: calls with no input node (``torch.zeros(3)``, ``torch.randn(3)``), random
    calls (``rand*``, ``dropout``, ``bernoulli``, ...), impure and in-place calls and every
    constant an in-place call touches, calls with ``out=``, module calls, and folded values that
    are not tensors (a tuple from ``chunk``: the ``getitem`` picking a part is folded instead).
    Refuses nothing.

    The model is not modified: the result shares its modules, on a copy of the graph.
    ``result.meta[FOLDED_CONSTANTS_META_KEY]`` maps each replaced node's name to its new attribute.
    """
    traced = trace(gm)
    result = fx.GraphModule(traced, copy.deepcopy(traced.graph), type(traced).__name__)
    result.meta.update(traced.meta)
    values = _constant_values(result)
    folded: dict[str, str] = {}
    for node, value in values.items():
        if node.op == "get_attr" or not isinstance(value, torch.Tensor):
            continue
        if all(user in values for user in node.users):
            continue  # read only by other folded calls
        attribute = _attribute_name(result, node)
        result.register_buffer(attribute, value.detach().clone(memory_format=torch.contiguous_format))
        with result.graph.inserting_before(node):
            constant = result.graph.get_attr(attribute)
        node.replace_all_uses_with(constant)
        folded[node.name] = attribute
    for node in reversed(list(values)):
        if not node.users:
            result.graph.erase_node(node)
    result.graph.lint()
    result.recompile()
    result.meta[FOLDED_CONSTANTS_META_KEY] = folded
    return result


__all__ = ["FOLDED_ATTRIBUTE_PREFIX", "FOLDED_CONSTANTS_META_KEY", "fold_constants"]
