"""The fold_batchnorm pass: BN nodes gone, numerics kept, refusals and leave-alones explained."""

from __future__ import annotations

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

from subp_fx.algorithm.block_sparse import BlockSparseConv2d
from subp_fx.algorithm.modules import SUBPConv2d
from subp_fx.errors import ConversionError
from subp_fx.passes import convert, fold_batchnorm, impose_random_masks, trace
from subp_fx.passes.fold_batchnorm import FOLDED_META_KEY, UNFOLDED_META_KEY
from tests.toy_models import TOY_DEFAULT_SPARSE, ToyNet, seeded, toy_input

TOY_FOLDS = {"bn": "stem", "block.bn1": "block.conv1", "block.bn2": "block.conv2"}


def _count_calls(gm: fx.GraphModule, module_type: type) -> int:
    return sum(
        1
        for node in gm.graph.nodes
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), module_type)
    )


def _randomise_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d) and module.track_running_stats:
                features = module.num_features
                module.running_mean.copy_(torch.randn(features, generator=generator))
                module.running_var.copy_(torch.rand(features, generator=generator) * 2 + 0.1)
                if module.affine:
                    module.weight.copy_(torch.randn(features, generator=generator))
                    module.bias.copy_(torch.randn(features, generator=generator))
    return model


def _assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, relative: float = 1e-5) -> None:
    scale = expected.abs().max().item()
    assert scale > 1e-3, "the reference output is degenerate"
    assert (actual - expected).abs().max().item() <= relative * scale


def test_toy_net_folds_every_conv_bn_pair():
    model = _randomise_batchnorm(seeded(ToyNet), seed=3).eval()
    gm = fold_batchnorm(model)
    reference = fx.symbolic_trace(model)
    assert _count_calls(reference, nn.BatchNorm2d) == 3
    assert _count_calls(gm, nn.BatchNorm2d) == 0
    assert _count_calls(gm, nn.Conv2d) == _count_calls(reference, nn.Conv2d) == 8
    assert len(gm.graph.nodes) == len(reference.graph.nodes) - 3
    assert not [name for name, module in gm.named_modules() if isinstance(module, nn.BatchNorm2d)]
    assert gm.meta[FOLDED_META_KEY] == TOY_FOLDS
    assert gm.meta[UNFOLDED_META_KEY] == {}
    assert gm.get_submodule("stem").bias is not None  # created: the stem had none
    for batch in (1, 3):
        x = toy_input(batch, (batch, 3, 16, 16))
        with torch.no_grad():
            _assert_close_to_scale(gm(x), model(x))


def test_input_untouched_and_modes_kept():
    model = _randomise_batchnorm(seeded(ToyNet), seed=4).eval()
    gm_in = fx.symbolic_trace(model)
    before = {key: value.clone() for key, value in gm_in.state_dict().items()}
    nodes_before = len(gm_in.graph.nodes)
    gm = fold_batchnorm(gm_in)
    assert len(gm_in.graph.nodes) == nodes_before
    assert gm_in.state_dict().keys() == before.keys()
    assert all(torch.equal(gm_in.state_dict()[key], value) for key, value in before.items())
    assert gm_in.get_submodule("stem").bias is None
    # Every module keeps its mode (fx's own path containers such as "block" are left out).
    assert not gm.training
    assert not any(module.training for module in gm.modules() if not list(module.children()))


def test_training_mode_refused_naming_the_batch_norm():
    model = seeded(ToyNet).train()
    with pytest.raises(ConversionError, match=r"batch norm 'bn' \(and 2 more\) is in training mode.*eval\(\)"):
        fold_batchnorm(model)
    assert model.training and model.bn.training  # the pass changed no mode
    model.eval()
    model.block.bn2.train()
    with pytest.raises(ConversionError, match="batch norm 'block.bn2' is in training mode"):
        fold_batchnorm(model)


def test_subp_conv_keeps_its_block_mask():
    model = _randomise_batchnorm(seeded(ToyNet), seed=5).eval()
    masked = impose_random_masks(model, 0.5, 16, seed=2).eval()
    gm = fold_batchnorm(masked)
    for name in TOY_DEFAULT_SPARSE:
        folded, original = gm.get_submodule(name), masked.get_submodule(name)
        assert type(folded) is SUBPConv2d
        assert torch.equal(folded.block_mask, original.block_mask), name
    assert not torch.equal(gm.get_submodule("block.conv1").weight, masked.get_submodule("block.conv1").weight)
    x = toy_input(6, (3, 3, 16, 16))
    with torch.no_grad():
        _assert_close_to_scale(gm(x), masked(x))


def test_block_sparse_conv_folds_into_its_values():
    model = _randomise_batchnorm(seeded(ToyNet), seed=6).eval()
    compact = convert(impose_random_masks(model, 0.5, 16, seed=1).eval())
    assert type(compact.get_submodule("block.conv1")) is BlockSparseConv2d
    gm = fold_batchnorm(compact)
    assert gm.meta[FOLDED_META_KEY] == TOY_FOLDS
    folded = gm.get_submodule("block.conv1")
    assert torch.equal(folded.indices, compact.get_submodule("block.conv1").indices)
    assert folded.bias is not None
    x = toy_input(7, (3, 3, 16, 16))
    with torch.no_grad():
        _assert_close_to_scale(gm(x), compact(x))


class _ConvBN(nn.Module):
    def __init__(self, bn: nn.BatchNorm2d, conv_bias: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1, bias=conv_bias)
        self.bn = bn

    def forward(self, x):
        return self.bn(self.conv(x))


@pytest.mark.parametrize(
    "bn, conv_bias",
    [(nn.BatchNorm2d(8), True), (nn.BatchNorm2d(8, affine=False), False), (nn.BatchNorm2d(8, eps=0.1), False)],
    ids=["conv bias", "non-affine", "large eps"],
)
def test_fold_math(bn, conv_bias):
    torch.manual_seed(0)
    model = _randomise_batchnorm(_ConvBN(bn, conv_bias), seed=8).eval()
    with torch.no_grad():
        if conv_bias:
            model.conv.bias.normal_()
    gm = fold_batchnorm(model)
    assert _count_calls(gm, nn.BatchNorm2d) == 0
    x = torch.randn(2, 4, 9, 9, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        _assert_close_to_scale(gm(x), model(x))


class _ConvOutputReused(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class _SharedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.bn2 = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn2(self.conv(self.bn1(self.conv(x))))


class _BNAfterReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn(torch.relu(self.conv(x)))


class _BatchStatisticsBN(_ConvBN):
    def __init__(self):
        super().__init__(nn.BatchNorm2d(8, track_running_stats=False))


@pytest.mark.parametrize(
    "model_cls, reason",
    [
        (_ConvOutputReused, {"bn": "has other users"}),
        (_SharedConv, {"bn1": "called more than once", "bn2": "called more than once"}),
        (_BNAfterReLU, {"bn": "not the output of a module call"}),
        (_BatchStatisticsBN, {"bn": "no running statistics"}),
    ],
)
def test_unfoldable_batch_norms_are_left_alone_with_a_reason(model_cls, reason):
    torch.manual_seed(0)
    model = _randomise_batchnorm(model_cls(), seed=10).eval()
    c_in = model.conv.in_channels
    gm = fold_batchnorm(model)
    assert gm.meta[FOLDED_META_KEY] == {}
    assert gm.meta[UNFOLDED_META_KEY].keys() == reason.keys()
    for name, expected in reason.items():
        assert expected in gm.meta[UNFOLDED_META_KEY][name]
        assert type(gm.get_submodule(name)) is nn.BatchNorm2d
    assert _count_calls(gm, nn.BatchNorm2d) == len(reason)
    x = torch.randn(2, c_in, 7, 7, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))


def test_conv_subclass_with_its_own_forward_is_not_folded():
    class StandardisedConv(nn.Conv2d):
        def forward(self, x):
            weight = (self.weight - self.weight.mean()) / self.weight.std()
            return self._conv_forward(x, weight, self.bias)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = StandardisedConv(4, 8, 3)
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x):
            return self.bn(self.conv(x))

    traced = trace(Model().eval(), leaf_modules=["StandardisedConv"])  # the conv stays one call_module
    gm = fold_batchnorm(traced)
    assert "a StandardisedConv, not one of Conv2d, SUBPConv2d, BlockSparseConv2d" in gm.meta[UNFOLDED_META_KEY]["bn"]
    assert type(gm.get_submodule("bn")) is nn.BatchNorm2d


class _MixedConv(nn.Module):
    """timm's MixedConv2d: the input split on channels, convs of three kernel sizes (odd channel
    counts), concatenated, one batch norm after; ``reuse`` gives the concat a second user."""

    def __init__(self, reuse: bool = False):
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Conv2d(3, 5, 3, padding=1), nn.Conv2d(3, 4, 5, padding=2, bias=False), nn.Conv2d(2, 7, 1)]
        )
        self.bn = nn.BatchNorm2d(16)
        self.reuse = reuse

    def forward(self, x):
        parts = torch.split(x, [3, 3, 2], dim=1)
        y = torch.cat([conv(parts[i]) for i, conv in enumerate(self.convs)], 1)
        return self.bn(y) + y if self.reuse else self.bn(y)


def test_a_batch_norm_after_a_channel_concat_of_convs_folds_into_each_conv_by_its_slice():
    torch.manual_seed(0)
    model = _randomise_batchnorm(_MixedConv(), seed=12).eval()
    gm = fold_batchnorm(model)
    assert gm.meta[FOLDED_META_KEY] == {"bn": "convs.0+convs.1+convs.2"}
    assert _count_calls(gm, nn.BatchNorm2d) == 0
    assert gm.get_submodule("convs.1").bias is not None  # created
    x = torch.randn(2, 8, 6, 5, generator=torch.Generator().manual_seed(13))
    with torch.no_grad():
        _assert_close_to_scale(gm(x), model(x))


class _ConcatWithInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn(torch.cat([self.conv(x), x], dim=1))


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (_MixedConv(reuse=True), "the channel concat feeding it has other users"),
        (_ConcatWithInput(), "its input is not the output of a module call"),
    ],
)
def test_a_concat_that_cannot_fold_is_left_alone_with_a_reason(model, reason):
    model = _randomise_batchnorm(model, seed=14).eval()
    gm = fold_batchnorm(model)
    assert gm.meta[FOLDED_META_KEY] == {}
    assert reason in gm.meta[UNFOLDED_META_KEY]["bn"]
    x = torch.randn(1, 8 if isinstance(model, _MixedConv) else 4, 5, 5, generator=torch.Generator().manual_seed(15))
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
