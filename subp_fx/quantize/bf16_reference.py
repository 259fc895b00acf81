"""``bf16_reference``: the eager model a bf16 build computes, as a GraphModule.

A bf16 build (``codegen.lowering.bf16``) runs some convs on ``vdpbf16ps``: their input and their
weights (batch norm already folded in) are rounded to bf16, to nearest even, and the products are
summed in float32; their bias, and everything else in the graph, stay float32. The reference does
exactly that in PyTorch: each such layer is replaced by :class:`Bf16InputsReference`, a copy of
it whose weights are rounded to bf16 (and back to float32, where torch computes) and which rounds
its input the same way. The compiled model is checked against it within float32 summation-order
differences; against the fp32 model it differs by bf16's 8-bit mantissa.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.fx as fx
import torch.nn as nn


def round_to_bf16(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` rounded to the nearest bf16 value (ties to even), as float32."""
    return tensor.to(torch.bfloat16).to(torch.float32)


class Bf16InputsReference(nn.Module):
    """``layer`` (a conv, block-sparse conv or linear) with bf16-rounded weights and input; its
    bias (any parameter named ``bias``) stays float32, as the kernel adds it to the float32 sums."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = copy.deepcopy(layer)
        with torch.no_grad():
            for name, parameter in self.layer.named_parameters():
                if name.rpartition(".")[2] != "bias" and parameter.is_floating_point():
                    parameter.copy_(round_to_bf16(parameter))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(round_to_bf16(x))


def bf16_reference(gm: fx.GraphModule, layers: Iterable[str]) -> fx.GraphModule:
    """A copy of ``gm`` (not modified) in which each module named in ``layers`` (the kernel
    table's ``layer`` of the entries built in bf16) is a :class:`Bf16InputsReference`.
    ``ValueError`` names any layer ``gm`` does not call."""
    gm = copy.deepcopy(gm)
    layers = set(layers)
    called = {str(node.target) for node in gm.graph.nodes if node.op == "call_module"}
    missing = sorted(layers - called)
    if missing:
        raise ValueError(f"bf16 layers {missing} are not modules this graph calls; valid are {sorted(called)}")
    for target in layers:
        parent, _, attribute = target.rpartition(".")
        owner = gm.get_submodule(parent)
        setattr(owner, attribute, Bf16InputsReference(getattr(owner, attribute)))
    gm.recompile()
    return gm
