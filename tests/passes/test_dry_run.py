"""dry_run / format_dry_run: the plan of prepare, MACs by hand, the paper's ResNet-18 selection."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from subp_fx.errors import SelectionError
from subp_fx.passes import dry_run, format_dry_run, prepare, subp_modules
from tests.toy_models import TOY_CONV_NAMES, TOY_DEFAULT_SPARSE, TOY_INPUT_SHAPE, ToyNet, seeded

# MACs per image = out_H * out_W * C_out * (C_in / groups) * kh * kw, input 1x3x16x16.
TOY_MACS = {
    "stem": 16 * 16 * 16 * 3 * 9,  # 110_592
    "dw": 16 * 16 * 16 * 1 * 9,  # 36_864
    "pw": 16 * 16 * 32 * 16 * 1,  # 131_072
    "grouped": 16 * 16 * 32 * 8 * 9,  # 589_824
    "block.conv1": 8 * 8 * 64 * 32 * 9,  # 1_179_648 (stride 2)
    "block.conv2": 8 * 8 * 64 * 64 * 9,  # 2_359_296
    "block.downsample": 8 * 8 * 64 * 32 * 1,  # 131_072 (stride 2)
    "odd": 8 * 8 * 24 * 64 * 9,  # 884_736
}
# prune_rate 0.3: pruned per row int(0.3 * C_in): C_in 16 -> 4, 32 -> 9, 64 -> 19.
TOY_KEPT_AT_03 = {"pw": 12, "block.conv1": 23, "block.conv2": 45, "block.downsample": 23}
TOY_MACS_AFTER_AT_03 = {"pw": 98_304, "block.conv1": 847_872, "block.conv2": 1_658_880, "block.downsample": 94_208}


def test_macs_before_by_hand():
    report = dry_run(ToyNet(), {"N": 16, "prune_rate": 0.3}, TOY_INPUT_SHAPE)
    assert [plan.name for plan in report.convs] == TOY_CONV_NAMES
    assert {plan.name: plan.macs_before for plan in report.convs} == TOY_MACS
    assert report.macs_before == 5_423_104 == sum(TOY_MACS.values())
    assert {plan.name: plan.output_hw for plan in report.convs} == {
        name: ((16, 16) if name in ("stem", "dw", "pw", "grouped") else (8, 8)) for name in TOY_CONV_NAMES
    }
    assert report.input_shape == TOY_INPUT_SHAPE


def test_macs_after_scale_with_kept_channels():
    report = dry_run(ToyNet(), {"N": 16, "prune_rate": 0.3}, TOY_INPUT_SHAPE)
    plans = {plan.name: plan for plan in report.convs}
    assert {plan.name for plan in report.selected} == TOY_DEFAULT_SPARSE
    for name, plan in plans.items():
        c_in = plan.weight_shape[1] * (16 if name == "dw" else 4 if name == "grouped" else 1)
        if plan.selected:
            assert plan.kept_per_row == TOY_KEPT_AT_03[name]
            assert plan.macs_after == TOY_MACS_AFTER_AT_03[name] == plan.macs_before * plan.kept_per_row // c_in
            assert plan.N == 16
        else:
            assert plan.macs_after == plan.macs_before
            assert plan.N is None
    assert report.macs_after == report.macs_before - sum(
        TOY_MACS[n] - TOY_MACS_AFTER_AT_03[n] for n in TOY_MACS_AFTER_AT_03
    )


def test_dry_run_agrees_with_prepare_and_leaves_model_alone():
    model = seeded(ToyNet)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = {"N": 16, "prune_rate": 0.3, "layers": {"exclude": ["re:.*conv2"]}}
    report = dry_run(model, config, TOY_INPUT_SHAPE)
    assert {p.name for p in report.selected} == {name for name, _ in subp_modules(prepare(model, config))}
    assert all(type(model.get_submodule(name)) is nn.Conv2d for name in TOY_CONV_NAMES)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.training


def test_dry_run_raises_what_prepare_raises():
    with pytest.raises(SelectionError, match="'dw'"):
        dry_run(ToyNet(), {"N": 16, "layers": {"include": ["dw"]}}, TOY_INPUT_SHAPE)


def test_format_dry_run_lists_every_conv_and_reason():
    report = dry_run(ToyNet(), {"N": 16, "prune_rate": 0.3}, TOY_INPUT_SHAPE)
    text = format_dry_run(report)
    lines = text.splitlines()
    for plan in report.convs:
        row = [line for line in lines if line.split() and line.split()[0] == plan.name]
        assert len(row) == 1, plan.name
        assert plan.reason in row[0]
        assert ("sparse" if plan.selected else "dense") in row[0].split()
        if plan.selected:
            assert f"{plan.kept_per_row}/{plan.weight_shape[1]}" in row[0]
    assert "4 of 8 convs selected" in text


def test_resnet18_paper_selection():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None)
    config = {"N": 16, "prune_rate": 60 / 128, "layers": {"exclude": ["re:.*downsample.*"]}}
    report = dry_run(model, config, (1, 3, 64, 64))
    expected = {f"layer{stage}.{block}.conv{conv}" for stage in range(1, 5) for block in range(2) for conv in (1, 2)}
    selected = {plan.name: plan for plan in report.selected}
    assert set(selected) == expected and len(expected) == 16
    for plan in selected.values():
        c_in = plan.weight_shape[1]
        assert plan.weight_shape[2:] == (3, 3)
        assert plan.kept_per_row == c_in - int(60 / 128 * c_in)  # 64 -> 34, 128 -> 68, 256 -> 136, 512 -> 272
    plans = {plan.name: plan for plan in report.convs}
    assert plans["conv1"].reason.startswith("C_in=3")
    assert plans["layer2.0.downsample.0"].reason == "excluded by re:.*downsample.*"
    assert len(report.convs) == 20  # stem + 16 + 3 downsample
