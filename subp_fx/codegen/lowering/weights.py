"""Reading torch layer parameters into what the kernels take: float32 arrays."""

from __future__ import annotations

import numpy as np
import torch


def float32_array(tensor: torch.Tensor) -> np.ndarray:
    """A detached CPU float32 copy of a parameter or buffer."""
    return tensor.detach().cpu().numpy().astype(np.float32)
