"""Concrete tracing: torch.fx capture of a model for one example input, for models whose Python
logic on tensor shapes ``symbolic_trace`` cannot follow.

Why: ``symbolic_trace`` feeds proxies through ``forward``, so ``if x.shape[-1] % 2:``, a
"same"-padding helper computing ``F.pad`` amounts from ``x.size()``, ``assert x.dim() == 4`` or
``len(x)`` fail (or leave shape-arithmetic nodes in the graph). :class:`ConcreteTracer` runs the
real computation on an example input alongside the trace: every proxy carries the real value its
node computes, and shape queries (``x.shape``, ``x.size()``, ``x.dim()``, ``x.ndim``,
``x.numel()``, also ``dtype`` / ``device`` and ``len(x)``) return that value's plain Python ints.
Shape-dependent control flow is therefore resolved at capture time and no shape-arithmetic node
enters the graph: ``F.pad(x, [0, 1, 0, 1])`` is recorded with literal ints.

The result is exact for inputs of the example's shape only (compile's inputs are static, so
that is what compile needs). A branch on tensor *values* (``if x.max() > 0``) is resolved on the
example's values too: :class:`ConcreteTrace` lists every such branch in ``value_branches``, and
``concrete_trace`` warns about them, because another input could take the other branch.

Leaf modules stay ``call_module`` nodes exactly as ``symbolic_trace`` records them (torch.nn
modules, SUBP and block-sparse convs, ``leaf_modules``), since the lowering's rules key on
module types; the GraphModule records the plain leaf tracer, so it pickles and re-traces like a
symbolically traced one.
"""

from __future__ import annotations

import builtins
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.node import map_aggregate

from subp_fx.errors import UntraceableModelError
from subp_fx.passes.trace import LeafTracer

# Tensor attributes whose real value is returned during tracing: plain data about the tensor's
# static form (ints, torch.Size, dtype, device), never tensor contents.
SHAPE_ATTRIBUTES = frozenset({"shape", "ndim", "dtype", "device", "is_cuda"})
SHAPE_METHODS = frozenset({"size", "dim", "numel", "ndimension", "nelement", "get_device", "is_contiguous"})


def _real(value: Any) -> Any:
    """``value`` with every concrete proxy in it replaced by the real value it carries."""
    return map_aggregate(value, lambda item: item.value if isinstance(item, ConcreteProxy) else item)


class ConcreteProxy(fx.Proxy):
    """A proxy that also holds the real value its node computed on the example input."""

    def __init__(self, node: fx.Node, tracer: ConcreteTracer, value: Any = None):
        self.value = value  # set before Proxy.__init__: __getattr__ must never see it missing
        super().__init__(node, tracer)

    def __getattr__(self, name: str) -> Any:
        value = self.__dict__.get("value")
        if isinstance(value, torch.Tensor) and (name in SHAPE_ATTRIBUTES or name in SHAPE_METHODS):
            return getattr(value, name)
        attribute = getattr(value, name, None)
        if attribute is not None and not callable(attribute):
            # A data attribute (x.T, x.mT): record it now, so the proxy carries its value.
            return self.tracer.create_proxy("call_function", builtins.getattr, (self, name), {})
        return super().__getattr__(name)  # a method: calling it records a call_method node

    def __len__(self) -> int:
        return len(self.value)

    def __iter__(self):
        # A tuple result (chunk, split, a leaf module returning a pair): one getitem node each.
        return iter([self[index] for index in range(len(self.value))])


class ConcreteTracer(LeafTracer):
    """A :class:`LeafTracer` that evaluates every node it records on the example inputs.

    Use :func:`concrete_trace`; the tracer is single-use (the example inputs are consumed by
    the placeholders in order).
    """

    def __init__(self, example_inputs: Sequence[Any] = (), leaf_modules: Sequence[str] = ()):
        super().__init__(list(leaf_modules))
        self._examples = list(example_inputs)
        self.value_branches: list[str] = []
        # True while a node's real value is computed: tracing patches nn.Module.__call__ and
        # __getattr__, so a leaf module run then must call its children and read its parameters
        # plainly, recording nothing.
        self._evaluating = False

    def call_module(self, m, forward, args, kwargs):
        if self._evaluating:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if self._evaluating:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def proxy(self, node: fx.Node) -> ConcreteProxy:
        return ConcreteProxy(node, self)

    def _evaluate(self, kind: str, target: Any, args: tuple, kwargs: dict) -> Any:
        if kind == "placeholder":
            if not self._examples:
                raise TypeError(f"forward takes an argument {target!r} beyond the example inputs given")
            return self._examples.pop(0)
        if kind == "get_attr":
            value = self.root
            for part in str(target).split("."):
                value = getattr(value, part)
            return value
        args, kwargs = _real(args), _real(kwargs)
        if kind == "call_function":
            return target(*args, **kwargs)
        if kind == "call_method":
            return getattr(args[0], target)(*args[1:], **kwargs)
        if kind == "call_module":
            return self.root.get_submodule(target)(*args, **kwargs)
        raise AssertionError(f"unexpected node kind {kind!r}")

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        self._evaluating = True
        try:
            value = self._evaluate(kind, target, args, kwargs)
        finally:
            self._evaluating = False
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        if isinstance(proxy, ConcreteProxy):
            proxy.value = value
        return proxy

    def to_bool(self, obj: fx.Proxy) -> bool:
        # A branch or assert on tensor values: take the example's branch, and say so.
        result = bool(obj.value)
        self.value_branches.append(f"{obj.node.format_node()} -> {result} ({_user_line()})")
        return result


def _user_line() -> str:
    frames = [frame for frame in traceback.extract_stack() if "/torch/" not in frame.filename]
    frames = [frame for frame in frames if not frame.filename.endswith("concrete_trace.py")]
    if not frames:
        return "inside torch"
    frame = frames[-1]
    return f"{frame.filename}:{frame.lineno}: {frame.line}"


@dataclass(frozen=True)
class ConcreteTrace:
    """A concrete capture: the GraphModule (exact for ``input_shapes``) and the value-dependent
    branches that were resolved on the example's values."""

    gm: fx.GraphModule
    input_shapes: tuple[tuple[int, ...], ...]
    value_branches: list[str] = field(default_factory=list)


def concrete_trace(
    model: nn.Module, example_inputs: Any, leaf_modules: Sequence[str] = (), warn: bool = True
) -> ConcreteTrace:
    """Trace ``model`` on ``example_inputs`` (a tensor or a tuple of positional inputs) with
    :class:`ConcreteTracer`; see the module docstring for what is resolved at capture.

    The model runs once, under ``torch.no_grad()``, in its current mode (eval for compile). The
    model itself is not modified (the GraphModule shares its modules, as ``symbolic_trace``'s does).
    Refuses (``UntraceableModelError``, naming the failing line) a model that does not run on
    the example or whose forward the tracer cannot follow.
    """
    examples = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    tracer = ConcreteTracer(examples, leaf_modules)
    try:
        with torch.no_grad():
            graph = tracer.trace(model)
    except Exception as exc:  # noqa: BLE001 (the model's own code raises anything)
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/torch/" not in f.filename]
        where = f"{frames[-1].filename}:{frames[-1].lineno}: {frames[-1].line}" if frames else "inside torch"
        raise UntraceableModelError(
            f"concrete tracing of {type(model).__name__} on inputs of shape "
            f"{[tuple(getattr(e, 'shape', ())) for e in examples]} failed: {type(exc).__name__}: {exc} "
            f"(at {where}). The model must run on the example input; list the submodule holding "
            "code that cannot be recorded under sparsity.leaf_modules to keep it opaque."
        ) from None
    # Re-tracing the result (unpickling does) needs no example: its code has no shape logic left.
    graph._tracer_cls = LeafTracer
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    if warn and tracer.value_branches:
        warnings.warn(
            f"{type(model).__name__}: {len(tracer.value_branches)} branch(es) on tensor values were resolved on "
            f"the example input and hold for it only: {'; '.join(tracer.value_branches)}",
            stacklevel=2,
        )
    shapes = tuple(tuple(int(s) for s in e.shape) for e in examples if isinstance(e, torch.Tensor))
    return ConcreteTrace(gm, shapes, list(tracer.value_branches))
