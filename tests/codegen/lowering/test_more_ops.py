"""Ops beyond the paper models: SiLU / sigmoid / hardsigmoid (fused into conv and depthwise conv
kernels), squeeze-and-excitation's gate multiply, spatial mean, functional pools, stochastic depth;
each against PyTorch eager, and their refusals."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torchvision.ops import StochasticDepth  # noqa: E402

from subp_fx.codegen.pipeline import compile  # noqa: E402
from subp_fx.errors import CompiledInputError, UnsupportedOpError  # noqa: E402
from subp_fx.passes import impose_random_masks  # noqa: E402

RELATIVE_TOLERANCE = 1e-4


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, gate: nn.Module):
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // 4, 1)
        self.expand = nn.Conv2d(channels // 4, channels, 1)
        self.gate = gate

    def forward(self, x):
        scale = self.gate(self.expand(F.silu(self.reduce(F.adaptive_avg_pool2d(x, 1)))))
        return x * scale


class OpZoo(nn.Module):
    """Every new op in one small model, in the spellings torchvision's families use."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.act = nn.SiLU()
        self.se_sigmoid = SqueezeExcite(32, nn.Sigmoid())
        self.se_hard = SqueezeExcite(32, nn.Hardsigmoid())
        self.conv = nn.Conv2d(32, 32, 3, padding=1)
        self.drop_path = StochasticDepth(0.2, "row")
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.act(self.stem(x))
        x = self.se_hard(self.se_sigmoid(x))
        x = x + self.drop_path(torch.sigmoid(self.conv(x)) * x)
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        x = F.avg_pool2d(x, kernel_size=2)
        pooled = torch.cat([x.mean((2, 3)), x.mean([-1, -2], keepdim=True).flatten(1)], dim=1)
        return self.fc(F.hardsigmoid(pooled))


def _check(model: nn.Module, shape: tuple[int, ...], seed: int = 0) -> None:
    model = model.eval()
    compiled = compile(model, shape, threads=1)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = model(x).numpy()
    got = compiled(x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=RELATIVE_TOLERANCE * np.abs(expected).max())


@pytest.mark.parametrize("batch", [1, 2])
def test_op_zoo_matches_eager(batch):
    torch.manual_seed(0)
    _check(OpZoo(), (batch, 3, 16, 16))


class InvertedResidual(nn.Module):
    """MobileNetV3 / EfficientNet's block: expand -> hardswish, depthwise -> SiLU, an SE gate,
    project, + x (no activation after the add)."""

    def __init__(self, channels: int = 16, hidden: int = 40):
        super().__init__()
        self.expand = nn.Conv2d(channels, hidden, 1)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.se = SqueezeExcite(hidden, nn.Hardsigmoid())
        self.project = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        y = F.silu(self.depthwise(F.hardswish(self.expand(x))))
        return x + self.project(self.se(y))


def _called_kernels(module) -> list[str]:
    from tvm import relax

    return [
        binding.value.args[0].name_hint
        for binding in module["main"].body.blocks[0].bindings
        if isinstance(binding.value, relax.Call) and binding.value.op.name == "relax.call_tir"
    ]


def test_silu_sigmoid_and_the_hard_forms_fuse_into_convs_and_depthwise_convs():
    from subp_fx.codegen.lowering.lower import lower_graph

    torch.manual_seed(0)
    lowered = lower_graph(OpZoo().eval(), (1, 3, 16, 16), "llvm -mcpu=native")
    epilogues = {entry.layer: entry.epilogue for entry in lowered.kernel_table}
    assert epilogues["stem"] == "bias+silu" and epilogues["se_sigmoid.reduce"] == "bias+silu"
    assert epilogues["se_sigmoid.expand"] == "bias+sigmoid" and epilogues["se_hard.expand"] == "bias+hardsigmoid"
    assert epilogues["conv"] == "bias+sigmoid"  # torch.sigmoid(conv(x)) * x: the gate in the conv
    # The one activation left on its own follows a concat, not a conv.
    called = _called_kernels(lowered.module)
    assert [kernel for kernel in called if kernel.startswith(("silu_", "sigmoid_", "hardsigmoid_"))] == [
        "hardsigmoid_1x64"
    ]

    block = InvertedResidual().eval()
    lowered = lower_graph(block, (1, 16, 9, 7), "llvm -mcpu=native")
    by_layer = {entry.layer: entry for entry in lowered.kernel_table}
    assert by_layer["expand"].epilogue == "bias+hardswish"
    assert (by_layer["depthwise"].kind, by_layer["depthwise"].epilogue) == ("depthwise", "bias+silu")
    assert by_layer["project"].epilogue == "bias+residual"
    called = _called_kernels(lowered.module)
    assert not [kernel for kernel in called if kernel.startswith(("silu_", "hardswish_", "hardsigmoid_", "add_"))]


@pytest.mark.parametrize("batch", [1, 3])
def test_inverted_residual_with_fused_activations_matches_eager(batch):
    torch.manual_seed(0)
    _check(InvertedResidual(), (batch, 16, 9, 7))


def test_a_scalar_multiply_is_refused_for_now_naming_what_is_supported():
    class Scaled(nn.Module):
        def forward(self, x):
            return torch.flatten(F.adaptive_avg_pool2d(x * 0.5, 1), 1)

    with pytest.raises(UnsupportedOpError, match=r"multiplies \(1, 3, 8, 8\) and 0.5; supported is"):
        compile(Scaled().eval(), (1, 3, 8, 8), threads=1)


def test_a_mean_over_channels_is_refused():
    class ChannelMean(nn.Module):
        def forward(self, x):
            return torch.flatten(F.adaptive_avg_pool2d(x.mean(1, keepdim=True), 1), 1)

    with pytest.raises(UnsupportedOpError, match=r"a mean over dim=1; supported is the mean over the spatial axes"):
        compile(ChannelMean().eval(), (1, 3, 8, 8), threads=1)


def test_stochastic_depth_in_training_mode_is_refused():
    model = OpZoo().eval()
    model.drop_path.train()
    with pytest.raises(UnsupportedOpError, match="stochastic depth is in training mode"):
        compile(model, (1, 3, 16, 16), threads=1)


def test_an_input_too_small_for_the_model_is_refused_with_its_shape():
    model = torchvision.models.inception_v3(num_classes=10, aux_logits=False, init_weights=False).eval()
    with pytest.raises(CompiledInputError, match=r"does not run on an input of shape \(1, 3, 64, 64\)"):
        compile(model, (1, 3, 64, 64), threads=1)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("mobilenet_v3_small", 64),
        ("efficientnet_b0", 64),
        ("mnasnet0_5", 64),
        ("regnet_y_400mf", 64),
        ("resnext50_32x4d", 32),
        ("inception_v3", 80),
        ("alexnet", 64),  # adaptive pooling of a 1x1 map to 6x6
    ],
)
def test_torchvision_families_with_se_silu_mean_and_groups_compile_sparse_and_match_eager(name, size):
    torch.manual_seed(0)
    extra = {"aux_logits": False, "init_weights": False} if name == "inception_v3" else {}
    model = getattr(torchvision.models, name)(num_classes=10, **extra).eval()
    sparse = impose_random_masks(model, 0.5, 16).eval()
    _check(sparse, (2, 3, size, size))


@pytest.mark.parametrize(("size", "out"), [(5, 3), (2, 7), (7, 7), (13, 6)])
def test_adaptive_average_pool_to_any_size_matches_eager(size, out):
    class Adaptive(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(out)

        def forward(self, x):
            return torch.flatten(self.pool(torch.relu(self.conv(x))), 1)

    torch.manual_seed(0)
    _check(Adaptive(), (2, 3, size, size + 1))


class LeakyNet(nn.Module):
    """timm's CSP blocks: conv -> LeakyReLU (fused into the conv), and a leaky ReLU after an add."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.act = nn.LeakyReLU()
        self.head = nn.Conv2d(16, 16, 1)

    def forward(self, x):
        y = self.act(self.conv(x))
        return F.leaky_relu(self.head(y) + y)


def test_leaky_relu_at_the_default_slope_matches_eager_and_fuses_into_the_conv():
    torch.manual_seed(0)
    model = LeakyNet().eval()
    _check(model, (2, 3, 6, 5))
    compiled = compile(model, (2, 3, 6, 5), threads=1)
    assert compiled.kernel_table[0].epilogue == "bias+leaky_relu"


class DifferenceNet(nn.Module):
    """FastViT's RepMixer: ``x + layer_scale * (mixer(x) - norm(x))``, with MobileOne's ``+ 0`` for
    an absent branch, and a difference of permuted (B, H, W, C) tensors."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.mixer = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.norm = nn.Conv2d(16, 16, 1)
        self.layer_scale = nn.Parameter(torch.rand(16, 1, 1) + 0.5)

    def forward(self, x):
        x = torch.relu(self.stem(x)) + 0
        x = x + self.layer_scale * (self.mixer(x) - self.norm(x))
        y = x.permute(0, 2, 3, 1)
        return torch.sub(y, torch.relu(y)).permute(0, 3, 1, 2)


def test_subtracting_same_shape_tensors_matches_eager():
    torch.manual_seed(0)
    _check(DifferenceNet(), (2, 3, 6, 5))


def test_a_broadcast_subtract_is_refused():
    class Broadcast(nn.Module):
        def forward(self, x):
            return x - x.mean((2, 3), keepdim=True)

    with pytest.raises(UnsupportedOpError, match=r"subtracts \(1, 3, 1, 1\) from \(1, 3, 4, 4\); only the difference"):
        compile(Broadcast().eval(), (1, 3, 4, 4), threads=1)


class TorchMaxPools(nn.Module):
    """``torch.max_pool2d``, the spelling other graph captures record, with its stride left out
    (its default is an empty list: stride = kernel) and given positionally."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv(x)), 2)
        return torch.max_pool2d(x, 3, 2, 1)


def test_torch_max_pool2d_matches_eager():
    torch.manual_seed(0)
    _check(TorchMaxPools(), (1, 3, 12, 12))
