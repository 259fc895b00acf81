"""The ``prepare`` pass: trace a CNN and make its eligible convs SUBP-masked."""

from __future__ import annotations

import copy

import torch.fx as fx
import torch.nn as nn

from subp_fx.algorithm.config import SparsityConfig, as_sparsity_config
from subp_fx.algorithm.modules import SUBPConv2d
from subp_fx.errors import SelectionError
from subp_fx.passes.select import select_convs
from subp_fx.passes.trace import trace


def subp_settings(config: SparsityConfig) -> dict:
    """The per-module settings a SUBPConv2d takes from the sparsity config."""
    return {
        "N": config.N,
        "prune_rate": config.prune_rate,
        "criterion": config.criterion,
        "alpha": config.alpha,
        "tau": config.tau,
        "schedule": config.schedule,
        "decay_start": config.decay_start,
        "decay_end": config.decay_end,
        "mode": config.mode,
        "pruned_weight_decay": config.pruned_weight_decay,
    }


def prepare(model: nn.Module, config: SparsityConfig | dict) -> fx.GraphModule:
    """Trace ``model`` with torch.fx and replace every selected ``nn.Conv2d`` by a ``SUBPConv2d``.

    Rewrites: the module behind each selected ``call_module`` node (same name, same weight and
    bias, a ``block_mask`` buffer of ones); the graph's nodes are unchanged, so a freshly
    prepared model computes exactly what the original did.
    Refuses: a model fx cannot trace (``UntraceableModelError``, naming the failing line), an
    include entry naming a conv that cannot be 1xN sparse or no conv at all (``SelectionError``),
    an invalid config (``ConfigError``), a non-zero prune rate that selects no conv at all
    (``SelectionError``: usually N divides no conv's output channels).
    The input model is left untouched: the GraphModule is built from a deep copy, so training it
    never moves the original's weights or batch-norm statistics.
    """
    config = as_sparsity_config(config)
    gm = trace(copy.deepcopy(model), config.leaf_modules)
    settings = subp_settings(config)
    decisions = select_convs(gm, config)
    if config.prune_rate > 0 and not any(decision.selected for decision in decisions):
        reasons = "; ".join(f"{d.name}: {d.reason}" for d in decisions[:8]) or "the model has no nn.Conv2d"
        raise SelectionError(
            f"no conv of {type(model).__name__} can be made 1xN sparse with N={config.N} ({reasons}"
            f"{'; ...' if len(decisions) > 8 else ''}). Choose an N that divides the convs' output channels, "
            "or fix sparsity.layers."
        )
    for decision in decisions:
        if decision.selected:
            gm.set_submodule(decision.name, SUBPConv2d.from_conv(decision.conv, **settings))
    gm.recompile()
    return gm


def subp_modules(gm: nn.Module) -> list[tuple[str, SUBPConv2d]]:
    """Every SUBP conv of a prepared model, in module order."""
    return [(name, module) for name, module in gm.named_modules() if isinstance(module, SUBPConv2d)]
