"""Which convs of a traced model become SUBP convs, and why the others do not.

The rules (first match wins), documented for users in ``LayerSelection``:
  1. exact name in ``exclude``      -> dense
  2. exact name in ``include``      -> sparse (bypasses ``min_in_channels``)
  3. ``re:`` regex in ``exclude``   -> dense
  4. ``re:`` regex in ``include``   -> sparse
  5. ``include`` empty              -> the default rule; otherwise dense
A conv that cannot be block-sparse (grouped, N not dividing C_out, ``input_group`` G not dividing
C_in) is never selected; naming it exactly in ``include`` is an error, matching it by regex just
skips it with a reason. (G is checked here, per layer, not in the recipe schema: the schema does
not see the model, and a stem with C_in=3 under G=4 should stay dense, not refuse the recipe.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch.fx as fx
import torch.nn as nn

from subp_fx.algorithm.config import LayerSelection, SparsityConfig
from subp_fx.algorithm.modules import SUBPConv2d
from subp_fx.errors import SelectionError


@dataclass(frozen=True)
class ConvDecision:
    name: str
    conv: nn.Conv2d
    selected: bool
    reason: str


def _regex_match(patterns: list[str], name: str) -> str | None:
    for pattern in patterns:
        if pattern.startswith("re:") and re.fullmatch(pattern[3:], name):
            return pattern
    return None


def _computes_like_conv2d(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` computes exactly what ``nn.Conv2d`` does (SUBPConv2d replaces it by that)."""
    kind = type(conv)
    return kind.forward is nn.Conv2d.forward and kind._conv_forward is nn.Conv2d._conv_forward


def _structural_problem(conv: nn.Conv2d, N: int, G: int = 1) -> str | None:
    """Why this conv cannot hold 1xN blocks at all, or None."""
    if not _computes_like_conv2d(conv):
        # e.g. timm's Conv2dSame, which pads inside its forward: a SUBPConv2d would drop that.
        return f"{type(conv).__name__} overrides nn.Conv2d's forward; only plain nn.Conv2d computation is swapped"
    if conv.groups != 1:
        kind = "depthwise" if conv.groups == conv.in_channels else "grouped"
        return f"{kind} conv (groups={conv.groups}); 1xN blocks need groups=1"
    if conv.out_channels % N != 0:
        return f"N={N} does not divide C_out={conv.out_channels}"
    if conv.in_channels % G != 0:
        return f"input_group={G} does not divide C_in={conv.in_channels}"
    return None


def _decide(name: str, conv: nn.Conv2d, config: SparsityConfig) -> ConvDecision:
    selection: LayerSelection = config.layers
    if isinstance(conv, SUBPConv2d):
        return ConvDecision(name, conv, False, "already a SUBP conv")
    problem = _structural_problem(conv, config.N, config.input_group)
    if name in selection.exclude:
        return ConvDecision(name, conv, False, "excluded by name")
    if name in selection.include:
        if problem:
            raise SelectionError(
                f"layer {name!r} is named in sparsity.layers.include but cannot be made 1xN sparse: {problem}. "
                f"Remove it from include, or choose an N that divides {conv.out_channels} "
                f"and an input_group that divides {conv.in_channels}."
            )
        return ConvDecision(name, conv, True, "included by name")
    excluded_by = _regex_match(selection.exclude, name)
    if excluded_by:
        return ConvDecision(name, conv, False, f"excluded by {excluded_by}")
    included_by = _regex_match(selection.include, name)
    if included_by:
        if problem:
            return ConvDecision(name, conv, False, f"matched {included_by} but {problem}")
        if conv.in_channels < selection.min_in_channels:
            return ConvDecision(
                name,
                conv,
                False,
                f"matched {included_by} but C_in={conv.in_channels} < min_in_channels={selection.min_in_channels}",
            )
        return ConvDecision(name, conv, True, f"included by {included_by}")
    if selection.include:
        return ConvDecision(name, conv, False, "not matched by include")
    if problem:
        return ConvDecision(name, conv, False, problem)
    if conv.in_channels < selection.min_in_channels:
        return ConvDecision(
            name, conv, False, f"C_in={conv.in_channels} < min_in_channels={selection.min_in_channels} (stem)"
        )
    return ConvDecision(name, conv, True, "default rule")


def _inside_leaf(name: str, model: nn.Module, leaf_modules: list[str]) -> bool:
    """Whether module ``name`` lies inside a module listed in ``leaf_modules`` (by qualified name
    or class name): fx keeps such a module opaque, so module_swap leaves its convs alone too."""
    parts = name.split(".")
    for depth in range(1, len(parts)):
        ancestor = ".".join(parts[:depth])
        if ancestor in leaf_modules or type(model.get_submodule(ancestor)).__name__ in leaf_modules:
            return True
    return False


def conv_modules(gm: nn.Module, leaf_modules: list[str] = ()) -> list[tuple[str, nn.Conv2d]]:
    """Every Conv2d the graph calls, in execution order, once each. A model without a graph
    (captured by module_swap): every Conv2d in module order, but those inside ``leaf_modules``."""
    if not isinstance(gm, fx.GraphModule):
        return [
            (name, module)
            for name, module in gm.named_modules()
            if isinstance(module, nn.Conv2d) and not _inside_leaf(name, gm, list(leaf_modules))
        ]
    seen: dict[str, nn.Conv2d] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target not in seen:
            module = gm.get_submodule(node.target)
            if isinstance(module, nn.Conv2d):
                seen[node.target] = module
    return list(seen.items())


def select_convs(gm: nn.Module, config: SparsityConfig) -> list[ConvDecision]:
    """Decide every conv of ``gm`` (a GraphModule, or a model captured by module_swap); raises
    ``SelectionError`` for an impossible explicit request and for include/exclude names that are
    not convs of this model (typos)."""
    convs = conv_modules(gm, config.leaf_modules)
    names = {name for name, _ in convs}
    unknown = [
        entry
        for entry in config.layers.include + config.layers.exclude
        if not entry.startswith("re:") and entry not in names
    ]
    if unknown:
        sample = ", ".join(sorted(names)[:6])
        raise SelectionError(
            f"sparsity.layers names {unknown} but the model has no conv of that name. "
            f"Conv names look like: {sample}{', ...' if len(names) > 6 else ''} "
            "(run `subp-fx prune RECIPE --dry-run` to list them all, or use 're:<regex>')."
        )
    return [_decide(name, conv, config) for name, conv in convs]
