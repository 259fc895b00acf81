"""SUBP block masks: importance criteria, uniform pruning with regrowth, prune-rate schedules.

A 1xN *block* of a conv weight ``W`` (C_out, C_in, kh, kw) is ``W[r*N:(r+1)*N, c, :, :]``:
N consecutive output channels, one input channel, the whole kernel. Block masks have shape
(C_out/N, C_in) -- one row per block-row -- and are 0/1 floats.

Input-channel groups (``G``, default 1): with ``G > 1`` a block is N output channels x G
*consecutive, aligned* input channels (``c*G .. c*G+G-1``) x the whole kernel, and masks have
shape (C_out/N, C_in/G). The whole algorithm is unchanged, only its unit is: rates count groups
(``int(prune_rate * C_in/G)`` pruned per row), and every criterion is the paper's, applied to the
enlarged block vector of N*G*kh*kw weights (L1: the sum of its channels' L1 scores; L2: the
group's Euclidean norm; BPAR: angular redundancy between group vectors). Why: int8 VNNI sums 4
products per 32-bit lane, so a kernel wants each row's kept input channels as aligned runs of 4
(one 32-bit load of activations); G=1 is exactly the published SUBP.

Everything here is a pure function of its arguments (randomness only through an explicit
``torch.Generator``), so the same call gives the same mask on every rank of a distributed run.
These functions reproduce the paper authors' reference implementation (its "v2" rule: scores
are computed on ``W * current mask``); ``tests/test_masks.py`` checks that against the golden
data produced with the authors' code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

CRITERIA = ("L1", "L2", "BPAR")
SCHEDULES = ("linear", "exp", "cos", "cubic")

# The exp schedule's steepness, as in the reference implementation.
_EXP_SCHEDULE_RATE = 0.05


def _check_group(G: int, in_channels: int) -> None:
    if isinstance(G, bool) or not isinstance(G, int) or G < 1:
        raise ValueError(f"G (input channels per block) must be a positive integer, got {G!r}")
    if in_channels % G != 0:
        raise ValueError(f"G={G} does not divide C_in={in_channels}; valid G for this layer divide {in_channels}")


def _check_block_shape(weight: torch.Tensor, N: int, G: int = 1) -> None:
    if weight.dim() != 4:
        raise ValueError(f"weight must be a 4-d conv weight (C_out, C_in, kh, kw), got shape {tuple(weight.shape)}")
    if not isinstance(N, int) or N < 1:
        raise ValueError(f"N must be a positive integer, got {N!r}")
    if weight.shape[0] % N != 0:
        raise ValueError(
            f"N={N} does not divide C_out={weight.shape[0]} of a weight of shape {tuple(weight.shape)}; "
            f"valid N for this layer divide {weight.shape[0]}"
        )
    _check_group(G, weight.shape[1])


def to_block_layout(weight: torch.Tensor, N: int, G: int = 1) -> torch.Tensor:
    """(C_out, C_in, kh, kw) -> (C_out/N, C_in/G, N*G*kh*kw): one vector per block of N output
    channels x G consecutive input channels x the kernel (with G=1, the published 1xN layout)."""
    _check_block_shape(weight, N, G)
    c_out, c_in, kh, kw = weight.shape
    if G == 1:
        return weight.reshape(c_out // N, N, c_in, kh, kw).transpose(1, 2).flatten(2)
    return weight.reshape(c_out // N, N, c_in // G, G, kh, kw).transpose(1, 2).flatten(2)


def expand_group_mask(block_mask: torch.Tensor, G: int) -> torch.Tensor:
    """(C_out/N, C_in/G) group mask -> the per-channel (C_out/N, C_in) 1xN mask it stands for:
    each kept group becomes G consecutive kept input channels (an aligned run of G)."""
    if G == 1:
        return block_mask
    _check_group(G, G)
    return block_mask.repeat_interleave(G, dim=1)


def expand_block_mask(block_mask: torch.Tensor, weight_shape: torch.Size | tuple[int, ...], G: int = 1) -> torch.Tensor:
    """(C_out/N, C_in/G) block mask -> a mask of the weight's shape (C_out, C_in, kh, kw)."""
    c_out, c_in, kh, kw = weight_shape
    rows, mask_columns = block_mask.shape
    if mask_columns * G != c_in or c_out % rows != 0:
        raise ValueError(
            f"block mask of shape {tuple(block_mask.shape)} with G={G} does not fit a weight of shape "
            f"{tuple(weight_shape)} (it needs shape (C_out/N, C_in/G))"
        )
    block_mask = expand_group_mask(block_mask, G)
    n = c_out // rows
    return block_mask[:, None, :, None, None].expand(rows, n, c_in, kh, kw).reshape(c_out, c_in, kh, kw)


def _check_block_mask(block_mask: torch.Tensor, weight: torch.Tensor, N: int, G: int = 1) -> None:
    expected = (weight.shape[0] // N, weight.shape[1] // G)
    if tuple(block_mask.shape) != expected:
        raise ValueError(
            f"block_mask has shape {tuple(block_mask.shape)}; for this weight, N={N} and G={G} it must be {expected}"
        )


def _l1(blocks: torch.Tensor, block_mask: torch.Tensor, alpha: float) -> torch.Tensor:
    return blocks.abs().sum(dim=-1)


def _l2(blocks: torch.Tensor, block_mask: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.norm(blocks, dim=-1)


def _bpar(blocks: torch.Tensor, block_mask: torch.Tensor, alpha: float) -> torch.Tensor:
    # Block angular redundancy: a block is less important when its direction is already
    # covered by other blocks of the same row. Pruned blocks are zero vectors; their
    # normalised copy stays zero, so they count as orthogonal to everything.
    l1 = blocks.abs().sum(dim=-1)
    l1_share = l1 / l1.sum(dim=-1, keepdim=True)
    unit = F.normalize(blocks * block_mask[..., None], dim=-1)
    redundancy = torch.einsum("ijk,ink->ijn", unit, unit).abs().sum(dim=-1)
    redundancy_share = redundancy / redundancy.sum(dim=-1, keepdim=True)
    redundancy_share = torch.where(redundancy_share == 0, 1, redundancy_share)
    return l1_share - alpha * redundancy_share


_CRITERION_SCORES: dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "L1": _l1,
    "L2": _l2,
    "BPAR": _bpar,
}


@contextmanager
def ieee_fp32_matmul(device: torch.device) -> Iterator[None]:
    """Full-precision fp32 matmuls on ``device`` for the duration (a no-op off CUDA).

    Training may allow TF32 (``train.tf32``), whose 10-bit mantissa would make BPAR's angular
    scores, and so the masks, differ from the CPU's; scores are always computed in IEEE fp32.
    """
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9
        saved = matmul.fp32_precision
        matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision = saved
    else:
        saved = matmul.allow_tf32
        matmul.allow_tf32 = False
        try:
            yield
        finally:
            matmul.allow_tf32 = saved


@torch.no_grad()
def block_importance(
    weight: torch.Tensor,
    N: int,
    criterion: str,
    block_mask: torch.Tensor | None = None,
    alpha: float = 1.0,
    G: int = 1,
) -> torch.Tensor:
    """Importance of every block, shape (C_out/N, C_in/G); higher means more important.

    With ``block_mask`` given, the score is computed on ``weight * block_mask`` (the paper's v2
    rule: currently pruned blocks score as zero blocks), and BPAR's angular term sees only the
    kept blocks. With ``G > 1`` a block spans G consecutive input channels and the criterion is
    applied to its whole N*G*kh*kw vector (see the module docstring).
    """
    if criterion not in _CRITERION_SCORES:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    _check_block_shape(weight, N, G)
    if block_mask is None:
        block_mask = torch.ones(weight.shape[0] // N, weight.shape[1] // G, dtype=weight.dtype, device=weight.device)
    else:
        _check_block_mask(block_mask, weight, N, G)
        block_mask = block_mask.to(dtype=weight.dtype, device=weight.device)
        weight = weight * expand_block_mask(block_mask, weight.shape, G)
    with ieee_fp32_matmul(weight.device):
        return _CRITERION_SCORES[criterion](to_block_layout(weight, N, G), block_mask, alpha)


def pruned_per_row(prune_rate: float, in_channels: int, G: int = 1) -> int:
    """Blocks (G-groups) pruned in every block-row at the final rate: int(prune_rate * C_in/G)."""
    return int(prune_rate * (in_channels // G))


def kept_per_row(prune_rate: float, in_channels: int, G: int = 1) -> int:
    """Input channels every block-row keeps once pruning is final: G x the kept groups."""
    groups = in_channels // G
    return (groups - pruned_per_row(prune_rate, in_channels, G)) * G


@torch.no_grad()
def uniform_block_mask(
    weight: torch.Tensor,
    N: int,
    prune_rate: float,
    current_rate: float,
    criterion: str,
    block_mask: torch.Tensor | None = None,
    alpha: float = 1.0,
    tau: float = 1.0,
    generator: torch.Generator | None = None,
    G: int = 1,
) -> torch.Tensor:
    """A new uniform 0/1 block mask of shape (C_out/N, C_in/G) (``G``: input channels per block).

    With B = C_in/G blocks per row: in every block-row, the ``P = int(prune_rate * B)`` least
    important blocks are pruned, then ``Q = int((prune_rate - current_rate) * B)`` of them regrow,
    drawn without replacement with probabilities ``softmax(normalize(pruned scores) / tau)``.
    Every row keeps ``B - P + Q`` blocks. ``current_rate`` is the scheduled rate for this epoch
    (``prune_rate_at``); once it equals ``prune_rate`` nothing regrows and the mask is final.

    Scores are computed where ``weight`` lives; the selection (sort, regrowth draw) runs where
    ``generator`` lives, on the CPU when none is given, and the mask is returned on ``weight``'s
    device. Ties (e.g. the equal scores of blocks pruned last epoch) are broken by input-channel
    index (a stable sort), so a CUDA run draws the same masks as a CPU run from the same weights
    and seed: a CUDA generator would draw other numbers, and CUDA's sort orders ties differently.
    """
    if not 0.0 <= prune_rate < 1.0:
        raise ValueError(f"prune_rate must be in [0, 1), got {prune_rate!r}")
    if not 0.0 <= current_rate <= prune_rate:
        raise ValueError(f"current_rate must be in [0, prune_rate={prune_rate}], got {current_rate!r}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau!r}")
    score = block_importance(weight, N, criterion, block_mask=block_mask, alpha=alpha, G=G)
    score = score.to(generator.device if generator is not None else torch.device("cpu"))
    blocks_per_row = weight.shape[1] // G
    pruned = pruned_per_row(prune_rate, blocks_per_row)
    regrown = int((prune_rate - current_rate) * blocks_per_row)

    sorted_score, order = torch.sort(score, dim=1, stable=True)
    new_mask = torch.ones(score.shape, dtype=torch.float32, device=score.device)
    new_mask.scatter_(1, order[:, :pruned], 0.0)
    if regrown > 0:
        probabilities = torch.softmax(F.normalize(sorted_score[:, :pruned], dim=-1) / tau, dim=-1)
        drawn = torch.multinomial(probabilities, num_samples=regrown, generator=generator)
        new_mask.scatter_(1, torch.gather(order, 1, drawn), 1.0)
    return new_mask.to(weight.device)


def _linear_ratio(epoch: int, start: int, end: int) -> float:
    return min(max((epoch - start) / (end - start), 0), 1)


def _cos_ratio(epoch: int, start: int, end: int) -> float:
    if epoch < start:
        return 0.0
    if epoch < end:
        return 1 - math.cos((epoch - start) / (end - start) * math.pi * 0.5)
    return 1.0


def _exp_ratio(epoch: int, start: int, end: int) -> float:
    if epoch < start:
        return 0.0
    if epoch < end:

        def ramp(i: int) -> float:
            return 1 - math.exp(-_EXP_SCHEDULE_RATE * i)

        full = ramp(end - start - 1)
        # A one-epoch window has a single ramp point, ramp(0) == 0: nothing to ramp through.
        return ramp(epoch - start) / full if full > 0 else 0.0
    return 1.0


def _cubic_ratio(epoch: int, start: int, end: int) -> float:
    return min(max(((epoch - start) / (end - start)) ** 3, 0), 1)


_SCHEDULE_RATIOS: dict[str, Callable[[int, int, int], float]] = {
    "linear": _linear_ratio,
    "exp": _exp_ratio,
    "cos": _cos_ratio,
    "cubic": _cubic_ratio,
}


def prune_rate_at(epoch: int, schedule: str, prune_rate: float, decay_start: int, decay_end: int) -> float:
    """The prune rate in force at ``epoch``: ramps from 0 at ``decay_start`` to ``prune_rate`` at
    ``decay_end`` along ``schedule``; ``decay_start == decay_end == 0`` means the full rate from
    the start."""
    if schedule not in _SCHEDULE_RATIOS:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if not 0 <= decay_start <= decay_end:
        raise ValueError(f"need 0 <= decay_start <= decay_end, got decay_start={decay_start}, decay_end={decay_end}")
    if decay_start == decay_end:
        if decay_start == 0:
            return prune_rate
        return prune_rate if epoch >= decay_end else 0.0
    return _SCHEDULE_RATIOS[schedule](epoch, decay_start, decay_end) * prune_rate
