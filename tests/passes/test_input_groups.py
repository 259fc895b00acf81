"""``sparsity.input_group`` (G) through the passes: selection, dry run, FLOPs, prepare + training
steps, mask updates, convert, strip_masks and impose_random_masks, on ToyNet (tests/toy_models.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from subp_fx.algorithm.config import as_sparsity_config
from subp_fx.errors import ConfigError, SelectionError
from subp_fx.passes import convert, impose_random_masks, masks_are_final, prepare, strip_masks, subp_modules
from subp_fx.passes.convert import CONVERTED_META_KEY
from subp_fx.passes.dry_run import dry_run, format_dry_run
from subp_fx.passes.select import select_convs
from subp_fx.passes.update import decay_pruned_weights, update_masks
from subp_fx.tools.flops import count_flops
from tests.algorithm.test_input_groups import assert_aligned_runs, kept_runs
from tests.toy_models import TOY_DEFAULT_SPARSE, ToyNet, seeded, toy_input

G4 = {"N": 16, "input_group": 4, "prune_rate": 0.6, "decay_start": 0, "decay_end": 2, "criterion": "BPAR"}


def test_a_conv_g_does_not_divide_stays_dense_with_the_reason():
    config = {**G4, "layers": {"min_in_channels": 1}}
    decisions = {d.name: d for d in select_convs(torch.fx.symbolic_trace(ToyNet()), as_sparsity_config(config))}
    assert not decisions["stem"].selected and decisions["stem"].reason == "input_group=4 does not divide C_in=3"
    assert {name for name, d in decisions.items() if d.selected} == TOY_DEFAULT_SPARSE
    with pytest.raises(SelectionError, match="input_group that divides 3"):
        prepare(ToyNet(), {**G4, "layers": {"include": ["stem"]}})
    with pytest.raises(SelectionError, match="input_group=48"):
        prepare(ToyNet(), {**G4, "input_group": 48})  # divides no selectable conv's C_in (16, 32, 64)


def test_python_config_names_the_key():
    with pytest.raises(ConfigError, match="sparsity.input_group"):
        prepare(ToyNet(), {**G4, "input_group": 0})


def test_dry_run_and_flops_count_kept_groups():
    report = dry_run(ToyNet(), G4, input_shape=(1, 3, 16, 16))
    plans = {plan.name: plan for plan in report.convs}
    # pw: C_in=16 -> 4 groups, int(0.6*4)=2 pruned -> 8 channels kept (G=1 would keep 16-9=7).
    expected_kept = {"pw": 8, "block.conv1": 16, "block.conv2": 28, "block.downsample": 16}
    for name, kept in expected_kept.items():
        plan = plans[name]
        assert (plan.kept_per_row, plan.G) == (kept, 4)
        assert plan.macs_after == plan.macs_before * kept // plan.weight_shape[1]
    assert "input_group=4" in format_dry_run(report)
    assert "input_group" not in format_dry_run(dry_run(ToyNet(), {**G4, "input_group": 1}, (1, 3, 16, 16)))
    gm = prepare(ToyNet(), G4)
    flops = {row.name: row for row in count_flops(gm, (1, 3, 16, 16)).layers}
    for name, kept in expected_kept.items():
        assert flops[name].kept_per_row == kept and flops[name].density == kept / flops[name].in_channels
        assert flops[name].macs == round(flops[name].macs_dense * kept / flops[name].in_channels)


def test_prepare_train_update_convert_with_g4():
    gm = prepare(seeded(ToyNet), G4).train()
    optimiser = torch.optim.SGD(gm.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(3):
        updates = update_masks(gm, epoch, seed=1)
        for name, module in subp_modules(gm):
            assert module.block_mask.shape == (module.out_channels // 16, module.in_channels // 4)
            assert module.is_uniform() and updates[name].kept_per_row % 4 == 0
            assert_aligned_runs(module.channel_mask, 4)
        for step in range(2):
            loss = F.cross_entropy(gm(toy_input(step, (4, 3, 16, 16))), torch.tensor([0, 1, 2, 3]))
            optimiser.zero_grad()
            loss.backward()
            decay_pruned_weights(gm)
            optimiser.step()
            assert torch.isfinite(loss)
    # epoch 2 >= decay_end: final, each row at the target in whole groups
    assert masks_are_final(gm) == {}
    assert updates["block.conv2"].kept_per_row == 28 and updates["block.conv2"].regrown == 0

    gm.eval()
    converted = convert(gm)
    metas = {meta.name: meta for meta in converted.meta[CONVERTED_META_KEY]}
    assert metas["block.conv2"].G == 4 and metas["block.conv2"].K == 28
    for name, _ in subp_modules(gm):
        kept_runs(converted.get_submodule(name).indices, 4)
    x = toy_input(9, (2, 3, 16, 16))
    with torch.no_grad():
        expected = gm(x)
        torch.testing.assert_close(converted(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(strip_masks(gm)(x), expected, rtol=0, atol=0)


def test_impose_random_masks_with_g4():
    gm = impose_random_masks(ToyNet(), prune_rate=0.5, N=16, seed=3, G=4)
    for _, module in subp_modules(gm):
        assert module.G == 4 and module.block_mask.shape[1] == module.in_channels // 4
        assert module.channel_mask.sum(dim=1).unique().tolist() == [module.final_kept_per_row]
        assert_aligned_runs(module.channel_mask, 4)
    assert masks_are_final(gm) == {}
    again = impose_random_masks(gm, prune_rate=0.25, N=16, seed=4, G=4)  # a prepared G=4 model keeps its G
    assert all(module.G == 4 for _, module in subp_modules(again))
    with pytest.raises(ConfigError, match="prepared with G=\\[4\\]"):
        impose_random_masks(gm, prune_rate=0.5, N=16)
    with pytest.raises(ConfigError, match="G must be a positive integer"):
        impose_random_masks(ToyNet(), prune_rate=0.5, N=16, G=0)


def test_g1_random_masks_unchanged():
    """G=1 draws what the function drew before groups existed (same generator calls)."""
    by_default = impose_random_masks(ToyNet(), prune_rate=0.5, N=16, seed=3)
    explicit = impose_random_masks(ToyNet(), prune_rate=0.5, N=16, seed=3, G=1)
    for (_, a), (_, b) in zip(subp_modules(by_default), subp_modules(explicit), strict=True):
        assert torch.equal(a.block_mask, b.block_mask) and a.block_mask.shape[1] == a.in_channels
