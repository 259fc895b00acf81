"""What the lowering reads about a traced model: each node's module, tensor shape and arguments.

``GraphView`` runs torch.fx's ``ShapeProp`` once on an example input, so every handler knows the
static shape (in torch's NCHW order) of every tensor node without re-deriving pooling or conv
arithmetic. ``LoweredTensor`` is what a node lowers to: a Relax expression plus that torch shape;
4-d tensors are *stored* NHWC (``stored_shape``), everything else as torch has it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.passes.shape_prop import ShapeProp

from subp_fx.errors import CompiledInputError


@dataclass(frozen=True)
class LoweredTensor:
    """A tensor of the compiled program: its Relax expression and its torch-order shape."""

    expr: Any  # relax.Expr
    shape: tuple[int, ...]

    @property
    def is_feature_map(self) -> bool:
        """4-d: torch's (B, C, H, W), stored channels last."""
        return len(self.shape) == 4

    @property
    def stored_shape(self) -> tuple[int, ...]:
        if self.is_feature_map:
            batch, channels, height, width = self.shape
            return (batch, height, width, channels)
        return self.shape


class GraphView:
    """A traced model with every tensor node's shape and dtype, for checking and lowering."""

    def __init__(self, gm: fx.GraphModule, example_input_shape: tuple[int, ...]):
        self.gm = gm
        self.modules: dict[str, nn.Module] = dict(gm.named_modules())
        self.input_shape = tuple(int(size) for size in example_input_shape)
        try:
            ShapeProp(gm).propagate(torch.zeros(self.input_shape, dtype=torch.float32))
        except Exception as error:  # noqa: BLE001 (torch raises many kinds; the first line says which)
            cause = error.__cause__ or error
            first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            raise CompiledInputError(
                f"the model does not run on an input of shape {self.input_shape}: {first_line}. Compile with an "
                "example input the model accepts (e.g. a larger image size)"
            ) from None

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
