"""The int8 part of a lowering: which tensors are stored as uint8, and the int8 conv calls.

An int8 build follows ``quantize.plan_int8``'s plan (the eligible convs and linears, and the
activation parameters of every tensor that feeds one). Its semantics, which ``quantize.reference``
computes eagerly: each planned tensor is replaced, for *all* its uses, by its fake-quantised value;
each int8 conv computes in integers from the uint8 input and int8 weights, and so does each int8
linear, run on the same kernel as a 1x1 conv on a 1x1 image (``lowering.linear``). How the
lowering keeps to that while moving as few bytes as it can:

- a planned tensor that an int8 conv's fused epilogue produces is *stored* uint8 (the kernel
  re-quantises in its write-back) when every reader can read uint8: an int8 conv's data input
  (depthwise int8 convs included), or an int8 conv's residual (dequantised in that kernel's
  epilogue). In ResNets that is every block's output; in MobileNetV1 every tensor between the
  stem and the pooling (pointwise -> depthwise -> pointwise): activations cross memory as bytes,
  a quarter of fp32's traffic;
- any other planned tensor is produced in fp32 as in an fp32 build, then quantised once by a
  ``quantize`` kernel for its int8 readers; if some reader needs fp32 (a pooling, an fp32
  conv's residual, the output), that reader gets the dequantised copy, so every reader sees the
  same fake-quantised value the reference computes.

Which kernel: ``block_sparse_conv_int8`` for every int8 conv and linear, except the 1x1 convs
that ``grouped_pointwise_int8.applies`` to (N = 16 block-rows keeping whole runs of 16 input
channels, as ``input_group: 16`` masks make; stride 1 and at least 32 kept groups, where it was
measured faster; VNNI on 16 lanes), whose weights are repacked for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch.fx as fx

from subp_fx.codegen.kernels import grouped_pointwise_int8 as grouped
from subp_fx.codegen.kernels.block_sparse_conv_int8 import (
    block_sparse_conv2d_int8_primfunc,
    int8_heuristic_tile,
    kernel_values,
)
from subp_fx.codegen.kernels.int8_spec import Int8ConvSpec
from subp_fx.codegen.kernels.isa import Int8Path
from subp_fx.codegen.kernels.quantize import dequantize_primfunc, quantize_image_primfunc, quantize_primfunc
from subp_fx.codegen.lowering.fusion import Epilogue, FusionAbility
from subp_fx.codegen.lowering.graph_view import GraphView, LoweredTensor
from subp_fx.codegen.lowering.padded_channels import slice_padded_channels
from subp_fx.quantize import ActivationQuant, Int8Plan, quantize_kernel_weights
from subp_fx.quantize.plan import INPUT_CHANNEL_GROUP as CHANNEL_GROUP
from subp_fx.quantize.plan import conv_input, is_depthwise

if TYPE_CHECKING:
    from subp_fx.codegen.lowering.context import LoweringContext

UINT8 = "uint8"
FLOAT32 = "float32"


def _int8_readers(node: fx.Node, plan: Int8Plan) -> list[fx.Node]:
    """The int8 convs and linears of ``plan`` that read ``node`` as their input."""
    return [
        user
        for user in node.users
        if user.op == "call_module"
        and (str(user.target) in plan.convs or str(user.target) in plan.linears)
        and user.args[0] is node
    ]


def _whole_groups(channels: int) -> int:
    """``channels`` rounded up to whole groups of 4: what an int8 conv or linear reads."""
    return -(-channels // CHANNEL_GROUP) * CHANNEL_GROUP


def _uint8_readers_only(node: fx.Node, plan: Int8Plan, epilogues: dict[fx.Node, Epilogue]) -> bool:
    """Whether every user of ``node`` reads it as uint8: an int8 conv's or linear's data, or the
    residual of an int8 conv's fused epilogue."""
    residual_of = {
        absorbed: epilogue
        for epilogue in epilogues.values()
        if epilogue.residual is node and str(epilogue.conv.target) in plan.convs
        for absorbed in epilogue.absorbed[:1]  # the add is the first node an epilogue absorbs
    }
    shape = node.meta.get("tensor_meta")
    whole_groups = hasattr(shape, "shape") and len(shape.shape) == 4 and shape.shape[1] % CHANNEL_GROUP == 0
    int8_readers = _int8_readers(node, plan)
    for user in node.users:
        if user in int8_readers:
            continue
        if user in residual_of and whole_groups:  # a channel-padded tensor is no residual
            continue
        if plan.pooled.get(node.name) == user.name:  # a max pool of its codes (ops.lower_max_pool)
            continue
        return False
    return True


def _reads_channel_groups(view: GraphView, node: fx.Node, plan: Int8Plan) -> bool:
    """Whether an int8 conv or linear that is not depthwise reads ``node``: it reads input
    channels in groups of 4, so ``node`` is quantised with its channels padded to a whole group
    (the zero point in the extra ones, whose weights are zero)."""
    return any(not is_depthwise(view.module(user)) for user in _int8_readers(node, plan))


def _read_by_depthwise(view: GraphView, node: fx.Node, plan: Int8Plan) -> bool:
    return any(is_depthwise(view.module(user)) for user in _int8_readers(node, plan))


def _writes_exactly_its_channels(conv) -> bool:
    """Whether an int8 conv's kernel writes exactly C_out channels, so that it can store uint8
    (a padded C_out is sliced after the call): a depthwise conv always (its kernel vectorises
    over any channel count), any other when C_out is a multiple of 16."""
    return is_depthwise(conv) or conv.out_channels % DENSE_INT8_BLOCK_SIZE == 0


def int8_fusion_ability(view: GraphView, plan: Int8Plan, node: fx.Node, ability: FusionAbility) -> FusionAbility:
    """``ability`` (what ``node``'s fp32 kernel could fuse) for an int8 build: an int8 conv whose
    kernel computes C_out padded to whole blocks (``_writes_exactly_its_channels``) takes no
    residual, which it would have to read with the padded channel count (MobileNetV2's 144->24
    projection and its 24-channel skip connection failed to build so); everything else as given."""
    if ability < FusionAbility.RESIDUAL or node.op != "call_module" or str(node.target) not in plan.convs:
        return ability
    return ability if _writes_exactly_its_channels(view.module(node)) else FusionAbility.ACTIVATION


@dataclass
class Int8Lowering:
    """The plan, and the uint8 form of each planned tensor as it is lowered.

    ``stored_uint8``: names of the nodes whose producer (an int8 conv's epilogue) writes uint8
    directly; ``quantized``: node name -> its uint8 tensor (channels padded to a group of 4 where
    an int8 conv or linear reads it: :func:`_reads_channel_groups`); ``quantized_exact``: node
    name -> its uint8 tensor with exactly its channels, only where ``quantized`` is padded and a
    depthwise conv reads it too; ``path``: the int8 kernels' instruction path on this target
    (e.g. ``avx512-vnni``), for the kernel table.
    """

    plan: Int8Plan
    stored_uint8: frozenset[str]
    path: Int8Path
    epilogues: dict[fx.Node, Epilogue]
    quantized: dict[str, LoweredTensor] = field(default_factory=dict)
    quantized_exact: dict[str, LoweredTensor] = field(default_factory=dict)

    def depthwise_input(self, name: str) -> LoweredTensor:
        """The uint8 form of ``name`` a depthwise conv reads: every channel, none padded."""
        return self.quantized_exact.get(name) or self.quantized[name]

    @classmethod
    def build(cls, view: GraphView, plan: Int8Plan, epilogues: dict[fx.Node, Epilogue], path: Int8Path) -> Int8Lowering:
        # The result node of each int8 conv call (its fused epilogue's last node, or the conv),
        # where the kernel can store uint8: not when C_out is padded and sliced after the call.
        results: dict[fx.Node, fx.Node] = {}
        for node in view.nodes:
            if node.op == "call_module" and str(node.target) in plan.convs:
                if _writes_exactly_its_channels(view.module(node)):
                    results[node] = node
        for epilogue in epilogues.values():
            if epilogue.conv in results:
                del results[epilogue.conv]
                results[epilogue.result_node] = epilogue.conv
        # A depthwise conv writes exactly its C channels; an int8 conv reading them needs them
        # padded to a group of 4 (ShuffleNetV2's 58), which the quantise kernel does instead.
        stored = frozenset(
            node.name
            for node, conv in results.items()
            if node.name in plan.activations
            and _uint8_readers_only(node, plan, epilogues)
            and (view.module(conv).out_channels % CHANNEL_GROUP == 0 or not _reads_channel_groups(view, node, plan))
        )
        return cls(plan, stored, path, epilogues)

    def is_int8_conv(self, node: fx.Node) -> bool:
        return node.op == "call_module" and str(node.target) in self.plan.convs

    def is_int8_linear(self, node: fx.Node) -> bool:
        return node.op == "call_module" and str(node.target) in self.plan.linears


# N of a dense conv run on the int8 kernel: 32 where it divides C_out, else 16 (C_out padded up
# to a multiple of 16 when needed). N=32 (7-pixel tiles of 2 zmm) loads half the broadcasts per
# vpdpbusd of N=16 (14 pixels of 1 zmm); timed alone (Ice Lake, 2 threads, machine loaded):
# 1x1 256->64 at 56: 103 against 153 us; 1x1 512->2048 at 7: 94 / 158; 3x3 64->64 at 56: 176 /
# 188; the ResNet stem (7x7/2, RGB stored as 4 channels) at 224: 311 / 859.
DENSE_INT8_BLOCK_SIZE = 16
WIDE_DENSE_INT8_BLOCK_SIZE = 32


def dense_int8_block_size(out_channels: int) -> int:
    """The N a dense conv with ``out_channels`` outputs runs with on the int8 kernel."""
    return WIDE_DENSE_INT8_BLOCK_SIZE if out_channels % WIDE_DENSE_INT8_BLOCK_SIZE == 0 else DENSE_INT8_BLOCK_SIZE


def linear_int8_block_size(out_features: int) -> int:
    """The N an int8 linear with ``out_features`` outputs runs with: 32 (out_features padded up
    to a multiple of 32) unless 16 holds them all. A linear's one pixel is a tile of N/16
    accumulators: at N=32 two independent vpdpbusd chains. Timed alone (Ice Lake, 2 threads,
    under load): 512->1000 13 us at N=32 (padded to 1024) against 21 us at N=16 (1008);
    2048->1000 131 against 131 us (streaming its 2 MB of weights bounds both)."""
    return DENSE_INT8_BLOCK_SIZE if out_features <= DENSE_INT8_BLOCK_SIZE else WIDE_DENSE_INT8_BLOCK_SIZE


def quant_params(quant: ActivationQuant) -> np.ndarray:
    """The (2,) float32 [scale, zero_point] buffer the int8 kernels read."""
    return np.array([quant.scale, quant.zero_point], dtype=np.float32)


def lower_quantized_image(ctx: LoweringContext, node: fx.Node) -> LoweredTensor | None:
    """The model's input image quantised straight from NCHW into uint8 NHWC (channels padded to a
    group of 4), when every reader reads it as uint8 (an int8 stem); else None, and the input
    is made NHWC float32 as in an fp32 build."""
    int8: Int8Lowering | None = ctx.int8
    if int8 is None or node.name not in int8.plan.activations:
        return None
    if not _uint8_readers_only(node, int8.plan, int8.epilogues) or _read_by_depthwise(ctx.view, node, int8.plan):
        return None
    quant = int8.plan.activations[node.name]
    batch, channels, height, width = shape = ctx.view.input_shape
    padded = _whole_groups(channels)
    quantized = ctx.program.call(
        ("quantize_image", shape, padded),
        "quantize_image_{}_to_nhwc{}".format("x".join(map(str, shape)), padded),
        lambda: quantize_image_primfunc(shape, padded),
        [ctx.program.input, ctx.program.constant(quant_params(quant))],
        (batch, height, width, padded),
        UINT8,
    )
    return LoweredTensor(quantized, (batch, padded, height, width), dtype=UINT8, quant=quant)


def after_lowered(ctx: LoweringContext, node: fx.Node) -> None:
    """Once ``node`` is lowered: if it is a planned tensor produced in fp32, quantise it once
    for its int8 readers, and give its fp32 readers (if any) the dequantised copy, so that
    every reader sees the fake-quantised value (the module docstring)."""
    int8: Int8Lowering | None = ctx.int8
    if int8 is None or node.name not in int8.plan.activations:
        return
    value = ctx.values[node]
    quant = int8.plan.activations[node.name]
    params = ctx.program.constant(quant_params(quant))
    fp32_readers = not _uint8_readers_only(node, int8.plan, int8.epilogues)
    if value.dtype == UINT8:
        # Written as bytes by its producer (an int8 conv storing uint8, or a max pool of codes,
        # whose output may also have fp32 readers: an Inception block's average pool).
        int8.quantized[node.name] = value
        if fp32_readers:
            ctx.values[node] = _dequantized(ctx, value.expr, value.stored_shape, value.shape, params)
        return
    feature = ctx.tensor(node)
    shape = feature.stored_shape
    channels = shape[-1]
    padded = _whole_groups(channels) if _reads_channel_groups(ctx.view, node, int8.plan) else channels
    quantized = _quantized(ctx, feature, params, quant, padded)
    int8.quantized[node.name] = quantized
    if padded != channels and (fp32_readers or _read_by_depthwise(ctx.view, node, int8.plan)):
        int8.quantized_exact[node.name] = _quantized(ctx, feature, params, quant, channels)
    if fp32_readers:
        exact = int8.quantized_exact.get(node.name, quantized)
        ctx.values[node] = _dequantized(ctx, exact.expr, shape, feature.shape, params)


def _quantized(ctx: LoweringContext, feature: LoweredTensor, params, quant, padded: int) -> LoweredTensor:
    """``feature`` (float32) quantised with ``params``, its channels padded to ``padded`` at the zero point."""
    shape = feature.stored_shape
    size = "x".join(map(str, shape))
    stored = (*shape[:-1], padded)
    quantized = ctx.program.call(
        ("quantize", shape, padded),
        f"quantize_{size}" + (f"_to{padded}" if padded != shape[-1] else ""),
        lambda: quantize_primfunc(shape, padded),
        [feature.expr, params],
        stored,
        UINT8,
    )
    logical = (feature.shape[0], padded, *feature.shape[2:])  # (B, C, H, W) or a linear's (B, F)
    return LoweredTensor(quantized, logical, dtype=UINT8, quant=quant)


def _dequantized(ctx: LoweringContext, codes, stored: tuple[int, ...], logical, params) -> LoweredTensor:
    """The float32 tensor of uint8 ``codes`` (of ``stored`` shape), for the readers that read float32."""
    size = "x".join(map(str, stored))
    restored = ctx.program.call(
        ("dequantize", stored), f"dequantize_{size}", lambda: dequantize_primfunc(stored), [codes, params], stored
    )
    return LoweredTensor(restored, logical)


def _kernel_name(spec: Int8ConvSpec, kind: str) -> str:
    kh, kw = spec.kernel_size
    parts = [f"{kind}_int8", f"conv{kh}x{kw}s{spec.stride[0]}", f"b{spec.batch}", f"{spec.height}x{spec.width}"]
    parts += [f"{spec.in_channels}to{spec.out_channels}", f"G{spec.kept_groups}N{spec.block_size}"]
    parts += [f"residual_{spec.residual}"] * (spec.residual != "none")
    parts += [spec.activation] * (spec.activation != "none")
    parts += ["u8out"] * (spec.out_dtype == UINT8)
    return "_".join(parts)


def emit_int8_conv(
    ctx: LoweringContext, node: fx.Node, weights, layer, data: LoweredTensor | None = None, op: str = "conv2d"
) -> LoweredTensor:
    """``node`` (an int8 conv of the plan) on the int8 kernel: ``weights`` are its fp32
    ``conv.KernelWeights`` (sparse, or dense with K = C_in), quantised here
    (``quantize.quantize_kernel_weights``); ``layer`` its ``conv._KernelLayer``. Reads the
    uint8 form of its input and, for a fused residual, of the residual when there is one;
    stores uint8 when the plan's storage says so (:class:`Int8Lowering`). An int8 linear gives
    ``data``, its uint8 input viewed as a (B, features, 1, 1) map, and ``op="linear"`` for the
    kernel table."""
    int8: Int8Lowering = ctx.int8
    program = ctx.program
    epilogue: Epilogue = ctx.epilogue(node)
    data = int8.quantized[conv_input(node).name] if data is None else data
    batch, height, width, in_channels = data.stored_shape
    packed = quantize_kernel_weights(weights.values, weights.indices, weights.bias, in_channels, data.quant)
    residual_kind, residual_arguments = "none", []
    if epilogue.residual is not None:
        residual = int8.quantized.get(epilogue.residual.name)
        if residual is not None and residual.shape == ctx.view.shape(epilogue.residual):  # not channel-padded
            residual_kind = UINT8
            residual_arguments = [residual.expr, program.constant(quant_params(residual.quant))]
        else:
            residual_kind, residual_arguments = FLOAT32, [ctx.tensor(epilogue.residual).expr]
    result = epilogue.result_node
    out_dtype = UINT8 if result.name in int8.stored_uint8 else FLOAT32
    spec = Int8ConvSpec(
        batch=batch,
        height=height,
        width=width,
        in_channels=in_channels,
        out_channels=weights.padded_out_channels,
        block_size=weights.block_size,
        kept_groups=packed.values.shape[1],
        kernel_size=layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        input_zero_point=int(data.quant.zero_point),
        residual=residual_kind,
        activation=epilogue.activation,
        out_dtype=out_dtype,
    )
    values, group_starts = packed.values, packed.group_starts
    runs = grouped.kept_runs(group_starts) if grouped.preferred(spec, int8.path) else None
    if runs is not None:
        # A 1x1 conv keeping whole runs of 16 channels: the grouped kernel, weights repacked for it.
        values, group_starts = grouped.pack_values(values), runs
        parallel = grouped.parallel_mode(spec)
        key = ("grouped_pointwise_conv2d_int8", spec, parallel, int8.path.name)
        name, tile_text = _kernel_name(spec, f"{layer.kind}_grouped"), grouped.describe(parallel)
        build = lambda: grouped.grouped_pointwise_int8_primfunc(spec, int8.path, parallel)  # noqa: E731
    else:
        values = kernel_values(values, int8.path)
        tile = int8_heuristic_tile(spec, int8.path)
        key = ("block_sparse_conv2d_int8", spec, tile, int8.path.name)
        name, tile_text = _kernel_name(spec, layer.kind), f"1x{tile.cols}px {tile.parallel}"
        build = lambda: block_sparse_conv2d_int8_primfunc(spec, tile, int8.path)  # noqa: E731
    arguments = [data.expr] + [program.constant(array) for array in (values, group_starts, packed.scale, packed.bias)]
    arguments += residual_arguments
    out_quant = int8.plan.activations[result.name] if out_dtype == UINT8 else None
    arguments += [program.constant(quant_params(out_quant))] if out_quant is not None else []
    output = program.call(key, name, build, arguments, spec.out_shape, out_dtype)
    output = slice_padded_channels(ctx, output, spec.out_shape, weights.out_channels)
    kh, kw = layer.kernel_size
    kept = spec.kept_channels
    ctx.record_kernel(
        node,
        key,
        bias=True,
        residual=residual_kind != "none",
        activation=spec.activation,
        kind=layer.kind,
        op=op,
        in_channels=in_channels,
        kept_per_row=kept,
        out_channels=weights.out_channels,
        kernel_size=layer.kernel_size,
        stride=layer.stride,
        out_hw=(spec.out_height, spec.out_width),
        block_size=spec.block_size,
        macs=batch * spec.out_height * spec.out_width * weights.out_channels * kept * kh * kw,
        tile=tile_text,
        dense_reason=layer.dense_reason,
        precision=f"int8/{int8.path.name}" + ("->u8" if out_dtype == UINT8 else ""),
    )
    shape = (batch, weights.out_channels, spec.out_height, spec.out_width)
    return LoweredTensor(output, shape, dtype=out_dtype, quant=out_quant)


__all__ = [
    "DENSE_INT8_BLOCK_SIZE",
    "UINT8",
    "dense_int8_block_size",
    "linear_int8_block_size",
    "Int8Lowering",
    "after_lowered",
    "emit_int8_conv",
    "int8_fusion_ability",
    "quant_params",
]
