"""Build our HDF5 layout from QMugs structure-data files (SDF), at the DFT or the GFN2-xTB level.

QMugs (Isert et al., Sci. Data 9, 273 (2022)) ships one SDF per conformer, ``CHEMBL<id>/conf_NN.sdf``;
files holding many molecules work too, and so does a mix. Each record carries these properties:

- ``CHEMBL_ID`` (e.g. ``CHEMBL1234``) and ``CONF_ID`` (``conf_00`` or ``0``): stored as ``chembl_id``
  (string) and ``conf_id`` (int) per molecule;
- ``DFT:MULLIKEN_CHARGES`` / ``GFN2:MULLIKEN_CHARGES``: ``|``-separated partial charges in e, in
  atom order -> ``q_mulliken``;
- ``DFT:DIPOLE`` / ``GFN2:DIPOLE``: ``x|y|z|total`` in Debye -> ``mu_vec`` and ``mu`` (= |mu_vec|,
  after checking that |(x, y, z)| agrees with ``total``).

Positions come from the molblock (Angstrom), all hydrogens kept. The formal charges of the atoms
give ``total_charge`` (e) per molecule. Molecules are sorted by (chembl_id, conf_id), with the
digits in ids compared as numbers (CHEMBL2 before CHEMBL10). Reading needs RDKit
(``pip install fastdipole[qmugs]``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import MoleculeDataset, validate
from .elements import symbol
from .h5io import save_h5

#: Property prefix of each level of theory in QMugs SDFs.
LEVELS = {"dft": "DFT", "gfn2": "GFN2"}
LEVEL_DESCRIPTIONS = {"dft": "DFT (omega-B97X-D/def2-SVP)", "gfn2": "GFN2-xTB"}

#: Elements QMugs contains: H C N O F P S Cl Br I.
ALLOWED_ATOMIC_NUMBERS = (1, 6, 7, 8, 9, 15, 16, 17, 35, 53)

#: |(x, y, z)| and the stored total of a dipole may differ by this much (values are rounded in files).
DIPOLE_TOTAL_ATOL_DEBYE = 0.01
DIPOLE_TOTAL_RTOL = 1e-3

QMUGS_ATTRS = {
    "description": "QMugs conformers: positions (Angstrom), Mulliken charges (e), dipole moments (Debye)",
    "citation": (
        "C. Isert, K. Atz, J. Jimenez-Luna, G. Schneider, QMugs, quantum mechanical properties of "
        "drug-like molecules, Sci. Data 9, 273 (2022)"
    ),
}


@dataclass
class QMugsRecord:
    """One conformer read from an SDF record."""

    chembl_id: str
    conf_id: int
    Z: np.ndarray  # int64 (n,)
    R: np.ndarray  # float64 (n, 3), Angstrom
    charges: np.ndarray  # float64 (n,), e
    mu_vec_debye: np.ndarray  # float64 (3,), Debye
    total_charge: int  # e, sum of formal charges
    where: str  # "FILE: record K", for error messages


def _rdkit_chem():
    try:
        from rdkit import Chem, rdBase
    except ImportError:
        raise DataError("reading QMugs SDF files needs RDKit: run `pip install fastdipole[qmugs]`") from None
    return Chem, rdBase


def find_sdf_files(path) -> list[Path]:
    """The SDF files to read: ``path`` itself if it is a file, else every ``*.sdf`` below it (sorted)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found")
    if path.is_file():
        if path.suffix.lower() != ".sdf":
            # e.g. QMugs's structures.tar.gz: RDKit would only report an unparsable record.
            raise DataError(f"{path}: expected an .sdf file or a folder of them (extract archives first)")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() == ".sdf" and p.is_file())
    if not files:
        raise DataError(f"{path}: no .sdf files found in this folder or below it")
    return files


def _parse_floats(text: str, where: str, prop: str) -> np.ndarray:
    try:
        values = np.array([float(t) for t in text.strip().split("|")], dtype=np.float64)
    except ValueError as err:
        raise DataError(f"{where}: property '{prop}' is not '|'-separated numbers ({' '.join(str(err).split())})") from None
    if not np.isfinite(values).all():
        raise DataError(f"{where}: property '{prop}' holds a NaN or infinite value")
    return values


def _parse_conf_id(text: str, where: str) -> int:
    # QMugs writes "conf_00"; a plain integer is accepted too.
    match = re.fullmatch(r"(?:conf_?)?(\d+)", text.strip(), flags=re.IGNORECASE)
    if match is None:
        raise DataError(f"{where}: property 'CONF_ID' is {text.strip()!r}, expected 'conf_NN' or an integer")
    return int(match.group(1))


def _get_prop(mol, prop: str, where: str) -> str:
    if not mol.HasProp(prop):
        present = ", ".join(sorted(mol.GetPropNames())) or "none"
        raise DataError(f"{where}: missing property '{prop}' (properties present: {present})")
    return mol.GetProp(prop)


def parse_record(mol, level: str, where: str) -> QMugsRecord:
    """A :class:`QMugsRecord` from one RDKit molecule read with ``removeHs=False, sanitize=False``."""
    prefix = LEVELS[level]
    chembl_id = _get_prop(mol, "CHEMBL_ID", where).strip()
    if not chembl_id:
        raise DataError(f"{where}: property 'CHEMBL_ID' is empty")
    conf_id = _parse_conf_id(_get_prop(mol, "CONF_ID", where), where)
    where = f"{where} ({chembl_id} conf {conf_id})"

    Z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    if len(Z) == 0:
        raise DataError(f"{where}: the molecule has no atoms")
    bad = np.flatnonzero(~np.isin(Z, ALLOWED_ATOMIC_NUMBERS))
    if len(bad):
        atom = mol.GetAtomWithIdx(int(bad[0]))
        raise DataError(
            f"{where}: atom {bad[0]} (counted from 0) is element {atom.GetSymbol() or symbol(Z[bad[0]])}, "
            f"not one of H C N O F P S Cl Br I"
        )
    if mol.GetNumConformers() == 0 or not mol.GetConformer().Is3D():
        raise DataError(f"{where}: the record has no 3D coordinates")
    R = np.array(mol.GetConformer().GetPositions(), dtype=np.float64)

    charges_prop = f"{prefix}:MULLIKEN_CHARGES"
    charges = _parse_floats(_get_prop(mol, charges_prop, where), where, charges_prop)
    if len(charges) != len(Z):
        raise DataError(f"{where}: property '{charges_prop}' has {len(charges)} charges but the molecule has {len(Z)} atoms")

    dipole_prop = f"{prefix}:DIPOLE"
    dipole = _parse_floats(_get_prop(mol, dipole_prop, where), where, dipole_prop)
    if len(dipole) != 4:
        raise DataError(f"{where}: property '{dipole_prop}' has {len(dipole)} values, expected 4 (x|y|z|total in Debye)")
    mu_vec, total = dipole[:3], dipole[3]
    norm = float(np.linalg.norm(mu_vec))
    if abs(norm - total) > DIPOLE_TOTAL_ATOL_DEBYE + DIPOLE_TOTAL_RTOL * abs(total):
        raise DataError(
            f"{where}: property '{dipole_prop}': |(x, y, z)| = {norm:.4f} D does not match the total {total:.4f} D"
        )
    total_charge = sum(a.GetFormalCharge() for a in mol.GetAtoms())
    return QMugsRecord(chembl_id, conf_id, Z, R, charges, mu_vec, int(total_charge), where)


def read_qmugs_sdf(path, level: str):
    """Yield a :class:`QMugsRecord` for every record of one SDF file (DataError on a bad record)."""
    Chem, rdBase = _rdkit_chem()
    level = _check_level(level)
    path = Path(path)
    blocker = rdBase.BlockLogs()  # RDKit's own parse warnings would duplicate our one-line errors
    try:
        try:
            supplier = Chem.SDMolSupplier(str(path), removeHs=False, sanitize=False)
        except OSError as err:
            raise DataError(f"{path}: cannot be read ({' '.join(str(err).split())})") from None
        for index in range(len(supplier)):
            mol = supplier[index]
            where = f"{path}: record {index}"
            if mol is None:
                raise DataError(f"{where}: RDKit cannot parse this SDF record (malformed molblock or unknown element)")
            yield parse_record(mol, level, where)
    finally:
        del blocker


def _check_level(level: str) -> str:
    key = str(level).lower()
    if key not in LEVELS:
        raise DataError(f"unknown QMugs level {level!r}: choose one of {', '.join(LEVELS)}")
    return key


def _natural_key(text: str) -> tuple:
    # "CHEMBL2" < "CHEMBL10": digit runs compare as numbers (split() alternates text, digits, text, ...).
    parts = re.split(r"(\d+)", text)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)) + (text,)


def assemble_qmugs(records: list[QMugsRecord], source: str) -> MoleculeDataset:
    """A dataset sorted by (chembl_id, conf_id); DataError if a conformer appears twice."""
    if not records:
        raise DataError(f"{source}: no molecules found")
    records = sorted(records, key=lambda r: (_natural_key(r.chembl_id), r.conf_id))
    for a, b in zip(records, records[1:]):
        if (a.chembl_id, a.conf_id) == (b.chembl_id, b.conf_id):
            raise DataError(f"{source}: {a.chembl_id} conf {a.conf_id} appears twice: {a.where} and {b.where}")
    counts = np.array([len(r.Z) for r in records], dtype=np.int64)
    offsets = np.zeros(len(records) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    mu_vec = np.stack([r.mu_vec_debye for r in records])
    return MoleculeDataset(
        Z=np.concatenate([r.Z for r in records]),
        R=np.concatenate([r.R for r in records]).astype(np.float32),
        offsets=offsets,
        # The magnitude is the norm of the stored vector (it matched the file's total above).
        mu_debye=np.linalg.norm(mu_vec, axis=1).astype(np.float32),
        charges=np.concatenate([r.charges for r in records]).astype(np.float32),
        mu_vec_debye=mu_vec.astype(np.float32),
        source=source,
        extra={
            "chembl_id": np.array([r.chembl_id for r in records], dtype=object),
            "conf_id": np.array([r.conf_id for r in records], dtype=np.int32),
            "total_charge": np.array([r.total_charge for r in records], dtype=np.int16),
        },
    )


def _validate_naming_records(dataset: MoleculeDataset, records: list[QMugsRecord]) -> None:
    """Run :func:`validate`; on failure, re-check molecule by molecule so the error names the SDF record."""
    try:
        validate(dataset)
    except DataError:
        order = {(r.chembl_id, r.conf_id): r for r in records}
        for m, (cid, conf) in enumerate(zip(dataset.extra["chembl_id"], dataset.extra["conf_id"])):
            one = dataset.subset([m])
            one.source = order[(cid, int(conf))].where
            try:
                validate(one)
            except DataError as one_err:
                # Name the SDF record; "molecule 0" of a one-record dataset would only confuse.
                raise DataError(str(one_err).replace(": molecule 0 ", ": the molecule ", 1)) from None
        raise


def build_from_qmugs(path, level: str, out_path, progress: bool = False) -> Path:
    """Convert QMugs SDF files under ``path`` (a file or a folder tree) to ``out_path`` (HDF5).

    ``level`` is ``"dft"`` or ``"gfn2"``: which ``<LEVEL>:MULLIKEN_CHARGES`` and ``<LEVEL>:DIPOLE``
    properties become the labels ``q_mulliken`` (e) and ``mu`` / ``mu_vec`` (Debye).
    """
    level = _check_level(level)
    _rdkit_chem()  # fail early, before walking a large folder tree
    files = find_sdf_files(path)
    if progress:
        from tqdm import tqdm

        files_iter = tqdm(files, desc="reading SDF files", unit="file", disable=None)
    else:
        files_iter = files
    records = [record for f in files_iter for record in read_qmugs_sdf(f, level)]
    dataset = assemble_qmugs(records, source=str(path))
    _validate_naming_records(dataset, records)
    attrs = {
        **QMUGS_ATTRS,
        "level": LEVEL_DESCRIPTIONS[level],
        "sources": f"QMugs SDF files ({LEVELS[level]}: properties) under {Path(path).name}",
    }
    return save_h5(dataset, out_path, attrs=attrs)
