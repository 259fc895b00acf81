"""Quantisation parameters and the arithmetic that uses them: uint8 activations, int8 weights.

The compiled int8 kernels implement exactly these formulas, so every rounding is spelled out:

- activations, asymmetric per tensor: ``q = clamp(rint(x * inverse_scale) + zero_point, 0,
  255)`` with ``inverse_scale = float32(1 / scale)``, the product in float32 and round half to
  even; ``dequantize(q) = (q - zero_point) * scale`` in float32. Why a product and not torch's
  division: in a kernel's epilogue ``vdivps`` cost 5x ``vmulps`` (63 against 12 us for a
  56x56x64 quantise, Ice Lake, 2 threads);
- weights, symmetric per output channel: ``s_w = max|w| / 127`` in float32 (1 for an all-zero
  channel), ``q_w = clamp(rint(w / s_w), -127, 127)`` with the division in float32.

``scale`` is always a float32 value (stored as a Python float that float32 represents exactly),
so torch, numpy and the kernels compute the same ``inverse_scale`` and multiply by it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

UINT8_MAX = 255
INT8_WEIGHT_MAX = 127  # symmetric: -128 is never used, so -q_w is always representable
# A calibrated range narrower than this (a tensor that was constant, e.g. all zeros) is widened
# to it: the scale must be positive, and any positive scale represents a constant 0 exactly.
MIN_RANGE_WIDTH = 1e-6


def _float32(value: float) -> float:
    return float(np.float32(value))


@dataclass(frozen=True)
class ActivationQuant:
    """Asymmetric uint8 quantisation of one tensor: ``x ~ (q - zero_point) * scale``.

    ``scale`` must be a positive finite float32 value, ``zero_point`` an int in [0, 255]
    (``ValueError`` naming the field otherwise). Build one from a calibrated range with
    :meth:`from_range`.
    """

    scale: float
    zero_point: int

    def __post_init__(self):
        scale, zero_point = self.scale, self.zero_point
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        if _float32(scale) != scale:
            raise ValueError(
                f"scale must be a float32 value (the kernels compute float32(1 / scale) from it), got {scale!r}"
            )
        if isinstance(zero_point, bool) or not isinstance(zero_point, (int, np.integer)):
            raise ValueError(f"zero_point must be an integer in [0, {UINT8_MAX}], got {zero_point!r}")
        if not 0 <= zero_point <= UINT8_MAX:
            raise ValueError(f"zero_point must be an integer in [0, {UINT8_MAX}], got {zero_point}")
        object.__setattr__(self, "zero_point", int(zero_point))
        object.__setattr__(self, "scale", float(scale))

    @classmethod
    def from_range(cls, lo: float, hi: float) -> ActivationQuant:
        """The parameters for values observed in [``lo``, ``hi``]: the range is first widened to
        hold 0 (``lo = min(lo, 0)``, ``hi = max(hi, 0)``, so 0 — zero padding, ReLU's floor — is
        exact), and to at least ``MIN_RANGE_WIDTH``; ``scale = float32((hi - lo) / 255)``,
        ``zero_point = clamp(rint(-lo / scale), 0, 255)``. Refuses (``ValueError``) non-finite
        bounds or ``lo > hi``."""
        lo, hi = float(lo), float(hi)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"a calibrated range must be finite, got lo={lo!r}, hi={hi!r}")
        if lo > hi:
            raise ValueError(f"a calibrated range needs lo <= hi, got lo={lo!r}, hi={hi!r}")
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if hi - lo < MIN_RANGE_WIDTH:
            hi = lo + MIN_RANGE_WIDTH
        scale = _float32((hi - lo) / UINT8_MAX)
        zero_point = int(np.clip(np.rint(-lo / scale), 0, UINT8_MAX))
        return cls(scale, zero_point)

    def quantize(self, x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """uint8 codes of ``x`` (a torch tensor or numpy array, cast to float32 first; the same
        kind comes back). Values beyond the range saturate at 0 / 255."""
        if isinstance(x, torch.Tensor):
            ratio = x.to(torch.float32) * torch.tensor(self.inverse_scale, dtype=torch.float32)
            return torch.clamp(torch.round(ratio) + self.zero_point, 0, UINT8_MAX).to(torch.uint8)
        ratio = np.asarray(x, dtype=np.float32) * np.float32(self.inverse_scale)
        return np.clip(np.rint(ratio) + np.float32(self.zero_point), 0, UINT8_MAX).astype(np.uint8)

    @property
    def inverse_scale(self) -> float:
        """``float32(1 / scale)``, computed in float32 as the kernels do."""
        return float(np.float32(1.0) / np.float32(self.scale))

    def dequantize(self, q: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """float32 ``(q - zero_point) * scale`` of uint8 codes (torch or numpy, the same comes back)."""
        if isinstance(q, torch.Tensor):
            return (q.to(torch.float32) - self.zero_point) * torch.tensor(self.scale, dtype=torch.float32)
        return (np.asarray(q).astype(np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)

    def fake_quant(self, x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """``dequantize(quantize(x))``: ``x`` rounded to the nearest representable value, in float32."""
        return self.dequantize(self.quantize(x))


def weight_scales(weight: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per-output-channel symmetric scales of ``weight`` (output channel first, any trailing
    shape): ``float32(max|w[co]|) / 127`` in float32, and 1 for a channel whose weights are all
    zero. Returns float32 (C_out,). Refuses (``ValueError``) a 0-d weight or non-finite values."""
    array = _as_float32(weight)
    if array.ndim == 0 or array.shape[0] == 0:
        raise ValueError(f"weight must have an output-channel axis first, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("weight holds non-finite values; int8 weights need finite ones")
    peak = np.abs(array.reshape(array.shape[0], -1)).max(axis=1, initial=0.0).astype(np.float32)
    scales = peak / np.float32(INT8_WEIGHT_MAX)
    return np.where(peak > 0, scales, np.float32(1.0)).astype(np.float32)


def quantize_weight(weight: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(q_w, s_w)``: int8 codes of ``weight`` (output channel first, same shape) and its
    float32 per-channel scales (:func:`weight_scales`); ``q_w = clamp(rint(w / s_w), -127, 127)``
    with the division in float32."""
    array = _as_float32(weight)
    scales = weight_scales(array)
    ratio = array / scales.reshape(-1, *([1] * (array.ndim - 1)))
    codes = np.clip(np.rint(ratio), -INT8_WEIGHT_MAX, INT8_WEIGHT_MAX).astype(np.int8)
    return codes, scales


def _as_float32(weight: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(weight, torch.Tensor):
        weight = weight.detach().cpu().numpy()
    return np.asarray(weight, dtype=np.float32)


def output_scales(input_quant: ActivationQuant, scales: np.ndarray) -> np.ndarray:
    """float32 ``scale[co] = s_x * s_w[co]``: what one unit of a conv's int32 accumulator is worth
    in its output (exact float32 products of the two float32 factors)."""
    return (np.float32(input_quant.scale) * np.asarray(scales, dtype=np.float32)).astype(np.float32)
