"""Which nodes fold into a conv kernel's epilogue: residual add and a fusable activation.

The block-sparse conv kernel computes ``act(conv + bias + residual)`` in its write-back, so the
ResNet pattern ``conv -> add(., identity) -> relu`` and MobileNetV2's ``conv -> add(identity, .)``
cost no extra pass over memory when they are lowered as one call. :func:`plan_epilogues` finds,
for each conv (or linear) node that a handler says can take an epilogue:

- an add: when the conv's only user is a two-tensor add of two equal shapes, and the kernel can
  take a residual (``FusionAbility.RESIDUAL``), the add's other operand becomes the residual;
- then an activation: when the (conv or add) output's only user applies an activation the
  registry marks fusable (``activations``: relu, relu6, hardswish, hardsigmoid, sigmoid, silu,
  gelu), it is applied in the epilogue.

Each add is claimed by the first conv (in graph order) that can take it. The fused group is
emitted where its last node stands, so the residual (e.g. a downsample conv that the graph
computes after the main branch) is already lowered there.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import torch.fx as fx

from subp_fx.codegen import activations
from subp_fx.codegen.lowering.graph_view import GraphView, bind_arguments
from subp_fx.passes.node_args import is_add


class FusionAbility(enum.IntEnum):
    """What a kernel's epilogue can absorb."""

    NONE = 0
    ACTIVATION = 1
    RESIDUAL = 2  # residual add, then activation


@dataclass(frozen=True)
class Epilogue:
    """A conv (or linear) node and what its kernel computes after it.

    ``output`` is the node whose value the fused call produces (the conv itself when nothing is
    fused); ``absorbed`` the nodes the call replaces, besides the conv.
    """

    conv: fx.Node
    residual: fx.Node | None = None
    activation: str = "none"
    output: fx.Node | None = None
    absorbed: tuple[fx.Node, ...] = ()

    @property
    def result_node(self) -> fx.Node:
        return self.output if self.output is not None else self.conv


def applied_activation(view: GraphView, node: fx.Node) -> activations.Activation | None:
    """The activation of the registry (``activations.ACTIVATIONS``) ``node`` applies, else None."""
    module = view.module(node)
    target = type(module) if node.op == "call_module" else node.target
    return activations.spelled(node.op, target, module, tuple(node.args), dict(node.kwargs))


def activation_of(view: GraphView, node: fx.Node) -> str | None:
    """The name of the fusable activation ``node`` applies, else None."""
    activation = applied_activation(view, node)
    return activation.name if activation is not None and activation.fusable else None


def add_operands(view: GraphView, node: fx.Node) -> tuple[fx.Node, fx.Node] | None:
    """The two operands when ``node`` adds two tensors of one shape (no alpha), else None."""
    return same_shape_operands(view, node) if is_add(node) else None


def same_shape_operands(view: GraphView, node: fx.Node) -> tuple[fx.Node, fx.Node] | None:
    """A binary op's (input, other) when both are tensors of one shape and alpha is 1, else None."""
    arguments = bind_arguments(node, ("input", "other"), {"alpha": 1})
    left, right = arguments.get("input"), arguments.get("other")
    if arguments["alpha"] != 1 or not (view.is_tensor(left) and view.is_tensor(right)):
        return None
    return (left, right) if view.shape(left) == view.shape(right) else None


def _single_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def plan_epilogues(view: GraphView, ability: Callable[[fx.Node], FusionAbility]) -> dict[fx.Node, Epilogue]:
    """Each fusable conv node -> its :class:`Epilogue` (only convs with something fused)."""
    plans: dict[fx.Node, Epilogue] = {}
    claimed: set[fx.Node] = set()
    for node in view.nodes:
        can = ability(node)
        if can == FusionAbility.NONE:
            continue
        residual, absorbed, last = None, [], node
        user = _single_user(node)
        operands = add_operands(view, user) if user is not None and can >= FusionAbility.RESIDUAL else None
        if operands is not None and user not in claimed and node in operands and operands[0] is not operands[1]:
            residual = operands[1] if operands[0] is node else operands[0]
            absorbed.append(user)
            claimed.add(user)
            last = user
        activation = "none"
        follower = _single_user(last)
        if follower is not None and (kind := activation_of(view, follower)) is not None:
            activation = kind
            absorbed.append(follower)
            last = follower
        if absorbed:
            plans[node] = Epilogue(node, residual, activation, last, tuple(absorbed))
    return plans
