"""The ``impose_random_masks`` pass: uniform random block masks, to measure speed before training."""

from __future__ import annotations

import copy
import numbers

import torch
import torch.fx as fx
import torch.nn as nn

from subp_fx.algorithm.config import LayerSelection
from subp_fx.algorithm.masks import kept_per_row
from subp_fx.algorithm.modules import SUBPConv2d
from subp_fx.algorithm.seeding import seeded_generator
from subp_fx.errors import ConfigError
from subp_fx.passes.capture import capture_for_training
from subp_fx.passes.prepare import prepare, subp_modules


def _check_arguments(prune_rate, N, seed, G) -> None:
    if isinstance(prune_rate, bool) or not isinstance(prune_rate, numbers.Real) or not 0 <= prune_rate < 1:
        raise ConfigError(
            f"prune_rate must be a number in [0, 1) (the fraction of C_in pruned per block-row), got {prune_rate!r}"
        )
    if isinstance(N, bool) or not isinstance(N, numbers.Integral) or N < 1:
        raise ConfigError(f"N must be a positive integer (output channels per block), got {N!r}")
    if isinstance(G, bool) or not isinstance(G, numbers.Integral) or G < 1:
        raise ConfigError(f"G must be a positive integer (consecutive input channels per block), got {G!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")


def layer_generator(seed: int, layer_index: int) -> torch.Generator:
    """The CPU generator drawing layer ``layer_index``'s random mask, from (seed, layer) alone."""
    return seeded_generator(seed, layer_index)


def random_uniform_block_mask(rows: int, in_channels: int, kept: int, generator: torch.Generator) -> torch.Tensor:
    """A (rows, in_channels) 0/1 float mask keeping ``kept`` input channels per row, each row's
    set drawn uniformly at random (independently of the other rows). For G-channel blocks pass
    the number of groups and of kept groups: the mask is then over groups."""
    chosen = torch.rand(rows, in_channels, generator=generator).argsort(dim=1)[:, :kept]
    return torch.zeros(rows, in_channels).scatter_(1, chosen, 1.0)


def _prepared_copy(model: nn.Module, prune_rate: float, N: int, G: int, layers) -> fx.GraphModule | nn.Module:
    """A copy of ``model`` with SUBP convs: ``model``'s own if it has some, else prepared. A
    GraphModule when fx can trace the model, else the model itself (``module_swap`` capture)."""
    existing = [module for module in model.modules() if isinstance(module, SUBPConv2d)]
    if not existing:
        config = {"N": N, "input_group": G, "prune_rate": prune_rate, "decay_start": 0, "decay_end": 0}
        if layers is not None:
            config["layers"] = layers.model_dump() if isinstance(layers, LayerSelection) else layers
        return prepare(model, config)
    if layers is not None:
        raise ConfigError(
            f"layers={layers!r} selects convs to prepare, but {type(model).__name__} already has SUBP convs "
            "(every one gets a random mask); pass layers=None, or pass the model before prepare"
        )
    other_N = sorted({module.N for module in existing if module.N != N})
    if other_N:
        raise ConfigError(
            f"N={N} was asked for, but {type(model).__name__}'s SUBP convs were prepared with N={other_N}; "
            "a mask's block height is fixed by prepare: pass that N, or the model before prepare"
        )
    other_G = sorted({module.G for module in existing if module.G != G})
    if other_G:
        raise ConfigError(
            f"G={G} was asked for, but {type(model).__name__}'s SUBP convs were prepared with G={other_G}; "
            "a mask's input-channel group is fixed by prepare: pass that G, or the model before prepare"
        )
    return capture_for_training(copy.deepcopy(model)).model


@torch.no_grad()
def impose_random_masks(
    model: nn.Module, prune_rate: float, N: int, seed: int = 0, layers=None, G: int = 1
) -> fx.GraphModule | nn.Module:
    """Give every SUBP conv a final-looking uniform random block mask at ``prune_rate``.

    For timing a sparse model before (or without) training it. Every block-row of a conv with
    C_in inputs keeps ``C_in - int(prune_rate * C_in)`` input channels, chosen uniformly at random
    per row (with ``G`` > 1: ``C_in/G - int(prune_rate * C_in/G)`` aligned groups of G consecutive
    channels, the layout an int8 kernel needs) by a generator derived from (``seed``, layer index
    in module order), so the same call gives the same masks.

    Rewrites: a model (GraphModule or plain ``nn.Module``) that already has SUBP convs keeps its
    graph and modules; each SUBP conv gets the random mask and ``prune_rate`` as its target rate
    (so ``masks_are_final`` holds). A model without SUBP convs is first ``prepare``d with
    ``{"N": N, "input_group": G, "prune_rate": prune_rate, "decay_start": 0, "decay_end": 0}`` and
    ``layers`` (a
    ``LayerSelection`` or its dict; default: the default selection rule).
    Refuses (``ConfigError`` naming the argument): ``prune_rate`` outside [0, 1), ``N`` or ``G`` < 1,
    ``seed`` < 0, an ``N`` or ``G`` differing from the model's SUBP convs', ``layers`` for a model that is
    already prepared; and whatever ``prepare`` refuses (e.g. no conv that N can block).

    ``model`` is not modified (the result is built from a deep copy).
    """
    _check_arguments(prune_rate, N, seed, G)
    gm = _prepared_copy(model, float(prune_rate), int(N), int(G), layers)
    for layer_index, (_, conv) in enumerate(subp_modules(gm)):
        rows, groups = conv.block_mask.shape  # groups = C_in / G
        kept = kept_per_row(prune_rate, groups)  # in groups
        mask = random_uniform_block_mask(rows, groups, kept, layer_generator(seed, layer_index))
        conv.block_mask.copy_(mask)
        conv.prune_rate = float(prune_rate)
    return gm
