"""Elementwise kernels that are not fused into a conv: add, activations, per-channel affine.

Each is one TE compute over the stored (NHWC or 2-D) shape, scheduled as one flat loop split
into parallel chunks of vectors (``loops.schedule_flat_parallel_vector``). The lowering fuses
activations and residual adds into the conv kernel's epilogue where it can; these kernels are for
the rest (an add whose conv operand has other users, an activation after a pool or a multiply,
a batch norm that could not be folded into a conv).
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


# Binary ops of the elementwise kernels: name -> (a, b) -> a op b.
BINARY_OPS = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b}


def broadcast_binary_primfunc(
    shape: tuple[int, ...], other_shape: tuple[int, ...], op: str, lanes: int
) -> tirx.PrimFunc:
    """out = a op b for ``a`` of ``shape`` and ``b`` of ``other_shape``, which equals ``shape`` or
    has extent 1 on some of its leading axes (broadcast there): e.g. an NHWC map (B, H, W, C)
    times a per-channel gate (B, 1, 1, C), squeeze-and-excitation's multiply. The channel axis
    (last) is never broadcast, so a vector of channels stays one contiguous load of each operand."""
    if (
        len(other_shape) != len(shape)
        or other_shape[-1] != shape[-1]
        or any(o not in (1, s) for o, s in zip(other_shape, shape))
    ):
        raise ValueError(f"cannot broadcast {other_shape} over {shape} on leading axes only")
    apply = BINARY_OPS[op]
    a = te.placeholder(shape, DTYPE, name="a")
    b = te.placeholder(other_shape, DTYPE, name="b")

    def compute(*index):
        other = tuple(0 if extent == 1 else i for i, extent in zip(index, other_shape))
        return apply(a[index], b[other])

    out = te.compute(shape, compute, name=op)
    return _scheduled([a, b, out], shape, lanes)
