"""Tracing a user's model with torch.fx, with an error a user can act on when it fails."""

from __future__ import annotations

import traceback

import torch.fx as fx
import torch.nn as nn

from subp_fx.algorithm.block_sparse import BlockSparseConv2d
from subp_fx.algorithm.modules import SUBPConv2d
from subp_fx.errors import UntraceableModelError


class LeafTracer(fx.Tracer):
    """A tracer that keeps the named module classes (or qualified module names) opaque."""

    # A default keeps traced GraphModules picklable: unpickling re-creates the tracer class
    # without arguments.
    def __init__(self, leaf_modules: list[str] | tuple[str, ...] = ()):
        super().__init__()
        self._leaf_modules = set(leaf_modules)

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        if qualified_name in self._leaf_modules or type(module).__name__ in self._leaf_modules:
            return True
        if isinstance(module, (SUBPConv2d, BlockSparseConv2d)):
            # One conv each: SUBPConv2d's forward has Python shape logic fx cannot follow, and
            # codegen must see a block-sparse conv as a single node.
            return True
        return super().is_leaf_module(module, qualified_name)


# The old private name: GraphModules pickled before the rename name their tracer class so.
_LeafTracer = LeafTracer


def _user_frame(exc: BaseException) -> str:
    """The innermost frame of the failing trace that is not inside torch itself."""
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if "/torch/" not in frame.filename]
    if not frames:
        return "inside torch"
    frame = frames[-1]
    return f"{frame.filename}:{frame.lineno} in {frame.name}(): {frame.line}"


def trace(model: nn.Module, leaf_modules: list[str] | tuple[str, ...] = ()) -> fx.GraphModule:
    """Symbolically trace ``model``; a model that is already a GraphModule is returned as is.

    Refuses (``UntraceableModelError``) a model whose forward fx cannot follow, naming the line
    that failed and the usual fixes.
    """
    if isinstance(model, fx.GraphModule):
        return model
    tracer = LeafTracer(list(leaf_modules))
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError... depending on the construct
        raise UntraceableModelError(
            f"torch.fx could not trace {type(model).__name__}: {type(exc).__name__}: {exc}. "
            f"The failing code is at {_user_frame(exc)}. "
            "Data-dependent control flow, shape-dependent Python logic and non-torch calls on tensors "
            "cannot be traced. Fixes: list the submodule holding that code (its class name or qualified "
            "name) under sparsity.leaf_modules so fx keeps it opaque (its convs then stay dense), wrap the "
            "offending free function with torch.fx.wrap, or make the branch independent of tensor values."
        ) from None
    root_name = type(model).__name__
    return fx.GraphModule(tracer.root, graph, root_name)
