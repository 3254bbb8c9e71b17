"""Molecules to predict on, from structure files and SMILES: every record of every input, named and checked.

Readers: SDF / MOL files through RDKit (every ``$$$$``-separated record; ASE's SDF reader stops after the first),
``.h5`` files in fastdipole's layout, anything else through ``ase.io.read(path, index=":")`` (xyz, extxyz, pdb,
...; every frame), SMILES strings (``--smiles``) and files of SMILES (one per line, an optional name after
whitespace; blank lines and ``#`` comments skipped). Positions are in Angstrom, as ASE and RDKit give them.

Each record is named by its title (SDF), its ``name`` / ``title`` field (extxyz) or its SMILES name, else
``FILE:INDEX`` (0-based), and carries a total charge (e): the sum of its formal charges (SDF, SMILES), the file's
``total_charge`` array (.h5), ``atoms.info["charge"]`` (extxyz), else the ``charge`` argument (default 0).

A record the model cannot take gets a ``problem``: an element outside ``species``, coincident atoms, no 3D
coordinates, a SMILES RDKit cannot parse or embed, no atoms, a non-finite position.
:class:`fastdipole.evaluation.screening.Screening` refuses them all in one error that lists each (or, with
``skip_invalid``, leaves them out and reports them).
An input that cannot be read at all (missing file, unknown format) is an error naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DataError
from .dataset import MIN_ATOM_DISTANCE_ANGSTROM, TOTAL_CHARGE_KEY, MoleculeDataset, minimum_pair_distances
from .elements import symbol
from .h5io import load_h5
from .physics import check_physics

H5_SUFFIXES = (".h5", ".hdf5")
RDKIT_SUFFIXES = (".sdf", ".mol", ".sd")
#: Records listed by name in the one error about invalid records (the rest are counted).
MAX_LISTED_PROBLEMS = 20


@dataclass
class Record:
    """One input molecule: Z (n,), R (n, 3) Angstrom, total charge (e), and why it cannot be predicted."""

    name: str
    Z: np.ndarray
    R: np.ndarray
    total_charge: float = 0.0
    problem: str | None = None


# ---- readers -----------------------------------------------------------------------------------------


def _rdkit():
    try:
        from rdkit import Chem, RDLogger

        RDLogger.DisableLog("rdApp.*")  # problems are reported per record, not as RDKit's log lines
        return Chem
    except ImportError:
        raise DataError("reading SDF files and SMILES needs RDKit (pip install fastdipole[predict])") from None


def _name(title, path: Path, k: int) -> str:
    title = str(title).strip() if title is not None else ""
    return title or f"{path}:{k}"


def _iter_sdf(path: Path, charge: float) -> Iterator[Record]:
    Chem = _rdkit()
    # sanitize=False: coordinates, elements and formal charges are all that is needed, and a record RDKit's
    # valence rules reject still has them. ForwardSDMolSupplier reads one record at a time.
    with open(path, "rb") as handle:
        for k, mol in enumerate(Chem.ForwardSDMolSupplier(handle, removeHs=False, sanitize=False)):
            if mol is None:
                yield Record(f"{path}:{k}", np.zeros(0, np.int64), np.zeros((0, 3)), charge,
                             "RDKit cannot read this record")
                continue
            title = mol.GetProp("_Name") if mol.HasProp("_Name") else None
            Z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
            total = float(sum(a.GetFormalCharge() for a in mol.GetAtoms()))
            if mol.GetNumConformers() == 0:
                yield Record(_name(title, path, k), Z, np.zeros((len(Z), 3)), total, "no coordinates")
                continue
            conf = mol.GetConformer()
            problem = None if conf.Is3D() else "no 3D coordinates (a 2D drawing)"
            yield Record(_name(title, path, k), Z, np.asarray(conf.GetPositions(), dtype=np.float64), total, problem)


def iter_h5(path: Path, charge: float, molecules: slice = slice(None), check: bool = True) -> Iterator[Record]:
    """Molecules ``molecules`` (a ``lo:hi`` slice) of a fastdipole .h5 file as records named ``FILE:INDEX`` (the
    index in the file); ``charge`` where the file has no ``total_charge`` array. ``check``: as :func:`load_h5`."""
    data = load_h5(path, charges=None, molecules=molecules, check=check)
    first = molecules.start or 0
    totals = data.total_charge if TOTAL_CHARGE_KEY in data.extra else np.full(data.n_molecules, charge)
    for m, (a, b) in enumerate(zip(data.offsets[:-1], data.offsets[1:])):
        yield Record(f"{path}:{first + m}", data.Z[a:b], data.R[a:b].astype(np.float64), float(totals[m]))


def _iter_ase(path: Path, charge: float) -> Iterator[Record]:
    try:
        import ase.io
    except ImportError:
        raise DataError(f"{path}: reading structure files needs ASE (pip install fastdipole[predict])") from None
    frames = ase.io.iread(path, index=":")  # one frame at a time
    k = 0
    while True:
        try:
            f = next(frames)
        except StopIteration:
            return
        except Exception as err:  # ASE raises many kinds for unreadable or unknown formats
            where = f" (frame {k})" if k else ""
            raise DataError(f"{path}: not a structure file ASE can read{where} ({type(err).__name__}: "
                            f"{' '.join(str(err).split())[:200]})") from None
        yield Record(_name(f.info.get("name", f.info.get("title")), path, k),
                     np.asarray(f.get_atomic_numbers(), dtype=np.int64), np.asarray(f.get_positions(), dtype=np.float64),
                     float(f.info.get("charge", charge)))
        k += 1


def iter_file(path, charge: float = 0.0) -> Iterator[Record]:
    """Every record of one structure file, in order, read as they are asked for (memory: one record at a time for
    SDF and ASE formats)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    reader = iter_h5 if suffix in H5_SUFFIXES else _iter_sdf if suffix in RDKIT_SUFFIXES else _iter_ase
    n = 0
    for record in reader(path, charge):
        n += 1
        yield record
    if n == 0:
        raise DataError(f"{path}: holds no structures")


def molecule_from_smiles(smiles: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """(Z, R, total charge in e) of a 3-D conformer of ``smiles``: hydrogens added, RDKit ETKDG embedding, MMFF
    relaxation; the total charge is the sum of the formal charges (``[NH4+]`` gives +1).

    Force-field geometries differ from the DFT ones models are trained on (QM9: B3LYP), which shifts
    predictions somewhat; prefer your own optimised structures when you have them.
    """
    Chem = _rdkit()
    from rdkit.Chem import AllChem

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


def _smiles_record(smiles: str, name: str | None = None) -> Record:
    try:
        Z, R, total = molecule_from_smiles(smiles)
    except DataError as err:
        return Record(name or smiles, np.zeros(0, np.int64), np.zeros((0, 3)), 0.0,
                      str(err).split(": ", 1)[-1])
    return Record(name or smiles, Z, R, float(total))


def iter_smiles_file(path) -> Iterator[Record]:
    """One record per non-blank, non-comment line: ``SMILES [name]``, read line by line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    n = 0
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            smiles, _, name = line.partition(" ") if " " in line else line.partition("\t")
            n += 1
            yield _smiles_record(smiles, name.strip() or f"{path}:{number}")
    if n == 0:
        raise DataError(f"{path}: holds no SMILES")


# ---- checks ------------------------------------------------------------------------------------------


def record_problem(record: Record, species=None) -> str | None:
    """Why a model of ``species`` cannot predict ``record`` (None: it can)."""
    if record.problem:
        return record.problem
    Z, R = record.Z, record.R
    if len(Z) == 0:
        return "no atoms"
    if not np.isfinite(R).all():
        return f"non-finite position (atom {int(np.flatnonzero(~np.isfinite(R).all(axis=1))[0])})"
    if species is not None:
        unknown = sorted(set(int(z) for z in Z) - set(int(s) for s in species))
        if unknown:
            names = ", ".join(_symbol(z) for z in unknown)
            allowed = ", ".join(_symbol(z) for z in sorted(species))
            return f"element {names} is not one of the model's elements ({allowed})"
    one = MoleculeDataset(Z=Z, R=R.astype(np.float32), offsets=np.array([0, len(Z)]), mu_debye=np.zeros(1, np.float32),
                          source=record.name)
    dist, pairs = minimum_pair_distances(one, with_pairs=True)
    if dist[0] < MIN_ATOM_DISTANCE_ANGSTROM:
        return (f"atoms {pairs[0, 0]} and {pairs[0, 1]} are {dist[0]:.3g} Angstrom apart (coincident atoms; the "
                f"minimum is {MIN_ATOM_DISTANCE_ANGSTROM} Angstrom)")
    try:
        check_physics(one)  # coordinates and width within the documented bounds
    except DataError as err:
        return str(err).split("molecule 0 ", 1)[-1]
    return None


def _symbol(z: int) -> str:
    try:
        return symbol(z)
    except (IndexError, KeyError):
        return f"Z={z}"


# ---- all inputs ----------------------------------------------------------------------------------------


def _dataset(records: list[Record]) -> MoleculeDataset:
    counts = np.array([len(r.Z) for r in records], dtype=np.int64)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return MoleculeDataset(Z=np.concatenate([r.Z for r in records]).astype(np.int64),
                           R=np.concatenate([r.R for r in records]).astype(np.float32), offsets=offsets,
                           mu_debye=np.zeros(len(records), dtype=np.float32), source="inputs",
                           extra={TOTAL_CHARGE_KEY: np.array([r.total_charge for r in records], dtype=np.float32)})
