"""The ``fuse_channel_shuffles`` pass: ShuffleNet's view -> transpose -> view becomes one
``torch.channel_shuffle``.

Models spell a channel shuffle as reshapes around a transpose (torchvision's ShuffleNet V2):

    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    x = x.view(b, -1, h, w)

Each step alone is a 5-d tensor the NHWC lowering has no layout for; together they are one
permutation of the channels, which torch names ``channel_shuffle(x, groups)``. The pattern
(:func:`match_channel_shuffle`, a rule returning None where it does not apply) is kept apart from
the rewrite (:func:`fuse_channel_shuffles`), in the style of TVM's Relax pattern rewrites.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx

from subp_fx.passes.fold_static_shapes import run_example
from subp_fx.passes.trace import trace

# Key of GraphModule.meta written by this pass: how many channel shuffles it fused.
FUSED_SHUFFLES_META_KEY = "subp_fused_channel_shuffles"

_RESHAPE_METHODS = frozenset({"view", "reshape"})
_NO_OP_METHODS = frozenset({"contiguous"})


@dataclass(frozen=True)
class ChannelShuffleMatch:
    """A matched shuffle: ``source`` (B, C, H, W) shuffled in ``groups``; ``nodes`` the matched
    chain in graph order, the last one the shuffled result."""

    source: fx.Node
    groups: int
    nodes: tuple[fx.Node, ...]


class _ShapeRecorder(fx.Interpreter):
    """Runs the graph once, keeping the shape of every tensor-valued node."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.shapes: dict[fx.Node, tuple[int, ...]] = {}

    def run_node(self, node: fx.Node) -> Any:
        value = super().run_node(node)
        if isinstance(value, torch.Tensor):
            self.shapes[node] = tuple(value.shape)
        return value


def _only_input(node: Any) -> fx.Node | None:
    """The tensor a one-input call (view, transpose, contiguous) reads, when ``node`` is a call."""
    if not isinstance(node, fx.Node) or node.op not in ("call_method", "call_function") or not node.args:
        return None
    source = node.args[0]
    return source if isinstance(source, fx.Node) else None


def _is_reshape(node: fx.Node) -> bool:
    return (node.op == "call_method" and node.target in _RESHAPE_METHODS) or (
        node.op == "call_function" and node.target is torch.reshape
    )


def _swaps_axes_1_and_2(node: fx.Node) -> bool:
    """``transpose(x, 1, 2)`` (either order, method or function) or ``permute(x, 0, 2, 1, 3, 4)``."""
    is_transpose = (node.op == "call_method" and node.target == "transpose") or (
        node.op == "call_function" and node.target is torch.transpose
    )
    if is_transpose:
        return not node.kwargs and sorted(node.args[1:]) == [1, 2]
    is_permute = (node.op == "call_method" and node.target == "permute") or (
        node.op == "call_function" and node.target is torch.permute
    )
    if not is_permute or node.kwargs:
        return False
    order = node.args[1] if len(node.args) == 2 else node.args[1:]
    return tuple(order) == (0, 2, 1, 3, 4)


def match_channel_shuffle(node: fx.Node, shapes: dict[fx.Node, tuple[int, ...]]) -> ChannelShuffleMatch | None:
    """The shuffle ending at ``node`` (the reshape back to 4-d), or None when ``node`` does not end
    one: the chain must be reshape (B, C, H, W) -> (B, g, C/g, H, W), axes 1 and 2 swapped,
    optionally ``contiguous()``, reshape back to (B, C, H, W); every step but the last used only
    by the next (a step used elsewhere must still be computed)."""
    if not _is_reshape(node):
        return None
    chain = [node]
    step = _only_input(node)
    if step is not None and step.op == "call_method" and step.target in _NO_OP_METHODS and not step.kwargs:
        chain.append(step)
        step = _only_input(step)
    if step is None or not _swaps_axes_1_and_2(step):
        return None
    chain.append(step)
    split = _only_input(step)
    if split is None or not _is_reshape(split):
        return None
    chain.append(split)
    source = _only_input(split)
    if source is None or any(len(inner.users) != 1 for inner in chain[1:]):
        return None
    source_shape, split_shape, result_shape = shapes.get(source), shapes.get(split), shapes.get(node)
    if source_shape is None or len(source_shape) != 4 or result_shape != source_shape or split_shape is None:
        return None
    batch, channels, height, width = source_shape
    if len(split_shape) != 5 or split_shape[0] != batch or split_shape[3:] != (height, width):
        return None
    groups = split_shape[1]
    if groups * split_shape[2] != channels:
        return None
    return ChannelShuffleMatch(source, groups, tuple(reversed(chain)))


def _erase_dead_arithmetic(graph: fx.Graph, candidates: set[fx.Node]) -> set[fx.Node]:
    """Erase the pure calls among ``candidates`` left without users (the reshapes' ``x.size()``
    arithmetic, when shapes were not folded before), and then theirs, transitively; return them."""
    erased: set[fx.Node] = set()
    while candidates:
        node = candidates.pop()
        if node.users or node.op not in ("call_method", "call_function") or node.is_impure():
            continue
        candidates |= set(node.all_input_nodes)
        graph.erase_node(node)
        erased.add(node)
    return erased


def fuse_channel_shuffles(gm: torch.nn.Module, example_input_shape: tuple[int, ...]) -> fx.GraphModule:
    """Replace every view -> transpose(1, 2) [-> contiguous] -> view channel shuffle (see
    :func:`match_channel_shuffle`) by one ``torch.channel_shuffle(source, groups)`` node.

    Exact: ``channel_shuffle`` is defined as that very reshape-transpose-reshape. Shapes come from
    one run on zeros of ``example_input_shape`` (refused with ``CompiledInputError`` if the model
    does not run on it); the reshapes' arguments may be literals or nodes. Leaves alone: any other
    reshape or transpose (the lowering then says what it supports), a chain whose inner steps have
    other users. The model is not modified: the result shares its modules, on a copy of the
    graph. The number of shuffles fused is in ``result.meta[FUSED_SHUFFLES_META_KEY]``.
    """
    traced = trace(gm)
    result = fx.GraphModule(traced, copy.deepcopy(traced.graph), type(traced).__name__)
    result.meta.update(traced.meta)
    recorder = _ShapeRecorder(result)
    run_example(recorder, example_input_shape)
    fused = 0
    erased: set[fx.Node] = set()
    # Rewritten as found, in graph order: a shuffle of a shuffle then reads the fused node.
    for node in list(result.graph.nodes):
        match = None if node in erased else match_channel_shuffle(node, recorder.shapes)
        if match is None:
            continue
        with result.graph.inserting_before(node):
            shuffled = result.graph.call_function(torch.channel_shuffle, (match.source, match.groups))
        shuffled.meta.update(node.meta)
        recorder.shapes[shuffled] = recorder.shapes[node]
        node.replace_all_uses_with(shuffled)
        inputs = {argument for step in match.nodes for argument in step.all_input_nodes}
        for step in reversed(match.nodes):
            result.graph.erase_node(step)
        erased |= set(match.nodes) | _erase_dead_arithmetic(result.graph, inputs - set(match.nodes))
        fused += 1
    result.graph.lint()
    result.recompile()
    result.meta[FUSED_SHUFFLES_META_KEY] = fused
    return result


__all__ = ["FUSED_SHUFFLES_META_KEY", "ChannelShuffleMatch", "fuse_channel_shuffles", "match_channel_shuffle"]
