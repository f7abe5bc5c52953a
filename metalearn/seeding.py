"""Seeds derived from the run's seed, so every random stream is reproducible on its own."""

from __future__ import annotations

import numpy as np
import torch


def derive_seed(seed: int, *keys: int) -> int:
    """An independent 63-bit seed for (seed, *keys), e.g. (seed, task index, purpose)."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def derive_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded with ``derive_seed(seed, *keys)``."""
    return torch.Generator().manual_seed(derive_seed(seed, *keys))
