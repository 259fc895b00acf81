"""The bf16 part of a lowering: which convs run on the bf16 kernel, and their inputs.

A bf16 build (``precision="bf16"``, targets with avx512_bf16) runs every conv that the fp32
build would run on the 1xN block-sparse kernel (sparse, dense and grouped convs, 1x1 maps of a
Linear) on :mod:`block_sparse_conv_bf16` instead, when its block size N is 16 or 32 (a dense
conv is packed at N = 32 where that divides C_out, else 16; one whose C_out 16 does not divide
stays fp32). Its semantics, which ``quantize.reference.bf16_reference`` computes eagerly: each
such conv's input and weights (batch norm folded in) are rounded to bf16, to nearest even, and
multiplied and summed in float32; bias, residual, activation and every other op (depthwise convs,
pooling, the classifier, ...) stay float32, as in the fp32 build.

How, moving as few bytes as it can:

- a tensor that a bf16 conv's fused epilogue produces is *stored* bf16 (the kernel rounds in its
  write-back) when every reader reads bf16: a bf16 conv's data input, or the residual of a bf16
  conv's epilogue (widened there). In ResNets that is every tensor inside and between the
  blocks; the semantics then round that tensor for all its readers (``Bf16Plan.stored``);
- any other input of a bf16 conv is produced in float32 and converted once per tensor by
  :func:`kernels.bf16_convert.to_bf16_primfunc` (channels padded to a pair: an RGB image gets a
  fourth, zero channel).

Kept input channels are read in aligned pairs (:func:`pack_pairs`): a block-row keeping channel
2i but not 2i+1 multiplies the pair with a zero weight, so masks pruned in pairs or groups of 4
(``input_group: 2`` or ``4``) waste nothing, and a G=1 mask does up to twice its MACs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch.fx as fx
import torch.nn as nn

from subp_fx.codegen.kernels.bf16_convert import to_bf16_primfunc
from subp_fx.codegen.kernels.bf16_spec import BF16, BF16_BLOCK_SIZES, PAIR, Bf16ConvSpec
from subp_fx.codegen.kernels.block_sparse_conv_bf16 import (
    bf16_heuristic_tile,
    block_sparse_conv2d_bf16_primfunc,
    to_bf16_bits,
)
from subp_fx.codegen.kernels.isa import Bf16Path
from subp_fx.codegen.lowering.fusion import Epilogue
from subp_fx.codegen.lowering.graph_view import GraphView, LoweredTensor
from subp_fx.codegen.lowering.padded_channels import slice_padded_channels
from subp_fx.quantize.plan import is_depthwise

if TYPE_CHECKING:
    from subp_fx.codegen.lowering.context import LoweringContext

FLOAT32 = "float32"
BF16_PRECISION = "bf16"  # quantize.precision.PRECISIONS' name of this build


def pack_pairs(values: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Block-sparse float32 ``values`` (R, K, kh, kw, N) with kept channels ``indices`` (R, K) as
    aligned pairs: (values (R, Kg, kh, kw, N, 2) float32, pair starts (R, Kg) int32, even).

    Kg is the most pairs any block-row touches (SUBP's rows keep the same channels count, so the
    same pairs count when masks are pruned in pairs; otherwise rows with fewer pairs repeat their
    last pair with zero weights, which adds nothing)."""
    rows, _, kh, kw, block = values.shape
    row_pairs = [np.unique(indices[r] // PAIR) for r in range(rows)]
    kept_pairs = max(len(pairs) for pairs in row_pairs)
    packed = np.zeros((rows, kept_pairs, kh, kw, block, PAIR), np.float32)
    starts = np.zeros((rows, kept_pairs), np.int32)
    for r, pairs in enumerate(row_pairs):
        starts[r, : len(pairs)] = pairs * PAIR
        starts[r, len(pairs) :] = pairs[-1] * PAIR
        slot = np.searchsorted(pairs, indices[r] // PAIR)
        packed[r, slot, :, :, :, indices[r] % PAIR] = values[r]
    return packed, starts


def pack_wide_words(packed: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`pack_pairs`' output (values (R, Kg, kh, kw, N, 2), pair starts (R, Kg)) in the layout
    of ``pairs_per_word=2`` (``kernels.bf16_spec``: (R, Kg/2, kh, kw, N/8, 16, 2), lane 2c + h of
    vector v holding pair h of channel 8v + c; group starts (R, Kg/2)), or None where a block-row's
    kept pairs do not come as whole aligned groups of 4 channels (then nothing is saved: a
    group's unkept pair would cost as many MACs as the broadcasts it spares)."""
    rows, kept, kh, kw, block, _ = packed.shape
    if kept % 2 or block % 16:
        return None
    pairs = starts.reshape(rows, kept // 2, 2)
    if (pairs[..., 0] % 4).any() or (pairs[..., 1] != pairs[..., 0] + PAIR).any():
        return None
    values = packed.reshape(rows, kept // 2, 2, kh, kw, block // 8, 8, PAIR)  # (r, k, h, s, t, v, c, i)
    values = values.transpose(0, 1, 3, 4, 5, 6, 2, 7).reshape(rows, kept // 2, kh, kw, block // 8, 16, PAIR)
    return np.ascontiguousarray(values), np.ascontiguousarray(pairs[..., 0])


@dataclass(frozen=True)
class Bf16Plan:
    """What a bf16 build rounds: ``layers``, the modules (fx targets) whose convs run on the bf16
    kernel (input and weights rounded); ``stored``, the names of the fx nodes stored as bf16 (the
    tensor rounded for all its readers). ``quantize.bf16_reference`` builds the eager model of it."""

    layers: frozenset[str]
    stored: frozenset[str]


def plan_bf16(
    view: GraphView, epilogues: dict[fx.Node, Epilogue], block_size: Callable[[nn.Module], int | None]
) -> Bf16Plan:
    """Which convs run bf16 (``block_size(module)`` is not None: ``conv.bf16_block_size``) and
    which results of theirs and of depthwise convs are stored bf16: where the kernel writes
    exactly C_out channels (its N divides C_out, always so here) and every user of the result
    reads it as a bf16 conv's or a depthwise conv's data input, or as the residual of a bf16
    conv's fused epilogue. (A depthwise conv computes in float32 on its widened bf16 input and
    rounds its output; MobileNets then keep bf16 from the stem to the pooling.)"""
    layers = {
        str(node.target)
        for node in view.nodes
        if node.op == "call_module" and block_size(view.module(node)) is not None
    }
    runs = {node for node in view.nodes if node.op == "call_module" and str(node.target) in layers}
    # depthwise convs compute in float32 but read and write bf16 storage (kernels.depthwise)
    depthwise = {node for node in view.nodes if node.op == "call_module" and is_depthwise(view.module(node))}
    readers = runs | depthwise
    results = {node: node for node in readers}
    for epilogue in epilogues.values():
        if epilogue.conv in results:
            del results[epilogue.conv]
            results[epilogue.result_node] = epilogue.conv
    residual_of = {  # the add an epilogue absorbs (its first node) -> the tensor it adds
        epilogue.absorbed[0]: epilogue.residual
        for epilogue in epilogues.values()
        if epilogue.residual is not None and epilogue.conv in runs and epilogue.absorbed
    }

    def bf16_readers_only(node: fx.Node) -> bool:
        return all(
            (user in readers and user.args[0] is node and len(user.args) == 1) or residual_of.get(user) is node
            for user in node.users
        )

    stored = {node.name for node in results if bf16_readers_only(node)}
    return Bf16Plan(frozenset(layers), frozenset(stored))


@dataclass
class Bf16Lowering:
    """A bf16 build's instruction path, its :class:`Bf16Plan`, and the bf16 copies made so far
    (by the fp32 tensor's Relax expression, so a tensor read by two bf16 convs is converted once)."""

    path: Bf16Path
    plan: Bf16Plan
    _converted: dict[int, tuple[object, LoweredTensor]] = field(default_factory=dict)

    def runs(self, weights) -> bool:
        """Whether a conv with ``weights`` (``conv.KernelWeights``) runs on the bf16 kernel."""
        return weights.block_size in BF16_BLOCK_SIZES

    def converted(self, ctx: LoweringContext, data: LoweredTensor) -> LoweredTensor:
        """``data`` (an NHWC feature map) as bf16, channels padded to a whole pair: itself when
        its producer stored it bf16."""
        if data.dtype == BF16:
            return data
        cached = self._converted.get(id(data.expr))
        if cached is not None:
            return cached[1]
        shape = data.stored_shape
        channels = -(-shape[-1] // PAIR) * PAIR
        expr = ctx.program.call(
            ("to_bf16", shape, channels),
            "to_bf16_" + "x".join(map(str, shape)) + f"_c{channels}",
            lambda: to_bf16_primfunc(shape, channels),
            [data.expr],
            (*shape[:-1], channels),
            BF16,
        )
        batch, height, width, _ = shape
        tensor = LoweredTensor(expr, (batch, channels, height, width), dtype=BF16)
        self._converted[id(data.expr)] = (data.expr, tensor)  # the expr kept alive: its id stays unique
        return tensor


def _kernel_name(spec: Bf16ConvSpec, kind: str) -> str:
    kh, kw = spec.kernel_size
    parts = [f"{kind}_bf16", f"conv{kh}x{kw}s{spec.stride[0]}", f"b{spec.batch}", f"{spec.height}x{spec.width}"]
    parts += [f"{spec.in_channels}to{spec.out_channels}", f"P{spec.kept_pairs}N{spec.block_size}"]
    parts += ["w64"] * (spec.pairs_per_word == 2)
    parts += [f"residual_{spec.residual}"] * (spec.residual != "none")
    parts += [spec.activation] * (spec.activation != "none")
    parts += ["bf16out"] * (spec.out_dtype == "bfloat16")
    return "_".join(parts)


def emit_bf16_conv(ctx: LoweringContext, node: fx.Node, data: LoweredTensor, weights, layer) -> LoweredTensor:
    """``node`` on the bf16 kernel: ``data`` its NHWC input (float32, converted here once per
    tensor, or already bf16), ``weights`` its float32 ``conv.KernelWeights`` (N 16 or 32),
    ``layer`` its ``conv._KernelLayer``. Writes bf16 where the plan stores the result
    (:class:`Bf16Plan`), else float32."""
    bf16: Bf16Lowering = ctx.bf16
    program = ctx.program
    epilogue = ctx.epilogue(node)
    source = bf16.converted(ctx, data)
    batch, height, width, in_channels = source.stored_shape
    values, starts = pack_pairs(weights.values, weights.indices)
    kept_pairs, pairs_per_word = values.shape[1], 1
    # A 1x1 conv broadcasts one word per multiply step, as many loads as vdpbf16ps: where its rows
    # keep whole groups of 4 channels, one 64-bit word feeds two (Zen 4, 2 threads, alone: 1x1
    # 256->512 at 28 px 317 -> 242 us, 1024->256 at 14 px 155 -> 115 us; 64->256 at 56 px, 8
    # groups a row, 166 -> 154 us). 3x3 convs reuse each broadcast across taps and run at the
    # probe's peak already.
    wide = pack_wide_words(values, starts) if layer.kernel_size == (1, 1) else None
    if wide is not None:
        (values, starts), pairs_per_word = wide, 2
    residual_kind, residual = "none", None
    if epilogue.residual is not None:
        residual = ctx.tensor(epilogue.residual)
        residual_kind = "bfloat16" if residual.dtype == BF16 else FLOAT32
    stored = epilogue.result_node.name in bf16.plan.stored
    if stored and weights.padded_out_channels != weights.out_channels:
        raise AssertionError(f"{node.name}: a bf16 result with padded channels was planned to be stored bf16")
    bias = weights.bias if weights.bias is not None else np.zeros(weights.padded_out_channels, np.float32)
    spec = Bf16ConvSpec(
        batch=batch,
        height=height,
        width=width,
        in_channels=in_channels,
        out_channels=weights.padded_out_channels,
        block_size=weights.block_size,
        kept_pairs=kept_pairs,
        kernel_size=layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        residual=residual_kind,
        activation=epilogue.activation,
        out_dtype="bfloat16" if stored else FLOAT32,
        pairs_per_word=pairs_per_word,
    )
    tile = bf16_heuristic_tile(spec, bf16.path)
    key = ("block_sparse_conv2d_bf16", spec, tile, bf16.path.name)
    arguments = [source.expr, program.constant(to_bf16_bits(values)), program.constant(starts)]
    arguments += [program.constant(np.ascontiguousarray(bias, np.float32))]
    arguments += [residual.expr] if residual is not None else []
    name = _kernel_name(spec, layer.kind)
    build = lambda: block_sparse_conv2d_bf16_primfunc(spec, tile, bf16.path)  # noqa: E731
    output = program.call(key, name, build, arguments, spec.out_shape, BF16 if stored else FLOAT32)
    output = slice_padded_channels(ctx, output, spec.out_shape, weights.out_channels)
    kh, kw = layer.kernel_size
    kept = spec.kept_channels
    ctx.record_kernel(
        node,
        key,
        bias=weights.bias is not None,
        residual=spec.residual != "none",
        activation=spec.activation,
        kind=layer.kind,
        op="conv2d",
        in_channels=data.stored_shape[3],
        kept_per_row=kept,
        out_channels=weights.out_channels,
        kernel_size=layer.kernel_size,
        stride=layer.stride,
        out_hw=(spec.out_height, spec.out_width),
        block_size=spec.block_size,
        macs=batch * spec.out_height * spec.out_width * weights.out_channels * kept * kh * kw,
        tile=f"{tile.rows}x{tile.cols}px {tile.parallel}" + (" 64-bit words" if pairs_per_word == 2 else ""),
        dense_reason=layer.dense_reason,
        precision=f"{BF16_PRECISION}/{bf16.path.name}" + ("->bf16" if stored else ""),
    )
    shape = (batch, weights.out_channels, spec.out_height, spec.out_width)
    return LoweredTensor(output, shape, dtype=BF16 if stored else FLOAT32)
