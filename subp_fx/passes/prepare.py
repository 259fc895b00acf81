"""The ``prepare`` pass: trace a CNN and make its eligible convs SUBP-masked."""

from __future__ import annotations

import copy

import torch.fx as fx
import torch.nn as nn

from subp_fx.algorithm.config import SparsityConfig, as_sparsity_config
from subp_fx.algorithm.modules import SUBPConv2d
from subp_fx.errors import SelectionError
from subp_fx.passes.capture import capture_for_training
from subp_fx.passes.select import select_convs


def subp_settings(config: SparsityConfig) -> dict:
    """The per-module settings a SUBPConv2d takes from the sparsity config."""
    return {
        "N": config.N,
        "G": config.input_group,
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


def prepare(model: nn.Module, config: SparsityConfig | dict) -> fx.GraphModule | nn.Module:
    """Capture ``model`` and replace every selected ``nn.Conv2d`` by a ``SUBPConv2d``.

    Capture (``config.capture``, see ``passes.capture``): ``symbolic_trace`` returns a torch.fx
    GraphModule; ``module_swap`` returns the model itself (a copy) with its convs swapped in
    place, for a forward fx cannot trace (shape-dependent Python, data-dependent asserts);
    ``auto`` (default) tries the first and falls back to the second (``dry_run`` says which was
    used and why). Everything downstream (training, ``update_masks``, checkpoints, compile)
    accepts both.
    Rewrites: the module behind each selected conv (same name, same weight and bias, a
    ``block_mask`` buffer of ones); the graph's nodes (or the forward) are unchanged, so a
    freshly prepared model computes exactly what the original did.
    Refuses: with ``capture: symbolic_trace``, a model fx cannot trace (``UntraceableModelError``,
    naming the failing line); an include entry naming a conv that cannot be 1xN sparse or no
    conv at all (``SelectionError``),
    an invalid config (``ConfigError``), a non-zero prune rate that selects no conv at all
    (``SelectionError``: usually N divides no conv's output channels).
    The input model is left untouched: the GraphModule is built from a deep copy, so training it
    never moves the original's weights or batch-norm statistics.
    """
    config = as_sparsity_config(config)
    gm = capture_for_training(copy.deepcopy(model), config.leaf_modules, config.capture).model
    settings = subp_settings(config)
    decisions = select_convs(gm, config)
    if config.prune_rate > 0 and not any(decision.selected for decision in decisions):
        reasons = "; ".join(f"{d.name}: {d.reason}" for d in decisions[:8]) or "the model has no nn.Conv2d"
        raise SelectionError(
            f"no conv of {type(model).__name__} can be made 1xN sparse with N={config.N}"
            f"{f' and input_group={config.input_group}' if config.input_group != 1 else ''} ({reasons}"
            f"{'; ...' if len(decisions) > 8 else ''}). Choose an N that divides the convs' output channels "
            "(and an input_group that divides their input channels), or fix sparsity.layers."
        )
    for decision in decisions:
        if decision.selected:
            gm.set_submodule(decision.name, SUBPConv2d.from_conv(decision.conv, **settings))
    if isinstance(gm, fx.GraphModule):
        gm.recompile()
    return gm


def subp_modules(gm: nn.Module) -> list[tuple[str, SUBPConv2d]]:
    """Every SUBP conv of a prepared model, in module order."""
    return [(name, module) for name, module in gm.named_modules() if isinstance(module, SUBPConv2d)]
