"""Elementwise kernels that are not fused into a conv: add, activations, per-channel affine.

Each is one TE compute over the stored (NHWC or 2-D) shape, scheduled as one flat loop split
into parallel chunks of vectors (``loops.schedule_flat_parallel_vector``). The lowering fuses
relu/relu6 and residual adds into the conv kernel's epilogue where it can; these kernels are for
the rest (an add whose conv operand has other users, hardswish, a batch norm that could not be
folded into a conv).
"""

from __future__ import annotations

from tvm import s_tir, te, tirx

from subp_fx.codegen import activations
from subp_fx.codegen.kernels.loops import DTYPE, schedule_flat_parallel_vector


def _scheduled(arguments: list[te.Tensor], shape: tuple[int, ...], lanes: int) -> tirx.PrimFunc:
    sch = s_tir.Schedule(te.create_prim_func(arguments))
    schedule_flat_parallel_vector(sch, arguments[-1].op.name, shape, lanes)
    return sch.mod["main"]


def add_primfunc(shape: tuple[int, ...], lanes: int, activation: str = "none") -> tirx.PrimFunc:
    """out = act(a + b) for two tensors of the same ``shape``."""
    activate = activations.expression(activation)
    a = te.placeholder(shape, DTYPE, name="a")
    b = te.placeholder(shape, DTYPE, name="b")
    out = te.compute(shape, lambda *index: activate(a[index] + b[index]), name="add")
    return _scheduled([a, b, out], shape, lanes)


def activation_primfunc(shape: tuple[int, ...], activation: str, lanes: int) -> tirx.PrimFunc:
    """out = act(x), ``activation`` one of the activation registry (``subp_fx.codegen.activations``)."""
    activate = activations.expression(activation)
    x = te.placeholder(shape, DTYPE, name="x")
    out = te.compute(shape, lambda *index: activate(x[index]), name=activation)
    return _scheduled([x, out], shape, lanes)


def channel_affine_primfunc(shape: tuple[int, ...], lanes: int) -> tirx.PrimFunc:
    """out[..., c] = x[..., c] * scale[c] + shift[c] (channels last): an eval-mode batch norm."""
    channels = shape[-1]
    x = te.placeholder(shape, DTYPE, name="x")
    scale = te.placeholder((channels,), DTYPE, name="scale")
    shift = te.placeholder((channels,), DTYPE, name="shift")
    out = te.compute(shape, lambda *index: x[index] * scale[index[-1]] + shift[index[-1]], name="affine")
    return _scheduled([x, scale, shift, out], shape, lanes)
