"""HIP-NN interaction layer: ``a_i = sum_{v,f} V[v,:,f] env[i,v,f] + W z_i + b``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import ops
from .sensitivity import InverseGaussianSensitivity


class InteractionLayer(nn.Module):
    """One HIP-NN interaction (no activation inside), parameter names as hippynn's ``InteractLayer``.

    ``int_weights`` V: (n_sens, nf_out, nf_in), xavier-normal; ``selfint``: Linear(nf_in, nf_out).
    The environment sum runs through :func:`fastdipole.ops.gaussian_envsum` (C++/CUDA kernel or reference).
    """

    def __init__(
        self,
        nf_in: int,
        nf_out: int,
        n_sens: int,
        dist_soft_min: float,
        dist_soft_max: float,
        dist_hard_max: float,
        backend: str = "auto",
    ):
        super().__init__()
        self.nf_in, self.nf_out, self.n_sens = nf_in, nf_out, n_sens
        self.backend = backend
        self.sensitivity = InverseGaussianSensitivity(n_sens, dist_soft_min, dist_soft_max, dist_hard_max)
        self.int_weights = nn.Parameter(torch.empty(n_sens, nf_out, nf_in))
        nn.init.xavier_normal_(self.int_weights)
        self.selfint = nn.Linear(nf_in, nf_out)
        nn.init.xavier_normal_(self.selfint.weight)

    def forward(self, z: Tensor, r: Tensor, pairs: ops.Pairs) -> Tensor:
        """Features (n_atoms, nf_out) from features ``z`` (n_atoms, nf_in) and pair distances ``r`` (Angstrom)."""
        sens = self.sensitivity
        env = ops.gaussian_envsum(z, r, pairs, sens.mu, sens.sigma, sens.dist_hard_max, backend=self.backend)
        # (N, S*F_in) @ (S*F_in, F_out): V permuted so the contraction is one dense GEMM.
        weights = self.int_weights.permute(0, 2, 1).reshape(self.n_sens * self.nf_in, self.nf_out)
        return env.reshape(z.shape[0], -1) @ weights + self.selfint(z)

