"""The activation registry: every activation the compiler knows, in one table.

Each :class:`Activation` says how it appears in a traced torch graph (module types, functions,
tensor methods), the scalar TIR expression a kernel applies, and whether a conv / linear kernel
can apply it in its write-back (``fusable``: the conv kernel's epilogue and ``fusion`` take only
those). Adding an activation is one entry here (plus its tests): the lowering rules, the fusion
planner, the kernels and the kernel spec's validation all read this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tvm import tirx

from subp_fx.codegen.kernels.loops import DTYPE


def identity(value):
    return value


def relu(value):
    return tirx.max(value, tirx.const(0.0, DTYPE))


def relu6(value):
    return tirx.min(tirx.max(value, tirx.const(0.0, DTYPE)), tirx.const(6.0, DTYPE))


def hardswish(value):
    """x * relu6(x + 3) / 6, as torch's Hardswish."""
    return value * relu6(value + tirx.const(3.0, DTYPE)) * tirx.const(1.0 / 6.0, DTYPE)


def hardsigmoid(value):
    """relu6(x + 3) / 6, as torch's Hardsigmoid (0 below -3, 1 above 3)."""
    return relu6(value + tirx.const(3.0, DTYPE)) * tirx.const(1.0 / 6.0, DTYPE)


def sigmoid(value):
    return tirx.sigmoid(value)


def silu(value):
    """x * sigmoid(x), as torch's SiLU (swish)."""
    return value * tirx.sigmoid(value)


@dataclass(frozen=True)
class Activation:
    """One activation: its name, TIR expression, fusability and torch spellings."""

    name: str
    expression: Callable  # scalar tirx.PrimExpr -> tirx.PrimExpr
    fusable: bool
    modules: tuple[type, ...] = ()
    functions: tuple[Callable, ...] = ()
    methods: tuple[str, ...] = ()


# "none" is the identity epilogue of a kernel with nothing fused; it has no torch spelling.
ACTIVATIONS: dict[str, Activation] = {
    activation.name: activation
    for activation in (
        Activation("none", identity, fusable=True),
        Activation(
            "relu",
            relu,
            fusable=True,
            modules=(nn.ReLU,),
            functions=(torch.relu, torch.relu_, F.relu),
            methods=("relu", "relu_"),
        ),
        Activation("relu6", relu6, fusable=True, modules=(nn.ReLU6,), functions=(F.relu6,)),
        # Not fused into a conv's write-back (yet): the conv epilogue runs on the register tile, and
        # these are not measured there. They run as their own elementwise kernel.
        Activation("hardswish", hardswish, fusable=False, modules=(nn.Hardswish,), functions=(F.hardswish,)),
        Activation("hardsigmoid", hardsigmoid, fusable=False, modules=(nn.Hardsigmoid,), functions=(F.hardsigmoid,)),
        Activation(
            "sigmoid",
            sigmoid,
            fusable=False,
            modules=(nn.Sigmoid,),
            functions=(torch.sigmoid, F.sigmoid),
            methods=("sigmoid",),
        ),
        Activation("silu", silu, fusable=False, modules=(nn.SiLU,), functions=(F.silu,)),
    )
}

# What a conv / linear kernel's write-back can apply.
FUSABLE_ACTIVATIONS: tuple[str, ...] = tuple(name for name, activation in ACTIVATIONS.items() if activation.fusable)


def expression(name: str) -> Callable:
    """The scalar TIR expression of activation ``name``."""
    return ACTIVATIONS[name].expression


def spelled(op: str, target) -> Activation | None:
    """The activation a graph node calls: ``op`` is the fx node's op (``call_module`` with the
    module's type as ``target``, ``call_function`` with the function, ``call_method`` with the
    name), or None when it calls none."""
    field = {"call_module": "modules", "call_function": "functions", "call_method": "methods"}.get(op)
    if field is None:
        return None
    return next((activation for activation in ACTIVATIONS.values() if target in getattr(activation, field)), None)
