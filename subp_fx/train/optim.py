"""Optimiser and learning-rate schedule as the paper trains: SGD with momentum, no weight decay
on batch-norm and bias parameters, cosine decay with optional linear warm-up, moved every
optimiser step (``optim.lr_step: iteration``) or set once per epoch (``epoch``, the authors')."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from subp_fx.recipes.schema import OptimSection

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def parameter_groups(model: nn.Module, weight_decay: float, no_decay_bn_bias: bool) -> list[dict]:
    """Two groups: decayed weights, and (when asked) undecayed norm parameters and biases."""
    if not no_decay_bn_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decayed, undecayed = [], []
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad:
                continue
            exempt = isinstance(module, _NORM_TYPES) or name == "bias"
            (undecayed if exempt else decayed).append(parameter)
    return [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": undecayed, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, optim: OptimSection) -> torch.optim.SGD:
    return torch.optim.SGD(
        parameter_groups(model, optim.weight_decay, optim.no_decay_bn_bias),
        lr=optim.lr,
        momentum=optim.momentum,
        nesterov=optim.nesterov,
    )


def lr_factor(step: int, total_steps: int, warmup_steps: int, scheduler: str, min_lr_ratio: float) -> float:
    """Multiplier of the base learning rate at optimiser step ``step``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if scheduler == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimSection, steps_per_epoch: int, epochs: int):
    """A scheduler to ``step()`` after every optimiser step. With ``optim.lr_step == "epoch"`` the
    rate of a whole epoch is the schedule's value at that epoch (cosine over ``epochs`` points,
    warm-up over whole epochs), so every step of epoch ``e`` uses the same rate."""
    min_lr_ratio = optim.min_lr / optim.lr
    steps_per_epoch = max(1, steps_per_epoch)
    if optim.lr_step == "epoch":
        warmup_epochs = int(optim.warmup_epochs)

        def factor(step: int) -> float:
            return lr_factor(step // steps_per_epoch, epochs, warmup_epochs, optim.scheduler, min_lr_ratio)

    else:
        total_steps = steps_per_epoch * epochs
        warmup_steps = int(round(optim.warmup_epochs * steps_per_epoch))

        def factor(step: int) -> float:
            return lr_factor(step, total_steps, warmup_steps, optim.scheduler, min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
