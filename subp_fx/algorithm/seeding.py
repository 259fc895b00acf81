"""Seeded random generators derived from a tuple of integers, in one place.

Why derived, not stateful: a mask drawn from ``(seed, epoch, layer)`` alone is the same on every
rank of a distributed run and after a resume, with no sampler state to save or broadcast. numpy's
``SeedSequence`` mixes the parts (nearby tuples give unrelated streams); its first 64 bits seed a
``torch.Generator``.
"""

from __future__ import annotations

import numpy as np
import torch


def derived_seed(*parts: int) -> int:
    """A 64-bit seed mixed from ``parts`` (nearby tuples give unrelated seeds)."""
    state = np.random.SeedSequence(list(parts)).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


def seeded_generator(*parts: int, device: torch.device | str | None = None) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` (default CPU) seeded from ``parts`` alone."""
    generator = torch.Generator(device=device) if device is not None else torch.Generator()
    return generator.manual_seed(derived_seed(*parts))
