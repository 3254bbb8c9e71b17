"""Hierarchical charge readout (hippynn's ``HCharge``): ``q_i = sum_l Linear_l(z_i^(l))``."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


class ChargeHead(nn.Module):
    """One Linear(width_l, 1) per feature level; level 0 (one-hot) has no bias, as in hippynn.

    ``forward(features)`` takes HIPNN's list ``[z^0, ..., z^L]`` and returns charges (n_atoms,) in e.
    No neutrality constraint here (hippynn has none either): :class:`~fastdipole.nn.DipoleModel` applies it.
    """

    def __init__(self, feature_sizes: Sequence[int]):
        super().__init__()
        self.feature_sizes = tuple(feature_sizes)
        self.layers = nn.ModuleList(
            nn.Linear(nf, 1, bias=level > 0) for level, nf in enumerate(self.feature_sizes)
        )

    def set_element_charges(self, species: Sequence[int], charges_e: dict[int, float]) -> None:
        """Set the level-0 readout so that an atom of element ``Z`` starts at ``charges_e[Z]`` (e) from that
        level: its weights are per-element charges, since level 0 is the one-hot species without a bias.
        Elements missing from ``charges_e`` get 0."""
        weight = self.layers[0].weight
        if weight.shape[1] != len(species):
            raise ValueError(f"level 0 has {weight.shape[1]} species columns, got {len(species)} species")
        values = [float(charges_e.get(int(z), 0.0)) for z in species]
        with torch.no_grad():
            weight.copy_(torch.tensor(values, dtype=weight.dtype, device=weight.device)[None, :])

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        if len(features) != len(self.layers):
            raise ValueError(f"expected {len(self.layers)} feature levels, got {len(features)}")
        total = self.layers[0](features[0])
        for layer, z in zip(self.layers[1:], features[1:]):
            total = total + layer(z)
        return total.squeeze(-1)
