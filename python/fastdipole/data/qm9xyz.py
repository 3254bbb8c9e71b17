"""Build our HDF5 layout from the original QM9 ``dsgdb9nsd_*.xyz`` files (a folder or a tarball).

File format (Ramakrishnan et al. 2014): line 1 atom count n; line 2 ``gdb N`` then 15 properties
(rotational constants A B C in GHz, then the dipole moment mu in Debye, ...); n atom lines
``El x y z q`` (Angstrom, Mulliken charge in e); then frequencies, SMILES and InChI lines. Numbers
may use Mathematica exponents such as ``1.23*^-6``.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import validate
from .elements import atomic_number
from .h5io import save_h5
from .qm9pack import QM9_ATTRS, assemble

# Position of mu on line 2 once split on whitespace: "gdb", N, A, B, C, mu, ...
_MU_FIELD = 5


def _number(token: str) -> float:
    return float(token.replace("*^", "e"))


def parse_qm9_xyz(text: str, name: str = "<xyz>"):
    """(gdb_id, Z, R [Angstrom], q [e], mu [Debye]) of one QM9 .xyz file's text."""
    lines = text.splitlines()
    line_no = 1
    try:
        n = int(lines[0].split()[0])
        line_no = 2
        head = lines[1].split()
        if head[0] != "gdb":
            raise ValueError(f"expected 'gdb N ...', got {lines[1][:40]!r}")
        gdb, mu = int(head[1]), _number(head[_MU_FIELD])
        Z = np.empty(n, np.int64)
        R = np.empty((n, 3), np.float64)
        q = np.empty(n, np.float64)
        for i in range(n):
            line_no = 3 + i
            fields = lines[2 + i].split()
            Z[i] = atomic_number(fields[0])
            R[i] = [_number(t) for t in fields[1:4]]
            q[i] = _number(fields[4])
    except (IndexError, ValueError, KeyError) as err:
        raise DataError(f"{name}: line {line_no}: not a QM9 xyz line ({' '.join(str(err).split()) or 'too short'})") from None
    return gdb, Z, R, q, mu


def iter_qm9_xyz(source):
    """Yield parsed molecules from one .xyz file, a folder of them or a .tar/.tar.gz/.tar.bz2 of them (streamed)."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: not found")
    if source.is_file() and source.suffix.lower() == ".xyz":
        yield parse_qm9_xyz(source.read_text(), str(source))
        return
    if source.is_dir():
        files = sorted(source.rglob("*.xyz"))
        for path in files:
            yield parse_qm9_xyz(path.read_text(), str(path))
        return
    try:
        tar = tarfile.open(source, mode="r|*")  # stream: no random access needed
    except (tarfile.TarError, OSError) as err:
        raise DataError(f"{source}: not an .xyz file, a folder or a readable tar archive "
                        f"({' '.join(str(err).split())})") from None
    try:
        with tar:
            for member in tar:
                if not (member.isfile() and member.name.endswith(".xyz")):
                    continue
                text = tar.extractfile(member).read().decode("ascii", errors="replace")
                yield parse_qm9_xyz(text, f"{source}:{member.name}")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(f"{source}: truncated or corrupt tar archive ({' '.join(str(err).split())})") from None


def build_from_xyz(source, out_path) -> Path:
    """Convert QM9 .xyz files (folder or tarball) to ``out_path``, molecules sorted by gdb id."""
    records = list(iter_qm9_xyz(source))
    if not records:
        raise DataError(f"{source}: no .xyz files found")
    dataset = assemble(records, source=str(source))
    validate(dataset)
    return save_h5(dataset, out_path, attrs={**QM9_ATTRS, "sources": f"QM9 xyz files: {Path(source).name}"})
