"""The ``strip_masks`` pass: a plain dense model with the same numbers as a SUBP model."""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn as nn

from subp_fx.algorithm.modules import SUBPConv2d, conv_geometry, conv_options


def _dense_conv(conv: SUBPConv2d) -> nn.Conv2d:
    dense = nn.Conv2d(*conv_geometry(conv), **conv_options(conv))
    with torch.no_grad():
        dense.weight.copy_(conv.weight * conv.weight_mask)
        if conv.bias is not None:
            dense.bias.copy_(conv.bias)
    dense.train(conv.training)
    return dense


def strip_masks(gm: nn.Module) -> nn.Module:
    """Replace every ``SUBPConv2d`` by an ``nn.Conv2d`` whose weight is the masked weight.

    Rewrites: the module behind each SUBP conv node (graph unchanged); pruned weights become
    zeros, so the result computes exactly what the masked model does, with stock PyTorch
    modules only -- the dense baseline benchmarks compare against, and a model any exporter
    understands. Refuses nothing; the input is not modified (deep copy).
    """
    stripped = copy.deepcopy(gm)
    for name, module in list(stripped.named_modules()):
        if isinstance(module, SUBPConv2d):
            stripped.set_submodule(name, _dense_conv(module))
    if isinstance(stripped, fx.GraphModule):
        stripped.recompile()
    return stripped
