"""``plan_int8``: which convs and linears of an inference graph run in int8, and which tensors get
quantised.

A conv runs in int8 when the int8 kernel can compute it: a ``BlockSparseConv2d`` of N 16 or 32, or an
``nn.Conv2d`` with ``groups == 1``, dilation 1, symmetric zero padding, C_in a multiple of 4 (the
kernel reads 4 input channels as one 32-bit word) and a 4-d input. Every other conv stays fp32,
with the reason (depthwise / grouped, an RGB stem with C_in = 3, ...).

A linear layer runs in int8 (:func:`plan_int8_linears`) when it is an ``nn.Linear`` on a 2-d
(B, features) input with in_features a multiple of 4: it is a 1x1 conv on a 1x1 image, so the
int8 conv kernel computes it (a classifier head: ResNet-50's fc streams 2 MB of int8 weights a
call instead of 8 MB of fp32). A Linear over a 4-d map's last axis (ConvNeXt's pointwise layers)
stays fp32, with the reason.

Every tensor (fx node output) that feeds at least one int8 conv or linear is quantised for *all* its uses:
every consumer reads ``dequantize(quantize(x))``, so the model computes the same thing whichever
ops the compiler fuses into which kernel.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch.fx as fx
import torch.nn as nn

from subp_fx.algorithm.block_sparse import BlockSparseConv2d
from subp_fx.algorithm.conv_geometry import explicit_padding
from subp_fx.quantize.calibration import ActivationRanges
from subp_fx.quantize.params import ActivationQuant

INPUT_CHANNEL_GROUP = 4  # VNNI multiplies 4 uint8 x int8 pairs per 32-bit lane
# The N (output channels per block) the int8 kernel takes: one or two vectors of int32 lanes per
# pixel. Dense convs choose their own N (16); a SUBP layer's N is its model's.
INT8_BLOCK_SIZES: tuple[int, ...] = (16, 32)


@dataclass(frozen=True)
class Int8Plan:
    """The int8 decisions for one graph.

    - ``activations``: node name -> ``ActivationQuant`` of every tensor feeding an int8 conv;
    - ``convs``: int8 conv (its module path, the node's target) -> the name of its input node
      (a key of ``activations``);
    - ``fp32_convs``: every other ``nn.Conv2d`` / ``BlockSparseConv2d`` call -> why it stays fp32;
    - ``linears``: int8 linear (module path) -> the name of its input node (a key of ``activations``);
    - ``fp32_linears``: every other ``nn.Linear`` call -> why it stays fp32.
    """

    activations: dict[str, ActivationQuant] = field(default_factory=dict)
    convs: dict[str, str] = field(default_factory=dict)
    fp32_convs: dict[str, str] = field(default_factory=dict)
    linears: dict[str, str] = field(default_factory=dict)
    fp32_linears: dict[str, str] = field(default_factory=dict)

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


def _module_problem(conv: nn.Module) -> str | None:
    """Why the int8 kernel cannot compute ``conv`` (whatever its input), or None."""
    if isinstance(conv, nn.Conv2d):
        if conv.groups != 1:
            kind = "depthwise" if conv.groups == conv.in_channels == conv.out_channels else "grouped"
            return f"{kind} (groups={conv.groups}); the int8 kernel computes groups=1 convs only"
        if conv.padding_mode != "zeros":
            return f"padding_mode={conv.padding_mode!r}; the int8 kernel pads with zeros only"
    if isinstance(conv, BlockSparseConv2d) and conv.N not in INT8_BLOCK_SIZES:
        return f"1x{conv.N} blocks; the int8 kernel takes N in {INT8_BLOCK_SIZES}"
    if tuple(conv.dilation) != (1, 1):
        return f"dilation={tuple(conv.dilation)}; the int8 kernel supports dilation 1 only"
    if explicit_padding(conv.padding, tuple(conv.kernel_size), tuple(conv.dilation)) is None:
        return f"padding={conv.padding!r} is asymmetric; the int8 kernel pads symmetrically only"
    if conv.in_channels % INPUT_CHANNEL_GROUP:
        stem = " (an image stem)" if conv.in_channels < INPUT_CHANNEL_GROUP else ""
        return (
            f"C_in={conv.in_channels}{stem} is not a multiple of {INPUT_CHANNEL_GROUP}; the int8 kernel reads "
            f"{INPUT_CHANNEL_GROUP} input channels per 32-bit word"
        )
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
    calls = Counter(node.target for node in gm.graph.nodes if node.op == "call_module")
    plan = Int8Plan()
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        if not isinstance(module, (nn.Conv2d, BlockSparseConv2d)):
            continue
        problem = _type_problem(module) or _module_problem(module) or _node_problem(node, calls, ranges)
        _assign(plan, node, problem, ranges, plan.convs, plan.fp32_convs)
    plan_int8_linears(gm, ranges, plan)
    return plan


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
    calls = Counter(node.target for node in gm.graph.nodes if node.op == "call_module")
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(module := gm.get_submodule(node.target), nn.Linear):
            continue
        problem = _linear_problem(module) or _node_problem(node, calls, ranges, rank=2, layout="(B, features)")
        _assign(plan, node, problem, ranges, plan.linears, plan.fp32_linears)
