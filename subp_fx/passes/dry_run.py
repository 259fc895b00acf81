"""Dry run of ``prepare``: what a config would do to every conv of a model, without doing it."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn
from tabulate import tabulate
from torch.fx.passes.shape_prop import ShapeProp

from subp_fx.algorithm.config import SparsityConfig, as_sparsity_config
from subp_fx.algorithm.masks import kept_per_row
from subp_fx.passes.capture import Capture, capture_for_training
from subp_fx.passes.select import select_convs


@dataclass(frozen=True)
class ConvPlan:
    name: str
    selected: bool
    reason: str
    weight_shape: tuple[int, int, int, int]
    output_hw: tuple[int, int]
    N: int | None
    kept_per_row: int  # input channels (input_group x kept groups)
    macs_before: int
    macs_after: int
    G: int | None = None  # input channels per block (sparsity.input_group); None for a dense conv


@dataclass(frozen=True)
class DryRunReport:
    convs: list[ConvPlan]
    config: SparsityConfig
    input_shape: tuple[int, ...]
    capture: str = "symbolic_trace"
    capture_reason: str = ""

    @property
    def macs_before(self) -> int:
        return sum(plan.macs_before for plan in self.convs)

    @property
    def macs_after(self) -> int:
        return sum(plan.macs_after for plan in self.convs)

    @property
    def selected(self) -> list[ConvPlan]:
        return [plan for plan in self.convs if plan.selected]


def _conv_macs(conv: nn.Conv2d, output_shape: torch.Size) -> int:
    """Multiply-accumulates of one image through this conv."""
    _, c_out, out_h, out_w = output_shape
    kh, kw = conv.kernel_size
    return out_h * out_w * c_out * (conv.in_channels // conv.groups) * kh * kw


def _graph_output_shapes(gm: fx.GraphModule, input_shape: tuple[int, ...]) -> dict[str, torch.Size]:
    ShapeProp(gm).propagate(torch.zeros(input_shape))
    return {
        node.target: node.meta["tensor_meta"].shape
        for node in gm.graph.nodes
        if node.op == "call_module" and "tensor_meta" in node.meta
    }


def _hooked_output_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, torch.Size]:
    """Each conv's output shape from forward hooks on one run: exact for a model with no graph,
    whatever Python its forward runs (a conv called twice keeps its last shape, as with a graph)."""
    shapes: dict[str, torch.Size] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: shapes.__setitem__(name, out.shape))
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d)
    ]
    try:
        model(torch.zeros(input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def dry_run(
    model: nn.Module, config: SparsityConfig | dict, input_shape: tuple[int, ...] = (1, 3, 224, 224)
) -> DryRunReport:
    """Plan ``prepare(model, config)`` for one input of ``input_shape`` (NCHW): every conv, selected
    or not and why, its shape, kept input channels per block-row and MACs per image before and
    after, and how the model was captured (``capture``, ``capture_reason``). Shapes come from fx's
    ShapeProp on a graph, or from forward hooks on one run of a model captured by module_swap;
    a conv that run never calls is listed with no output size and 0 MACs.
    Raises what ``prepare`` would raise."""
    config = as_sparsity_config(config)
    captured: Capture = capture_for_training(copy.deepcopy(model), config.leaf_modules, config.capture)
    gm = captured.model.eval()
    with torch.no_grad():
        if captured.has_graph:
            output_shapes = _graph_output_shapes(gm, input_shape)
        else:
            output_shapes = _hooked_output_shapes(gm, input_shape)
    plans = []
    for decision in select_convs(gm, config):
        conv = decision.conv
        output_shape = output_shapes.get(decision.name, torch.Size((0, conv.out_channels, 0, 0)))
        macs = _conv_macs(conv, output_shape)
        if decision.selected:
            kept = kept_per_row(config.prune_rate, conv.in_channels, config.input_group)
        else:
            kept = conv.in_channels
        plans.append(
            ConvPlan(
                name=decision.name,
                selected=decision.selected,
                reason=decision.reason,
                weight_shape=tuple(conv.weight.shape),
                output_hw=tuple(output_shape[2:]),
                N=config.N if decision.selected else None,
                kept_per_row=kept,
                macs_before=macs,
                macs_after=macs * kept // conv.in_channels,
                G=config.input_group if decision.selected else None,
            )
        )
    return DryRunReport(plans, config, tuple(input_shape), captured.method, captured.reason)


def format_dry_run(report: DryRunReport) -> str:
    """The dry run as a table a user reads before training for days."""
    rows = [
        [
            plan.name,
            "sparse" if plan.selected else "dense",
            plan.reason,
            "x".join(map(str, plan.weight_shape)),
            "x".join(map(str, plan.output_hw)),
            plan.N or "-",
            f"{plan.kept_per_row}/{plan.weight_shape[1]}" if plan.selected else "-",
            f"{plan.macs_before / 1e6:.2f}",
            f"{plan.macs_after / 1e6:.2f}",
        ]
        for plan in report.convs
    ]
    headers = [
        "conv",
        "kind",
        "why",
        "weight (Co x Ci x kh x kw)",
        "out HxW",
        "N",
        "kept/row",
        "MMACs before",
        "MMACs after",
    ]
    table = tabulate(rows, headers=headers, tablefmt="simple")
    before, after = report.macs_before, report.macs_after
    summary = (
        f"\n{len(report.selected)} of {len(report.convs)} convs selected "
        f"(N={report.config.N}, "
        f"{f'input_group={report.config.input_group}, ' if report.config.input_group != 1 else ''}"
        f"prune_rate={report.config.prune_rate}, "
        f"criterion={report.config.criterion}); conv MACs per image at input {tuple(report.input_shape)}: "
        f"{before / 1e9:.4f} G -> {after / 1e9:.4f} G ({before / max(after, 1):.2f}x fewer)"
    )
    capture = f"\ncapture: {report.capture}" + (f" ({report.capture_reason})" if report.capture_reason else "")
    return table + summary + capture
