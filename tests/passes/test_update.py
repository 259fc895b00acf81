"""update_masks / mask_generator / masks_are_final / decay_pruned_weights over a prepared model."""

from __future__ import annotations

import torch
import torch.nn as nn

from subp_fx.algorithm.masks import kept_per_row, prune_rate_at
from subp_fx.passes import decay_pruned_weights, masks_are_final, prepare, subp_modules, update_masks
from subp_fx.passes.update import mask_generator
from tests.toy_models import TOY_DEFAULT_SPARSE, ToyNet, seeded

# linear ramp over epochs 2..6 to 0.5: epoch 3 -> rate 0.125, regrowth G = int(0.375 * C_in) > 0.
CONFIG = {"N": 16, "prune_rate": 0.5, "criterion": "BPAR", "schedule": "linear", "decay_start": 2, "decay_end": 6}


def _masks(gm) -> dict[str, torch.Tensor]:
    return {name: module.block_mask.clone() for name, module in subp_modules(gm)}


def test_final_epoch_gives_uniform_masks_at_target():
    gm = prepare(seeded(ToyNet), CONFIG)
    # Fresh all-ones masks are not final: every layer is reported.
    assert set(masks_are_final(gm)) == TOY_DEFAULT_SPARSE
    updates = update_masks(gm, epoch=6, seed=0)
    assert set(updates) == TOY_DEFAULT_SPARSE
    assert masks_are_final(gm) == {}
    for name, module in subp_modules(gm):
        target = kept_per_row(0.5, module.in_channels)
        assert (module.block_mask.sum(dim=1) == target).all(), name
        assert updates[name].kept_per_row == target and updates[name].regrown == 0
        assert updates[name].current_rate == 0.5


def test_ramp_epoch_is_uniform_but_not_final():
    gm = prepare(seeded(ToyNet), CONFIG)
    updates = update_masks(gm, epoch=3, seed=0)
    problems = masks_are_final(gm)
    assert set(problems) == TOY_DEFAULT_SPARSE
    for name, module in subp_modules(gm):
        assert module.is_uniform()
        rate = prune_rate_at(3, "linear", 0.5, 2, 6)
        expected = module.in_channels - int(0.5 * module.in_channels) + int((0.5 - rate) * module.in_channels)
        assert updates[name].kept_per_row == expected
        assert f"keeps {expected} per row, target {kept_per_row(0.5, module.in_channels)}" in problems[name]


def test_masks_are_final_reports_a_non_uniform_mask():
    gm = prepare(seeded(ToyNet), CONFIG)
    update_masks(gm, epoch=6)
    module = gm.get_submodule("block.conv2")
    row = module.block_mask[1]
    row[(row == 0).nonzero()[0]] = 1  # row 1 keeps one more block than the others
    problems = masks_are_final(gm)
    assert set(problems) == {"block.conv2"}
    assert "between 32 and 33" in problems["block.conv2"]


def test_same_seed_and_epoch_give_identical_masks_on_independent_copies():
    model = seeded(ToyNet)
    a, b = prepare(model, CONFIG), prepare(model, CONFIG)
    for name, module in subp_modules(a):
        assert torch.equal(module.weight, b.get_submodule(name).weight)
    for epoch in (3, 4, 6):
        update_masks(a, epoch=epoch, seed=7)
        update_masks(b, epoch=epoch, seed=7)
        masks_a, masks_b = _masks(a), _masks(b)
        assert all(torch.equal(masks_a[n], masks_b[n]) for n in masks_a), epoch


def test_different_seed_gives_different_regrowth():
    model = seeded(ToyNet)
    a, b = prepare(model, CONFIG), prepare(model, CONFIG)
    update_masks(a, epoch=3, seed=1)
    update_masks(b, epoch=3, seed=2)
    masks_a, masks_b = _masks(a), _masks(b)
    # block.conv2: 4 rows regrow 24 of 32 pruned blocks each; equal draws are ~impossible.
    assert not torch.equal(masks_a["block.conv2"], masks_b["block.conv2"])


def _stream(generator: torch.Generator) -> torch.Tensor:
    return torch.rand(16, generator=generator)


def test_mask_generator_depends_on_seed_epoch_and_layer():
    base = _stream(mask_generator(0, 5, 1))
    assert torch.equal(base, _stream(mask_generator(0, 5, 1)))
    assert not torch.equal(base, _stream(mask_generator(0, 6, 1)))  # other epoch
    assert not torch.equal(base, _stream(mask_generator(0, 5, 2)))  # other layer
    assert not torch.equal(base, _stream(mask_generator(1, 5, 1)))  # other seed


def test_update_does_not_depend_on_global_rng_or_history_of_draws():
    # A resumed run: re-running epoch 3 after resetting the mask gives the same draw, whatever the
    # global RNG did in between.
    model = seeded(ToyNet)
    a, b = prepare(model, CONFIG), prepare(model, CONFIG)
    update_masks(a, epoch=3, seed=5)
    torch.manual_seed(1234)
    torch.rand(100)
    update_masks(b, epoch=3, seed=5)
    masks_a, masks_b = _masks(a), _masks(b)
    assert all(torch.equal(masks_a[n], masks_b[n]) for n in masks_a)


def test_decay_pruned_weights_per_module():
    config = dict(CONFIG, pruned_weight_decay=0.01)
    gm = prepare(seeded(ToyNet), config)
    update_masks(gm, epoch=6)
    convs = {name: m for name, m in gm.named_modules() if isinstance(m, nn.Conv2d)}
    base = {}
    for i, (name, module) in enumerate(convs.items()):
        base[name] = torch.randn(module.weight.shape, generator=torch.Generator().manual_seed(i))
        module.weight.grad = base[name].clone()
    decay_pruned_weights(gm)
    for name, module in convs.items():
        if name in TOY_DEFAULT_SPARSE:
            pruned = 1 - module.weight_mask
            torch.testing.assert_close(module.weight.grad, base[name] + 0.01 * pruned * module.weight.detach())
            assert not torch.equal(module.weight.grad, base[name])
        else:
            assert torch.equal(module.weight.grad, base[name]), name
