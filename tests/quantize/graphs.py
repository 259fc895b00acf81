"""Inference graphs for the quantize tests, built with the TVM-free passes the compiler runs
(impose random uniform masks, fold batch norms, convert SUBP convs to BlockSparseConv2d)."""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from subp_fx.passes import convert, fold_batchnorm, impose_random_masks
from tests.toy_models import ToyNet, randomise_batchnorms, seeded


def inference_graph(
    model: nn.Module, prune_rate: float = 0.5, N: int = 16, G: int = 1, seed: int = 0
) -> fx.GraphModule:
    """``model`` with random uniform SUBP masks, batch norms folded and SUBP convs converted."""
    masked = impose_random_masks(model.eval(), prune_rate=prune_rate, N=N, seed=seed, G=G)
    return convert(fold_batchnorm(masked.eval())).eval()


def toy_graph(G: int = 1, seed: int = 0) -> fx.GraphModule:
    """ToyNet (tests/toy_models.py) at 50% with N=16 and input groups of ``G``, BN randomised."""
    return inference_graph(randomise_batchnorms(seeded(ToyNet, seed), seed), G=G, seed=seed)


class SignedNet(nn.Module):
    """Activations of both signs feeding convs (so zero points are not 0), the input itself
    feeding a conv (C_in = 4), a padded strided conv and a residual that reads a quantised
    tensor: input (B, 4, 12, 12)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 1)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        y = self.conv1(x)
        z = self.conv2(y)
        w = self.conv3(z) + z
        return self.head(torch.relu(w).mean((2, 3)))


SIGNED_INPUT_SHAPE = (1, 4, 12, 12)
