"""Whole-model lowering: a converted, BN-folded torch.fx GraphModule -> a Relax IRModule.

What it produces: ``main(x: (B, C, H, W) float32) -> logits`` whose body is one dataflow block of
``call_tir`` calls to scheduled TIR kernels (plus free reshapes); for a batch run in sub-batches
(``sub_batches``), ``main`` copies each sub-batch out, calls a function of those calls on it and
stacks the outputs. Activations are NHWC from end
to end: one NCHW -> NHWC transpose of the input first, none between layers (a flatten of a map
larger than 1x1 and a 4-d model output go back to NCHW, as torch's element order requires).
``BlockSparseConv2d`` and dense convs run on the 1xN block-sparse kernel, depthwise convs on
their own kernel, every other op on a scheduled kernel of ``codegen.kernels`` (see ``rules`` for the
full table). Conv -> relu/relu6 and conv -> add -> relu are fused into the conv's epilogue
(``fusion``). A permute only changes the order a tensor is stored in (``permute``); graph
constants (``get_attr``) are read by the handlers that take them (layer norm weights, a per-axis
multiply). No op is left for Relax's generic, unscheduled legalisation.

What it refuses: a graph that is not folded and converted (``preconditions``); a graph with any
node ``rules`` cannot lower: one
:class:`~subp_fx.errors.UnsupportedOpError` lists every such node (op, target, module type,
reason) and what is supported, before anything is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch.fx as fx
import torch.nn as nn
import tvm
from tvm.target import Target

from subp_fx.codegen.defaults import DEFAULT_TARGET
from subp_fx.codegen.kernels.block_sparse_conv_bf16 import resolve_bf16_path
from subp_fx.codegen.kernels.isa import int8_path, vector_isa
from subp_fx.codegen.kernels.layout import nchw_to_nhwc_primfunc, nhwc_to_nchw_primfunc
from subp_fx.codegen.lowering.bf16 import Bf16Lowering, Bf16Plan, plan_bf16
from subp_fx.codegen.lowering.context import LoweringContext
from subp_fx.codegen.lowering.conv import bf16_block_size
from subp_fx.codegen.lowering.fusion import Epilogue, FusionAbility, plan_epilogues
from subp_fx.codegen.lowering.graph_view import GraphView, LoweredTensor
from subp_fx.codegen.lowering.int8 import Int8Lowering, after_lowered, int8_fusion_ability, lower_quantized_image
from subp_fx.codegen.lowering.preconditions import check_inference_graph
from subp_fx.codegen.lowering.program import ENTRY_FUNCTION, RelaxProgram
from subp_fx.codegen.lowering.rules import rule_for, supported_ops, unsupported_nodes
from subp_fx.codegen.lowering.sub_batches import (
    SUB_BATCH_FUNCTION,
    batch_divisors,
    samples_are_independent,
    sub_batch_size,
)
from subp_fx.codegen.progress import CompileProgress
from subp_fx.codegen.runtime.kernel_table import KernelEntry
from subp_fx.codegen.target import parse_target
from subp_fx.codegen.tuning.log import TuningLog
from subp_fx.errors import ConfigError, UnsupportedOpError
from subp_fx.passes.trace import trace
from subp_fx.quantize import ActivationRanges, plan_int8

INPUT_LAYOUT = "NCHW"
ACTIVATION_LAYOUT = "NHWC"


@dataclass(frozen=True)
class LoweredModel:
    """The Relax module and what the compile report and manifest need about it."""

    module: tvm.IRModule
    kernel_table: list[KernelEntry]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    target: Target


def check_lowerable(view: GraphView) -> None:
    """Raise one :class:`UnsupportedOpError` naming every node that cannot be lowered."""
    problems = unsupported_nodes(view)
    if problems:
        listing = "; ".join(f"({index}) {problem}" for index, problem in enumerate(problems, 1))
        raise UnsupportedOpError(
            f"the model cannot be compiled: {len(problems)} node(s) have no lowering: {listing}. "
            f"Supported are {supported_ops()}."
        )


def _fusion_ability(view: GraphView, node: fx.Node) -> FusionAbility:
    rule = rule_for(view, node)
    return rule.fusion(view, node) if rule is not None else FusionAbility.NONE


def _lower_input(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    quantized = lower_quantized_image(ctx, node)
    if quantized is not None:
        return quantized
    shape = ctx.view.input_shape
    batch, channels, height, width = shape
    stored = (batch, height, width, channels)
    output = ctx.program.call(
        ("to_nhwc", shape),
        "input_to_nhwc",
        lambda: nchw_to_nhwc_primfunc(shape, ctx.lanes),
        [ctx.program.input],
        stored,
    )
    return LoweredTensor(output, shape)


def _lower_output(ctx: LoweringContext, node: fx.Node) -> LoweredTensor:
    result = ctx.tensor(node.args[0])
    if not result.is_feature_map:
        return result
    expr = ctx.program.call(
        ("to_nchw", result.stored_shape),
        "output_to_nchw",
        lambda: nhwc_to_nchw_primfunc(result.stored_shape, ctx.lanes),
        [result.expr],
        result.shape,
    )
    return LoweredTensor(expr, result.shape)


def _walk(ctx: LoweringContext, progress: CompileProgress) -> LoweredTensor:
    """Lower every node in graph order; a fused group is emitted at its last node. ``progress``
    advances one step per node."""
    groups_by_output: dict[fx.Node, Epilogue] = {epilogue.result_node: epilogue for epilogue in ctx.epilogues.values()}
    deferred = {node for epilogue in ctx.epilogues.values() for node in (epilogue.conv, *epilogue.absorbed)}
    for node in ctx.view.nodes:
        progress.advance()
        if node.op == "placeholder":
            ctx.values[node] = _lower_input(ctx, node)
        elif node.op == "get_attr":
            # Read by the handlers that take constants (rules.NodeRule.takes_constants), never a tensor.
            ctx.values[node] = ctx.view.constant(node)
        elif node.op == "output":
            return _lower_output(ctx, node)
        elif node in groups_by_output:
            conv = groups_by_output[node].conv
            ctx.values[node] = rule_for(ctx.view, conv).lower(ctx, conv)
        elif node not in deferred:
            ctx.values[node] = rule_for(ctx.view, node).lower(ctx, node)
        if node in ctx.values:
            after_lowered(ctx, node)
    raise UnsupportedOpError("the model's graph has no output node; a traced forward returns one tensor")


def lower_graph(
    gm: fx.GraphModule | nn.Module,
    example_input_shape: tuple[int, ...],
    target: str | Mapping[str, Any] | Target = DEFAULT_TARGET,
    tune_tiles: bool = False,
    tuning_log: TuningLog | None = None,
    progress: CompileProgress | None = None,
    activation_ranges: ActivationRanges | None = None,
    bf16: bool = False,
    sub_batch: int | None = None,
    winograd: bool = True,
) -> LoweredModel:
    """Lower ``gm`` for inputs of ``example_input_shape`` (B, C, H, W) on ``target``.

    ``gm`` must be converted (``convert``) and BN-folded (``fold_batchnorm``): checked first
    (``preconditions``); a batch norm that cannot be folded is lowered as a per-channel affine.
    ``tune_tiles`` times a few register tiles per distinct conv shape instead of using the
    tiling cost model's choice (slower to compile, sometimes faster to run); with a
    ``tuning_log`` the shapes it has are not timed again and new timings are added to it (in
    memory: the caller saves it). ``progress`` learns the node count and advances per node lowered.
    ``activation_ranges`` (``quantize.calibrate`` on ``gm``) makes an int8 build: the convs
    ``quantize.plan_int8`` picks run on the int8 kernel (``lowering.int8``). ``bf16`` makes a bf16
    build (``lowering.bf16``; the target must have avx512_bf16, else ``TargetError``); not both.
    ``winograd``: fp32 3x3 stride-1 convs run on the Winograd kernel where
    ``kernels.winograd.why_direct`` allows (int8 and bf16 convs never do).
    ``sub_batch``: how many samples the layers run on at a time (a divisor of B; the entry
    function cuts the batch and stacks the outputs, :mod:`sub_batches`); None:
    :func:`sub_batch_size`'s choice.
    """
    target = target if isinstance(target, Target) else parse_target(target)
    traced = trace(gm)
    check_inference_graph(traced)
    view = GraphView(traced, tuple(example_input_shape))
    check_lowerable(view)
    batch = view.input_shape[0]
    if sub_batch is None:
        sub_batch = sub_batch_size(view)
    elif isinstance(sub_batch, bool) or not isinstance(sub_batch, int) or sub_batch < 1 or batch % sub_batch:
        divisors = ", ".join(map(str, batch_divisors(batch)))
        raise ConfigError(f"sub_batch must divide the batch {batch} (valid: {divisors}), got {sub_batch!r}")
    elif sub_batch < batch and not samples_are_independent(view):
        raise ConfigError(
            f"sub_batch={sub_batch}: the model mixes samples (a tensor's first axis is not the batch); "
            f"it runs as one batch of {batch} only"
        )
    if sub_batch < batch:
        view = GraphView(traced, (sub_batch, *view.input_shape[1:]))  # every node's shape at the sub-batch
    progress = progress or CompileProgress()
    progress.stage_total(len(view.nodes), "nodes")
    program = RelaxProgram(view.input_shape)
    ctx = LoweringContext(
        view=view,
        program=program,
        target=target,
        isa=vector_isa(target),
        tune_tiles=tune_tiles,
        tuning_log=tuning_log,
        winograd=winograd,
    )
    plan = plan_int8(traced, activation_ranges) if activation_ranges is not None else None
    if plan is None:
        ctx.epilogues = plan_epilogues(view, lambda node: _fusion_ability(view, node))
    else:
        ctx.epilogues = plan_epilogues(
            view, lambda node: int8_fusion_ability(view, plan, node, _fusion_ability(view, node))
        )
        ctx.int8 = Int8Lowering.build(view, plan, ctx.epilogues, int8_path(target))
    if bf16:
        if plan is not None:
            raise ValueError("a build is int8 (activation_ranges) or bf16, not both")
        ctx.bf16 = Bf16Lowering(resolve_bf16_path(target), plan_bf16(view, ctx.epilogues, bf16_block_size))
    parts = batch // sub_batch
    with program.function(ENTRY_FUNCTION if parts == 1 else SUB_BATCH_FUNCTION):
        result = _walk(ctx, progress)
        program.finish(result.expr)
    output_shape = result.shape
    if parts > 1:
        output_shape = (batch, *result.shape[1:])
        # the sub-batch function's output as stored (its shape and dtype), which the entry stacks
        stored = result.expr.ty
        stored_shape = tuple(int(extent) for extent in stored.shape)
        program.entry_over_sub_batches(batch, SUB_BATCH_FUNCTION, stored_shape, ctx.lanes, str(stored.dtype))
    # Fused groups are emitted at their last node; the table lists layers in the model's order.
    position = {str(node.target): index for index, node in reversed(list(enumerate(view.nodes)))}
    emitted = [
        dataclasses.replace(
            entry,
            call_order=order,
            macs=entry.macs * parts,
            executed_macs=None if entry.executed_macs is None else entry.executed_macs * parts,
            calls=parts,
        )
        for order, entry in enumerate(ctx.kernel_table)
    ]
    table = sorted(emitted, key=lambda entry: position[entry.layer])
    return LoweredModel(program.module(), table, (batch, *view.input_shape[1:]), output_shape, target)


def bf16_plan(gm: fx.GraphModule | nn.Module, example_input_shape: tuple[int, ...]) -> Bf16Plan:
    """What a bf16 build of ``gm`` (converted and BN-folded, as ``lower_graph`` takes it) rounds:
    the :class:`Bf16Plan` ``lower_graph(..., bf16=True)`` follows, for the eager reference
    (``quantize.bf16_reference``)."""
    view = GraphView(trace(gm), tuple(example_input_shape))
    return plan_bf16(view, plan_epilogues(view, lambda node: _fusion_ability(view, node)), bf16_block_size)


def lower(
    gm: fx.GraphModule | nn.Module,
    example_input_shape: tuple[int, ...],
    target: str | Mapping[str, Any] | Target = DEFAULT_TARGET,
) -> tvm.IRModule:
    """The Relax IRModule of ``gm`` (see :func:`lower_graph`, which also returns the kernel table)."""
    return lower_graph(gm, example_input_shape, target).module
