"""Lowering of the convs: block-sparse and dense on the 1xN kernel, depthwise on its own.

What becomes what:

- ``BlockSparseConv2d`` -> the 1xN block-sparse kernel (``block_sparse_conv2d_primfunc``) with its
  ``values``, ``indices`` (as int32) and ``bias`` as Relax constants;
- ``nn.Conv2d`` with ``groups == 1`` -> the *same* kernel with every input channel kept
  (K = C_in, indices = arange): the weight is packed into the values layout with N = 16 when it
  divides C_out, else 8; a C_out that 8 does not divide is padded with zero channels up to a
  multiple of 8 and the extras are sliced off after the call;
- a 3x3 stride-1 conv of any of these kinds (fp32) with at least 16 output tiles of 4x4 and 12
  kept input channels a block-row (``winograd.why_direct``) -> the Winograd F(4x4, 3x3) kernel
  (``kernels.winograd``: the same kept indices, weights transformed here, N = 32 rows split into
  rows of 16), unless the build was asked for ``winograd=False``;
- ``nn.Conv2d`` with ``groups == C_in == C_out`` -> the depthwise kernel (``lowering.depthwise``);
- a 1x1 conv of either kind whose block-rows keep whole aligned groups of 4 input channels (SUBP's
  ``input_group: 4`` masks; every dense 1x1 conv with C_in a multiple of 4, packed at N = 16 for
  it), on a 16-lane target -> the grouped 1x1 kernel (``kernels.grouped_pointwise``: a 128-bit
  load of a group feeds 4 FMAs: 1.35-1.9x the general kernel on ResNet-50's 1x1 shapes, alone).

Each call fuses what ``fusion.plan_epilogues`` found (bias always; residual add and relu/relu6
where the graph allows) and records one ``KernelEntry``. Refused, with the reason: dilation in a
block-sparse or dense conv, asymmetric ('same' with an even kernel) padding, a padding mode other
than zeros, grouped convs that are not depthwise, inputs that are not 4-d.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch.fx as fx
import torch.nn as nn

from subp_fx.algorithm.block_sparse import BlockSparseConv2d
from subp_fx.algorithm.conv_geometry import explicit_padding
from subp_fx.codegen.kernels import grouped_pointwise, winograd
from subp_fx.codegen.kernels.bf16_spec import BF16_BLOCK_SIZES
from subp_fx.codegen.kernels.block_sparse_conv import block_sparse_conv2d_primfunc
from subp_fx.codegen.kernels.cache import l1_data_cache, l2_bytes
from subp_fx.codegen.kernels.packing import dense_as_block_sparse, grouped_as_block_sparse
from subp_fx.codegen.kernels.spec import BlockSparseConvSpec, ConvTile
from subp_fx.codegen.kernels.tiling import cheapest_block_size
from subp_fx.codegen.lowering.bf16 import emit_bf16_conv
from subp_fx.codegen.lowering.context import LoweringContext
from subp_fx.codegen.lowering.depthwise import lower_depthwise_conv
from subp_fx.codegen.lowering.fusion import Epilogue, FusionAbility
from subp_fx.codegen.lowering.graph_view import GraphView, LoweredTensor
from subp_fx.codegen.lowering.int8 import dense_int8_block_size, emit_int8_conv
from subp_fx.codegen.lowering.padded_channels import slice_padded_channels
from subp_fx.codegen.lowering.weights import float32_array
from subp_fx.codegen.runtime.kernel_table import DENSE, DEPTHWISE, GROUPED, SPARSE

# N candidates for dense layers. A dense conv's N is free, so each layer takes the candidate whose
# heuristic register tile needs the fewest loads per FMA (tiling.tile_cost); ties go to the
# earlier one. On AVX-512 that is N=32 (7 pixels x 2 zmm: 0.64 loads per FMA, against 1.07 for
# 14 pixels x 1 zmm at N=16); on AVX2 16 and 32 tie and 16 stays (the N=16 tile was the one
# measured fastest on znver3).
DENSE_BLOCK_SIZES = (16, 32, 8)
# C_out that no DENSE_BLOCK_SIZES divides is padded up to a multiple of this.
CHANNEL_PADDING_MULTIPLE = 8
STEM_IN_CHANNELS = 4  # below this, a conv is an image stem (the default selection's min_in_channels)


@dataclass(frozen=True)
class KernelWeights:
    """A layer's weights in the block-sparse kernel's layout.

    ``values`` (R, K, kh, kw, N) float32, ``indices`` (R, K) int32, ``bias`` (R*N,) or None;
    ``out_channels`` is the layer's real C_out (R*N may be larger: zero channels of padding).
    """

    values: np.ndarray
    indices: np.ndarray
    bias: np.ndarray | None
    out_channels: int

    @property
    def block_size(self) -> int:
        return self.values.shape[4]

    @property
    def padded_out_channels(self) -> int:
        return self.values.shape[0] * self.values.shape[4]

    @property
    def kept_per_row(self) -> int:
        return self.values.shape[1]


def dense_block_size(out_channels: int) -> tuple[int, int]:
    """(N, padded C_out) for a dense layer with ``out_channels`` outputs."""
    for size in DENSE_BLOCK_SIZES:
        if out_channels % size == 0:
            return size, out_channels
    padded = -(-out_channels // CHANNEL_PADDING_MULTIPLE) * CHANNEL_PADDING_MULTIPLE
    return next(size for size in DENSE_BLOCK_SIZES if padded % size == 0), padded


def pack_dense(weight: np.ndarray, bias: np.ndarray | None, block_size: int | None = None) -> KernelWeights:
    """A dense (C_out, C_in, kh, kw) weight as K = C_in block-sparse weights (padded if needed),
    in blocks of ``block_size`` output channels (default: :func:`dense_block_size`'s; C_out is
    padded up to a multiple of a given one)."""
    out_channels = weight.shape[0]
    N, padded = dense_block_size(out_channels)
    N = N if block_size is None else block_size
    padded = -(-padded // N) * N
    if padded != out_channels:
        weight = np.concatenate([weight, np.zeros((padded - out_channels, *weight.shape[1:]), np.float32)])
        bias = None if bias is None else np.concatenate([bias, np.zeros(padded - out_channels, np.float32)])
    values, indices = dense_as_block_sparse(weight, N)
    return KernelWeights(values, indices, bias, out_channels)


def pack_block_sparse_module(conv: BlockSparseConv2d) -> KernelWeights:
    bias = None if conv.bias is None else float32_array(conv.bias)
    indices = conv.indices.detach().cpu().numpy().astype(np.int32)
    return KernelWeights(float32_array(conv.values), indices, bias, conv.out_channels)


# ---------------------------------------------------------------------------------------------
# Checks: each returns why the node cannot be lowered, or None.


def _feature_map_problem(view: GraphView, node: fx.Node) -> str | None:
    shape = view.shape(node.args[0]) if node.args else None
    if shape is None or len(shape) != 4:
        return f"its input has shape {shape}; convs are lowered for 4-d (B, C, H, W) inputs only"
    return None


def _padding_problem(padding, kernel_size, dilation) -> str | None:
    if explicit_padding(padding, kernel_size, dilation) is None:
        return f"padding={padding!r} is asymmetric for kernel {kernel_size}; only symmetric padding is supported"
    return None


def block_sparse_conv_problem(view: GraphView, node: fx.Node) -> str | None:
    conv: BlockSparseConv2d = view.module(node)
    if tuple(conv.dilation) != (1, 1):
        return f"dilation={conv.dilation}; the block-sparse kernel supports dilation 1 only"
    return _feature_map_problem(view, node) or _padding_problem(conv.padding, conv.kernel_size, conv.dilation)


def conv2d_kind(conv: nn.Conv2d) -> str:
    """ "dense" (groups 1), "depthwise" (groups == C_in == C_out) or "grouped" (any other groups)."""
    if conv.groups == 1:
        return DENSE
    if conv.groups == conv.in_channels == conv.out_channels:
        return DEPTHWISE
    return GROUPED


# N candidates for grouped convs, best first: N must divide each group's output channels, and
# narrow groups (RegNet's 8 or 16 channels) need the small ones.
GROUPED_BLOCK_SIZES = (16, 32, 8, 4, 2, 1)


def grouped_block_size(conv: nn.Conv2d) -> int:
    out_per_group = conv.out_channels // conv.groups
    return next(size for size in GROUPED_BLOCK_SIZES if out_per_group % size == 0)


def conv2d_problem(view: GraphView, node: fx.Node) -> str | None:
    conv: nn.Conv2d = view.module(node)
    kind = conv2d_kind(conv)
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r}; only 'zeros' is supported"
    if kind in (DENSE, GROUPED) and tuple(conv.dilation) != (1, 1):
        return f"dilation={conv.dilation}; {kind} convs run on the block-sparse kernel, which supports dilation 1 only"
    return _feature_map_problem(view, node) or _padding_problem(conv.padding, conv.kernel_size, conv.dilation)


def conv2d_fusion_ability(view: GraphView, node: fx.Node) -> FusionAbility:
    """What the kernel of an ``nn.Conv2d`` node can fuse: a dense conv whose C_out is padded
    (sliced after the call) and a depthwise conv take an activation, a dense conv a residual too."""
    conv: nn.Conv2d = view.module(node)
    kind = conv2d_kind(conv)
    if kind == GROUPED or (kind == DENSE and dense_block_size(conv.out_channels)[1] == conv.out_channels):
        return FusionAbility.RESIDUAL
    return FusionAbility.ACTIVATION


# ---------------------------------------------------------------------------------------------
# Lowering.


def describe_tile(tile: ConvTile) -> str:
    """e.g. ``1x14px stage-pad pixels +16/px`` (the last part: the staged copy's pixel padding)."""
    padded_pixels = f" +{tile.pixel_pad}/px" if tile.pixel_pad else ""
    return f"{tile.rows}x{tile.cols}px {tile.padding}-pad {tile.parallel}{padded_pixels}"


def _kernel_name(kind: str, spec: BlockSparseConvSpec) -> str:
    kh, kw = spec.kernel_size
    parts = [kind, f"conv{kh}x{kw}s{spec.stride[0]}"]
    parts += [f"b{spec.batch}", f"{spec.height}x{spec.width}", f"{spec.in_channels}to{spec.out_channels}"]
    parts += [f"K{spec.kept_per_row}N{spec.block_size}"]
    parts += ["bias"] * spec.bias + ["residual"] * spec.residual
    parts += [spec.activation] if spec.activation != "none" else []
    return "_".join(parts)


@dataclass(frozen=True)
class _KernelLayer:
    """What the kernel call needs to know about a layer beyond its weights."""

    kind: str
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dense_reason: str | None

    @classmethod
    def of(cls, kind: str, conv: nn.Module, dense_reason: str | None) -> _KernelLayer:
        """The geometry of ``conv`` (an ``nn.Conv2d`` or ``BlockSparseConv2d``), padding explicit."""
        padding = explicit_padding(conv.padding, conv.kernel_size, conv.dilation)
        return cls(kind, tuple(conv.kernel_size), tuple(conv.stride), padding, dense_reason)


def pointwise_layer(reason: str) -> _KernelLayer:
    """The geometry of a dense 1x1 conv (stride 1, no padding) that is dense for ``reason``."""
    return _KernelLayer(DENSE, (1, 1), (1, 1), (0, 0), reason)


def _kernel_spec(
    epilogue: Epilogue,
    data: LoweredTensor,
    out_channels: int,
    block_size: int,
    kept_per_row: int,
    bias: bool,
    layer: _KernelLayer,
) -> BlockSparseConvSpec:
    batch, height, width, in_channels = data.stored_shape
    return BlockSparseConvSpec(
        batch=batch,
        height=height,
        width=width,
        in_channels=in_channels,
        out_channels=out_channels,
        block_size=block_size,
        kept_per_row=kept_per_row,
        kernel_size=layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        bias=bias,
        residual=epilogue.residual is not None,
        activation=epilogue.activation,
    )


def _emit_block_sparse_kernel(
    ctx: LoweringContext,
    node: fx.Node,
    data: LoweredTensor,
    weights: KernelWeights,
    layer: _KernelLayer,
) -> LoweredTensor:
    """Call the block-sparse kernel on an NHWC feature map; returns the NHWC (sliced) output.
    An int8 build's planned convs go to the int8 kernel instead (``lowering.int8``)."""
    if ctx.int8 is not None and ctx.int8.is_int8_conv(node):
        return emit_int8_conv(ctx, node, weights, layer)
    if ctx.bf16 is not None and ctx.bf16.runs(weights) and data.is_feature_map:
        return emit_bf16_conv(ctx, node, data, weights, layer)
    epilogue: Epilogue = ctx.epilogue(node)
    batch, _, _, in_channels = data.stored_shape
    spec = _kernel_spec(
        epilogue,
        data,
        weights.padded_out_channels,
        weights.block_size,
        weights.kept_per_row,
        weights.bias is not None,
        layer,
    )
    grouped = _grouped_pointwise_weights(spec, weights, ctx)
    winograd_tile = None if grouped is not None else ctx.winograd_tile(spec)
    algorithm, executed_macs = "direct", None
    if winograd_tile is not None:
        wino_spec = winograd.kernel_spec(spec)
        values, indices = _winograd_weights(wino_spec, weights)
        key, tile_text = ("winograd_conv2d", wino_spec, winograd_tile), winograd_tile.describe()
        packed = [winograd.transform_values(values, winograd_tile.m), indices]
        build = lambda: winograd.winograd_conv2d_primfunc(wino_spec, winograd_tile, ctx.isa)  # noqa: E731
        name = _kernel_name(f"{layer.kind}_winograd{winograd_tile.m}", wino_spec)
        algorithm = f"winograd F({winograd_tile.m}x{winograd_tile.m},3x3)"
        executed_macs = winograd.gemm_macs(spec, winograd_tile.m)
    elif grouped is not None:
        grouped_spec, packed = grouped
        parallel = grouped_pointwise.parallel_mode(grouped_spec)
        key, tile_text = ("grouped_pointwise_conv2d", grouped_spec, parallel), grouped_pointwise.describe(parallel)
        build = lambda: grouped_pointwise.grouped_pointwise_primfunc(grouped_spec, parallel)  # noqa: E731
        name = _kernel_name(f"{layer.kind}_grouped", grouped_spec)
    else:
        tile = ctx.tile_for(spec)
        key, tile_text = ("block_sparse_conv2d", spec, tile), describe_tile(tile)
        packed = [weights.values, weights.indices]
        build = lambda: block_sparse_conv2d_primfunc(spec, tile, ctx.isa)  # noqa: E731
        name = _kernel_name(layer.kind, spec)
    arguments = [data.expr, *(ctx.program.constant(array) for array in packed)]
    arguments += [ctx.program.constant(weights.bias)] if weights.bias is not None else []
    arguments += [ctx.tensor(epilogue.residual).expr] if epilogue.residual is not None else []
    output = ctx.program.call(key, name, build, arguments, spec.out_shape)
    output = slice_padded_channels(ctx, output, spec.out_shape, weights.out_channels)
    kh, kw = layer.kernel_size
    ctx.record_kernel(
        node,
        key,
        bias=spec.bias,
        residual=spec.residual,
        activation=spec.activation,
        kind=layer.kind,
        op="conv2d",
        in_channels=in_channels,
        kept_per_row=weights.kept_per_row,
        out_channels=weights.out_channels,
        kernel_size=layer.kernel_size,
        stride=layer.stride,
        out_hw=(spec.out_height, spec.out_width),
        block_size=weights.block_size,
        macs=batch * spec.out_height * spec.out_width * weights.out_channels * weights.kept_per_row * kh * kw,
        tile=tile_text,
        dense_reason=layer.dense_reason,
        algorithm=algorithm,
        executed_macs=executed_macs,
    )
    return LoweredTensor(output, (batch, weights.out_channels, spec.out_height, spec.out_width))


def lower_block_sparse_conv(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    conv: BlockSparseConv2d = ctx.view.module(node)
    layer = _KernelLayer.of(SPARSE, conv, None)
    return _emit_block_sparse_kernel(ctx, node, ctx.tensor(node.args[0]), pack_block_sparse_module(conv), layer)


def _dense_reason(conv: nn.Conv2d) -> str:
    reason = (
        f"stem: C_in={conv.in_channels} < {STEM_IN_CHANNELS}, too few input channels to prune"
        if conv.in_channels < STEM_IN_CHANNELS
        else "not a SUBP layer in this model (left dense by the layer selection)"
    )
    padded = dense_block_size(conv.out_channels)[1]
    return reason + (f"; C_out={conv.out_channels} padded to {padded}" if padded != conv.out_channels else "")


def _lower_dense_conv(ctx: LoweringContext, node: fx.Node, conv: nn.Conv2d) -> LoweredTensor:
    bias = None if conv.bias is None else float32_array(conv.bias)
    layer = _KernelLayer.of(DENSE, conv, _dense_reason(conv))
    return _emit_dense_kernel(ctx, node, ctx.tensor(node.args[0]), float32_array(conv.weight), bias, layer)


def _emit_dense_kernel(
    ctx: LoweringContext,
    node: fx.Node,
    data: LoweredTensor,
    weight: np.ndarray,
    bias: np.ndarray | None,
    layer: _KernelLayer,
) -> LoweredTensor:
    """A dense (C_out, C_in, kh, kw) conv on the block-sparse kernel, with the
    :data:`DENSE_BLOCK_SIZES` candidate whose heuristic tile costs least (see there)."""
    if ctx.int8 is not None and ctx.int8.is_int8_conv(node):
        return emit_int8_conv(ctx, node, pack_dense(weight, bias, dense_int8_block_size(weight.shape[0])), layer)
    bf16_size = _dense_bf16_block_size(weight.shape[0]) if ctx.bf16 is not None else None
    if bf16_size is not None:
        return _emit_block_sparse_kernel(ctx, node, data, pack_dense(weight, bias, bf16_size), layer)
    first_fit, padded = dense_block_size(weight.shape[0])
    spec = _kernel_spec(ctx.epilogue(node), data, padded, first_fit, data.stored_shape[3], bias is not None, layer)
    if _dense_grouped_pointwise(spec, ctx):
        block_size = grouped_pointwise.BLOCK_SIZE
    else:
        block_size = cheapest_block_size(
            spec, DENSE_BLOCK_SIZES, ctx.isa, l1_data_cache(ctx.target), l2_bytes(ctx.target)
        )
    return _emit_block_sparse_kernel(ctx, node, data, pack_dense(weight, bias, block_size), layer)


def _winograd_weights(wino_spec: BlockSparseConvSpec, weights: KernelWeights) -> tuple[np.ndarray, np.ndarray]:
    """(values, indices) in the block-rows of ``wino_spec`` (``winograd.kernel_spec``'s): the same
    channels in the same order, split by ``narrow_block_rows`` where its N is narrower."""
    if wino_spec.block_size == weights.block_size:
        return weights.values, weights.indices
    return grouped_pointwise.narrow_block_rows(weights.values, weights.indices)


def _grouped_pointwise_weights(
    spec: BlockSparseConvSpec, weights: KernelWeights, ctx: LoweringContext
) -> tuple[BlockSparseConvSpec, list[np.ndarray]] | None:
    """(spec at N=16, [packed values, group starts]) where the grouped 1x1 kernel runs this layer
    (its N a multiple of 16, split into rows of 16), else None."""
    if spec.block_size % grouped_pointwise.BLOCK_SIZE:
        return None
    narrow = dataclasses.replace(spec, block_size=grouped_pointwise.BLOCK_SIZE)
    if not grouped_pointwise.fits(narrow, ctx.isa):  # before any copy of the weights
        return None
    values, indices = weights.values, weights.indices
    if spec.block_size != grouped_pointwise.BLOCK_SIZE:
        values, indices = grouped_pointwise.narrow_block_rows(values, indices)
    starts = grouped_pointwise.kept_groups(indices)
    if starts is None:
        return None
    return narrow, [grouped_pointwise.pack_values(values), starts]


def _dense_grouped_pointwise(spec: BlockSparseConvSpec, ctx: LoweringContext) -> bool:
    """Whether a dense conv of ``spec`` (any N) runs on the grouped 1x1 kernel once packed at N=16:
    every input channel is kept, so its groups are whole wherever C_in is a multiple of 4 (which
    :func:`grouped_pointwise.fits` checks as K). Then it is packed so, not at
    :func:`cheapest_block_size`'s N (dense 1x1 convs alone: 1.10-1.32x the N=32 kernel on
    ResNet-50's shapes, one at 0.98x)."""
    N = grouped_pointwise.BLOCK_SIZE
    if spec.out_channels % N:
        return False
    return grouped_pointwise.fits(dataclasses.replace(spec, block_size=N, kept_per_row=spec.in_channels), ctx.isa)


def emit_pointwise_dense(
    ctx: LoweringContext,
    node: fx.Node,
    data: LoweredTensor,
    weight: np.ndarray,
    bias: np.ndarray | None,
    reason: str,
) -> LoweredTensor:
    """``data`` (an NHWC-stored map) times a dense (C_out, C_in) ``weight`` at every pixel: a
    1x1 conv on the block-sparse kernel (a Linear over a map's channels); ``reason`` says why
    the layer is dense in the kernel table."""
    return _emit_dense_kernel(ctx, node, data, weight[:, :, None, None], bias, pointwise_layer(reason))


def _lower_grouped_conv(ctx: LoweringContext, node: fx.Node, conv: nn.Conv2d) -> LoweredTensor:
    """A grouped conv is block-diagonal: the block-sparse kernel runs it with K = C_in/groups
    (``packing.grouped_as_block_sparse``), doing exactly the grouped conv's MACs."""
    int8 = ctx.int8 is not None and ctx.int8.is_int8_conv(node)
    # int8: N 32 or 16, whichever divides a group's output channels (quantize.plan.grouped_problem)
    N = dense_int8_block_size(conv.out_channels // conv.groups) if int8 else grouped_block_size(conv)
    values, indices = grouped_as_block_sparse(float32_array(conv.weight), conv.groups, N)
    bias = None if conv.bias is None else float32_array(conv.bias)
    layer = _KernelLayer.of(
        GROUPED,
        conv,
        f"grouped conv (groups={conv.groups}): each output channel reads {conv.in_channels // conv.groups} of "
        f"{conv.in_channels} inputs; SUBP prunes groups=1 convs",
    )
    weights = KernelWeights(values, indices, bias, conv.out_channels)
    if int8:  # the plan checked the shape (quantize.plan.grouped_problem)
        return emit_int8_conv(ctx, node, weights, layer)
    return _emit_block_sparse_kernel(ctx, node, ctx.tensor(node.args[0]), weights, layer)


def _dense_bf16_block_size(out_channels: int) -> int | None:
    """The N a dense conv with ``out_channels`` outputs runs with on the bf16 kernel: 32 where it
    divides C_out (7 pixels x 2 zmm: half the broadcasts per vdpbf16ps of N=16's 14 x 1), else 16,
    else None (a C_out that 16 does not divide stays fp32)."""
    return next((size for size in sorted(BF16_BLOCK_SIZES, reverse=True) if out_channels % size == 0), None)


def bf16_block_size(module: nn.Module) -> int | None:
    """The N ``module`` (a conv node's module) runs with on the bf16 kernel in a bf16 build, or None
    when it stays fp32: a block-sparse conv at its own N when that is 16 or 32, a dense conv at
    :func:`_dense_bf16_block_size`, a grouped conv when :func:`grouped_block_size` is 16 or 32;
    never a depthwise conv. The one rule ``lowering.bf16`` plans storage with; the emitters
    below decide the same way from the packed weights."""
    if isinstance(module, BlockSparseConv2d):
        return module.N if module.N in BF16_BLOCK_SIZES else None
    if not isinstance(module, nn.Conv2d):
        return None
    kind = conv2d_kind(module)
    if kind == DENSE:
        return _dense_bf16_block_size(module.out_channels)
    if kind == GROUPED and grouped_block_size(module) in BF16_BLOCK_SIZES:
        return grouped_block_size(module)
    return None


_CONV2D_LOWERINGS: dict[str, Callable[[LoweringContext, fx.Node, nn.Conv2d], LoweredTensor]] = {
    DENSE: _lower_dense_conv,
    DEPTHWISE: lower_depthwise_conv,
    GROUPED: _lower_grouped_conv,
}


def lower_conv2d(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    conv: nn.Conv2d = ctx.view.module(node)
    return _CONV2D_LOWERINGS[conv2d_kind(conv)](ctx, node, conv)
