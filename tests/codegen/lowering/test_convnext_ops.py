"""ConvNeXt's ops against PyTorch eager: permutes kept as a storage order, LayerNorm (module and
LayerNorm2d's F.layer_norm with constant weights), Linear over a map's channels, GELU (erf and
tanh) fused into it, the layer scale (folded, or a per-axis multiply when it cannot be), and
their refusals; then torchvision's convnext_tiny sparse and dense."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torchvision.models.convnext import CNBlock, LayerNorm2d  # noqa: E402

from subp_fx.codegen.pipeline import compile  # noqa: E402
from subp_fx.errors import UnsupportedOpError  # noqa: E402
from subp_fx.passes import impose_random_masks  # noqa: E402

RELATIVE_TOLERANCE = 1e-4


def _check(model: nn.Module, shape: tuple[int, ...], seed: int = 0):
    model = model.eval()
    compiled = compile(model, shape, threads=1)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = model(x).numpy()
    got = compiled(x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=RELATIVE_TOLERANCE * np.abs(expected).max())
    return compiled


def _randomise_layer_scales(model: nn.Module) -> nn.Module:
    # torchvision initialises them to 1e-6, which would hide a wrong branch behind the residual.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, CNBlock):
                module.layer_scale.uniform_(0.5, 1.5)
    return model


class TanhBlock(nn.Module):
    """A ConvNeXt-like block in the other spellings: nn.LayerNorm over a torch.permute, GELU tanh
    (module and function), a Linear whose C_out (13) is padded, a scale along H that cannot fold."""

    def __init__(self, channels: int, height: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-5)
        self.up = nn.Linear(channels, 13)
        self.act = nn.GELU(approximate="tanh")
        self.down = nn.Linear(13, channels)
        self.row_scale = nn.Parameter(torch.rand(height, 1) + 0.5)

    def forward(self, x):
        y = self.norm(torch.permute(x, (0, 2, 3, 1)))
        y = F.gelu(self.down(self.act(self.up(y))), approximate="tanh")
        return x + self.row_scale * y.permute(0, 3, 1, 2)


class ConvNeXtLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 2, stride=2)
        self.stem_norm = LayerNorm2d(24)
        self.block = CNBlock(24, layer_scale=1.0, stochastic_depth_prob=0.0)
        self.tanh_block = TanhBlock(24, 5)
        self.down_norm = LayerNorm2d(24)
        self.down = nn.Conv2d(24, 40, 2, stride=2)
        self.width_norm = nn.LayerNorm(2)  # over W of a (B, C, H, W) map: a transpose each way
        self.fc = nn.Linear(40, 10)

    def forward(self, x):
        x = self.stem_norm(self.stem(x))
        x = self.tanh_block(self.block(x))
        # A conv reading a map left with H and W swapped: transposed back before the conv.
        x = self.down(self.down_norm(x).permute(0, 1, 3, 2))
        x = self.width_norm(x)
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("batch", [1, 3])
def test_convnext_ops_match_eager(batch):
    torch.manual_seed(0)
    model = _randomise_layer_scales(ConvNeXtLike())
    compiled = _check(model, (batch, 3, 10, 6))
    kernels = {entry.layer: entry.kernel for entry in compiled.manifest.kernels}
    assert kernels["block.block.3"].endswith("_gelu")  # pwconv1 -> GELU in one kernel
    assert kernels["tanh_block.up"].endswith("_gelu_tanh")
    assert "dense_conv1x1" in kernels["block.block.5"]


def test_layer_norm_over_two_axes_is_refused():
    class TwoAxes(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm((4, 4))
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.norm(x).mean((2, 3)))

    with pytest.raises(UnsupportedOpError, match=r"normalises \(4, 4\) of an input of shape \(1, 3, 4, 4\); layer"):
        compile(TwoAxes().eval(), (1, 3, 4, 4), threads=1)


def test_a_constant_read_by_an_op_that_takes_none_is_refused():
    class AddsConstant(nn.Module):
        def __init__(self):
            super().__init__()
            self.offset = nn.Parameter(torch.ones(1, 3, 4, 4))

        def forward(self, x):
            return torch.flatten(F.adaptive_avg_pool2d(x + self.offset, 1), 1)

    with pytest.raises(UnsupportedOpError, match=r"a constant of the model read by add; constants are supported"):
        compile(AddsConstant().eval(), (1, 3, 4, 4), threads=1)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "batch"), [("sparse", 4), ("dense", 1)])
def test_convnext_tiny_compiles_and_matches_eager(kind, batch):
    torch.manual_seed(0)
    model = _randomise_layer_scales(torchvision.models.convnext_tiny(num_classes=10)).eval()
    if kind == "sparse":
        model = impose_random_masks(model, 0.5, 16).eval()
    compiled = _check(model, (batch, 3, 64, 64))
    kinds = {entry.kind for entry in compiled.manifest.kernels}
    assert ("sparse" in kinds) == (kind == "sparse")
