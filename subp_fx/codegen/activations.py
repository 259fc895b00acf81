"""The activation registry: every activation the compiler knows, in one table.

Each :class:`Activation` says how it appears in a traced torch graph (module types, functions,
tensor methods), the scalar TIR expression a kernel applies, and whether a conv / linear kernel
can apply it in its write-back (``fusable``: the conv kernel's epilogue and ``fusion`` take only
those). Adding an activation is one entry here (plus its tests): the lowering rules, the fusion
planner, the kernels and the kernel spec's validation all read this table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tvm import tirx

from subp_fx.codegen.kernels.loops import DTYPE

# torch's default LeakyReLU slope, the one timm's CSP / DarkNet models use: the only slope compiled
# (an activation is a fixed expression; another slope would be another entry).
LEAKY_RELU_SLOPE = 0.01


def identity(value):
    return value


def relu(value):
    return tirx.max(value, tirx.const(0.0, DTYPE))


def relu6(value):
    return tirx.min(tirx.max(value, tirx.const(0.0, DTYPE)), tirx.const(6.0, DTYPE))


def leaky_relu(value):
    """max(x, 0.01 x): torch's LeakyReLU at its default slope (the max form holds for slopes < 1)."""
    return tirx.max(value, value * tirx.const(LEAKY_RELU_SLOPE, DTYPE))


def hardswish(value):
    """x * relu6(x + 3) / 6, as torch's Hardswish."""
    return value * relu6(value + tirx.const(3.0, DTYPE)) * tirx.const(1.0 / 6.0, DTYPE)


def hardsigmoid(value):
    """relu6(x + 3) / 6, as torch's Hardsigmoid (0 below -3, 1 above 3)."""
    return relu6(value + tirx.const(3.0, DTYPE)) * tirx.const(1.0 / 6.0, DTYPE)


# --- GELU ---------------------------------------------------------------------------------------
# TVM 0.27 lowers tirx.erf / tirx.exp / tirx.tanh / tirx.sigmoid on CPUs to scalar libm calls
# (erff, expf), one per lane: a vectorised loop over them is a loop of calls (checked in the
# assembly). GELU, sigmoid and SiLU run in the conv's register tile, so they are built from
# arithmetic that LLVM keeps in vectors.

# erf(x) = x * g(x^2) with g(t) = erf(sqrt t) / sqrt t, a smooth function on [0, R^2]; beyond R,
# erf is +-1 to float precision (1 - erf(4) = 1.5e-8). g is a Chebyshev series in
# u = 2 t / R^2 - 1, fitted once here at the Chebyshev nodes; degree 16 gives |error| < 2e-7
# against math.erf, evaluated in float32 (tests/codegen/test_activations.py).
_ERF_RANGE = 4.0
_ERF_DEGREE = 16


def _erf_chebyshev_coefficients() -> tuple[float, ...]:
    nodes = np.cos(np.pi * (np.arange(256) + 0.5) / 256)
    roots = np.sqrt((nodes + 1.0) / 2.0) * _ERF_RANGE
    values = np.array([math.erf(r) / r for r in roots])
    return tuple(float(c) for c in np.polynomial.chebyshev.chebfit(nodes, values, _ERF_DEGREE))


_ERF_COEFFICIENTS = _erf_chebyshev_coefficients()


def _let(value, body: Callable, name: str):
    """``body(v)`` with ``v`` bound to ``value`` once: a value used twice is not copied into the
    expression tree (Clenshaw's recurrence reads each term twice: copied, the tree would double
    per step, and the conv kernel's build took minutes)."""
    var = tirx.Var(name, DTYPE)
    return tirx.Let(var, value, body(var))


def erf(value):
    """erf(x) in vectorisable arithmetic (see above): clamp, then Clenshaw's recurrence."""
    const = lambda number: tirx.const(number, DTYPE)  # noqa: E731
    clamped = tirx.min(tirx.max(value, const(-_ERF_RANGE)), const(_ERF_RANGE))

    def series(x):
        def step(u, k: int, current, previous):
            if k == 0:
                return x * (u * current - previous + const(_ERF_COEFFICIENTS[0]))
            following = const(2.0) * u * current - previous + const(_ERF_COEFFICIENTS[k])
            return _let(following, lambda term: step(u, k - 1, term, current), f"erf_b{k}")

        u = x * x * const(2.0 / _ERF_RANGE**2) - const(1.0)
        return _let(u, lambda bound: step(bound, _ERF_DEGREE, const(0.0), const(0.0)), "erf_u")

    return _let(clamped, series, "erf_x")


def exp(value):
    """e^x in vectorisable arithmetic: x = n ln2 + r with |r| <= ln2 / 2, e^r by its degree-7
    Taylor polynomial (relative error < 3e-9), 2^n by building the float's exponent bits.
    Arguments are clamped to [-87, 88], inside float32's normal range."""
    const = lambda number: tirx.const(number, DTYPE)  # noqa: E731

    def of(x):
        def split(n):
            def taylor(r):
                polynomial = const(1.0 / math.factorial(7))
                for power in range(6, -1, -1):
                    polynomial = polynomial * r + const(1.0 / math.factorial(power))
                return polynomial * tirx.reinterpret(DTYPE, tirx.shift_left(n.astype("int32") + 127, 23))

            # ln 2 in two parts, so that n * hi is exact and r keeps its low bits.
            return _let(x - n * const(0.693145751953125) - n * const(1.4286068203094172e-06), taylor, "exp_r")

        return _let(tirx.floor(x * const(1.0 / math.log(2.0)) + const(0.5)), split, "exp_n")

    return _let(tirx.min(tirx.max(value, const(-87.0)), const(88.0)), of, "exp_x")


# --- sigmoid and SiLU -----------------------------------------------------------------------------
# tirx.sigmoid lowers to 1 / (1 + expf(-x)), one libm call per lane; these use :func:`exp`. Only
# e = e^(-|x|) <= 1 is computed, so nothing overflows: sigmoid(x) = 1 / (1 + e) for x >= 0 and
# e / (1 + e) for x < 0 (the exact form, not 1 - 1 / (1 + e), keeps the relative accuracy of
# tiny results). At |x| > 87 exp's clamp makes e = e^-87, so sigmoid(-inf) is 1.6e-38, not 0.


def _sigmoid_parts(x, body: Callable):
    """``body(numerator, denominator)`` with sigmoid(x) = numerator / denominator (see above)."""
    one = tirx.const(1.0, DTYPE)
    return _let(
        exp(-tirx.abs(x)),
        lambda e: body(tirx.Select(x >= tirx.const(0.0, DTYPE), one, e), one + e),
        "sigmoid_e",
    )


def sigmoid(value):
    """1 / (1 + e^-x), as torch's Sigmoid, in vector arithmetic (see above)."""
    return _let(value, lambda x: _sigmoid_parts(x, lambda above, below: above / below), "sigmoid_x")


def silu(value):
    """x * sigmoid(x), as torch's SiLU (swish), in vector arithmetic (see above)."""
    return _let(value, lambda x: _sigmoid_parts(x, lambda above, below: x * above / below), "silu_x")


def gelu(value):
    """x * Phi(x) = x / 2 * (1 + erf(x / sqrt 2)), as torch's GELU(approximate='none')."""

    def of(x):
        return x * tirx.const(0.5, DTYPE) * (tirx.const(1.0, DTYPE) + erf(x * tirx.const(math.sqrt(0.5), DTYPE)))

    return _let(value, of, "gelu_x")


def gelu_tanh(value):
    """x / 2 * (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), as torch's GELU(approximate='tanh');
    written as x * sigmoid(2 y) = x / (1 + e^(-2 y)), the same function with one exp."""

    def of(x):
        inner = x * (tirx.const(1.0, DTYPE) + tirx.const(0.044715, DTYPE) * x * x)
        return x / (tirx.const(1.0, DTYPE) + exp(inner * tirx.const(-2.0 * math.sqrt(2.0 / math.pi), DTYPE)))

    return _let(value, of, "gelu_x")


@dataclass(frozen=True)
class Variant:
    """Which calls of a spelling several activations share this one is: the call's argument
    ``name`` (a module's attribute; a function's keyword, or positional argument ``position``)
    equals ``value``, ``default`` when the call leaves it out. E.g. GELU's ``approximate``."""

    name: str
    position: int
    default: Any
    value: Any

    def matches(self, module: Any, args: tuple, kwargs: dict) -> bool:
        if module is not None:
            given = getattr(module, self.name, self.default)
        elif self.name in kwargs:
            given = kwargs[self.name]
        else:
            given = args[self.position] if len(args) > self.position else self.default
        return given == self.value


@dataclass(frozen=True)
class Activation:
    """One activation: its name, TIR expression, fusability and torch spellings."""

    name: str
    expression: Callable  # scalar tirx.PrimExpr -> tirx.PrimExpr
    fusable: bool
    modules: tuple[type, ...] = ()
    functions: tuple[Callable, ...] = ()
    methods: tuple[str, ...] = ()
    variant: Variant | None = None
    # (lo, hi) when the activation is min(max(x, lo), hi) (None: no bound on that side), else None.
    # A uint8 store applies such an activation to the rounded integer levels instead of the float
    # values, which is exact (rounding after a positive scale is monotone) and cheaper
    # (kernels.quantize.requantized_uint8).
    clamp: tuple[float | None, float | None] | None = None


# "none" is the identity epilogue of a kernel with nothing fused; it has no torch spelling.
ACTIVATIONS: dict[str, Activation] = {
    activation.name: activation
    for activation in (
        Activation("none", identity, fusable=True, clamp=(None, None)),
        Activation(
            "relu",
            relu,
            fusable=True,
            modules=(nn.ReLU,),
            functions=(torch.relu, torch.relu_, F.relu),
            methods=("relu", "relu_"),
            clamp=(0.0, None),
        ),
        Activation("relu6", relu6, fusable=True, modules=(nn.ReLU6,), functions=(F.relu6,), clamp=(0.0, 6.0)),
        Activation(
            "leaky_relu",
            leaky_relu,
            fusable=True,
            modules=(nn.LeakyReLU,),
            functions=(F.leaky_relu,),
            variant=Variant("negative_slope", 1, 0.01, LEAKY_RELU_SLOPE),
        ),
        # Fused: MobileNetV3's (depthwise) conv -> hardswish and its SE gate's conv -> hardsigmoid,
        # EfficientNet's / RegNetY's conv -> SiLU and SE conv -> sigmoid. Each is plain vector
        # arithmetic in the register tile (sigmoid / SiLU: about 25 flops and one divide a value),
        # where unfused each costs a pass over the layer's output.
        Activation("hardswish", hardswish, fusable=True, modules=(nn.Hardswish,), functions=(F.hardswish,)),
        Activation("hardsigmoid", hardsigmoid, fusable=True, modules=(nn.Hardsigmoid,), functions=(F.hardsigmoid,)),
        Activation(
            "sigmoid",
            sigmoid,
            fusable=True,
            modules=(nn.Sigmoid,),
            functions=(torch.sigmoid, F.sigmoid),
            methods=("sigmoid",),
        ),
        Activation("silu", silu, fusable=True, modules=(nn.SiLU,), functions=(F.silu,)),
        # Fused: ConvNeXt's pointwise conv (a Linear) -> GELU. Both forms are plain vector
        # arithmetic (see gelu), about 40 flops a value against the layer's C_in MACs.
        Activation(
            "gelu",
            gelu,
            fusable=True,
            modules=(nn.GELU,),
            functions=(F.gelu,),
            variant=Variant("approximate", 1, "none", "none"),
        ),
        Activation(
            "gelu_tanh",
            gelu_tanh,
            fusable=True,
            modules=(nn.GELU,),
            functions=(F.gelu,),
            variant=Variant("approximate", 1, "none", "tanh"),
        ),
    )
}

# What a conv / linear kernel's write-back can apply.
FUSABLE_ACTIVATIONS: tuple[str, ...] = tuple(name for name, activation in ACTIVATIONS.items() if activation.fusable)


def expression(name: str) -> Callable:
    """The scalar TIR expression of activation ``name``."""
    return ACTIVATIONS[name].expression


def spelled(op: str, target, module: Any = None, args: tuple = (), kwargs: dict | None = None) -> Activation | None:
    """The activation a graph node calls: ``op`` is the fx node's op (``call_module`` with the
    module's type as ``target``, ``call_function`` with the function, ``call_method`` with the
    name), or None when it calls none. Where activations share a spelling (GELU's two forms),
    the call's ``module`` (for ``call_module``) or its ``args`` / ``kwargs`` pick
    the one whose :class:`Variant` matches; None when none does."""
    field = {"call_module": "modules", "call_function": "functions", "call_method": "methods"}.get(op)
    if field is None:
        return None
    return next(
        (
            activation
            for activation in ACTIVATIONS.values()
            if target in getattr(activation, field)
            and (activation.variant is None or activation.variant.matches(module, args, kwargs or {}))
        ),
        None,
    )
