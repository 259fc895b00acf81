"""FLOPs and parameters counted the way the SUBP paper counts them, dense and after pruning.

The paper's "FLOPs" are multiply-accumulates (MACs) of one forward pass at 224x224:

* a conv layer costs ``C_in/groups * kh * kw`` MACs per output element, plus one op per output
  element for the bias (counted whether or not the conv has a bias: the BatchNorm that follows
  folds into one at inference);
* a linear layer costs ``in_features`` MACs per output element plus one bias op per output;
* BatchNorm, activations, pooling and additions cost nothing;
* a sparse conv's whole count, its bias op included, is scaled by its density.

Parameters are every parameter of the model (BatchNorm's affine ones included); a sparse conv's
weight counts at its density, its bias in full.

A SUBPConv2d's density is that of its *final* mask, ``final_kept_per_row / C_in`` -- what the
compiled kernel executes -- not the mask it holds during training. The paper's own table uses
``1 - prune_rate`` instead, which differs where ``prune_rate * C_in`` is not a whole number
(ResNet-50 at 98.5/128: 1.0428 G with kept_per_row, 1.0380 G in the paper); pass
``sparse_density="prune_rate"`` to reproduce the paper's numbers exactly.

Counting runs the model once on a zero input with forward hooks, so it works on any nn.Module,
including a torch.fx GraphModule whose convs were replaced by SUBPConv2d. Layers called through
``torch.nn.functional`` instead of a module are not seen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from subp_fx.algorithm.modules import SUBPConv2d
from subp_fx.errors import ConfigError

PAPER_INPUT_SHAPE = (1, 3, 224, 224)


def _conv_macs(module: nn.Module, output: torch.Tensor) -> int:
    # weight[0] holds one output channel's kernel: C_in/groups x kernel size MACs per output.
    return module.weight[0].numel() * output.numel()


def _linear_macs(module: nn.Linear, output: torch.Tensor) -> int:
    return module.in_features * output.numel()


# Which module types cost MACs and how many (bias op excluded); subclasses (SUBPConv2d) resolve
# to their nearest listed base class.
_LAYER_MACS: dict[type[nn.Module], Callable[[nn.Module, torch.Tensor], int]] = {
    nn.Conv1d: _conv_macs,
    nn.Conv2d: _conv_macs,
    nn.Conv3d: _conv_macs,
    nn.Linear: _linear_macs,
}

# How dense a SUBPConv2d counts, by convention name.
SPARSE_DENSITY_RULES: dict[str, Callable[[SUBPConv2d], float]] = {
    "kept_per_row": lambda conv: conv.final_kept_per_row / conv.in_channels,
    "prune_rate": lambda conv: 1.0 - conv.prune_rate,
}


def _macs_rule(module: nn.Module) -> Callable[[nn.Module, torch.Tensor], int] | None:
    for cls in type(module).__mro__:
        if cls in _LAYER_MACS:
            return _LAYER_MACS[cls]
    return None


@dataclass(frozen=True)
class LayerFlops:
    """One counted layer call: its shapes, and its MACs and parameters dense and after pruning."""

    name: str
    type: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    macs_dense: int
    macs: int
    params_dense: int
    params: int
    density: float  # share of the dense count kept; 1.0 for a dense layer
    kept_per_row: int | None  # None for a dense layer
    in_channels: int | None  # set for sparse layers, to show kept_per_row / in_channels

    @property
    def is_sparse(self) -> bool:
        return self.kept_per_row is not None


@dataclass(frozen=True)
class FlopsReport:
    """Per-layer rows and totals of one forward pass on ``input_shape``."""

    layers: tuple[LayerFlops, ...]
    macs: int
    macs_dense: int
    params: int
    params_dense: int
    input_shape: tuple[int, ...]
    sparse_density: str


def _sparse_share(
    module: nn.Module, density_rule: Callable[[SUBPConv2d], float]
) -> tuple[float, int | None, int | None]:
    if isinstance(module, SUBPConv2d):
        return density_rule(module), module.final_kept_per_row, module.in_channels
    return 1.0, None, None


def _layer_row(
    name: str, module: nn.Module, inputs: tuple, output: torch.Tensor, density_rule: Callable[[SUBPConv2d], float]
) -> LayerFlops:
    density, kept, in_channels = _sparse_share(module, density_rule)
    macs_dense = _macs_rule(module)(module, output) + output.numel()  # + one bias op per output
    weight = module.weight.numel()
    bias = module.bias.numel() if getattr(module, "bias", None) is not None else 0
    return LayerFlops(
        name=name,
        type=type(module).__name__,
        input_shape=tuple(inputs[0].shape),
        output_shape=tuple(output.shape),
        macs_dense=macs_dense,
        macs=round(macs_dense * density),
        params_dense=weight + bias,
        params=round(weight * density) + bias,
        density=density,
        kept_per_row=kept,
        in_channels=in_channels,
    )


def _check_arguments(input_shape: tuple[int, ...], sparse_density: str) -> None:
    if sparse_density not in SPARSE_DENSITY_RULES:
        raise ConfigError(f"sparse_density must be one of {', '.join(SPARSE_DENSITY_RULES)}, got {sparse_density!r}")
    if not input_shape or not all(isinstance(size, int) and size > 0 for size in input_shape):
        raise ConfigError(
            f"input_shape must be a tuple of positive integers like (1, 3, 224, 224), got {input_shape!r}"
        )


def _zero_input(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    reference = next(model.parameters(), None)
    if reference is None:
        return torch.zeros(input_shape)
    return torch.zeros(input_shape, dtype=reference.dtype, device=reference.device)


def count_flops(
    model: nn.Module,
    input_shape: tuple[int, ...] = PAPER_INPUT_SHAPE,
    sparse_density: str = "kept_per_row",
) -> FlopsReport:
    """Count MACs and parameters of ``model`` dense and after pruning (see the module docstring
    for the convention). Counts are for the whole ``input_shape`` batch; use batch size 1 for
    per-image numbers. The model runs once in eval mode without gradients, so BatchNorm
    statistics are untouched; every module's train/eval mode is restored afterwards."""
    input_shape = tuple(input_shape)
    _check_arguments(input_shape, sparse_density)
    density_rule = SPARSE_DENSITY_RULES[sparse_density]
    rows: list[LayerFlops] = []

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            rows.append(_layer_row(name, module, inputs, output, density_rule))

        return hook

    handles = []
    for name, module in model.named_modules():
        if _macs_rule(module) is not None:
            handles.append(module.register_forward_hook(record(name)))
    # Per-module modes, so a model with some layers deliberately in eval (frozen BN) gets them back.
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(_zero_input(model, input_shape))
    except RuntimeError as exc:
        raise ConfigError(
            f"count_flops could not run {type(model).__name__} on an input of shape {input_shape} "
            f"({str(exc).splitlines()[0]}); pass the input_shape the model expects, e.g. (1, 1, 28, 28) "
            "for a 1-channel 28x28 model"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training

    params_dense = sum(parameter.numel() for parameter in model.parameters())
    # A module called twice appears in two rows but owns its parameters once.
    pruned_params = sum(row.params_dense - row.params for row in {row.name: row for row in rows}.values())
    return FlopsReport(
        layers=tuple(rows),
        macs=sum(row.macs for row in rows),
        macs_dense=sum(row.macs_dense for row in rows),
        params=params_dense - pruned_params,
        params_dense=params_dense,
        input_shape=input_shape,
        sparse_density=sparse_density,
    )


_UNITS = ((1e9, "G"), (1e6, "M"), (1e3, "K"))


def _human(count: float, digits: int = 2) -> str:
    for scale, unit in _UNITS:
        if abs(count) >= scale:
            return f"{count / scale:.{digits}f}{unit}"
    return f"{count:.0f}"


def _kept_label(row: LayerFlops) -> str:
    return f"{row.kept_per_row}/{row.in_channels}" if row.is_sparse else "dense"


def _shape_label(shape: tuple[int, ...]) -> str:
    return "x".join(str(size) for size in shape)


_COLUMNS: tuple[tuple[str, Callable[[LayerFlops], str], str], ...] = (
    ("layer", lambda row: row.name or "<model>", "<"),
    ("type", lambda row: row.type, "<"),
    ("input", lambda row: _shape_label(row.input_shape), ">"),
    ("output", lambda row: _shape_label(row.output_shape), ">"),
    ("kept/C_in", _kept_label, ">"),
    ("MACs dense", lambda row: _human(row.macs_dense), ">"),
    ("MACs", lambda row: _human(row.macs), ">"),
    ("params dense", lambda row: _human(row.params_dense), ">"),
    ("params", lambda row: _human(row.params), ">"),
)


def format_flops_table(report: FlopsReport) -> str:
    """A fixed-width table, one line per counted layer, then the totals (MACs in G, params in M)."""
    cells = [[column(row) for _, column, _ in _COLUMNS] for row in report.layers]
    headers = [header for header, _, _ in _COLUMNS]
    widths = [max(len(text) for text in [header] + [line[i] for line in cells]) for i, header in enumerate(headers)]
    aligns = [align for _, _, align in _COLUMNS]

    def line(texts: list[str]) -> str:
        return "  ".join(f"{text:{align}{width}}" for text, align, width in zip(texts, aligns, widths)).rstrip()

    separator = "-" * len(line(headers))
    macs_share = report.macs / report.macs_dense if report.macs_dense else 1.0
    params_share = report.params / report.params_dense if report.params_dense else 1.0
    totals = [
        f"input {_shape_label(report.input_shape)}, sparse layers counted by {report.sparse_density}",
        f"MACs (FLOPs): {report.macs / 1e9:.4f} G of {report.macs_dense / 1e9:.4f} G dense ({macs_share:.1%})",
        f"params:       {report.params / 1e6:.3f} M of {report.params_dense / 1e6:.3f} M dense ({params_share:.1%})",
    ]
    return "\n".join([line(headers), separator, *(line(texts) for texts in cells), separator, *totals])
