"""The drop_identities pass: identity and eval-mode dropout calls leave the graph, nothing else."""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import StochasticDepth

from subp_fx.passes import trace
from subp_fx.passes.drop_identities import DROPPED_IDENTITIES_META_KEY, drop_identities


class Scaled(nn.Dropout):
    """A dropout subclass doing more than dropping: never removed."""

    def forward(self, x):
        return super().forward(x) * 2


class WithIdentities(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.norm = nn.Identity()
        self.drop = nn.Dropout(0.5)
        self.drop2d = nn.Dropout2d(0.2)
        self.depth = StochasticDepth(0.1, "row")
        self.scaled = Scaled(0.0)
        self.kept = nn.Dropout(0.3)

    def forward(self, x):
        y = self.drop2d(self.drop(self.norm(self.conv(x))))
        y = F.dropout(y, 0.2, training=self.training)  # GhostNet's
        y = F.dropout2d(y, 0.1, False) + F.dropout(y, 0.0)  # training left out: True, kept
        return self.kept(self.scaled(self.depth(y))) + self.norm(x).sum()


def _module_calls(gm: fx.GraphModule) -> list[str]:
    return [node.target for node in gm.graph.nodes if node.op == "call_module"]


def test_identity_and_eval_dropout_calls_are_removed():
    model = WithIdentities().eval()
    model.kept.train()  # a dropout in training mode drops: it stays
    traced = trace(model, leaf_modules=["Scaled", "StochasticDepth"])  # fx traces into both by default
    gm = drop_identities(traced)
    assert _module_calls(gm) == ["conv", "scaled", "kept"]
    assert gm.meta[DROPPED_IDENTITIES_META_KEY] == ["norm", "drop", "drop2d", "dropout", "dropout2d", "depth", "norm_1"]
    assert [node.target for node in gm.graph.nodes if node.op == "call_function"].count(F.dropout) == 1
    model.kept.eval()
    gm.get_submodule("kept").eval()
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
    assert _module_calls(traced) == [
        "conv",
        "norm",
        "drop",
        "drop2d",
        "depth",
        "scaled",
        "kept",
        "norm",
    ]  # the model itself is untouched


def test_training_mode_dropout_stays():
    gm = drop_identities(WithIdentities().train())
    assert gm.meta[DROPPED_IDENTITIES_META_KEY] == ["norm", "dropout2d", "norm_1"]  # dropout2d: training=False


class NeutralArithmetic(nn.Module):
    """FastViT's ``out = scale_out + identity_out`` with ``identity_out = 0``, and its kin."""

    def forward(self, x):
        y = (0 + x) * 1 - 0
        z = torch.mul(1.0, y / 1) + 2  # + 2 is no identity
        w = x * 1
        w.add_(1)  # in place: x * 1 stays, else x itself would change
        return z + w + x * 0


def test_neutral_arithmetic_with_literal_numbers_is_removed_unless_changed_in_place():
    gm = drop_identities(NeutralArithmetic())
    assert gm.meta[DROPPED_IDENTITIES_META_KEY] == ["add", "mul", "sub", "truediv", "mul_1"]
    remaining = [(node.target, node.args[1:]) for node in gm.graph.nodes if node.op == "call_function"]
    assert (operator.add, (2,)) in remaining and (operator.mul, (0,)) in remaining and (operator.mul, (1,)) in remaining
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gm(x.clone()), NeutralArithmetic()(x.clone()))
