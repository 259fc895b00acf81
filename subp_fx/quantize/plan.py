"""``plan_int8``: which convs of an inference graph run in int8, and which tensors get quantised.

A conv runs in int8 when the int8 kernel can compute it: a ``BlockSparseConv2d`` of N 16 or 32,
or an ``nn.Conv2d`` with ``groups == 1``, dilation 1, symmetric zero padding and a 4-d input. The
kernel reads 4 input channels as one 32-bit word: a C_in that is not a multiple of 4 (an RGB or
grayscale stem) is run on its quantised input stored with zero-point channels up to the next
multiple of 4, whose weights are zero (the RGB ResNet stem's kernel timed alone, Ice Lake, 2
threads, under load: 0.48-0.59 ms in int8 against 1.58-1.74 ms in fp32). Every other conv stays
fp32, with the reason (depthwise / grouped, ...); linear layers are fp32.

Every tensor (fx node output) that feeds at least one int8 conv is quantised for *all* its uses:
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
    - ``fp32_convs``: every other ``nn.Conv2d`` / ``BlockSparseConv2d`` call -> why it stays fp32.
    """

    activations: dict[str, ActivationQuant] = field(default_factory=dict)
    convs: dict[str, str] = field(default_factory=dict)
    fp32_convs: dict[str, str] = field(default_factory=dict)

    def input_quant(self, conv: str) -> ActivationQuant:
        """The uint8 parameters of int8 conv ``conv``'s input (``KeyError`` naming the int8 convs
        when ``conv`` is not one)."""
        if conv not in self.convs:
            raise KeyError(f"{conv!r} is not an int8 conv of this plan; its int8 convs are {sorted(self.convs)}")
        return self.activations[self.convs[conv]]


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
    return None


def _node_problem(node: fx.Node, calls: Counter, ranges: ActivationRanges) -> str | None:
    """Why this conv call cannot be int8 given the graph and the calibration, or None."""
    if calls[node.target] > 1:
        return f"the module is called {calls[node.target]} times; an int8 conv needs one input tensor"
    source = conv_input(node)
    if source is None:
        return "its input is not a tensor computed by the graph"
    if source.name not in ranges:
        return f"its input {source.name!r} has no calibrated range (calibrate the same graph)"
    shape = ranges.shapes.get(source.name)
    if shape is None or len(shape) != 4:
        return f"its input {source.name!r} has shape {shape}; the int8 kernel takes 4-d (B, C, H, W) inputs"
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
        if problem:
            plan.fp32_convs[node.target] = problem
            continue
        source = conv_input(node).name
        plan.convs[node.target] = source
        plan.activations.setdefault(source, ranges.activation_quant(source))
    return plan
