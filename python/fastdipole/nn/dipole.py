"""DipoleModel = HIPNN + ChargeHead (+ total-charge projection) + point-charge dipole
``mu_m = sum_i q_i (R_i - origin_m)``."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .. import ops
from ..ops import molecule_index
from .charges import ChargeHead
from .hipnn import HIPNN


class DipoleOutput(NamedTuple):
    charges: Tensor  #: (n_atoms,) predicted atomic charges, e
    dipole: Tensor  #: (n_molecules, 3) dipole vectors, e*Angstrom
    magnitude: Tensor  #: (n_molecules,) |dipole|, e*Angstrom


DIPOLE_ORIGINS = ("centroid", "absolute")
#: ``uniform``: the head's charges are shifted, the same amount for every atom of a molecule, so that they sum
#: to the molecule's total charge; ``none``: the paper's (and hippynn's) unconstrained head.
CHARGE_CONSTRAINTS = ("uniform", "none")


class DipoleModel(nn.Module):
    """Predicts atomic charges and molecular dipoles from ``(Z, R, offsets)``.

    ``dipole_origin``: ``"centroid"`` (default) measures positions from each molecule's centroid, so the
    prediction is translation invariant even when predicted charges do not sum to zero;
    ``"absolute"`` uses absolute coordinates exactly like hippynn (identical when sum q = 0).

    ``charge_constraint``: ``"uniform"`` (default) makes each molecule's charges sum to its total charge
    (``total_charge`` argument of :meth:`forward`, e; 0 when not given) by removing the excess evenly from its
    atoms; the dipole of a neutral molecule then does not depend on the origin. The dipole of an ion does: it
    is measured from the molecule's centroid (``dipole_origin="centroid"``, the mean position of its atoms,
    not the centre of mass). ``"none"`` is the paper's and hippynn's unconstrained head.
    """

    def __init__(self, hipnn: HIPNN, charge_head: ChargeHead | None = None, dipole_origin: str = "centroid",
                 charge_constraint: str = "uniform"):
        super().__init__()
        if dipole_origin not in DIPOLE_ORIGINS:
            raise ValueError(f"dipole_origin must be one of {DIPOLE_ORIGINS}, got {dipole_origin!r}")
        if charge_constraint not in CHARGE_CONSTRAINTS:
            raise ValueError(f"charge_constraint must be one of {CHARGE_CONSTRAINTS}, got {charge_constraint!r}")
        self.hipnn = hipnn
        self.charges = charge_head if charge_head is not None else ChargeHead(hipnn.feature_sizes)
        self.dipole_origin = dipole_origin
        self.charge_constraint = charge_constraint

    @classmethod
    def from_config(cls, dipole_origin: str = "centroid", charge_constraint: str = "uniform",
                    **hipnn_kwargs) -> "DipoleModel":
        """Build from HIPNN keyword arguments (species, n_features, n_sensitivities, ...)."""
        return cls(HIPNN(**hipnn_kwargs), dipole_origin=dipole_origin, charge_constraint=charge_constraint)

    @classmethod
    def from_hippynn(cls, hipnn_module: nn.Module, hcharge_module: nn.Module, dipole_origin: str = "absolute",
                     backend: str = "auto") -> "DipoleModel":
        """Copy weights from ``hippynn.networks.Hipnn`` and ``hippynn.layers.targets.HCharge`` modules (the
        unconstrained head, as hippynn has it)."""
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
            backend=backend,
        )
        hipnn.load_hippynn_state_dict(hipnn_module.state_dict())
        head = ChargeHead(hipnn.feature_sizes)
        head.load_state_dict(hcharge_module.state_dict())
        param = next(hipnn_module.parameters())
        return cls(hipnn, head, dipole_origin, charge_constraint="none").to(param.dtype)

    def forward(self, Z: Tensor, R: Tensor, offsets: Tensor, total_charge: Tensor | None = None) -> DipoleOutput:
        """Charges (e), dipoles (e*Angstrom) of a flat batch; ``total_charge`` (n_molecules,) in e, default 0."""
        q = self.constrain_charges(self.charges(self.hipnn(Z, R, offsets)), offsets, total_charge)
        return DipoleOutput(q, *self.dipole_from_charges(q, R, offsets))

    def forward_from_pairs(self, Z: Tensor, R: Tensor, offsets: Tensor, pairs,
                           total_charge: Tensor | None = None) -> DipoleOutput:
        """:meth:`forward` with the neighbour pairs (``ops.Pairs`` within ``dist_hard_max``) given and no
        input checks: no host synchronisation, so it can run inside a CUDA graph."""
        q = self.constrain_charges(self.charges(self.hipnn.forward_from_pairs(Z, R, pairs)), offsets, total_charge)
        return DipoleOutput(q, *self.dipole_from_charges(q, R, offsets))

    def constrain_charges(self, q: Tensor, offsets: Tensor, total_charge: Tensor | None = None) -> Tensor:
        """The head's charges made to sum to each molecule's total charge (``charge_constraint="uniform"``)."""
        if self.charge_constraint == "none":
            return q
        return project_total_charge(q, offsets, total_charge)

    def dipole_from_charges(self, q: Tensor, R: Tensor, offsets: Tensor) -> tuple[Tensor, Tensor]:
        """Dipole vectors (n_molecules, 3) and magnitudes (n_molecules,), e*Angstrom."""
        if self.dipole_origin == "centroid":
            R = R - molecule_centroids(R, offsets)[molecule_index(offsets, R.shape[0])]
        dipole = ops.segmented_dipole(q, R, offsets, backend=self.hipnn.backend)
        return dipole, torch.linalg.vector_norm(dipole, dim=-1)


def molecule_centroids(R: Tensor, offsets: Tensor) -> Tensor:
    """Mean position (n_molecules, 3) of each molecule's atoms (0 for an empty molecule)."""
    counts = (offsets[1:] - offsets[:-1]).clamp_min(1).to(R.dtype)
    sums = R.new_zeros((offsets.numel() - 1, 3)).index_add(0, molecule_index(offsets, R.shape[0]), R)
    return sums / counts[:, None]


def project_total_charge(q: Tensor, offsets: Tensor, total_charge: Tensor | None = None) -> Tensor:
    """``q`` (n_atoms,) shifted per molecule so that molecule m sums to ``total_charge[m]`` (e; 0 when None).

    The excess is removed evenly: ``q_i - (sum_{j in m} q_j - Q_m) / n_m``, the orthogonal projection onto the
    charges with the right sums. No host synchronisation (runs inside CUDA graphs); empty molecules stay empty.
    """
    n_molecules = offsets.numel() - 1
    mol = molecule_index(offsets, q.shape[0])
    excess = q.new_zeros(n_molecules).index_add(0, mol, q)
    if total_charge is not None:
        excess = excess - total_charge.to(q.dtype)
    counts = (offsets[1:] - offsets[:-1]).clamp_min(1).to(q.dtype)
    return q - (excess / counts)[mol]


def centroid_point_dipole(q: Tensor, R: Tensor, offsets: Tensor) -> Tensor:
    """Point-charge dipoles (n_molecules, 3), e*Angstrom, of charges ``q`` (e) about each molecule's centroid
    (pure PyTorch, no host synchronisation): the label charges' dipole that the direction term compares with."""
    centred = R - molecule_centroids(R, offsets)[molecule_index(offsets, R.shape[0])]
    mol = molecule_index(offsets, R.shape[0])
    return R.new_zeros((offsets.numel() - 1, 3)).index_add(0, mol, q[:, None] * centred)
