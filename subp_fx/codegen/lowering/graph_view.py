"""What the lowering reads about a traced model: each node's module, tensor shape and arguments.

``GraphView`` runs torch.fx's ``ShapeProp`` once on an example input, so every handler knows the
static shape (in torch's NCHW order) of every tensor node without re-deriving pooling or conv
arithmetic. ``LoweredTensor`` is what a node lowers to: a Relax expression plus that torch shape
and the order its axes are stored in: 4-d tensors are *stored* NHWC (``stored_shape``) by default,
everything else as torch has it. A permute changes only that order, never the data: ConvNeXt's
``permute(0, 2, 3, 1)`` of an NHWC-stored (B, C, H, W) map is the (B, H, W, C) tensor stored the
same way, so a LayerNorm or Linear over its last axis reads contiguous channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.passes.shape_prop import ShapeProp

from subp_fx.passes.fold_static_shapes import run_example
from subp_fx.passes.node_args import graph_constant


def canonical_order(rank: int) -> tuple[int, ...]:
    """The storage order every handler gets by default: (0, 2, 3, 1) (NHWC) for a 4-d tensor,
    torch's own order for any other rank."""
    return (0, 2, 3, 1) if rank == 4 else tuple(range(rank))


@dataclass(frozen=True)
class LoweredTensor:
    """A tensor of the compiled program: its Relax expression, its torch-order shape, and
    ``order``: stored axis ``j`` is torch axis ``order[j]`` (None: :func:`canonical_order`).

    ``dtype`` is how it is stored: ``"float32"``, or ``"uint8"`` for an int8 build's quantised
    activations, whose ``quant`` (``quantize.ActivationQuant``) says what the bytes mean."""

    expr: Any  # relax.Expr
    shape: tuple[int, ...]
    order: tuple[int, ...] | None = None
    dtype: str = "float32"
    quant: Any = None

    @property
    def axis_order(self) -> tuple[int, ...]:
        return canonical_order(len(self.shape)) if self.order is None else self.order

    @property
    def is_canonical(self) -> bool:
        return self.axis_order == canonical_order(len(self.shape))

    @property
    def is_feature_map(self) -> bool:
        """4-d torch (B, C, H, W), stored channels last."""
        return len(self.shape) == 4 and self.is_canonical

    @property
    def stored_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[axis] for axis in self.axis_order)


class GraphView:
    """A traced model with every tensor node's shape and dtype, for checking and lowering."""

    def __init__(self, gm: fx.GraphModule, example_input_shape: tuple[int, ...]):
        self.gm = gm
        self.modules: dict[str, nn.Module] = dict(gm.named_modules())
        self.input_shape = tuple(int(size) for size in example_input_shape)
        run_example(ShapeProp(gm), self.input_shape)  # records every node's shape

    @property
    def nodes(self) -> list[fx.Node]:
        return list(self.gm.graph.nodes)

    def module(self, node: fx.Node) -> nn.Module | None:
        return self.modules.get(node.target) if node.op == "call_module" else None

    def shape(self, node: Any) -> tuple[int, ...] | None:
        """The torch shape of a tensor node (None for non-tensors and non-nodes)."""
        meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
        return tuple(int(size) for size in meta.shape) if hasattr(meta, "shape") else None

    def part_shapes(self, node: fx.Node) -> tuple[tuple[int, ...], ...] | None:
        """The torch shapes of a node whose value is a tuple of tensors (``chunk``, ``split``), or None."""
        meta = node.meta.get("tensor_meta")
        if not isinstance(meta, (tuple, list)) or not all(hasattr(part, "shape") for part in meta):
            return None
        return tuple(tuple(int(size) for size in part.shape) for part in meta)

    def dtype(self, node: fx.Node) -> torch.dtype | None:
        meta = node.meta.get("tensor_meta")
        return getattr(meta, "dtype", None)

    def constant(self, node: Any) -> torch.Tensor | None:
        """The tensor a ``get_attr`` node reads (a parameter, buffer or plain tensor attribute),
        else None."""
        return graph_constant(self.gm, node)

    def is_tensor(self, value: Any) -> bool:
        return self.shape(value) is not None

    def describe(self, node: fx.Node) -> str:
        """``name (op target[, module type])`` for error messages."""
        module = self.module(node)
        target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
        kind = f", a {type(module).__module__}.{type(module).__name__}" if module is not None else ""
        return f"node {node.name!r} ({node.op} {target}{kind})"


def bind_arguments(node: fx.Node, names: tuple[str, ...], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """A call node's arguments by name: positional ``args`` matched to ``names`` in order, then
    ``kwargs``, then ``defaults`` for what neither gives."""
    bound = dict(defaults or {})
    bound.update(zip(names, node.args))
    bound.update(node.kwargs)
    return bound
