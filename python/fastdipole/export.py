"""Export a trained model as a ``torch.export`` program that runs with PyTorch alone (no fastdipole code).

The program is traced through the pure-PyTorch reference ops (``backend="reference"``; no custom operators to
load) with the model's input checks off, for any number of atoms and molecules:

    import torch
    program = torch.export.load("model.pt2").module()
    charges, dipoles = program(Z, R, offsets, total_charge)

Inputs: ``Z`` int64 (n_atoms,) atomic numbers; ``R`` float32 (n_atoms, 3) positions in Angstrom; ``offsets``
int64 (n_molecules + 1,) CSR (molecule m owns atoms ``offsets[m]:offsets[m+1]``); ``total_charge`` float32
(n_molecules,) in e. Outputs: ``charges`` (n_atoms,) in e (summing to each molecule's total charge), ``dipoles``
(n_molecules, 3) in e*Angstrom about each molecule's centroid. The file's ``fastdipole.json`` extra file holds
the species, units and the run the model came from. Elements outside the species are not checked by the
program: check them before calling it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from .atomic import atomic_path

EXTRA_FILE = "fastdipole.json"


class _Exported(torch.nn.Module):
    """(charges, dipoles) of a DipoleModel, as plain tensors."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, Z: Tensor, R: Tensor, offsets: Tensor, total_charge: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(Z, R, offsets, total_charge)
        return out.charges, out.dipole


def export_model(run_dir, out, which: str = "best") -> Path:
    """Write the model of run folder ``run_dir`` to ``out`` (a ``.pt2`` file, written atomically)."""
    from .data import bundled_sample_path, load_h5
    from .train import read_config
    from .train.run_folder import load_model

    config, _ = read_config(run_dir)
    model = load_model(run_dir, which=which, device="cpu", backend="reference")
    model.hipnn.validate_inputs = False  # the checks read tensor values on the host: not traceable
    example = load_h5(bundled_sample_path(), molecules=slice(0, 3), charges=None)  # any real molecules
    args = (torch.from_numpy(example.Z), torch.from_numpy(example.R), torch.from_numpy(example.offsets), torch.zeros(example.n_molecules))
    n_atoms, n_molecules = torch.export.Dim("n_atoms", min=2), torch.export.Dim("n_molecules", min=1)
    program = torch.export.export(_Exported(model).eval(), args, dynamic_shapes=(
        {0: n_atoms}, {0: n_atoms}, {0: n_molecules + 1}, {0: n_molecules}))
    meta = {"format": "fastdipole-export-1", "run": str(Path(run_dir).resolve()), "checkpoint": which,
            "species": config.species, "inputs": ["Z int64 (n_atoms,)", "R float32 (n_atoms, 3) Angstrom",
                                                  "offsets int64 (n_molecules + 1,)",
                                                  "total_charge float32 (n_molecules,) e"],
            "outputs": ["charges (n_atoms,) e", "dipoles (n_molecules, 3) e*Angstrom about each centroid"]}
    with atomic_path(out) as tmp:
        torch.export.save(program, str(tmp), extra_files={EXTRA_FILE: json.dumps(meta)})
    return Path(out)
