"""``quantize_depthwise_weights``: a depthwise conv's fp32 weight and bias as the int8 depthwise
kernel's constants (``codegen.kernels.depthwise_int8``).

Each channel's 3x3 (kh x kw) weights are quantised symmetrically with that channel's scale
(``quantize_weight``, the same rule as every int8 conv's output channels) and laid out (kh, kw, C),
so a vector of channels is one load. The input's zero point is folded into the bias, as for the
int8 convs (``quantize.packing.quantize_channels``): the kernel multiplies the raw uint8 codes, padding included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from subp_fx.quantize.packing import quantize_channels
from subp_fx.quantize.params import ActivationQuant


@dataclass(frozen=True)
class DepthwiseInt8Weights:
    """One depthwise conv's int8 kernel constants (numpy):

    - ``codes`` int8 (kh, kw, C): the weight of channel c at tap (s, t);
    - ``scale`` float32 (C,): ``s_x * s_w[c]``; ``bias`` float32 (C,): the folded
      ``b[c] - scale[c] * zp_x * sum(codes[..., c])`` (computed in float64), so that
      ``y = float32(sum q_x * q_w) * scale + bias``.
    """

    codes: np.ndarray
    scale: np.ndarray
    bias: np.ndarray


def quantize_depthwise_weights(
    weight: np.ndarray | torch.Tensor, bias: np.ndarray | torch.Tensor | None, input_quant: ActivationQuant
) -> DepthwiseInt8Weights:
    """The constants of a depthwise conv with torch's (C, 1, kh, kw) ``weight``, a (C,) ``bias``
    or None (zero), reading uint8 input quantised with ``input_quant``. Refuses (``ValueError``
    naming the argument) another weight shape, a bias of another length, non-finite weights."""
    weight = np.asarray(weight.detach().cpu() if isinstance(weight, torch.Tensor) else weight, dtype=np.float32)
    if weight.ndim != 4 or weight.shape[1] != 1:
        raise ValueError(f"weight must be a depthwise (C, 1, kh, kw) array, got shape {weight.shape}")
    channels = weight.shape[0]
    if bias is None:
        bias = np.zeros(channels, dtype=np.float32)
    bias = np.asarray(bias.detach().cpu() if isinstance(bias, torch.Tensor) else bias, dtype=np.float32)
    if bias.shape != (channels,):
        raise ValueError(f"bias must have shape (C,) = ({channels},) or be None, got {bias.shape}")
    if not isinstance(input_quant, ActivationQuant):
        raise ValueError(f"input_quant must be an ActivationQuant, got {type(input_quant).__name__}")
    codes, _, _, scale, folded = quantize_channels(weight, bias, input_quant)
    return DepthwiseInt8Weights(codes=np.ascontiguousarray(codes[:, 0].transpose(1, 2, 0)), scale=scale, bias=folded)
