"""How a user's model is captured, for training and for compiling, and why that way.

Training (``prepare``) needs no graph: SUBP replaces ``nn.Conv2d`` modules, which can be done in
place in the module tree. Compiling needs a graph, but only for one static input shape. So:

- ``symbolic_trace`` (torch.fx, no input): preferred for both. The graph holds every input shape.
- ``module_swap`` (training only): the model itself (a deep copy), for a forward fx cannot
  follow (Python control flow on shapes, data-dependent asserts, "same"-padding helpers). Only
  convs of exactly ``nn.Conv2d``'s computation are candidates (a subclass overriding
  ``forward`` / ``_conv_forward``, e.g. timm's ``Conv2dSame``, pads inside and stays dense).
- ``concrete_trace`` (compile only): :mod:`subp_fx.passes.concrete_trace`, a graph recorded by
  running the example input, exact for that input's shape.

``auto`` tries ``symbolic_trace`` first and falls back on an ``UntraceableModelError``, keeping
fx's reason in :attr:`Capture.reason`, which the dry run and the compile report print.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch.fx as fx
import torch.nn as nn

from subp_fx.errors import ConfigError, UntraceableModelError
from subp_fx.passes.concrete_trace import concrete_trace
from subp_fx.passes.trace import trace

TRAINING_CAPTURES = ("auto", "symbolic_trace", "module_swap")
COMPILE_CAPTURES = ("auto", "symbolic_trace", "concrete_trace")


@dataclass(frozen=True)
class Capture:
    """A captured model: a GraphModule (``symbolic_trace`` / ``concrete_trace``) or the model
    itself (``module_swap``), the method used and why."""

    model: nn.Module
    method: str
    reason: str

    @property
    def has_graph(self) -> bool:
        return isinstance(self.model, fx.GraphModule)


def _check_method(method: str, allowed: tuple[str, ...], what: str) -> None:
    if method not in allowed:
        raise ConfigError(f"capture={method!r} is not a way to capture a model for {what}; choose one of {allowed}")


def _symbolic(model: nn.Module, leaf_modules: Sequence[str]) -> Capture:
    if isinstance(model, fx.GraphModule):
        return Capture(model, "symbolic_trace", "the model is already a GraphModule")
    return Capture(trace(model, leaf_modules), "symbolic_trace", "torch.fx symbolic_trace follows the forward")


def _fallback_reason(error: UntraceableModelError) -> str:
    # fx's message then the generic fixes; the first sentence names the construct and the line.
    text = str(error).split(" Data-dependent control flow")[0]
    return f"symbolic_trace failed ({text})"


def capture_for_training(model: nn.Module, leaf_modules: Sequence[str] = (), method: str = "auto") -> Capture:
    """Capture ``model`` (already a copy: ``module_swap`` returns it as is) for ``prepare``.

    ``method``: ``auto`` | ``symbolic_trace`` | ``module_swap`` (see the module docstring).
    Refuses: an unknown method (``ConfigError``); with ``symbolic_trace``, a model fx cannot
    trace (``UntraceableModelError``).
    """
    _check_method(method, TRAINING_CAPTURES, "training")
    if method == "module_swap":
        return Capture(model, "module_swap", "forced by capture=module_swap")
    try:
        return _symbolic(model, leaf_modules)
    except UntraceableModelError as error:
        if method == "symbolic_trace":
            raise
        return Capture(model, "module_swap", _fallback_reason(error) + "; convs are swapped in place, no graph")


def capture_for_compile(
    model: nn.Module, example_input: Any, leaf_modules: Sequence[str] = (), method: str = "auto"
) -> Capture:
    """Capture ``model`` as a GraphModule for compiling at ``example_input``'s shape (a tensor).

    ``method``: ``auto`` | ``symbolic_trace`` | ``concrete_trace``. A concrete trace is exact for
    inputs of ``example_input``'s shape only, which is what a compiled model accepts. ``model``
    is not modified. Refuses: an unknown method (``ConfigError``); a model neither tracer can
    follow (``UntraceableModelError``, with both reasons).
    """
    _check_method(method, COMPILE_CAPTURES, "compiling")
    if method != "concrete_trace":
        try:
            return _symbolic(model, leaf_modules)
        except UntraceableModelError as error:
            if method == "symbolic_trace":
                raise
            reason = _fallback_reason(error)
    else:
        reason = "forced by capture=concrete_trace"
    shape = tuple(example_input.shape)
    try:
        traced = concrete_trace(model, example_input, leaf_modules)
    except UntraceableModelError as error:
        raise UntraceableModelError(f"{error} Before that, {reason}.") from None
    branches = f"; {len(traced.value_branches)} branch(es) on tensor values taken as on the example" * bool(
        traced.value_branches
    )
    return Capture(traced.gm, "concrete_trace", f"{reason}; graph recorded on an input of shape {shape}{branches}")
