"""The once-per-epoch SUBP mask update of every SUBP conv in a model."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn

from subp_fx.algorithm.modules import MaskUpdate
from subp_fx.algorithm.seeding import seeded_generator
from subp_fx.passes.prepare import subp_modules


def mask_generator(seed: int, epoch: int, layer_index: int) -> torch.Generator:
    """The regrowth sampler's generator for one layer and epoch: always a CPU generator.

    Derived from (seed, epoch, layer) alone, so every rank draws the same blocks and a resumed
    run draws what the uninterrupted run would have drawn, with no sampler state to save.
    On the CPU whatever device the weights are on: a CUDA generator draws other numbers from the
    same seed, so a run resumed on another device, or a CPU check of a GPU run, would regrow other
    blocks. ``uniform_block_mask`` scores on the weights' device and does the (small) selection
    where the generator is.
    """
    return seeded_generator(seed, epoch, layer_index)


@torch.no_grad()
def update_masks(gm: nn.Module, epoch: int, seed: int = 0, broadcast: bool = True) -> dict[str, MaskUpdate]:
    """Recompute the block mask of every SUBP conv for ``epoch``; returns per-layer telemetry.

    Under torch.distributed the masks are computed from identical weights with identical
    generators on every rank, then (``broadcast``) sent from rank 0 so they stay bit-identical
    even if some kernel was nondeterministic. The trainer passes ``broadcast=False`` to compare
    the ranks' masks first, and broadcasts itself.
    """
    updates = {}
    distributed = broadcast and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    for layer_index, (name, module) in enumerate(subp_modules(gm)):
        generator = mask_generator(seed, epoch, layer_index)  # CPU: same draws on every device
        updates[name] = module.update_mask(epoch, generator=generator)
        if distributed:
            dist.broadcast(module.block_mask, src=0)
    return updates


def decay_pruned_weights(gm: nn.Module) -> None:
    """Apply every SUBP conv's pruned-weight decay to its gradient (after AMP unscaling)."""
    for _, module in subp_modules(gm):
        module.decay_pruned_weights()


def masks_are_final(gm: nn.Module) -> dict[str, str]:
    """Layers whose mask is not uniform at the target rate, with what is wrong (empty: all good)."""
    problems = {}
    for name, module in subp_modules(gm):
        per_row = module.channel_mask.sum(dim=1)  # input channels, whatever the block's G
        target = module.final_kept_per_row
        if not module.is_uniform():
            problems[name] = f"rows keep between {int(per_row.min())} and {int(per_row.max())} input channels"
        elif int(per_row[0]) != target:
            problems[name] = f"keeps {int(per_row[0])} per row, target {target}"
    return problems
