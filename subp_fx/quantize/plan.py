"""``plan_int8``: which convs and linears of an inference graph run in int8, and which tensors get
quantised.

A conv runs in int8 when an int8 kernel can compute it: a ``BlockSparseConv2d`` of N 16 or 32,
or an ``nn.Conv2d`` with ``groups == 1`` (or groups of whole blocks: :func:`grouped_problem`),
dilation 1, symmetric zero padding and a 4-d input; or a depthwise ``nn.Conv2d`` (``groups ==
C_in == C_out``) with symmetric zero padding and at most ``DEPTHWISE_MAX_TAPS`` taps (the int8
depthwise kernel, :func:`depthwise_problem`). The conv
kernel reads 4 input channels as one 32-bit word: a C_in that is not a multiple of 4 (an RGB or
grayscale stem) is run on its quantised input stored with zero-point channels up to the next
multiple of 4, whose weights are zero (the RGB ResNet stem's kernel timed alone, Ice Lake, 2
threads, under load: 0.48-0.59 ms in int8 against 1.58-1.74 ms in fp32). Every other conv stays
fp32, with the reason (grouped with narrow groups, ...).

A linear layer runs in int8 (:func:`plan_int8_linears`) when it is an ``nn.Linear`` on a 2-d
(B, features) input with in_features a multiple of 4: it is a 1x1 conv on a 1x1 image, so the
int8 conv kernel computes it (a classifier head: ResNet-50's fc streams 2 MB of int8 weights a
call instead of 8 MB of fp32). A Linear over a 4-d map's last axis (ConvNeXt's pointwise layers)
stays fp32, with the reason.

Every tensor (fx node output) that feeds at least one int8 conv or linear is quantised for *all* its uses:
every consumer reads ``dequantize(quantize(x))``, so the model computes the same thing whichever
ops the compiler fuses into which kernel. So is an int8 conv's output that is only ever added to
another int8 conv's output (a ResNet downsample branch: ``Int8Plan.residuals``): the conv whose
kernel fuses the add then reads it as bytes, a quarter of fp32's traffic.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch.fx as fx
import torch.nn as nn

from subp_fx.algorithm.block_sparse import BlockSparseConv2d
from subp_fx.algorithm.conv_geometry import explicit_padding
from subp_fx.passes.node_args import is_add, is_max_pool, module_call_counts
from subp_fx.quantize.calibration import ActivationRanges
from subp_fx.quantize.params import ActivationQuant

INPUT_CHANNEL_GROUP = 4  # VNNI multiplies 4 uint8 x int8 pairs per 32-bit lane
# The N (output channels per block) the int8 kernel takes: one or two vectors of int32 lanes per
# pixel. Dense convs choose their own N (16); a SUBP layer's N is its model's.
INT8_BLOCK_SIZES: tuple[int, ...] = (16, 32)
# The int8 depthwise kernel sums in float32 lanes holding exact integers: every partial sum
# (|.| <= 255 * 127 * taps) must stay below 2**24.
DEPTHWISE_MAX_TAPS = (1 << 24) // (255 * 127)


@dataclass(frozen=True)
class Int8Plan:
    """The int8 decisions for one graph.

    - ``activations``: node name -> ``ActivationQuant`` of every tensor feeding an int8 conv;
    - ``convs``: int8 conv (its module path, the node's target) -> the name of its input node
      (a key of ``activations``); depthwise convs (:func:`is_depthwise`) included;
    - ``fp32_convs``: every other ``nn.Conv2d`` / ``BlockSparseConv2d`` call -> why it stays fp32;
    - ``linears``: int8 linear (module path) -> the name of its input node (a key of ``activations``);
    - ``fp32_linears``: every other ``nn.Linear`` call -> why it stays fp32;
    - ``residuals``: int8 conv outputs quantised because every reader is an add with another int8
      conv's output (node name -> the names of those adds); also keys of ``activations``;
    - ``pooled``: int8 conv outputs read only by a max pool whose output is quantised, quantised
      with that output's parameters (node name -> the pool's name); also keys of ``activations``.
    """

    activations: dict[str, ActivationQuant] = field(default_factory=dict)
    convs: dict[str, str] = field(default_factory=dict)
    fp32_convs: dict[str, str] = field(default_factory=dict)
    linears: dict[str, str] = field(default_factory=dict)
    fp32_linears: dict[str, str] = field(default_factory=dict)
    residuals: dict[str, tuple[str, ...]] = field(default_factory=dict)
    pooled: dict[str, str] = field(default_factory=dict)

    def input_quant(self, layer: str) -> ActivationQuant:
        """The uint8 parameters of int8 conv or linear ``layer``'s input (``KeyError`` naming the
        int8 layers when ``layer`` is not one)."""
        source = self.convs.get(layer, self.linears.get(layer))
        if source is None:
            raise KeyError(
                f"{layer!r} is not an int8 conv or linear of this plan; its int8 convs are {sorted(self.convs)}, "
                f"its int8 linears {sorted(self.linears)}"
            )
        return self.activations[source]


def conv_input(node: fx.Node) -> fx.Node | None:
    """The input node of a conv call (positional or ``input=``), or None when it is no node."""
    argument = node.args[0] if node.args else node.kwargs.get("input")
    return argument if isinstance(argument, fx.Node) else None


def _type_problem(conv: nn.Module) -> str | None:
    # A subclass (SUBPConv2d: masked in its forward) computes something else than its weight says.
    if type(conv) not in (nn.Conv2d, BlockSparseConv2d):
        return (
            f"a {type(conv).__name__}, not an nn.Conv2d or BlockSparseConv2d; plan the inference graph "
            "(batch norms folded, SUBP convs converted)"
        )
    return None


def is_depthwise(conv: nn.Module) -> bool:
    """Whether ``conv`` is a depthwise ``nn.Conv2d``: ``groups == C_in == C_out`` (> 1)."""
    return isinstance(conv, nn.Conv2d) and 1 < conv.groups == conv.in_channels == conv.out_channels


def depthwise_problem(conv: nn.Conv2d) -> str | None:
    """Why the int8 depthwise kernel cannot compute depthwise conv ``conv``, or None. Any
    stride and dilation, any channel count (it vectorises over channels, not groups of 4)."""
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r}; the int8 depthwise kernel pads with zeros only"
    if explicit_padding(conv.padding, tuple(conv.kernel_size), tuple(conv.dilation)) is None:
        return f"padding={conv.padding!r} is asymmetric; the int8 depthwise kernel pads symmetrically only"
    taps = conv.kernel_size[0] * conv.kernel_size[1]
    if taps > DEPTHWISE_MAX_TAPS:
        return (
            f"kernel_size={tuple(conv.kernel_size)} has {taps} taps; the int8 depthwise kernel's float32 sums are "
            f"exact up to {DEPTHWISE_MAX_TAPS}"
        )
    return None


def grouped_problem(conv: nn.Conv2d) -> str | None:
    """Why the int8 conv kernel cannot compute grouped conv ``conv`` (not depthwise), or None. It
    runs it block-diagonally, as the fp32 build does: each block-row of N output channels keeps
    its group's input channels, so N (16 or 32) must divide a group's output channels and a
    group's input channels must be whole groups of 4 (ResNeXt-50's wider stages, RegNetX's
    16-channel groups; not RegNetY-400MF's 8)."""
    out_per_group, in_per_group = conv.out_channels // conv.groups, conv.in_channels // conv.groups
    if out_per_group % min(INT8_BLOCK_SIZES) or in_per_group % INPUT_CHANNEL_GROUP:
        return (
            f"grouped (groups={conv.groups}) with {in_per_group} input and {out_per_group} output channels per "
            f"group; the int8 kernel needs output channels per group divisible by {min(INT8_BLOCK_SIZES)} and "
            f"input channels per group by {INPUT_CHANNEL_GROUP}"
        )
    return None


def _module_problem(conv: nn.Module) -> str | None:
    """Why the int8 kernel cannot compute ``conv`` (whatever its input), or None."""
    if isinstance(conv, nn.Conv2d):
        if conv.groups != 1:
            return grouped_problem(conv)
        if conv.padding_mode != "zeros":
            return f"padding_mode={conv.padding_mode!r}; the int8 kernel pads with zeros only"
    if isinstance(conv, BlockSparseConv2d) and conv.N not in INT8_BLOCK_SIZES:
        return f"1x{conv.N} blocks; the int8 kernel takes N in {INT8_BLOCK_SIZES}"
    if tuple(conv.dilation) != (1, 1):
        return f"dilation={tuple(conv.dilation)}; the int8 kernel supports dilation 1 only"
    if explicit_padding(conv.padding, tuple(conv.kernel_size), tuple(conv.dilation)) is None:
        return f"padding={conv.padding!r} is asymmetric; the int8 kernel pads symmetrically only"
    return None


def _node_problem(
    node: fx.Node, calls: Counter, ranges: ActivationRanges, rank: int = 4, layout: str = "(B, C, H, W)"
) -> str | None:
    """Why this conv (or linear: ``rank`` 2) call cannot be int8 given the graph and the
    calibration, or None."""
    if calls[node.target] > 1:
        return f"the module is called {calls[node.target]} times; an int8 layer needs one input tensor"
    source = conv_input(node)
    if source is None:
        return "its input is not a tensor computed by the graph"
    if source.name not in ranges:
        return f"its input {source.name!r} has no calibrated range (calibrate the same graph)"
    shape = ranges.shapes.get(source.name)
    if shape is None or len(shape) != rank:
        return f"its input {source.name!r} has shape {shape}; the int8 kernel takes {rank}-d {layout} inputs"
    return None


def plan_int8(gm: fx.GraphModule, ranges: ActivationRanges) -> Int8Plan:
    """The ``Int8Plan`` of ``gm`` (an inference graph: BN folded, SUBP convs converted) with the
    activation ranges ``calibrate`` recorded on it. Pure: ``gm`` is only read. Convs are visited in
    graph order, so the dicts list them in execution order."""
    calls = module_call_counts(gm)
    plan = Int8Plan()
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        if not isinstance(module, (nn.Conv2d, BlockSparseConv2d)):
            continue
        kernel_problem = depthwise_problem if is_depthwise(module) else _module_problem
        problem = _type_problem(module) or kernel_problem(module) or _node_problem(node, calls, ranges)
        _assign(plan, node, problem, ranges, plan.convs, plan.fp32_convs)
    plan_int8_linears(gm, ranges, plan)
    for name, adds in _int8_residuals(gm, plan, ranges).items():
        plan.residuals[name] = adds
        plan.activations.setdefault(name, ranges.activation_quant(name))
    for name, pool in _max_pooled_int8_outputs(gm, plan).items():
        plan.pooled[name] = pool
        plan.activations[name] = plan.activations[pool]
    return plan


def _int8_conv_nodes(gm: fx.GraphModule, plan: Int8Plan) -> set[fx.Node]:
    """The call nodes of ``plan``'s int8 convs (their outputs, before any fused epilogue)."""
    return {node for node in gm.graph.nodes if node.op == "call_module" and node.target in plan.convs}


def _max_pooled_int8_outputs(gm: fx.GraphModule, plan: Int8Plan) -> dict[str, str]:
    """Tensors to quantise with the parameters of the max pool that reads them: the output of an
    int8 conv (or of the one activation applied to it) whose only reader is a max pool whose
    output is already quantised (a ResNet stem). That changes nothing in the model: the max of
    codes is the code of the max (quantising is monotone) and re-quantising a dequantised code
    gives it back; but the conv's kernel can then store bytes and the pool run on them, where
    an fp32 map was written, pooled and then quantised. Name -> the pool's name."""
    int8_convs = _int8_conv_nodes(gm, plan)
    pooled: dict[str, str] = {}
    for pool in gm.graph.nodes:
        if pool.name not in plan.activations or not is_max_pool(gm, pool) or not pool.args:
            continue
        source = pool.args[0]
        if not isinstance(source, fx.Node) or len(source.users) != 1 or source.name in plan.activations:
            continue
        inputs = [argument for argument in source.args if isinstance(argument, fx.Node)]
        activated = len(inputs) == 1 and inputs[0] in int8_convs and len(inputs[0].users) == 1
        if source in int8_convs or activated:
            pooled[source.name] = pool.name
    return pooled


def _assign(
    plan: Int8Plan, node: fx.Node, problem: str | None, ranges: ActivationRanges, int8_layers: dict, fp32_layers: dict
) -> None:
    """Record layer call ``node`` in ``int8_layers`` (module path -> input node, the input's
    quantisation in ``plan.activations``) when there is no ``problem``, else in ``fp32_layers``."""
    if problem:
        fp32_layers[node.target] = problem
        return
    source = conv_input(node).name
    int8_layers[node.target] = source
    plan.activations.setdefault(source, ranges.activation_quant(source))


def _linear_problem(linear: nn.Module) -> str | None:
    """Why the int8 kernel cannot compute ``linear`` (whatever its input), or None."""
    # A subclass (e.g. a LoRA or quantised Linear) may compute something else than its weight says.
    if type(linear) is not nn.Linear:
        return f"a {type(linear).__name__}, not an nn.Linear"
    if linear.in_features % INPUT_CHANNEL_GROUP:
        return (
            f"in_features={linear.in_features} is not a multiple of {INPUT_CHANNEL_GROUP}; the int8 kernel reads "
            f"{INPUT_CHANNEL_GROUP} input features per 32-bit word"
        )
    return None


def plan_int8_linears(gm: fx.GraphModule, ranges: ActivationRanges, plan: Int8Plan) -> None:
    """Add ``gm``'s linear layers to ``plan`` (``plan_int8`` calls it): each ``nn.Linear`` the int8
    kernel can compute as a 1x1 conv on a 1x1 image goes to ``plan.linears`` and its input to
    ``plan.activations``; every other one to ``plan.fp32_linears`` with the reason (a Linear over a
    4-d map's last axis among them: its input is not 2-d)."""
    calls = module_call_counts(gm)
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(module := gm.get_submodule(node.target), nn.Linear):
            continue
        problem = _linear_problem(module) or _node_problem(node, calls, ranges, rank=2, layout="(B, features)")
        _assign(plan, node, problem, ranges, plan.linears, plan.fp32_linears)


def _int8_residuals(gm: fx.GraphModule, plan: Int8Plan, ranges: ActivationRanges) -> dict[str, tuple[str, ...]]:
    """Int8 conv outputs not yet quantised whose every reader is a two-operand add of it and an
    earlier int8 conv's output that nothing else reads: the lowering fuses such an add into that kernel
    (``codegen.lowering.fusion``: an add goes to the first conv in graph order), where this
    output is the residual. Graph order, name -> the adds' names."""
    order = {node: index for index, node in enumerate(gm.graph.nodes)}
    int8_outputs = _int8_conv_nodes(gm, plan)
    residuals: dict[str, tuple[str, ...]] = {}
    for node in sorted(int8_outputs, key=order.__getitem__):
        if node.name in plan.activations or node.name not in ranges or not node.users:
            continue
        adds = []
        for user in node.users:
            operands = [argument for argument in user.args if isinstance(argument, fx.Node)]
            if not (is_add(user) and len(user.args) == 2 and len(operands) == 2 and not user.kwargs):
                break
            other = operands[1] if operands[0] is node else operands[0]
            if other is node or other not in int8_outputs or order[other] > order[node] or len(other.users) != 1:
                break
            adds.append(user.name)
        else:
            residuals[node.name] = tuple(adds)
    return residuals
