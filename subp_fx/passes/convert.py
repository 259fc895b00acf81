"""The ``convert`` pass: every trained SUBP conv becomes its compact BlockSparseConv2d."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch.fx as fx
import torch.nn as nn

from subp_fx.algorithm.block_sparse import BlockSparseConv2d, block_sparse_problem
from subp_fx.errors import ConversionError
from subp_fx.passes.prepare import subp_modules
from subp_fx.passes.trace import trace

# Key of GraphModule.meta written by convert: a list of ConvertedConv, in execution order.
CONVERTED_META_KEY = "subp_converted"


@dataclass(frozen=True)
class ConvertedConv:
    """One conv ``convert`` made block-sparse: its name in the model and its geometry."""

    name: str
    N: int
    K: int
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] | str
    dilation: tuple[int, int]
    G: int = 1  # kept input channels come in aligned runs of G (sparsity.input_group)

    @classmethod
    def of(cls, name: str, conv: BlockSparseConv2d) -> ConvertedConv:
        return cls(
            name=name,
            N=conv.N,
            K=conv.K,
            in_channels=conv.in_channels,
            out_channels=conv.out_channels,
            kernel_size=conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            G=conv.G,
        )


def _execution_order(gm: fx.GraphModule, names: list[str]) -> list[str]:
    called = list(
        dict.fromkeys(node.target for node in gm.graph.nodes if node.op == "call_module" and node.target in names)
    )
    return called + [name for name in names if name not in called]


def convert(gm: nn.Module) -> fx.GraphModule:
    """Replace every ``SUBPConv2d`` by the ``BlockSparseConv2d`` holding only its kept blocks.

    Rewrites: the module behind each SUBP conv (same name, so the graph's nodes are unchanged);
    the result computes what the masked model computes in eager mode (``BlockSparseConv2d``'s
    forward is exact, see its docstring). Every other module, BatchNorm included, is kept: run
    ``fold_batchnorm`` before or after. Each compact module starts in its SUBP conv's mode.
    Refuses, before changing anything: any SUBP conv whose block mask is not uniform, not 0/1
    or keeps nothing, and any with a non-zero ``padding_mode`` (one ``ConversionError`` naming
    every such layer, with each block-row's kept count).

    ``gm`` is not modified: the result is built from a deep copy (a plain ``nn.Module`` is traced
    first). ``result.meta[CONVERTED_META_KEY]`` is the list of ``ConvertedConv`` (name, N, K,
    C_in, C_out, kernel size, stride, padding, dilation) of the converted layers in execution
    order; empty when the model has no SUBP conv. A conv trained with input-channel groups
    (G > 1) converts like any other: its kept channels are G-aligned runs (``ConvertedConv.G``).
    """
    gm = trace(copy.deepcopy(gm))
    subp = dict(subp_modules(gm))
    problems = [f"layer {name!r}: {problem}" for name, conv in subp.items() if (problem := block_sparse_problem(conv))]
    if problems:
        raise ConversionError(f"{len(problems)} SUBP conv(s) cannot be made block-sparse: " + "; ".join(problems))
    converted = []
    for name in _execution_order(gm, list(subp)):
        compact = BlockSparseConv2d.from_subp(subp[name], name=name)
        gm.set_submodule(name, compact)
        converted.append(ConvertedConv.of(name, compact))
    gm.recompile()
    gm.meta[CONVERTED_META_KEY] = converted
    return gm
