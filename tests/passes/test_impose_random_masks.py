"""The impose_random_masks pass: uniform masks of exactly K per row, reproducible from the seed."""

from __future__ import annotations

import pytest
import torch
import torch.fx as fx

from subp_fx.algorithm.config import LayerSelection
from subp_fx.algorithm.masks import kept_per_row
from subp_fx.algorithm.modules import SUBPConv2d
from subp_fx.errors import ConfigError, SelectionError
from subp_fx.passes import impose_random_masks, masks_are_final, prepare, subp_modules
from subp_fx.passes.impose_random_masks import layer_generator, random_uniform_block_mask
from tests.toy_models import TOY_DEFAULT_SPARSE, ToyNet, seeded, toy_input


def _masks(gm) -> dict[str, torch.Tensor]:
    return {name: module.block_mask.clone() for name, module in subp_modules(gm)}


@pytest.mark.parametrize("prune_rate", [0.0, 0.3, 0.5, 0.97])
def test_plain_model_gets_uniform_masks_of_exact_size(prune_rate):
    gm = impose_random_masks(seeded(ToyNet), prune_rate, 16, seed=0)
    assert isinstance(gm, fx.GraphModule)
    assert {name for name, _ in subp_modules(gm)} == TOY_DEFAULT_SPARSE
    for name, conv in subp_modules(gm):
        expected = conv.in_channels - int(prune_rate * conv.in_channels)
        assert conv.block_mask.shape == (conv.out_channels // 16, conv.in_channels)
        assert ((conv.block_mask == 0) | (conv.block_mask == 1)).all()
        assert (conv.block_mask.sum(dim=1) == expected).all(), name
        assert conv.prune_rate == prune_rate and conv.N == 16
    assert masks_are_final(gm) == {}


def test_k_edge_cases():
    # pw has C_in = 16: rate 0 keeps all 16, rate 15/16 keeps exactly 1.
    full = impose_random_masks(seeded(ToyNet), 0.0, 16, seed=0).get_submodule("pw")
    assert (full.block_mask == 1).all()
    single = impose_random_masks(seeded(ToyNet), 15 / 16, 16, seed=0).get_submodule("pw")
    assert (single.block_mask.sum(dim=1) == 1).all()
    assert kept_per_row(15 / 16, 16) == 1


def test_rows_are_drawn_independently():
    gm = impose_random_masks(seeded(ToyNet), 0.5, 16, seed=0)
    mask = gm.get_submodule("block.conv2").block_mask  # 4 rows of 64 channels, 32 kept each
    assert len({tuple(row.tolist()) for row in mask}) == mask.shape[0]


def test_same_seed_same_masks_other_seed_other_masks():
    model = seeded(ToyNet)
    first, again = (
        _masks(impose_random_masks(model, 0.5, 16, seed=7)),
        _masks(impose_random_masks(model, 0.5, 16, seed=7)),
    )
    other = _masks(impose_random_masks(model, 0.5, 16, seed=8))
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert all(not torch.equal(first[name], other[name]) for name in first)


def test_layers_of_equal_shape_get_different_masks():
    # Two convs of the same shape: the layer index is part of the seed.
    mask_a = random_uniform_block_mask(4, 32, 16, layer_generator(0, 0))
    mask_b = random_uniform_block_mask(4, 32, 16, layer_generator(0, 1))
    assert not torch.equal(mask_a, mask_b)
    assert torch.equal(mask_a, random_uniform_block_mask(4, 32, 16, layer_generator(0, 0)))


def test_each_channel_is_kept_equally_often():
    rows, in_channels, kept = 4000, 8, 3
    mask = random_uniform_block_mask(rows, in_channels, kept, layer_generator(123, 0))
    assert (mask.sum(dim=1) == kept).all()
    frequency = mask.mean(dim=0)
    # Each channel is kept with probability 3/8; the std of the mean over 4000 rows is ~0.008.
    assert (frequency - kept / in_channels).abs().max() < 0.04


def test_prepared_model_keeps_its_graph_and_gets_the_new_rate():
    model = seeded(ToyNet)
    prepared = prepare(model, {"N": 16, "prune_rate": 0.25, "decay_start": 5, "decay_end": 10})
    gm = impose_random_masks(prepared, 0.75, 16, seed=1)
    assert [(n.op, str(n.target)) for n in gm.graph.nodes] == [(n.op, str(n.target)) for n in prepared.graph.nodes]
    for name, conv in subp_modules(gm):
        assert (conv.block_mask.sum(dim=1) == conv.in_channels - int(0.75 * conv.in_channels)).all(), name
        assert conv.prune_rate == 0.75
        assert (prepared.get_submodule(name).block_mask == 1).all()  # the input is untouched
        assert prepared.get_submodule(name).prune_rate == 0.25
    assert masks_are_final(gm) == {}
    # The masked model computes with the masked weights.
    x = toy_input(2)
    with torch.no_grad():
        assert not torch.allclose(gm(x), prepared(x))


def test_plain_model_input_untouched():
    model = seeded(ToyNet)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    impose_random_masks(model, 0.5, 16, seed=0)
    assert not any(isinstance(module, SUBPConv2d) for module in model.modules())
    assert all(torch.equal(model.state_dict()[key], value) for key, value in before.items())


@pytest.mark.parametrize(
    "layers", [{"include": ["pw"]}, LayerSelection(include=["pw"])], ids=["dict", "LayerSelection"]
)
def test_layer_selection_for_plain_models(layers):
    gm = impose_random_masks(seeded(ToyNet), 0.5, 16, seed=0, layers=layers)
    assert [name for name, _ in subp_modules(gm)] == ["pw"]


def test_layers_refused_for_a_prepared_model():
    prepared = prepare(seeded(ToyNet), {"N": 16})
    with pytest.raises(ConfigError, match="layers=.*already has SUBP convs"):
        impose_random_masks(prepared, 0.5, 16, layers={"include": ["pw"]})


def test_n_mismatch_with_a_prepared_model_refused():
    prepared = prepare(seeded(ToyNet), {"N": 16})
    with pytest.raises(ConfigError, match=r"N=32 was asked for.*prepared with N=\[16\]"):
        impose_random_masks(prepared, 0.5, 32)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(prune_rate=1.0), "prune_rate"),
        (dict(prune_rate=-0.1), "prune_rate"),
        (dict(prune_rate="0.5"), "prune_rate"),
        (dict(prune_rate=True), "prune_rate"),
        (dict(N=0), "N"),
        (dict(N=1.5), "N"),
        (dict(N=True), "N"),
        (dict(seed=-1), "seed"),
    ],
)
def test_invalid_arguments_refused_naming_them(kwargs, argument):
    arguments = dict(prune_rate=0.5, N=16, seed=0) | kwargs
    with pytest.raises(ConfigError) as info:
        impose_random_masks(seeded(ToyNet), **arguments)
    assert str(info.value).startswith(f"{argument} must be")
    assert repr(kwargs[argument]) in str(info.value)


def test_no_conv_n_can_block_is_refused_by_prepare():
    with pytest.raises(SelectionError, match="N=7"):
        impose_random_masks(seeded(ToyNet), 0.5, 7)
