"""A model with G=4 input-channel-group masks compiles with the unchanged fp32 block-sparse kernels
(each kept group is 4 consecutive kept channels: K = kept groups x 4) and matches PyTorch eager."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from subp_fx.codegen.pipeline import compile  # noqa: E402
from subp_fx.passes import impose_random_masks, subp_modules  # noqa: E402

RELATIVE_TOLERANCE = 1e-4


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.conv1 = nn.Conv2d(32, 48, 1)
        self.fc = nn.Linear(48, 5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv1(x))
        return self.fc(x.mean((2, 3)))


def test_g4_random_masks_compile_and_match_eager():
    torch.manual_seed(0)
    gm = impose_random_masks(SmallNet(), prune_rate=0.5, N=16, seed=1, G=4).eval()
    kept = {name: module.channel_mask for name, module in subp_modules(gm)}
    assert set(kept) == {"conv3", "conv1"}
    for mask in kept.values():  # aligned runs of 4, half the groups kept
        groups = mask.reshape(mask.shape[0], -1, 4)
        assert bool((groups == groups[..., :1]).all()) and mask.sum(dim=1).unique().tolist() == [mask.shape[1] / 2]
    compiled = compile(gm, (2, 3, 9, 9), threads=1)
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = gm(x).numpy()
    got = compiled(x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=RELATIVE_TOLERANCE * np.abs(expected).max())
