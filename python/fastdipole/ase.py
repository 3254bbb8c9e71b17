"""An ASE calculator for fastdipole models: dipoles (e*Angstrom, ASE's unit) and atomic charges (e) of an ``Atoms``,
and their derivatives with respect to the positions (atomic polar tensors) from autograd.

    from fastdipole.ase import DipoleCalculator
    atoms.calc = DipoleCalculator(model="qm9")                 # a shipped model, a run folder or a DipoleModel
    atoms.get_dipole_moment()                                   # (3,) e*Angstrom
    atoms.get_charges()                                         # (n_atoms,) e, summing to the total charge
    atoms.calc.get_dipole_derivatives(atoms)                    # (n_atoms, 3, 3): d mu_b / d R_(i, a), e

The total charge is the ``charge`` argument, else ``atoms.info["charge"]``, else 0. The dipole is measured from
the centroid of the atoms (the same vector from any origin for a neutral molecule). fastdipole predicts no
energies: for vibrations or IR intensities give ``forces_from`` a force calculator (EMT, xTB, DFT...), whose
energy and forces this calculator passes on, so that ``ase.vibrations.Infrared`` gets both from one object.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from .nn import DipoleModel


class DipoleCalculator(Calculator):
    """Dipole moment and charges of a fastdipole model (float64 by default, for smooth finite differences)."""

    implemented_properties = ["dipole", "charges"]

    def __init__(self, model, charge: float | None = None, forces_from: Calculator | None = None,
                 device: str = "cpu", dtype: torch.dtype = torch.float64, backend: str = "auto", **kwargs):
        super().__init__(**kwargs)
        self.model = _as_model(model, device, backend).to(device=device, dtype=dtype).eval()
        self.charge = charge
        self.forces_from = forces_from
        if forces_from is not None:
            self.implemented_properties = [*DipoleCalculator.implemented_properties, "energy", "forces"]

    # ---- ASE interface ----------------------------------------------------------------------------------
    def calculate(self, atoms=None, properties=("dipole",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        with torch.no_grad():
            out = self._forward(self.atoms)
        self.results["dipole"] = out.dipole[0].cpu().numpy().astype(np.float64)
        self.results["charges"] = out.charges.cpu().numpy().astype(np.float64)
        if self.forces_from is not None and {"energy", "forces"} & set(properties):
            other = self.atoms.copy()
            other.calc = self.forces_from
            self.results["energy"] = other.get_potential_energy()
            self.results["forces"] = other.get_forces()

    # ---- derivatives ------------------------------------------------------------------------------------
    def get_dipole_derivatives(self, atoms=None) -> np.ndarray:
        """Atomic polar tensors ``P[i, a, b] = d mu_b / d R_(i, a)`` (e), shape (n_atoms, 3, 3), from autograd."""
        atoms = self.atoms if atoms is None else atoms
        R = torch.tensor(atoms.get_positions(), dtype=self._dtype, device=self._device, requires_grad=True)
        out = self._forward(atoms, R)
        rows = [torch.autograd.grad(out.dipole[0, b], R, retain_graph=b < 2)[0] for b in range(3)]
        return torch.stack(rows, dim=-1).detach().cpu().numpy().astype(np.float64)

    # ---- internals --------------------------------------------------------------------------------------
    @property
    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _total_charge(self, atoms) -> float:
        return float(self.charge if self.charge is not None else atoms.info.get("charge", 0.0))

    def _forward(self, atoms, R: torch.Tensor | None = None):
        if R is None:
            R = torch.tensor(atoms.get_positions(), dtype=self._dtype, device=self._device)
        Z = torch.tensor(atoms.get_atomic_numbers(), dtype=torch.long, device=self._device)
        offsets = torch.tensor([0, len(atoms)], dtype=torch.long, device=self._device)
        total = torch.tensor([self._total_charge(atoms)], dtype=self._dtype, device=self._device)
        return self.model(Z, R, offsets, total)


def _as_model(model, device: str, backend: str) -> DipoleModel:
    """A private copy of ``model``: a DipoleModel, a run folder path (its best checkpoint) or a shipped model's
    name (``"qm9"``)."""
    if isinstance(model, DipoleModel):
        return copy.deepcopy(model)
    if isinstance(model, (str, Path)):
        from .pretrained import resolve_model
        from .train import load_model

        return load_model(resolve_model(model), device=device, backend=backend)
    raise TypeError(f"model must be a DipoleModel or a run folder, got {type(model).__name__}")
