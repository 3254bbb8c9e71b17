"""Torch modules of fastdipole: HIP-NN representation, charge readout and dipole model.

Same function, parameter shapes, initialisation and state-dict keys as hippynn 0.1.3.
"""

from .charges import ChargeHead
from .dipole import (
    CHARGE_CONSTRAINTS,
    DipoleModel,
    DipoleOutput,
    centroid_point_dipole,
    molecule_centroids,
    project_total_charge,
)
from .hipnn import HIPNN, ResidualLayer
from .interaction import InteractionLayer
from .sensitivity import InverseGaussianSensitivity

__all__ = [
    "HIPNN",
    "ChargeHead",
    "DipoleModel",
    "DipoleOutput",
    "InteractionLayer",
    "InverseGaussianSensitivity",
    "ResidualLayer",
    "molecule_centroids",
    "project_total_charge",
    "centroid_point_dipole",
    "CHARGE_CONSTRAINTS",
]
