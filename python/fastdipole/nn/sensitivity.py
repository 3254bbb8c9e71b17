"""Inverse-distance Gaussian sensitivities of HIP-NN (hippynn's ``InverseSensitivityModule``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ops import reference


class InverseGaussianSensitivity(nn.Module):
    """``s_v(r) = exp(-0.5 sigma_v^2 (1/r - 1/mu_v)^2) * cos^2(pi r / (2 r_cut))`` for r < r_cut.

    Parameters ``mu`` (Angstrom) and ``sigma`` (Angstrom, an inverse width in 1/r space) have shape
    (1, n_sens) and the same initialisation as hippynn: ``mu = 1 / linspace(1/soft_max, 1/soft_min, n)``,
    ``sigma = 2 * n * soft_min``.
    """

    def __init__(self, n_sens: int, dist_soft_min: float, dist_soft_max: float, dist_hard_max: float):
        super().__init__()
        if not 0 < dist_soft_min < dist_soft_max <= dist_hard_max:
            raise ValueError(
                "need 0 < dist_soft_min < dist_soft_max <= dist_hard_max (Angstrom), got "
                f"{dist_soft_min}, {dist_soft_max}, {dist_hard_max}"
            )
        self.n_sens = n_sens
        self.dist_hard_max = float(dist_hard_max)
        init_mu = 1.0 / torch.linspace(1.0 / dist_soft_max, 1.0 / dist_soft_min, n_sens)
        self.mu = nn.Parameter(init_mu.unsqueeze(0))
        self.sigma = nn.Parameter(torch.full((1, n_sens), 2.0 * n_sens * dist_soft_min))

    def forward(self, r: Tensor) -> Tensor:
        """Sensitivities (n_pairs, n_sens) for pair distances ``r`` (n_pairs,) in Angstrom."""
        return reference.sensitivities(r, self.mu, self.sigma, self.dist_hard_max)

    def extra_repr(self) -> str:
        return f"n_sens={self.n_sens}, dist_hard_max={self.dist_hard_max}"
