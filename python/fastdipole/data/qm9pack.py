"""Build the QM9 HDF5 file from the CSVs shipped by the PyPI package ``qm9pack==1.0.3``.

Install with ``pip install fastdipole[qm9]``. The package's ``__init__`` needs ``pkg_resources``
(absent from recent setuptools), so we only locate its data folder and never import it.
Each CSV row is one QM9 molecule: ``Index`` (gdb id), ``Elements``, ``XYZ_Ang`` (Angstrom),
``Mulliken_pop`` (e) and ``Dipole_debye`` (Debye).
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import MoleculeDataset, validate
from .elements import atomic_number
from .h5io import save_h5

CSV_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
_COLUMNS = ("Index", "Elements", "XYZ_Ang", "Mulliken_pop", "Dipole_debye")


def qm9pack_data_dir() -> Path:
    """The ``data`` folder of the installed qm9pack package; DataError if it is not installed."""
    spec = importlib.util.find_spec("qm9pack")  # locates without executing qm9pack/__init__.py
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the QM9 source package qm9pack is not installed: run `pip install fastdipole[qm9]`")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _floats(text: str) -> np.ndarray:
    return np.array(text.replace("[", "").replace("]", "").split(","), dtype=np.float64)


def read_qm9pack_csv(path, max_rows: int | None = None):
    """Yield (gdb_id, Z, R [Angstrom], q [e], mu [Debye]) for each row of one qm9pack CSV file."""
    path = Path(path)
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing CSV column(s) {', '.join(missing)}; columns present: {reader.fieldnames}")
        for row_no, row in enumerate(reader):
            if max_rows is not None and row_no >= max_rows:
                break
            where = f"{path}: row {row_no + 2}"  # +1 header, +1 one-based
            try:
                symbols = [s.strip().strip("'\"") for s in row["Elements"].strip("[]").split(",") if s.strip()]
                Z = np.array([atomic_number(s) for s in symbols], dtype=np.int64)
                R = _floats(row["XYZ_Ang"]).reshape(-1, 3)
                q = _floats(row["Mulliken_pop"])
                mu = float(row["Dipole_debye"])
                gdb = int(row["Index"])
            except (KeyError, ValueError) as err:
                raise DataError(f"{where}: cannot parse ({' '.join(str(err).split())})") from None
            if not (len(Z) == len(R) == len(q)):
                raise DataError(f"{where}: {len(Z)} elements but {len(R)} positions and {len(q)} charges")
            yield gdb, Z, R, q, mu


def assemble(records, source: str) -> MoleculeDataset:
    """A dataset (sorted by gdb id) from (gdb_id, Z, R, q, mu_debye) records."""
    records = sorted(records, key=lambda r: r[0])
    if not records:
        raise DataError(f"{source}: no molecules found")
    gdb = np.array([r[0] for r in records], dtype=np.int64)
    dup = np.flatnonzero(np.diff(gdb) == 0)
    if len(dup):
        raise DataError(f"{source}: molecule gdb {gdb[dup[0]]} appears twice")
    counts = np.array([len(r[1]) for r in records], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return MoleculeDataset(
        Z=np.concatenate([r[1] for r in records]).astype(np.int64),
        R=np.concatenate([r[2] for r in records]).astype(np.float32),
        offsets=offsets,
        mu_debye=np.array([r[4] for r in records], dtype=np.float32),
        charges=np.concatenate([r[3] for r in records]).astype(np.float32),
        source=source,
        extra={"gdb_id": gdb.astype(np.int32)},
    )


QM9_ATTRS = {
    "description": "QM9 (dsgdb9nsd), B3LYP/6-31G(2df,p): Z, R [Angstrom], Mulliken charges [e], dipole magnitude mu [Debye]",
    "citation": "R. Ramakrishnan, P. O. Dral, M. Rupp, O. A. von Lilienfeld, Sci. Data 1, 140022 (2014)",
}


def build_from_qm9pack(out_path, csv_dir=None, max_rows_per_file: int | None = None) -> Path:
    """Write the QM9 molecules of qm9pack's CSVs to ``out_path`` (``q_mulliken``, ``mu``, ``gdb_id``).

    ``csv_dir`` defaults to the installed package's data folder; ``max_rows_per_file`` reads only
    the first rows of each CSV (quick checks).
    """
    csv_dir = qm9pack_data_dir() if csv_dir is None else Path(csv_dir)
    files = [csv_dir / name for name in CSV_FILES if (csv_dir / name).exists()]
    if not files:
        raise DataError(f"{csv_dir}: none of the qm9pack CSV files {', '.join(CSV_FILES)} found")
    records = [rec for path in files for rec in read_qm9pack_csv(path, max_rows_per_file)]
    dataset = assemble(records, source=str(csv_dir))
    validate(dataset)
    return save_h5(dataset, out_path, attrs={**QM9_ATTRS, "sources": "qm9pack==1.0.3 CSV: " + ", ".join(f.name for f in files)})
