"""FLOPs/params counting against the SUBP paper's table and against hand counts.

The paper-table checks build the models on the meta device: shapes propagate, no arithmetic runs,
so each configuration costs milliseconds. One test checks that a real-tensor count agrees.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.fx
import torch.nn as nn

from subp_fx.algorithm.config import LayerSelection
from subp_fx.algorithm.modules import SUBPConv2d
from subp_fx.errors import ConfigError
from subp_fx.models import PAPER_LAYER_SELECTION, build_model
from subp_fx.tools.flops import count_flops, format_flops_table

N = 16


def _selected(name: str, conv: nn.Conv2d, selection: LayerSelection) -> bool:
    """LayerSelection's precedence: exact exclude, exact include, regex exclude, regex include,
    then (with an empty include) the default rule."""

    def regex_hit(patterns: list[str]) -> bool:
        return any(p.startswith("re:") and re.fullmatch(p[3:], name) for p in patterns)

    if not (conv.groups == 1 and conv.out_channels % N == 0):
        return False
    if name in selection.exclude:
        return False
    if name in selection.include:
        return True
    if regex_hit(selection.exclude):
        return False
    if regex_hit(selection.include):
        return True
    return not selection.include and conv.in_channels >= selection.min_in_channels


def sparsify(model: nn.Module, prune_rate: float, layers: dict) -> nn.Module:
    """Stand-in for ``subp_fx.passes.prepare``: swap the selected convs for SUBPConv2d in place."""
    selection = LayerSelection.model_validate(layers)
    for name, module in list(model.named_modules()):
        if type(module) is nn.Conv2d and _selected(name, module, selection):
            parent_name, _, child_name = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child_name, SUBPConv2d.from_conv(module, N=N, prune_rate=prune_rate))
    return model


def paper_model(name: str, prune_rate: float, device: str = "meta") -> nn.Module:
    with torch.device(device):
        model = build_model(name)
    return sparsify(model, prune_rate, PAPER_LAYER_SELECTION[name])


# (model, prune rate, pruned GFLOPs, dense GFLOPs, pruned M params, dense M params) from the paper.
PAPER_TABLE = [
    ("resnet18", 60 / 128, 1.0301, 1.8166, 6.540, 11.690),
    ("resnet34", 59 / 128, 2.0410, 3.6675, 12.078, 21.798),
    ("resnet50", 66 / 128, 2.0484, 4.1003, 13.468, 25.557),
    ("resnet50", 98.5 / 128, 1.0380, 4.1003, 7.515, 25.557),
    ("mobilenet_v1", 69 / 128, 0.2815, 0.5738, 2.540, 4.232),
]
TABLE_IDS = [f"{row[0]}-{row[1] * 128:g}of128" for row in PAPER_TABLE]


def _relative_errors(report, gflops, gflops_dense, mparams, mparams_dense) -> dict[str, float]:
    return {
        "macs": report.macs / (gflops * 1e9) - 1,
        "macs_dense": report.macs_dense / (gflops_dense * 1e9) - 1,
        "params": report.params / (mparams * 1e6) - 1,
        "params_dense": report.params_dense / (mparams_dense * 1e6) - 1,
    }


@pytest.mark.parametrize("name, rate, gflops, gflops_dense, mparams, mparams_dense", PAPER_TABLE, ids=TABLE_IDS)
def test_kept_per_row_counts_are_within_half_a_percent_of_the_paper(
    name, rate, gflops, gflops_dense, mparams, mparams_dense
):
    report = count_flops(paper_model(name, rate))
    errors = _relative_errors(report, gflops, gflops_dense, mparams, mparams_dense)
    assert all(abs(error) < 0.005 for error in errors.values()), errors


@pytest.mark.parametrize("name, rate, gflops, gflops_dense, mparams, mparams_dense", PAPER_TABLE, ids=TABLE_IDS)
def test_prune_rate_counts_reproduce_the_paper_to_its_printed_digits(
    name, rate, gflops, gflops_dense, mparams, mparams_dense
):
    report = count_flops(paper_model(name, rate), sparse_density="prune_rate")
    # Equal to every digit the table prints (GFLOPs to 4 decimals, M params to 3).
    assert (round(report.macs / 1e9, 4), round(report.macs_dense / 1e9, 4)) == (gflops, gflops_dense)
    assert (round(report.params / 1e6, 3), round(report.params_dense / 1e6, 3)) == (mparams, mparams_dense)


@pytest.mark.parametrize(
    "name, sparse_convs, sparse_downsamples",
    [("resnet18", 16, 0), ("resnet34", 32, 0), ("resnet50", 52, 4), ("mobilenet_v1", 13, 0)],
)
def test_paper_selection_makes_the_paper_s_layers_sparse(name, sparse_convs, sparse_downsamples):
    report = count_flops(paper_model(name, 0.5))
    sparse = [row.name for row in report.layers if row.is_sparse]
    assert len(sparse) == sparse_convs
    assert sum("downsample" in row for row in sparse) == sparse_downsamples
    dense_names = {row.name for row in report.layers if not row.is_sparse}
    assert "fc" in dense_names
    assert ("conv1" if name.startswith("resnet") else "stem.conv") in dense_names


def test_meta_and_real_tensors_count_the_same():
    meta = count_flops(paper_model("resnet18", 60 / 128))
    real = count_flops(paper_model("resnet18", 60 / 128, device="cpu"))
    assert (real.macs, real.macs_dense, real.params, real.params_dense) == (
        meta.macs,
        meta.macs_dense,
        meta.params,
        meta.params_dense,
    )


class _TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 32, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)))


def test_hand_counted_conv_and_linear():
    model = sparsify(_TinyNet(), 0.5, {})  # kept_per_row = 4 - int(0.5 * 4) = 2 of 4
    report = count_flops(model, input_shape=(1, 4, 8, 8))
    conv, fc = report.layers
    outputs = 32 * 8 * 8
    assert conv.macs_dense == 4 * 3 * 3 * outputs + outputs
    assert conv.macs == conv.macs_dense // 2
    assert (conv.kept_per_row, conv.in_channels, conv.density) == (2, 4, 0.5)
    assert (conv.params_dense, conv.params) == (32 * 4 * 9, 32 * 2 * 9)
    assert (fc.macs_dense, fc.macs, fc.params) == (32 * 10 + 10, 32 * 10 + 10, 32 * 10 + 10)
    assert fc.kept_per_row is None and fc.density == 1.0
    batchnorm_params = 2 * 32
    assert report.params_dense == 32 * 4 * 9 + batchnorm_params + 330
    assert report.params == 32 * 2 * 9 + batchnorm_params + 330
    assert report.macs == conv.macs + fc.macs


def test_counts_the_final_target_not_the_current_mask():
    model = sparsify(_TinyNet(), 0.5, {})
    before = count_flops(model, input_shape=(1, 4, 8, 8))
    model.conv.block_mask.zero_()  # a mask mid-training would be anything
    after = count_flops(model, input_shape=(1, 4, 8, 8))
    assert after.macs == before.macs and after.params == before.params


def test_graph_module_with_swapped_convs_counts_like_the_eager_model():
    with torch.device("meta"):
        traced = torch.fx.symbolic_trace(build_model("mobilenet_v1"))
    sparsify(traced, 69 / 128, PAPER_LAYER_SELECTION["mobilenet_v1"])
    assert isinstance(traced.get_submodule("features.5.pointwise"), SUBPConv2d)
    from_graph = count_flops(traced)
    eager = count_flops(paper_model("mobilenet_v1", 69 / 128))
    assert [(row.name, row.macs) for row in from_graph.layers] == [(row.name, row.macs) for row in eager.layers]
    assert from_graph.params == eager.params


def test_module_called_twice_counts_macs_twice_and_params_once():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(16, 16, 3, padding=1)

        def forward(self, x):
            return self.conv(self.conv(x))

    model = sparsify(Twice(), 0.5, {})
    report = count_flops(model, input_shape=(1, 16, 4, 4))
    assert len(report.layers) == 2
    assert report.macs == 2 * report.layers[0].macs
    assert report.params == 16 * 8 * 9 + 16  # weight at half density, bias in full, once


def test_counting_leaves_batchnorm_statistics_alone():
    model = _TinyNet().train()
    statistics = {key: value.clone() for key, value in model.bn.state_dict().items()}
    count_flops(model, input_shape=(2, 4, 8, 8))
    assert all(torch.equal(model.bn.state_dict()[key], value) for key, value in statistics.items())
    assert model.training and model.bn.training


def test_counting_restores_each_module_s_mode():
    model = _TinyNet().train()
    model.bn.eval()  # a frozen BatchNorm inside a training model
    count_flops(model, input_shape=(2, 4, 8, 8))
    assert model.training and model.conv.training and not model.bn.training


def test_wrong_input_shape_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match=r"input of shape \(1, 3, 8, 8\)"):
        count_flops(_TinyNet(), input_shape=(1, 3, 8, 8))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sparse_density": "paper"}, r"sparse_density must be one of kept_per_row, prune_rate, got 'paper'"),
        ({"input_shape": (1, 4, 0, 8)}, r"input_shape must be a tuple of positive integers"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        count_flops(_TinyNet(), **kwargs)


def test_table_lists_every_layer_and_the_totals():
    report = count_flops(paper_model("resnet18", 60 / 128))
    table = format_flops_table(report)
    lines = table.splitlines()
    assert len(lines) == 1 + 1 + len(report.layers) + 1 + 3
    assert lines[0].split()[:2] == ["layer", "type"]
    layer1_conv = next(line for line in lines if line.startswith("layer1.0.conv1 "))
    assert "SUBPConv2d" in layer1_conv and "34/64" in layer1_conv and "1x64x56x56" in layer1_conv
    assert next(line for line in lines if line.startswith("conv1 ")).split()[4] == "dense"
    assert "MACs (FLOPs): 1.0301 G of 1.8166 G dense" in table
    assert "params:       6.540 M of 11.690 M dense" in table
    assert len({len(line) for line in lines[2 : 2 + len(report.layers)]}) == 1  # fixed width
