"""Capturing models symbolic_trace cannot follow: module_swap for training, the concrete tracer
for compiling, and the fold of symmetric zero pads into convs."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from subp_fx.algorithm.modules import SUBPConv2d
from subp_fx.errors import ConfigError, UntraceableModelError
from subp_fx.passes import dry_run, format_dry_run, prepare, subp_modules
from subp_fx.passes.capture import capture_for_compile, capture_for_training
from subp_fx.passes.concrete_trace import concrete_trace
from subp_fx.passes.fold_pad import FOLDED_PADS_META_KEY, fold_zero_pads
from tests.toy_models import TimmStyleNet, ToyNet, UntraceableNet, randomise_batchnorms, seeded, toy_input

CONFIG = {"N": 16, "prune_rate": 0.5, "decay_start": 0, "decay_end": 1}


def test_concrete_trace_resolves_shape_logic_and_leaves_no_shape_nodes():
    model = randomise_batchnorms(seeded(TimmStyleNet))
    x = torch.randn(2, 3, 30, 30)
    traced = concrete_trace(model, x)
    kinds = {(node.op, getattr(node.target, "__name__", node.target)) for node in traced.gm.graph.nodes}
    assert not any(target in ("getattr", "getitem", "size", "dim") for _, target in kinds)
    assert ("call_module", "stem.conv") in kinds and ("call_module", "up") in kinds  # leaves stay modules
    pads = [node.args[1] for node in traced.gm.graph.nodes if node.target is F.pad]
    assert [0, 1, 0, 1] in pads and [1, 1, 1, 1] in pads  # literal ints: asymmetric and symmetric
    with torch.no_grad():
        assert torch.equal(traced.gm(x), model(x))
        assert torch.equal(pickle.loads(pickle.dumps(traced.gm))(x), model(x))  # re-traces without an example
    assert traced.value_branches == []


def test_a_branch_on_values_is_taken_as_on_the_example_and_warned_about():
    model = UntraceableNet().eval()
    with pytest.warns(UserWarning, match=r"1 branch\(es\) on tensor values .*if x.sum\(\) > 0"):
        traced = concrete_trace(model, torch.randn(1, 3, 8, 8))
    assert len(traced.value_branches) == 1


def test_compile_capture_prefers_symbolic_trace_and_falls_back_to_concrete():
    traceable = capture_for_compile(ToyNet().eval(), toy_input())
    assert traceable.method == "symbolic_trace"
    captured = capture_for_compile(TimmStyleNet().eval(), torch.randn(1, 3, 16, 16))
    assert captured.method == "concrete_trace" and isinstance(captured.model, fx.GraphModule)
    assert "symbolic_trace failed" in captured.reason and "x.dim() == 4" in captured.reason
    assert "(1, 3, 16, 16)" in captured.reason
    with pytest.raises(UntraceableModelError):
        capture_for_compile(TimmStyleNet().eval(), torch.randn(1, 3, 16, 16), method="symbolic_trace")
    with pytest.raises(ConfigError, match="capture='module_swap'.*compiling"):
        capture_for_compile(ToyNet(), toy_input(), method="module_swap")


def test_concrete_trace_names_the_failing_line_when_the_model_does_not_run():
    with pytest.raises(UntraceableModelError, match=r"expects NCHW RGB images.*toy_models.py"):
        concrete_trace(TimmStyleNet().eval(), torch.randn(1, 1, 16, 16))


def test_prepare_swaps_convs_in_place_when_fx_cannot_trace():
    model = seeded(TimmStyleNet)
    gm = prepare(model, CONFIG)
    assert type(gm) is TimmStyleNet and gm is not model
    assert {name for name, _ in subp_modules(gm)} == {"se.expand", "pw.conv", "conv.conv", "fuse.conv"}
    assert type(model.pw.conv) is nn.Conv2d  # the original is untouched
    x = torch.randn(2, 3, 30, 30)
    gm.eval(), model.eval()
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))  # a fresh prepare computes what the model did
    assert capture_for_training(seeded(TimmStyleNet), method="module_swap").method == "module_swap"
    with pytest.raises(UntraceableModelError):
        prepare(model, {**CONFIG, "capture": "symbolic_trace"})


def test_module_swap_dry_run_equals_the_graph_dry_run():
    # Forward hooks give the same per-layer shapes and MACs as the traced graph on a model fx can trace.
    graph = dry_run(ToyNet(), CONFIG, (1, 3, 16, 16))
    hooked = dry_run(ToyNet(), {**CONFIG, "capture": "module_swap"}, (1, 3, 16, 16))
    assert graph.capture == "symbolic_trace" and hooked.capture == "module_swap"
    assert sorted(graph.convs, key=lambda p: p.name) == sorted(hooked.convs, key=lambda p: p.name)
    text = format_dry_run(dry_run(TimmStyleNet(), CONFIG, (1, 3, 30, 30)))
    assert "capture: module_swap (symbolic_trace failed" in text and "pw.conv" in text


def test_a_conv_subclass_with_its_own_forward_stays_dense():
    class PaddedConv(nn.Conv2d):  # timm's Conv2dSame pattern
        def forward(self, x):
            return super().forward(F.pad(x, [0, 1, 0, 1]))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(16, 16, 3)
            self.b = PaddedConv(16, 16, 3)

        def forward(self, x):
            if x.shape[-1] > 4:
                x = self.a(x)
            return self.b(x)

    gm = prepare(Model(), CONFIG)
    assert isinstance(gm.a, SUBPConv2d) and type(gm.b) is PaddedConv
    plan = {p.name: p for p in dry_run(Model(), CONFIG, (1, 16, 8, 8)).convs}
    assert "overrides nn.Conv2d's forward" in plan["b"].reason


class _Pads(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, stride=2)
        self.c = nn.Conv2d(8, 8, 3)
        self.zero = nn.ZeroPad2d(2)

    def forward(self, x):
        x = self.a(F.pad(x, [1, 1, 2, 2]))  # symmetric: folded into padding (1 + 2, 1 + 1)
        x = self.b(F.pad(x, [0, 1, 0, 1]))  # asymmetric: stays
        y = F.pad(x, [1, 1, 1, 1], value=0.5)  # not zero: stays
        return self.c(self.zero(x)) + y.mean()


def test_fold_zero_pads_folds_symmetric_zero_pads_into_the_conv_only():
    model = _Pads().eval()
    folded = fold_zero_pads(model)
    assert sorted(folded.meta[FOLDED_PADS_META_KEY].values()) == ["a", "c"]
    assert folded.a.padding == (3, 2) and folded.c.padding == (2, 2) and folded.b.padding == (0, 0)
    assert model.a.padding == (1, 1)  # input untouched
    assert sum(node.target is F.pad for node in folded.graph.nodes) == 2
    x = torch.randn(2, 4, 9, 10)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=0, atol=1e-5)
