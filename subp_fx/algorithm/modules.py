"""SUBPConv2d: a Conv2d whose weight is masked by 1xN blocks (optionally of G input channels), with
SUBP's mask update."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from subp_fx.algorithm.masks import (
    expand_block_mask,
    expand_group_mask,
    kept_per_row,
    prune_rate_at,
    uniform_block_mask,
)


class _StraightThroughMask(torch.autograd.Function):
    """Forward ``weight * mask``; backward passes the gradient to *all* of the weight, so pruned
    blocks keep learning and can win their place back (the "soft" in SUBP)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return weight * mask

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output, None


def _soft_masked(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return _StraightThroughMask.apply(weight, mask)


def _hard_masked(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return weight * mask


_MASKERS = {"soft": _soft_masked, "hard": _hard_masked}


@dataclass(frozen=True)
class MaskUpdate:
    """What one mask update did to one layer (the per-layer telemetry of a training epoch)."""

    epoch: int
    current_rate: float
    kept_per_row: int  # input channels (G x kept groups)
    rows: int
    in_channels: int
    regrown: int  # blocks (G-groups) above the final count, over all rows
    changed: int  # block-mask entries that changed

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept_per_row / self.in_channels


def conv_geometry(conv: nn.Conv2d) -> tuple[int, int, tuple[int, int]]:
    """(in_channels, out_channels, kernel_size): the positional arguments of an equal Conv2d."""
    return conv.in_channels, conv.out_channels, conv.kernel_size


def conv_options(conv: nn.Conv2d) -> dict:
    """The keyword arguments that build a Conv2d of the same shape, placement and dtype."""
    return {
        "stride": conv.stride,
        "padding": conv.padding,
        "dilation": conv.dilation,
        "groups": conv.groups,
        "bias": conv.bias is not None,
        "padding_mode": conv.padding_mode,
        "device": conv.weight.device,
        "dtype": conv.weight.dtype,
    }


class SUBPConv2d(nn.Conv2d):
    """A Conv2d trained with Soft Uniform Block Pruning.

    Holds the dense ``weight`` and a ``block_mask`` buffer of shape (C_out/N, C_in/G); the forward
    pass convolves with ``weight * block_mask`` (expanded over N, G and the kernel). ``G`` (default
    1, the published SUBP) is the number of consecutive input channels a block spans; with G > 1
    the kept input channels of every block-row come in aligned runs of G (``channel_mask``), the
    layout int8 VNNI kernels need. The mask starts all ones, so a fresh module computes exactly
    what the Conv2d it replaced did.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        *,
        N: int,
        prune_rate: float,
        criterion: str = "BPAR",
        alpha: float = 1.0,
        tau: float = 1.0,
        schedule: str = "cubic",
        decay_start: int = 0,
        decay_end: int = 0,
        mode: str = "soft",
        pruned_weight_decay: float = 0.0,
        G: int = 1,
        **conv_kwargs,
    ):
        super().__init__(in_channels, out_channels, kernel_size, **conv_kwargs)
        if self.groups != 1:
            raise ValueError(f"SUBPConv2d needs groups == 1, got groups={self.groups}")
        if out_channels % N != 0:
            raise ValueError(f"N={N} must divide out_channels={out_channels}")
        if isinstance(G, bool) or not isinstance(G, int) or G < 1 or in_channels % G != 0:
            raise ValueError(f"G must be a positive integer dividing in_channels={in_channels}, got G={G!r}")
        if mode not in _MASKERS:
            raise ValueError(f"mode must be one of {sorted(_MASKERS)}, got {mode!r}")
        self.N = N
        self.G = G
        self.prune_rate = prune_rate
        self.criterion = criterion
        self.alpha = alpha
        self.tau = tau
        self.schedule = schedule
        self.decay_start = decay_start
        self.decay_end = decay_end
        self.mode = mode
        self.pruned_weight_decay = pruned_weight_decay
        self.register_buffer(
            "block_mask",
            torch.ones(out_channels // N, in_channels // G, dtype=self.weight.dtype, device=self.weight.device),
        )

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **subp_settings) -> SUBPConv2d:
        """Wrap an existing Conv2d, sharing nothing but copying its weight and bias."""
        module = cls(*conv_geometry(conv), **conv_options(conv), **subp_settings)
        with torch.no_grad():
            module.weight.copy_(conv.weight)
            if conv.bias is not None:
                module.bias.copy_(conv.bias)
        module.train(conv.training)
        return module

    @property
    def weight_mask(self) -> torch.Tensor:
        """The block mask expanded to the weight's shape."""
        return expand_block_mask(self.block_mask, self.weight.shape, self.G)

    @property
    def channel_mask(self) -> torch.Tensor:
        """The per-input-channel 1xN mask (C_out/N, C_in) the block mask stands for: the
        ``block_mask`` itself when G=1, else each kept group as G consecutive kept channels."""
        return expand_group_mask(self.block_mask, self.G)

    def masked_weight(self) -> torch.Tensor:
        return _MASKERS[self.mode](self.weight, self.weight_mask.to(self.weight.dtype))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(input, self.masked_weight(), self.bias)

    @property
    def final_kept_per_row(self) -> int:
        """Input channels every block-row keeps once the mask is final (G x kept groups)."""
        return kept_per_row(self.prune_rate, self.in_channels, self.G)

    def current_rate(self, epoch: int) -> float:
        return prune_rate_at(epoch, self.schedule, self.prune_rate, self.decay_start, self.decay_end)

    @torch.no_grad()
    def update_mask(self, epoch: int, generator: torch.Generator | None = None) -> MaskUpdate:
        """Recompute the block mask for ``epoch`` (prune to the target, regrow by the schedule)."""
        rate = self.current_rate(epoch)
        previous = self.block_mask.clone()
        new_mask = uniform_block_mask(
            self.weight.detach().float(),
            self.N,
            self.prune_rate,
            rate,
            self.criterion,
            block_mask=previous.float(),
            alpha=self.alpha,
            tau=self.tau,
            generator=generator,
            G=self.G,
        )
        self.block_mask.copy_(new_mask)
        kept = int(new_mask[0].sum().item()) * self.G
        return MaskUpdate(
            epoch=epoch,
            current_rate=rate,
            kept_per_row=kept,
            rows=new_mask.shape[0],
            in_channels=self.in_channels,
            regrown=(kept - self.final_kept_per_row) // self.G * new_mask.shape[0],
            changed=int((previous != self.block_mask).sum().item()),
        )

    @torch.no_grad()
    def decay_pruned_weights(self) -> None:
        """SR-STE style decay: ``grad += decay * (1 - mask) * weight``. Call after gradients are
        unscaled (AMP) and before the optimiser step."""
        if self.pruned_weight_decay == 0 or self.weight.grad is None:
            return
        pruned = 1 - self.weight_mask.clamp(0, 1)
        self.weight.grad.add_(self.pruned_weight_decay * pruned * self.weight)

    def is_uniform(self) -> bool:
        """Every block-row keeps the same number of blocks (so of input channels)."""
        per_row = self.block_mask.sum(dim=1)
        return bool((per_row == per_row[0]).all())

    def extra_repr(self) -> str:
        kept = int(self.block_mask[0].sum()) * self.G if self.block_mask.numel() else 0
        return (
            f"{super().extra_repr()}, N={self.N}{f', G={self.G}' if self.G != 1 else ''}, "
            f"prune_rate={self.prune_rate}, criterion={self.criterion}, mode={self.mode}, "
            f"kept_per_row={kept}/{self.in_channels}"
        )
