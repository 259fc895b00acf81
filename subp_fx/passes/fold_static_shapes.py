"""The ``fold_static_shapes`` pass: Python values computed from static shapes become constants.

Models written for eager PyTorch compute Python numbers from their tensors' shapes
(``b, c, h, w = x.size()``, ``x.view(x.size(0), -1)``, ``c // groups``, ``x.dim() == 4``); fx records
each such step as a node. A compiled model has one static input shape, so every such value is a
constant of that shape, and the lowering needs no rule for any of these nodes.
"""

from __future__ import annotations

import builtins
import copy
import operator
from typing import Any

import torch
import torch.fx as fx
from torch.fx.node import map_arg

from subp_fx.errors import CompiledInputError
from subp_fx.passes.trace import trace

# Key of GraphModule.meta written by this pass: how many nodes it folded away.
FOLDED_SHAPES_META_KEY = "subp_folded_shape_nodes"

# The queries that read a tensor's static shape and nothing of its values.
SHAPE_METHODS = frozenset({"size", "dim", "ndimension", "numel", "nelement"})
# dtype and device are as static as the shape: the compiled model runs float32 on the CPU.
SHAPE_ATTRIBUTES = frozenset({"shape", "ndim", "dtype", "device"})
# Assertions that passed on the example shape: with a static condition they pass on every input.
_ASSERTIONS = (torch._assert,)
# Methods that change a Python value in place: folding the value before them would be wrong.
_MUTATING_METHODS = frozenset({"append", "extend", "insert", "pop", "remove", "clear", "reverse", "sort", "update"})
_MUTATING_FUNCTIONS = (operator.setitem, operator.delitem)
# ``a += b`` / ``a *= b``: in place on a list, a plain sum / product on a number.
_AUGMENTED_FUNCTIONS = (operator.iadd, operator.imul)
# The Python values a node may fold to: what fx can write into a node's arguments as literals.
_LITERAL_TYPES = (int, float, bool, str, type(None), torch.dtype, torch.device)


_NOT_LITERAL = object()


def _literal(value: Any) -> Any:
    """``value`` as an fx argument literal (a ``torch.Size`` as a tuple), or ``_NOT_LITERAL`` (a
    tensor, a module, an arbitrary object)."""
    if isinstance(value, _LITERAL_TYPES):
        return value
    if isinstance(value, (tuple, list)):
        items = [_literal(item) for item in value]
        if any(item is _NOT_LITERAL for item in items):
            return _NOT_LITERAL
        return tuple(items) if isinstance(value, tuple) else items
    return _NOT_LITERAL


def _input_nodes(node: fx.Node) -> list[fx.Node]:
    return list(node.all_input_nodes)


def _is_shape_query(node: fx.Node, tensors: set[fx.Node], static: dict[fx.Node, Any]) -> bool:
    """``x.size()``, ``x.size(1)``, ``x.dim()``, ``x.numel()``, ``x.shape``, ``x.ndim``, ``len(x)`` on a
    tensor node ``x`` (its other arguments literals or static values)."""
    if not node.args or node.args[0] not in tensors:
        return False
    if any(n is not node.args[0] and n not in static for n in _input_nodes(node)):
        return False
    if node.op == "call_method":
        return node.target in SHAPE_METHODS
    if node.op == "call_function" and node.target is builtins.getattr:
        return len(node.args) == 2 and node.args[1] in SHAPE_ATTRIBUTES
    return node.op == "call_function" and node.target is builtins.len


def _mutates(node: fx.Node, literals: dict[fx.Node, Any]) -> bool:
    if node.op == "call_method":
        return node.target in _MUTATING_METHODS
    if node.op == "call_function" and node.target in _AUGMENTED_FUNCTIONS:
        return isinstance(literals.get(node.args[0]), list)
    return node.op == "call_function" and node.target in _MUTATING_FUNCTIONS


class _ValueRecorder(fx.Interpreter):
    """Runs the graph once, keeping a copy of every node's value that is a Python literal (taken
    when the node runs, before any later node could change it) and the set of tensor nodes."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.literals: dict[fx.Node, Any] = {}
        self.tensors: set[fx.Node] = set()

    def run_node(self, node: fx.Node) -> Any:
        value = super().run_node(node)
        if isinstance(value, torch.Tensor):
            self.tensors.add(node)
        elif (literal := _literal(value)) is not _NOT_LITERAL:
            self.literals[node] = copy.deepcopy(literal)
        return value


def _foldable(gm: fx.GraphModule, recorder: _ValueRecorder) -> dict[fx.Node, Any]:
    """The nodes to fold, in graph order, with their constant values."""
    static: dict[fx.Node, Any] = {}
    literals = recorder.literals
    mutated = {argument for node in gm.graph.nodes if _mutates(node, literals) for argument in _input_nodes(node)}
    for node in gm.graph.nodes:
        if node.op not in ("call_function", "call_method") or node not in recorder.literals:
            continue
        inputs = _input_nodes(node)
        passed_assertion = node.target in _ASSERTIONS and inputs and all(n in static for n in inputs)
        if node in mutated or _mutates(node, literals) or (node.is_impure() and not passed_assertion):
            continue
        # At least one input: a call of no node (a random number, a clock) is no shape value.
        if _is_shape_query(node, recorder.tensors, static) or (inputs and all(n in static for n in inputs)):
            static[node] = recorder.literals[node]
    return static


def run_example(interpreter: fx.Interpreter, example_input_shape: tuple[int, ...]) -> None:
    """Run ``interpreter`` on zeros of ``example_input_shape``; an input the model does not run on
    is refused with ``CompiledInputError`` naming the shape and torch's reason."""
    shape = tuple(int(size) for size in example_input_shape)
    try:
        with torch.no_grad():
            interpreter.run(torch.zeros(shape, dtype=torch.float32))
    except Exception as error:  # noqa: BLE001 (torch raises many kinds; the first line says which)
        cause = error.__cause__ or error
        first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise CompiledInputError(
            f"the model does not run on an input of shape {shape}: {first_line}. Compile with an example input the "
            "model accepts (e.g. a larger image size)"
        ) from None


class _RankRecorder(fx.Interpreter):
    """Runs the graph once, keeping the rank of each tensor node's value."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.ranks: dict[fx.Node, int] = {}

    def run_node(self, node: fx.Node) -> Any:
        value = super().run_node(node)
        if isinstance(value, torch.Tensor):
            self.ranks[node] = value.dim()
        return value


def tensor_ranks(gm: fx.GraphModule, example_input_shape: tuple[int, ...]) -> dict[fx.Node, int]:
    """The rank of every tensor-valued node of ``gm`` on an input of ``example_input_shape``
    (run once on zeros; ``CompiledInputError`` as :func:`run_example` for a shape it does not run on)."""
    recorder = _RankRecorder(gm)
    run_example(recorder, example_input_shape)
    return recorder.ranks


def fold_static_shapes(gm: torch.nn.Module, example_input_shape: tuple[int, ...]) -> fx.GraphModule:
    """Replace every node that computes a Python value from static shapes by that value.

    Runs the graph once on zeros of ``example_input_shape`` and folds each call whose value is a
    Python literal (int, float, bool, str, None, dtype, device, tuples and lists of those, a
    ``torch.Size`` as a tuple) and whose inputs reach tensors only through shape queries:
    ``x.size()`` / ``x.size(d)`` / ``x.dim()`` / ``x.numel()`` / ``x.shape`` / ``x.ndim`` / ``len(x)``
    (and ``x.dtype`` / ``x.device``), and anything computed from those alone (``getitem``,
    ``floordiv``, ``mul``, ``add``, ``eq``, ``len`` of a shape, ``torch.Size``...). Each use of a
    folded node by an unfolded one takes the constant instead; the folded nodes are then erased,
    and so is a ``torch._assert`` whose condition folded (it passed, and would on every input of
    this shape).

    Leaves alone: every node whose value depends on tensor VALUES (``x.sum().item()``, ``x > 0``:
    ``item`` reads data, and a comparison of tensors is a tensor), every tensor-valued node (even
    ``torch.zeros(x.shape)``: its shape argument is folded, the node stays), module calls, impure
    calls, calls of no node at all, and values changed in place later (``list.append``,
    ``setitem``). Refuses (``CompiledInputError``) an input shape the model does not run on.
    The model is not modified: the result shares its modules, on a copy of the graph. The number
    of nodes folded is in ``result.meta[FOLDED_SHAPES_META_KEY]``.
    """
    traced = trace(gm)
    result = fx.GraphModule(traced, copy.deepcopy(traced.graph), type(traced).__name__)
    result.meta.update(traced.meta)
    recorder = _ValueRecorder(result)
    run_example(recorder, example_input_shape)
    static = _foldable(result, recorder)
    for node in static:
        for user in list(node.users):
            if user not in static:
                user.args = map_arg(user.args, lambda n, node=node: static[node] if n is node else n)
                user.kwargs = map_arg(user.kwargs, lambda n, node=node: static[node] if n is node else n)
    for node in reversed(list(static)):
        result.graph.erase_node(node)
    result.graph.lint()
    result.recompile()
    result.meta[FOLDED_SHAPES_META_KEY] = len(static)
    return result


def shape_queries(gm: fx.GraphModule) -> list[fx.Node]:
    """The nodes of ``gm`` that read a shape, dtype or device (``size``, ``dim``, ``numel``,
    ``shape``, ``ndim``...), found without running it: what ``fold_static_shapes`` leaves none of."""

    def query(node: fx.Node) -> bool:
        if node.op == "call_method":
            return node.target in SHAPE_METHODS
        return (
            node.op == "call_function"
            and node.target is builtins.getattr
            and len(node.args) == 2
            and node.args[1] in SHAPE_ATTRIBUTES
        )

    return [node for node in gm.graph.nodes if query(node)]


__all__ = ["FOLDED_SHAPES_META_KEY", "fold_static_shapes", "run_example", "shape_queries", "tensor_ranks"]
