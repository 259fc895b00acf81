"""The ``modularize_functional`` pass: a functional batch norm, conv or linear on graph constants
becomes a module call.

Why: layers that subclass ``nn.BatchNorm2d`` / ``nn.Conv2d`` / ``nn.Linear`` with a forward of their own (timm's
``BatchNormAct2d``: batch norm, then drop and act; timm's ``Conv2dSame``: a "same" pad computed
from the input size, then ``F.conv2d``; timm's ``Linear``: ``F.linear``) are not leaves for
torch.fx, which traces into them: the graph holds ``F.batch_norm`` / ``F.conv2d`` / ``F.linear``
calls whose weights are ``get_attr`` nodes. ``fold_batchnorm``, ``fold_zero_pads``, ``convert``
and the lowering know these layers as module calls; this pass writes those calls back in that
form, exactly (``nn.BatchNorm2d`` in eval mode, ``nn.Conv2d`` with ``padding_mode='zeros'`` and
``nn.Linear`` call the same functions with the same arguments).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from subp_fx.passes.fold_static_shapes import tensor_ranks
from subp_fx.passes.node_args import graph_constant
from subp_fx.passes.trace import trace

# Keys of GraphModule.meta written by this pass: each rewritten call's node name -> the new
# module's name; each functional batch norm / conv / linear left in the graph -> why.
MODULARIZED_META_KEY = "subp_modularized_calls"
LEFT_FUNCTIONAL_META_KEY = "subp_functional_left"

# Parameter names in call order, and defaults, of the functional forms fx records.
_BATCH_NORM_SIGNATURES: dict[Any, tuple[tuple[str, ...], dict[str, Any]]] = {
    F.batch_norm: (
        ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
        {"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5},
    ),
    # The ATen form (every argument required): its order differs from F.batch_norm's.
    torch.batch_norm: (
        ("input", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps", "cudnn_enabled"),
        {},
    ),
}
# F.conv2d is torch.conv2d itself.
_CONV_SIGNATURE = (
    ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1},
)
_LINEAR_SIGNATURE = (("input", "weight", "bias"), {"bias": None})


def _bind(node: fx.Node, signature: tuple[tuple[str, ...], dict[str, Any]]) -> dict[str, Any]:
    names, defaults = signature
    bound = dict(defaults)
    bound.update(zip(names, node.args))
    bound.update(node.kwargs)
    return bound


def _pair(value: Any) -> tuple[int, int] | None:
    """An int or a sequence of two ints as a pair; None for anything else (a node, a string)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(type(v) is int for v in value):
        return (value[0], value[1])
    return None


def _constants(gm: fx.GraphModule, bound: dict[str, Any], names: tuple[str, ...], optional: tuple[str, ...]):
    """(tensors by name, None) when each named argument is a ``get_attr`` tensor (or None, for an
    ``optional`` one); else (None, why not)."""
    tensors: dict[str, torch.Tensor | None] = {}
    for name in names:
        value = bound.get(name)
        if value is None and name in optional:
            tensors[name] = None
            continue
        tensor = graph_constant(gm, value)
        if tensor is None:
            what = "missing" if value is None else f"computed in the graph ({value})"
            return None, f"its {name} is {what}, not a constant of the model"
        tensors[name] = tensor
    return tensors, None


def _filled(module: nn.Module, tensors: dict[str, torch.Tensor | None]) -> nn.Module:
    """``module`` with each given tensor copied into its attribute of that name (None: left as
    the module made it)."""
    with torch.no_grad():
        for name, tensor in tensors.items():
            if tensor is not None:
                getattr(module, name).copy_(tensor)
    return module


def _batch_norm_module(node: fx.Node, gm: fx.GraphModule, ranks: dict[fx.Node, int]) -> tuple[nn.Module | None, str]:
    """The eval-mode ``nn.BatchNorm2d`` computing this batch norm call, or (None, why not)."""
    bound = _bind(node, _BATCH_NORM_SIGNATURES[node.target])
    if bound.get("training") is not False:
        return None, (
            f"training={bound.get('training')!r}: it normalises with the batch's statistics; an eval-mode call "
            "(training=False, e.g. the model after .eval()) uses the running statistics a BatchNorm2d folds"
        )
    tensors, why = _constants(gm, bound, ("running_mean", "running_var", "weight", "bias"), ("weight", "bias"))
    if tensors is None:
        return None, why
    rank = ranks.get(node)  # a batch norm's output has its input's rank (the input node may be rewritten by now)
    if rank != 4:
        return None, f"its input is {rank}-d on the example; only a (B, C, H, W) batch norm is a BatchNorm2d"
    channels = tensors["running_mean"].numel()
    if any(t is not None and tuple(t.shape) != (channels,) for t in tensors.values()):
        shapes = {name: tuple(t.shape) for name, t in tensors.items() if t is not None}
        return None, f"its statistics and affine parameters are not all of shape ({channels},): {shapes}"
    eps, momentum = bound.get("eps"), bound.get("momentum")
    if not isinstance(eps, float) or not (momentum is None or isinstance(momentum, (int, float))):
        return None, f"eps={eps!r} / momentum={momentum!r} are not numbers"
    mean = tensors["running_mean"]
    bn = nn.BatchNorm2d(channels, eps=eps, momentum=momentum, device=mean.device, dtype=mean.dtype)
    # A missing weight is gamma = 1, a missing bias beta = 0: what nn.BatchNorm2d starts with.
    return _filled(bn, tensors).eval(), ""


def _conv_padding(bound: dict[str, Any], weight: torch.Tensor, stride, dilation):
    """(conv padding, extra asymmetric F.pad list or None) for the call's padding, or (None, why)."""
    padding = bound.get("padding")
    if padding == "valid":
        return (0, 0), None
    if padding == "same":
        if stride != (1, 1):
            return None, f"padding='same' with stride {stride}; torch allows 'same' at stride 1 only"
        # torch pads d*(k-1) in total per axis, the odd one at the end (right / bottom).
        total_h, total_w = (d * (k - 1) for d, k in zip(dilation, weight.shape[-2:]))
        if total_h % 2 == 0 and total_w % 2 == 0:
            return (total_h // 2, total_w // 2), None
        return (0, 0), [total_w // 2, total_w - total_w // 2, total_h // 2, total_h - total_h // 2]
    pair = _pair(padding)
    if pair is None or min(pair) < 0:
        return None, f"padding={padding!r} is not 'same', 'valid', or non-negative ints"
    return pair, None


def _conv_module(node: fx.Node, gm: fx.GraphModule) -> tuple[nn.Module | None, Any]:
    """(the ``nn.Conv2d`` computing this conv call, an asymmetric pad to put before it or None),
    or (None, why not)."""
    bound = _bind(node, _CONV_SIGNATURE)
    tensors, why = _constants(gm, bound, ("weight", "bias"), ("bias",))
    if tensors is None:
        return None, why
    weight, bias = tensors["weight"], tensors["bias"]
    stride, dilation, groups = _pair(bound.get("stride")), _pair(bound.get("dilation")), bound.get("groups")
    if stride is None or dilation is None or type(groups) is not int or groups < 1:
        given = (bound.get("stride"), bound.get("dilation"), groups)
        return None, f"stride / dilation / groups {given} are not ints"
    if weight.dim() != 4 or weight.shape[0] % groups or (bias is not None and tuple(bias.shape) != weight.shape[:1]):
        shapes = (tuple(weight.shape), None if bias is None else tuple(bias.shape))
        return None, f"weight / bias shapes {shapes} do not make a 2-d conv with groups={groups}"
    padding, pad = _conv_padding(bound, weight, stride, dilation)
    if padding is None:
        return None, pad
    conv = nn.Conv2d(
        weight.shape[1] * groups,
        weight.shape[0],
        tuple(weight.shape[-2:]),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    return _filled(conv, tensors), pad


def _linear_module(node: fx.Node, gm: fx.GraphModule) -> tuple[nn.Module | None, str]:
    """The ``nn.Linear`` computing this ``F.linear`` call, or (None, why not)."""
    tensors, why = _constants(gm, _bind(node, _LINEAR_SIGNATURE), ("weight", "bias"), ("bias",))
    if tensors is None:
        return None, why
    weight, bias = tensors["weight"], tensors["bias"]
    if weight.dim() != 2 or (bias is not None and tuple(bias.shape) != weight.shape[:1]):
        shapes = (tuple(weight.shape), None if bias is None else tuple(bias.shape))
        return None, f"weight / bias shapes {shapes} are not (out, in) / (out,)"
    out_features, in_features = weight.shape
    linear = nn.Linear(in_features, out_features, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    return _filled(linear, tensors), ""


def _module_name(gm: fx.GraphModule, node: fx.Node, kind: str) -> str:
    """A free submodule name: ``kind`` under the module owning the call's weights (e.g.
    ``blocks.1.0.bn2.bn``), or the node's name at the root when they have no single owner."""
    owners = {str(n.target).rpartition(".")[0] for n in node.all_input_nodes if n.op == "get_attr"}
    owner = owners.pop() if len(owners) == 1 else ""
    parent = gm.get_submodule(owner) if owner else gm
    base = kind if owner else node.name
    name, index = base, 0
    while hasattr(parent, name):
        index += 1
        name = f"{base}_{index}"
    return f"{owner}.{name}" if owner else name


def _replace(gm: fx.GraphModule, node: fx.Node, module: nn.Module, kind: str, pad: list[int] | None) -> str:
    name = _module_name(gm, node, kind)
    gm.add_submodule(name, module)
    source = node.args[0] if node.args else node.kwargs["input"]
    with gm.graph.inserting_before(node):
        if pad is not None:
            source = gm.graph.call_function(F.pad, (source, pad))
        call = gm.graph.call_module(name, (source,))
    node.replace_all_uses_with(call)
    constants = [n for n in node.all_input_nodes if n.op == "get_attr"]
    gm.graph.erase_node(node)
    for constant in constants:
        if not constant.users:
            gm.graph.erase_node(constant)
    return name


def modularize_functional(gm: nn.Module, example_input_shape: tuple[int, ...]) -> fx.GraphModule:
    """Make each functional batch norm / conv / linear whose weights are constants of the model a
    call of a new ``nn.BatchNorm2d`` / ``nn.Conv2d`` / ``nn.Linear`` submodule.

    Rewrites: an ``F.batch_norm`` / ``torch.batch_norm`` call with ``training=False`` on a 4-d
    input (rank from one run of the graph on zeros of ``example_input_shape``) whose running
    mean / var (and weight / bias, when given) are ``get_attr`` tensors becomes an eval-mode
    ``nn.BatchNorm2d`` holding copies of them (eps and momentum copied); an ``F.conv2d`` whose
    weight (and bias, when given) are ``get_attr`` tensors becomes an ``nn.Conv2d`` with the
    call's stride, padding, dilation and groups (``padding='valid'`` is 0; ``'same'`` is d*(k-1)/2
    per side, or, when that total is odd, a zero ``F.pad`` of the extra row / column at the end,
    as torch pads, before a conv with padding 0); an ``F.linear`` whose weight (and bias) are
    ``get_attr`` tensors becomes an ``nn.Linear``. The new module sits under the module owning the
    weights (``conv_stem.conv``, ``bn1.bn``; the node's name at the root when they have no single
    owner); ``get_attr`` nodes left without users are erased. The original modules keep their
    (now unread) tensors. Exact: the module calls call the same functions on the same values.
    Leaves alone, each recorded with the reason: a batch norm in training mode (``training`` not
    False: batch statistics), one on a tensor not 4-d, any call whose weights or statistics are
    computed in the graph (weight standardisation) or missing, arguments that are graph values
    rather than literals, shapes that do not match. Refuses (``CompiledInputError``) only an
    ``example_input_shape`` the model does not run on.

    ``gm`` is not modified (deep copy; a plain module is traced first).
    ``result.meta[MODULARIZED_META_KEY]`` maps each replaced call's node name to its new module,
    ``result.meta[LEFT_FUNCTIONAL_META_KEY]`` each functional batch norm / conv / linear left to
    the reason.
    """
    gm = trace(copy.deepcopy(gm))
    ranks = tensor_ranks(gm, example_input_shape)
    modularized: dict[str, str] = {}
    left: dict[str, str] = {}
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in (*_BATCH_NORM_SIGNATURES, F.conv2d, F.linear):
            continue
        pad = None
        if node.target is F.conv2d:
            module, detail = _conv_module(node, gm)
            kind, pad = "conv", detail
        elif node.target is F.linear:
            module, detail = _linear_module(node, gm)
            kind = "linear"
        else:
            module, detail = _batch_norm_module(node, gm, ranks)
            kind = "bn"
        if module is None:
            left[node.name] = detail
            continue
        modularized[node.name] = _replace(gm, node, module, kind, pad)
    gm.graph.lint()
    gm.recompile()
    gm.meta[MODULARIZED_META_KEY] = modularized
    gm.meta[LEFT_FUNCTIONAL_META_KEY] = left
    return gm


__all__ = ["LEFT_FUNCTIONAL_META_KEY", "MODULARIZED_META_KEY", "modularize_functional"]
