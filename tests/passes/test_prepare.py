"""The prepare pass: graph unchanged, the right convs wrapped, numerics equal, input untouched."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

from subp_fx.algorithm.config import LayerSelection, SparsityConfig
from subp_fx.algorithm.modules import SUBPConv2d
from subp_fx.errors import ConfigError, UntraceableModelError
from subp_fx.passes import prepare, subp_modules
from tests import toy_models
from tests.toy_models import TOY_CONV_NAMES, TOY_DEFAULT_SPARSE, GatedNet, ToyNet, UntraceableNet, seeded, toy_input


def _node_signature(graph: fx.Graph) -> list[tuple[str, str]]:
    return [(node.op, str(node.target)) for node in graph.nodes]


def _subp_names(gm: nn.Module) -> set[str]:
    return {name for name, _ in subp_modules(gm)}


def test_graph_unchanged_and_right_convs_wrapped():
    model = seeded(ToyNet)
    reference = fx.symbolic_trace(model)
    gm = prepare(model, {"N": 16})
    assert len(gm.graph.nodes) == len(reference.graph.nodes)
    assert _node_signature(gm.graph) == _node_signature(reference.graph)
    assert _subp_names(gm) == TOY_DEFAULT_SPARSE
    for name in TOY_CONV_NAMES:
        module = gm.get_submodule(name)
        if name in TOY_DEFAULT_SPARSE:
            assert type(module) is SUBPConv2d and module.N == 16
            assert (module.block_mask == 1).all()
            defaults = SparsityConfig()  # every other setting is the config's default
            for attr in (
                "prune_rate",
                "criterion",
                "alpha",
                "tau",
                "schedule",
                "decay_start",
                "decay_end",
                "mode",
                "pruned_weight_decay",
            ):
                assert getattr(module, attr) == getattr(defaults, attr), (name, attr)
        else:
            assert type(module) is nn.Conv2d, name


@pytest.mark.parametrize("train", [True, False])
def test_numerics_equal_to_eager(train):
    model = seeded(ToyNet).train(train)
    gm = prepare(model, {"N": 16, "prune_rate": 0.3})
    # The prepared model starts in the input model's mode, down to the wrapped convs and BNs (fx's
    # own empty path containers such as "block" are plain nn.Modules, left out).
    assert gm.training == train
    assert all(module.training == train for module in gm.modules() if not list(module.children()))
    x = toy_input(1, (2, 3, 16, 16))
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=1e-6, atol=1e-6)
    if train:  # BN statistics moved the same way in both copies
        torch.testing.assert_close(gm.get_submodule("block.bn1").running_mean, model.block.bn1.running_mean)


def test_input_model_unmodified():
    model = seeded(ToyNet)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gm = prepare(model, {"N": 16})
    for name in TOY_CONV_NAMES:
        assert type(model.get_submodule(name)) is nn.Conv2d, name
    model_ptrs = {p.data_ptr() for p in model.parameters()} | {b.data_ptr() for b in model.buffers()}
    gm_ptrs = {p.data_ptr() for p in gm.parameters()} | {b.data_ptr() for b in gm.buffers()}
    assert not model_ptrs & gm_ptrs, "prepare must not share storage with the input model"

    # Train the prepared model a step (train-mode BN, SGD): the original does not move.
    gm.train()
    optimizer = torch.optim.SGD(gm.parameters(), lr=0.5)
    gm(toy_input(2, (2, 3, 16, 16))).sum().backward()
    optimizer.step()
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert not torch.equal(gm.get_submodule("pw").weight, model.pw.weight)


def test_config_from_dict_and_model_agree():
    as_dict = {"N": 8, "prune_rate": 0.25, "criterion": "L2", "mode": "hard", "layers": {"exclude": ["block.conv2"]}}
    as_model = SparsityConfig(
        N=8, prune_rate=0.25, criterion="L2", mode="hard", layers=LayerSelection(exclude=["block.conv2"])
    )
    gm_dict, gm_model = prepare(seeded(ToyNet), as_dict), prepare(seeded(ToyNet), as_model)
    # N=8 divides C_out=24 of "odd", so it is selected too; block.conv2 is excluded.
    expected = {"pw", "block.conv1", "block.downsample", "odd"}
    assert _subp_names(gm_dict) == _subp_names(gm_model) == expected
    for (_, a), (_, b) in zip(subp_modules(gm_dict), subp_modules(gm_model)):
        for attr in (
            "N",
            "prune_rate",
            "criterion",
            "mode",
            "tau",
            "alpha",
            "schedule",
            "decay_start",
            "decay_end",
            "pruned_weight_decay",
        ):
            assert getattr(a, attr) == getattr(b, attr), attr
        assert (a.N, a.prune_rate, a.criterion, a.mode) == (8, 0.25, "L2", "hard")
        assert a.pruned_weight_decay == SparsityConfig().pruned_weight_decay


@pytest.mark.parametrize(
    "config, key_path",
    [
        ({"N": 16, "layers": {"includ": ["pw"]}}, "sparsity.layers.includ"),
        ({"prune_rat": 0.3}, "sparsity.prune_rat"),
        ({"prune_rate": 1.0}, "sparsity.prune_rate"),
        ({"criterion": "L3"}, "sparsity.criterion"),
        ({"layers": {"include": ["re:("]}}, "sparsity.layers.include"),
        ({"decay_start": 20, "decay_end": 10}, "decay_end"),
    ],
)
def test_invalid_config_raises_config_error_naming_key(config, key_path):
    with pytest.raises(ConfigError) as info:
        prepare(ToyNet(), config)
    assert key_path in str(info.value)


def _line_of(cls, text: str) -> int:
    lines, first = inspect.getsourcelines(cls.forward)
    return first + next(i for i, line in enumerate(lines) if text in line)


def test_untraceable_model_error_names_the_line():
    with pytest.raises(UntraceableModelError) as info:
        prepare(UntraceableNet(), {"N": 16, "capture": "symbolic_trace"})
    message = str(info.value)
    assert f"toy_models.py:{_line_of(UntraceableNet, 'if x.sum() > 0')}" in message
    assert "if x.sum() > 0" in message
    assert "leaf_modules" in message  # the fix is suggested


def test_leaf_modules_make_submodule_control_flow_traceable():
    with pytest.raises(UntraceableModelError) as info:
        prepare(GatedNet(), {"N": 16, "capture": "symbolic_trace"})
    assert f"toy_models.py:{_line_of(toy_models.Gate, 'if x.sum() > 0')}" in str(info.value)
    for leaf in ("Gate", "gate"):  # class name or qualified name
        model = seeded(GatedNet)
        gm = prepare(model, {"N": 16, "leaf_modules": [leaf]})
        assert _subp_names(gm) == {"conv_out"}  # stem: C_in=3; gate.conv: opaque, stays dense
        assert type(gm.get_submodule("gate.conv")) is nn.Conv2d
        for x in (toy_input(3), -toy_input(3).abs() - 1):  # both branches of the gate
            with torch.no_grad():
                torch.testing.assert_close(gm(x), model(x), rtol=1e-6, atol=1e-6)


TORCHVISION_MODELS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "regnet_y_400mf", "efficientnet_b0"]


@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_torchvision_models(name):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    gm = prepare(model, {"N": 16, "prune_rate": 0.5})
    gm.eval()
    wrapped = subp_modules(gm)
    assert wrapped, f"no conv of {name} was selected"
    assert all(m.groups == 1 and m.out_channels % 16 == 0 for _, m in wrapped)
    x = toy_input(4, (1, 3, 64, 64))
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-5)
