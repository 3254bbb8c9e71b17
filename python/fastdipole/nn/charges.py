"""Hierarchical charge readout (hippynn's ``HCharge``): ``q_i = sum_l Linear_l(z_i^(l))``."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn


class ChargeHead(nn.Module):
    """One Linear(width_l, 1) per feature level; level 0 (one-hot) has no bias, as in hippynn.

    ``forward(features)`` takes HIPNN's list ``[z^0, ..., z^L]`` and returns charges (n_atoms,) in e.
    No neutrality constraint (hippynn has none either).
    """

    def __init__(self, feature_sizes: Sequence[int]):
        super().__init__()
        self.feature_sizes = tuple(feature_sizes)
        self.layers = nn.ModuleList(
            nn.Linear(nf, 1, bias=level > 0) for level, nf in enumerate(self.feature_sizes)
        )

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        if len(features) != len(self.layers):
            raise ValueError(f"expected {len(self.layers)} feature levels, got {len(features)}")
        total = self.layers[0](features[0])
        for layer, z in zip(self.layers[1:], features[1:]):
            total = total + layer(z)
        return total.squeeze(-1)
