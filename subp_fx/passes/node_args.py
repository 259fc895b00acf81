"""Reading fx nodes the way several passes and the lowering need to: the tensor a ``get_attr``
reads, a permute's dims, how often each submodule is called. Torch only (the lowering uses these
too, so they live below it)."""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F


def graph_constant(gm: torch.nn.Module, node: Any) -> torch.Tensor | None:
    """The tensor a ``get_attr`` node reads (a parameter, buffer or plain tensor attribute), else None."""
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    value: Any = gm
    for part in str(node.target).split("."):
        value = getattr(value, part, None)
    return value if isinstance(value, torch.Tensor) else None


def permute_dims(node: fx.Node) -> tuple | None:
    """The dims a permute node asks for, as given (``x.permute(0, 2, 3, 1)``,
    ``x.permute((0, 2, 3, 1))``, ``torch.permute(x, [0, 2, 3, 1])``, ``dims=``), or None."""
    if "dims" in node.kwargs:
        dims = node.kwargs["dims"]
    elif len(node.args) == 2 and isinstance(node.args[1], (tuple, list)):
        dims = node.args[1]
    else:
        dims = node.args[1:]
    return tuple(dims) if isinstance(dims, (tuple, list)) else None


def normalised_permutation(dims: tuple | None, rank: int) -> tuple[int, ...] | None:
    """``dims`` with negative axes made positive, when it is a permutation of ``rank`` axes; else None."""
    if dims is None or len(dims) != rank or not all(isinstance(d, int) for d in dims):
        return None
    normalised = tuple(d % rank if -rank <= d < rank else -1 for d in dims)
    return normalised if sorted(normalised) == list(range(rank)) else None


def module_call_counts(gm: fx.GraphModule) -> Counter:
    """Submodule name -> how many ``call_module`` nodes call it (shared weights count more than once)."""
    return Counter(node.target for node in gm.graph.nodes if node.op == "call_module")


# The spellings of a tensor add in a traced graph (the lowering fuses them, the int8 plan reads them).
ADD_FUNCTIONS: tuple[Callable, ...] = (operator.add, operator.iadd, torch.add)
ADD_METHODS: tuple[str, ...] = ("add", "add_")


def is_add(node: fx.Node) -> bool:
    """Whether ``node`` calls an add (``a + b``, ``torch.add``, ``a.add(b)``, in place or not);
    its operands are not checked."""
    return (node.op == "call_function" and node.target in ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in ADD_METHODS
    )


# The spellings of a 2-d max pool (the lowering has a rule for each, the int8 plan looks for them):
# F.max_pool2d is what symbolic tracing records, torch.max_pool2d what other captures may.
MAX_POOL_FUNCTIONS: tuple[Callable, ...] = (F.max_pool2d, torch.max_pool2d)
MAX_POOL_MODULES: tuple[type[nn.Module], ...] = (nn.MaxPool2d,)


def is_max_pool(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` is a 2-d max pool of values (an ``nn.MaxPool2d`` without
    ``return_indices``, or one of :data:`MAX_POOL_FUNCTIONS`); its arguments are not checked."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return isinstance(module, MAX_POOL_MODULES) and not module.return_indices
    return node.op == "call_function" and node.target in MAX_POOL_FUNCTIONS
