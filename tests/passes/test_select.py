"""select_convs: the documented precedence (first match wins), regex semantics, refusals.

1. exact name in exclude -> dense        2. exact name in include -> sparse
3. regex in exclude      -> dense        4. regex in include      -> sparse
5. include empty -> default rule (groups == 1, C_in >= min_in_channels, N | C_out); else dense
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from subp_fx.algorithm.config import SparsityConfig
from subp_fx.algorithm.modules import SUBPConv2d
from subp_fx.errors import SelectionError
from subp_fx.passes import prepare, select_convs, subp_modules, trace
from tests.toy_models import TOY_CONV_NAMES, TOY_DEFAULT_SPARSE, ToyNet, seeded


def _decide(include=(), exclude=(), N=16, min_in_channels=4, model=None):
    config = SparsityConfig(
        N=N, layers={"include": list(include), "exclude": list(exclude), "min_in_channels": min_in_channels}
    )
    decisions = select_convs(trace(model if model is not None else ToyNet()), config)
    return {d.name: d for d in decisions}


def _selected(decisions) -> set[str]:
    return {name for name, d in decisions.items() if d.selected}


def test_every_conv_decided_once_in_execution_order():
    config = SparsityConfig(N=16)
    assert [d.name for d in select_convs(trace(ToyNet()), config)] == TOY_CONV_NAMES


def test_rule5_default_rule_with_reasons():
    decisions = _decide()
    assert _selected(decisions) == TOY_DEFAULT_SPARSE
    assert "min_in_channels" in decisions["stem"].reason and "C_in=3" in decisions["stem"].reason
    assert "depthwise" in decisions["dw"].reason
    assert "grouped" in decisions["grouped"].reason and "groups=4" in decisions["grouped"].reason
    assert "N=16" in decisions["odd"].reason and "24" in decisions["odd"].reason
    assert decisions["pw"].reason == "default rule"


def test_rule5_min_in_channels_boundary():
    assert "pw" in _selected(_decide(min_in_channels=16))  # C_in=16 >= 16
    selected = _selected(_decide(min_in_channels=17))
    assert "pw" not in selected and "block.conv1" in selected  # 16 < 17 <= 32


def test_rule5_nonempty_include_selects_nothing_else():
    decisions = _decide(include=["pw"])
    assert _selected(decisions) == {"pw"}
    assert decisions["block.conv1"].reason == "not matched by include"


def test_rule1_exact_exclude_beats_exact_include():
    decisions = _decide(include=["pw", "block.conv1"], exclude=["pw"])
    assert _selected(decisions) == {"block.conv1"}
    assert decisions["pw"].reason == "excluded by name"


def test_rule1_exact_exclude_comes_before_the_structural_check():
    # A depthwise conv both included and excluded by name is excluded, not an error.
    decisions = _decide(include=["dw", "pw"], exclude=["dw"])
    assert _selected(decisions) == {"pw"}


def test_rule1_exact_exclude_beats_regex_include():
    decisions = _decide(include=["re:block\\..*"], exclude=["block.conv2"])
    assert _selected(decisions) == {"block.conv1", "block.downsample"}
    assert decisions["block.conv2"].reason == "excluded by name"


def test_rule2_exact_include_beats_regex_exclude():
    decisions = _decide(include=["block.downsample"], exclude=["re:.*downsample.*"])
    assert decisions["block.downsample"].selected
    assert decisions["block.downsample"].reason == "included by name"


def test_rule3_regex_exclude_beats_regex_include():
    decisions = _decide(include=["re:block\\..*"], exclude=["re:.*conv2"])
    assert _selected(decisions) == {"block.conv1", "block.downsample"}
    assert decisions["block.conv2"].reason == "excluded by re:.*conv2"


def test_rule3_regex_exclude_with_default_rule():
    decisions = _decide(exclude=["re:.*downsample.*"])
    assert _selected(decisions) == TOY_DEFAULT_SPARSE - {"block.downsample"}


def test_rule4_regex_include_skips_structurally_impossible_convs():
    decisions = _decide(include=["re:.*"])
    for name in ("dw", "grouped", "odd"):
        assert not decisions[name].selected
        assert decisions[name].reason.startswith("matched re:.*")
    assert "depthwise" in decisions["dw"].reason
    assert TOY_DEFAULT_SPARSE <= _selected(decisions)
    assert decisions["pw"].reason == "included by re:.*"


def test_regex_is_full_match():
    # "re:conv1" would find "block.conv1" with re.search, and "re:block.conv" would match its
    # prefix with re.match; neither is a full match.
    assert _selected(_decide(include=["re:conv1"])) == set()
    assert _selected(_decide(include=["re:block.conv"])) == set()
    assert _selected(_decide(include=["re:block.conv."])) == {"block.conv1", "block.conv2"}
    assert _selected(_decide(exclude=["re:downsample"])) == TOY_DEFAULT_SPARSE


@pytest.mark.parametrize("name, problem", [("dw", "depthwise"), ("grouped", "grouped"), ("odd", "does not divide")])
def test_exact_include_of_impossible_conv_is_an_error(name, problem):
    with pytest.raises(SelectionError) as info:
        _decide(include=[name])
    message = str(info.value)
    assert repr(name) in message and problem in message


def test_exact_include_of_odd_conv_works_when_N_divides():
    assert _decide(include=["odd"], N=8)["odd"].selected


@pytest.mark.parametrize(
    "layers", [{"include": ["block.conv3"]}, {"exclude": ["block.conv3"]}, {"include": ["pw", "head"]}]
)
def test_unknown_exact_name_is_an_error(layers):
    with pytest.raises(SelectionError) as info:
        _decide(**layers)
    bad = "head" if "head" in layers.get("include", []) else "block.conv3"
    assert bad in str(info.value)


def test_regex_include_respects_min_in_channels():
    decisions = _decide(include=["re:.*"])
    assert not decisions["stem"].selected and "min_in_channels" in decisions["stem"].reason


def test_exact_include_bypasses_min_in_channels():
    decisions = _decide(include=["stem", "pw"])
    assert _selected(decisions) == {"stem", "pw"}
    assert decisions["stem"].reason == "included by name"
    assert not _decide()["stem"].selected


def test_already_subp_convs_are_not_rewrapped():
    gm = prepare(seeded(ToyNet), {"N": 16, "prune_rate": 0.5})
    first = dict(subp_modules(gm))
    for module in first.values():
        module.block_mask[:, 0] = 0  # mark the masks, to see they survive
    # Re-prepare with a different N: the existing SUBP convs keep theirs; "odd" (C_out=24) is
    # newly eligible with N=8 and is wrapped.
    decisions = {d.name: d for d in select_convs(gm, SparsityConfig(N=8, layers={"include": ["pw", "re:.*"]}))}
    for name in TOY_DEFAULT_SPARSE:
        assert not decisions[name].selected and decisions[name].reason == "already a SUBP conv"
    again = prepare(gm, {"N": 8})
    second = dict(subp_modules(again))
    assert set(second) == TOY_DEFAULT_SPARSE | {"odd"}
    for name in TOY_DEFAULT_SPARSE:
        module = again.get_submodule(name)
        assert type(module) is SUBPConv2d and module.N == 16
        assert (module.block_mask[:, 0] == 0).all() and (module.block_mask[:, 1:] == 1).all()
        assert not any(isinstance(child, SUBPConv2d) for child in module.children())
    assert again.get_submodule("odd").N == 8


class _PlainModelWithSubpConv(nn.Module):
    """A plain nn.Module (not a GraphModule) that already holds a SUBP conv, e.g. a model rebuilt
    from a SUBP checkpoint or a prepared model used as a submodule of a bigger one."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.sparse = SUBPConv2d(16, 32, 3, N=16, prune_rate=0.5, padding=1)
        self.conv = nn.Conv2d(32, 32, 3, padding=1)

    def forward(self, x):
        return self.conv(torch.relu(self.sparse(torch.relu(self.stem(x)))))


def test_subp_conv_inside_plain_module_is_not_rewrapped():
    # Regression: fx once traced into SUBPConv2d.forward (Python shape logic on a Proxy), so any
    # plain module holding a SUBP conv was reported untraceable.
    model = _PlainModelWithSubpConv()
    model.sparse.block_mask[:, 3] = 0
    decisions = {d.name: d for d in select_convs(trace(model), SparsityConfig(N=16))}
    assert decisions["sparse"].reason == "already a SUBP conv" and not decisions["sparse"].selected
    assert decisions["conv"].selected
    gm = prepare(model, {"N": 16})
    assert {name for name, _ in subp_modules(gm)} == {"sparse", "conv"}
    assert torch.equal(gm.get_submodule("sparse").block_mask, model.sparse.block_mask)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=1e-6, atol=1e-6)
