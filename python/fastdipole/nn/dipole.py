"""DipoleModel = HIPNN + ChargeHead + point-charge dipole ``mu_m = sum_i q_i (R_i - origin_m)``."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .. import ops
from ..ops.reference import molecule_index
from .charges import ChargeHead
from .hipnn import HIPNN


class DipoleOutput(NamedTuple):
    charges: Tensor  #: (n_atoms,) predicted atomic charges, e
    dipole: Tensor  #: (n_molecules, 3) dipole vectors, e*Angstrom
    magnitude: Tensor  #: (n_molecules,) |dipole|, e*Angstrom


DIPOLE_ORIGINS = ("centroid", "absolute")


class DipoleModel(nn.Module):
    """Predicts atomic charges and molecular dipoles from ``(Z, R, offsets)``.

    ``dipole_origin``: ``"centroid"`` (default) measures positions from each molecule's centroid, so the
    prediction is translation invariant even when predicted charges do not sum to zero;
    ``"absolute"`` uses absolute coordinates exactly like hippynn (identical when sum q = 0).
    """

    def __init__(self, hipnn: HIPNN, charge_head: ChargeHead | None = None, dipole_origin: str = "centroid"):
        super().__init__()
        if dipole_origin not in DIPOLE_ORIGINS:
            raise ValueError(f"dipole_origin must be one of {DIPOLE_ORIGINS}, got {dipole_origin!r}")
        self.hipnn = hipnn
        self.charges = charge_head if charge_head is not None else ChargeHead(hipnn.feature_sizes)
        self.dipole_origin = dipole_origin

    @classmethod
    def from_config(cls, dipole_origin: str = "centroid", **hipnn_kwargs) -> "DipoleModel":
        """Build from HIPNN keyword arguments (species, n_features, n_sensitivities, ...)."""
        return cls(HIPNN(**hipnn_kwargs), dipole_origin=dipole_origin)

    @classmethod
    def from_hippynn(cls, hipnn_module: nn.Module, hcharge_module: nn.Module, dipole_origin: str = "absolute",
                     kernels: str | None = None) -> "DipoleModel":
        """Copy weights from ``hippynn.networks.Hipnn`` and ``hippynn.layers.targets.HCharge`` modules."""
        species = [int(s) for s in hipnn_module.species_set if int(s) != 0]
        first = hipnn_module.interaction_layers[0]
        sens = first.sensitivity
        hipnn = HIPNN(
            species=species,
            n_features=hipnn_module.feature_sizes[1],
            n_sensitivities=first.n_dist,
            dist_soft_min=float(hipnn_module.dist_soft_min),
            dist_soft_max=float(hipnn_module.dist_soft_max),
            dist_hard_max=float(sens.hard_max_dist),
            n_interaction_layers=hipnn_module.ni,
            n_atom_layers=hipnn_module.n_layers_per_block,
            kernels=kernels,
        )
        hipnn.load_hippynn_state_dict(hipnn_module.state_dict())
        head = ChargeHead(hipnn.feature_sizes)
        head.load_state_dict(hcharge_module.state_dict())
        param = next(hipnn_module.parameters())
        return cls(hipnn, head, dipole_origin).to(param.dtype)

    def forward(self, Z: Tensor, R: Tensor, offsets: Tensor) -> DipoleOutput:
        q = self.charges(self.hipnn(Z, R, offsets))
        return DipoleOutput(q, *self.dipole_from_charges(q, R, offsets))

    def forward_from_pairs(self, Z: Tensor, R: Tensor, offsets: Tensor, pairs) -> DipoleOutput:
        """:meth:`forward` with the neighbour pairs (``ops.Pairs`` within ``dist_hard_max``) given and no
        input checks: no host synchronisation, so it can run inside a CUDA graph."""
        q = self.charges(self.hipnn.forward_from_pairs(Z, R, pairs))
        return DipoleOutput(q, *self.dipole_from_charges(q, R, offsets))

    def dipole_from_charges(self, q: Tensor, R: Tensor, offsets: Tensor) -> tuple[Tensor, Tensor]:
        """Dipole vectors (n_molecules, 3) and magnitudes (n_molecules,), e*Angstrom."""
        if self.dipole_origin == "centroid":
            R = R - molecule_centroids(R, offsets)[molecule_index(offsets, R.shape[0])]
        dipole = ops.segmented_dipole(q, R, offsets, backend=self.hipnn.kernels)
        return dipole, torch.linalg.vector_norm(dipole, dim=-1)


def molecule_centroids(R: Tensor, offsets: Tensor) -> Tensor:
    """Mean position (n_molecules, 3) of each molecule's atoms (0 for an empty molecule)."""
    counts = (offsets[1:] - offsets[:-1]).clamp_min(1).to(R.dtype)
    sums = R.new_zeros((offsets.numel() - 1, 3)).index_add(0, molecule_index(offsets, R.shape[0]), R)
    return sums / counts[:, None]
