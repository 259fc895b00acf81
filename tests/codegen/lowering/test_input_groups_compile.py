"""A model with G=4 input-channel-group masks compiles with the fp32 block-sparse kernels (each kept
group is 4 consecutive kept channels: K = kept groups x 4; its 1x1 convs on the grouped kernel
where the target has 16 lanes) and matches PyTorch eager."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from subp_fx.codegen.kernels.isa import vector_isa  # noqa: E402
from subp_fx.codegen.pipeline import compile  # noqa: E402
from subp_fx.codegen.target import parse_target  # noqa: E402
from subp_fx.passes import impose_random_masks, subp_modules  # noqa: E402
from subp_fx.passes.strip_masks import strip_masks  # noqa: E402

RELATIVE_TOLERANCE = 1e-4
HOST_RUNS_AVX512 = vector_isa(parse_target("llvm -mcpu=native")).lanes == 16


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


@pytest.mark.parametrize("cpu, grouped", [("skylake-avx512", True), ("haswell", False)])
@pytest.mark.parametrize("dense", [False, True], ids=["g4-masks", "dense-twin"])
def test_1x1_convs_with_whole_groups_take_the_grouped_kernel_on_16_lane_targets(cpu, grouped, dense):
    """conv1 (1x1) runs on kernels.grouped_pointwise where the target has 16 lanes and its
    block-rows keep whole groups of 4 (G=4 masks, or the dense twin: every channel, packed at
    N=16), on the general kernel where the target has 8 lanes; 3x3 convs never; eager-equal."""
    torch.manual_seed(0)
    gm = impose_random_masks(SmallNet(), prune_rate=0.5, N=16, seed=1, G=4).eval()
    gm = strip_masks(gm).eval() if dense else gm
    compiled = compile(gm, (1, 3, 9, 9), target=f"llvm -mcpu={cpu}", threads=1)
    entries = {entry.layer: entry for entry in compiled.kernel_table}
    assert ("grouped-4" in entries["conv1"].tile) is grouped
    assert entries["conv1"].kept_per_row == (32 if dense else 16)
    assert "grouped-4" not in entries["conv3"].tile
    if grouped and not HOST_RUNS_AVX512:
        return
    x = torch.randn(1, 3, 9, 9, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = gm(x).numpy()
    np.testing.assert_allclose(compiled(x), expected, rtol=0, atol=RELATIVE_TOLERANCE * np.abs(expected).max())


class WideNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.conv1 = nn.Conv2d(32, 64, 1)
        self.fc = nn.Linear(64, 5)

    def forward(self, x):
        x = F.relu(self.conv1(F.relu(self.stem(x))))
        return self.fc(x.mean((2, 3)))


@pytest.mark.skipif(not HOST_RUNS_AVX512, reason="the host cannot run AVX-512 code")
def test_n32_block_rows_run_as_rows_of_16_on_the_grouped_kernel():
    torch.manual_seed(0)
    gm = impose_random_masks(WideNet(), prune_rate=0.5, N=32, seed=2, G=4).eval()
    compiled = compile(gm, (1, 3, 7, 7), target="llvm -mcpu=skylake-avx512", threads=1)
    entry = {entry.layer: entry for entry in compiled.kernel_table}["conv1"]
    assert "grouped-4" in entry.tile and entry.block_size == 32
    x = torch.randn(1, 3, 7, 7, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = gm(x).numpy()
    np.testing.assert_allclose(compiled(x), expected, rtol=0, atol=RELATIVE_TOLERANCE * np.abs(expected).max())
