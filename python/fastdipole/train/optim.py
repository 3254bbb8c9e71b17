"""The optimizer fastdipole trains with: Adam, fused into one kernel where torch supports it."""

from __future__ import annotations

from typing import Iterable

import torch


def make_optimizer(params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with ``fused=True`` (one kernel for all parameters: ~5x faster steps on CPU for HIP-NN's
    ~50 small tensors), falling back to the default implementation where fused Adam is unavailable."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)
