"""Reading torch layer parameters into what the kernels take: float32 arrays, explicit padding."""

from __future__ import annotations

import numpy as np
import torch


def float32_array(tensor: torch.Tensor) -> np.ndarray:
    """A detached CPU float32 copy of a parameter or buffer."""
    return tensor.detach().cpu().numpy().astype(np.float32)


def explicit_padding(padding, kernel_size: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int] | None:
    """Symmetric (ph, pw) for torch's conv ``padding`` argument (ints, 'valid' or 'same'), or
    None when it is asymmetric ('same' with an even dilated kernel extent)."""
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        extents = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
        return tuple(extent // 2 for extent in extents) if all(extent % 2 == 0 for extent in extents) else None
    return tuple(padding)
