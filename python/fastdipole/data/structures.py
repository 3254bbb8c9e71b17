"""Molecules to predict on, from structure files (via ASE) and SMILES strings (via RDKit).

``read_structures`` turns them into a :class:`MoleculeDataset` without labels (``mu`` is 0) plus one name per
molecule, ``FILE:INDEX`` or the SMILES string. Positions are in Angstrom, as ASE and RDKit give them. Each
molecule's total charge (e) lands in ``dataset.extra["total_charge"]``: the sum of RDKit's formal charges for a
SMILES, the file's ``total_charge`` array for an .h5 file, ``atoms.info["charge"]`` for a frame that has one
(extxyz), else the ``charge`` argument (default 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import TOTAL_CHARGE_KEY, MoleculeDataset, check_species, validate
from .h5io import load_h5

H5_SUFFIXES = (".h5", ".hdf5")


def _read_file(path: Path, charge: float) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
    """(Z, R, total charge) of every molecule (frame) in a structure file: our .h5 layout, or anything
    ase.io.read reads; ``charge`` (e) where the file says nothing."""
    if path.suffix.lower() in H5_SUFFIXES:
        data = load_h5(path, charges=None)
        totals = data.total_charge if TOTAL_CHARGE_KEY in data.extra else np.full(data.n_molecules, charge)
        return ([data.Z[a:b] for a, b in zip(data.offsets[:-1], data.offsets[1:])],
                [data.R[a:b] for a, b in zip(data.offsets[:-1], data.offsets[1:])], [float(q) for q in totals])
    try:
        import ase.io
    except ImportError:
        raise DataError(f"{path}: reading structure files needs ASE (pip install fastdipole[predict])") from None
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        frames = ase.io.read(path, index=":")
    except Exception as err:  # ASE raises many kinds for unreadable or unknown formats
        raise DataError(f"{path}: not a structure file ASE can read ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]})") from None
    if not frames:
        raise DataError(f"{path}: holds no structures")
    return ([np.asarray(f.get_atomic_numbers(), dtype=np.int64) for f in frames],
            [np.asarray(f.get_positions(), dtype=np.float64) for f in frames],
            [float(f.info.get("charge", charge)) for f in frames])


def molecule_from_smiles(smiles: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """(Z, R, total charge in e) of a 3-D conformer of ``smiles``: hydrogens added, RDKit ETKDG embedding, MMFF
    relaxation; the total charge is the sum of the formal charges (``[NH4+]`` gives +1).

    Force-field geometries differ from the DFT ones models are trained on (QM9: B3LYP), which shifts
    predictions somewhat; prefer your own optimised structures when you have them.
    """
    try:
        from rdkit import Chem
        from rdkit.Chem import AllChem
    except ImportError:
        raise DataError(f"SMILES {smiles!r}: reading SMILES needs RDKit (pip install fastdipole[predict])") from None
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise DataError(f"SMILES {smiles!r}: RDKit cannot parse it")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise DataError(f"SMILES {smiles!r}: RDKit could not embed a 3-D conformer")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol)
    Z = np.array([atom.GetAtomicNum() for atom in mol.GetAtoms()], dtype=np.int64)
    total = sum(atom.GetFormalCharge() for atom in mol.GetAtoms())
    return Z, np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64), int(total)


def _dataset(Zs, Rs, totals, source: str) -> MoleculeDataset:
    """Molecules (lists of Z and R arrays, total charges in e) as an unlabelled dataset (mu = 0)."""
    counts = np.array([len(z) for z in Zs], dtype=np.int64)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return MoleculeDataset(Z=np.concatenate(Zs).astype(np.int64), R=np.concatenate(Rs).astype(np.float32),
                           offsets=offsets, mu_debye=np.zeros(len(counts), dtype=np.float32), source=source,
                           extra={TOTAL_CHARGE_KEY: np.asarray(totals, dtype=np.float32)})


def read_structures(paths=(), smiles=(), species=None, charge: float = 0.0) -> tuple[MoleculeDataset, list[str]]:
    """All molecules of ``paths`` (in order, every frame of each file) then of ``smiles``, and their names.

    Each file and each SMILES is checked on its own, so a one-line DataError names the file and the molecule
    (frame) index in it, or the SMILES: unreadable input, no atoms, non-finite or coincident positions, an
    element outside ``species`` when given.
    """
    inputs = []  # (source named in error messages, molecule names, Z arrays, R arrays, total charges)
    for path in paths:
        Z_list, R_list, totals = _read_file(Path(path), charge)
        inputs.append((str(path), [f"{path}:{k}" for k in range(len(Z_list))], Z_list, R_list, totals))
    for s in smiles:
        Z, R, total = molecule_from_smiles(s)
        inputs.append((f"SMILES {s!r}", [s], [Z], [R], [total]))
    Zs, Rs, Qs, names = [], [], [], []
    for source, input_names, Z_list, R_list, totals in inputs:
        part = _dataset(Z_list, R_list, totals, source)
        validate(part)
        if species is not None:
            check_species(part, species)
        Zs += Z_list
        Rs += R_list
        Qs += totals
        names += input_names
    if not Zs:
        raise DataError("no molecules to predict on: give structure files and/or --smiles")
    return _dataset(Zs, Rs, Qs, ", ".join([str(p) for p in paths] + (["--smiles"] if smiles else []))), names
