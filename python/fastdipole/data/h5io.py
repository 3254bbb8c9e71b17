"""Read and write the fastdipole HDF5 layout (see LAYOUT.md beside this file).

Per-atom arrays: ``Z`` (int8), ``R`` (float32 (N,3), Angstrom), optional charges such as
``q_mulliken`` (float32, e). Per-molecule: ``offsets`` (int64, M+1, CSR), ``mu`` (float32, Debye),
optional ``mu_vec`` (float32 (M,3), Debye), ``n_atoms`` and id arrays (``gdb_id``, ...).
Each dataset carries a ``units`` attribute where it has units.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ..atomic import atomic_path
from ..errors import DataError
from .dataset import MoleculeDataset, check_shapes, validate

#: Units written to (and expected from) the ``units`` attribute of each dataset.
UNITS = {"R": "Angstrom", "mu": "Debye", "mu_vec": "Debye"}
CHARGE_UNITS = "e"

# Spellings accepted for the documented units when reading a file written by another tool.
_UNIT_SYNONYMS = {
    "Angstrom": {"angstrom", "ang", "a", "å", "angstroms"},
    "Debye": {"debye", "d"},
    "e": {"e", "electron", "elementary charge", "e-"},
}

# Arrays with a fixed meaning; anything else of length M is carried along in ``dataset.extra``.
_CORE = {"Z", "R", "offsets", "mu", "mu_vec", "n_atoms"}


def bundled_sample_path() -> Path:
    """Path of the small QM9 sample shipped with the package (4,000 molecules, Mulliken charges)."""
    return Path(__file__).resolve().parent / "sample" / "qm9_sample.h5"


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file (truncated or wrong format: {_one_line(err)})") from None


def _check_units(path: Path, dset: h5py.Dataset, name: str, expected: str) -> None:
    units = dset.attrs.get("units")
    if units is None:
        return  # documented default applies
    if isinstance(units, bytes):
        units = units.decode()
    if str(units).strip().lower() not in _UNIT_SYNONYMS[expected]:
        raise DataError(f"{path}: array '{name}' has units '{units}', expected '{expected}'")


def _read(path: Path, f: h5py.File, name: str, sel=slice(None)) -> np.ndarray:
    dset = f[name]
    try:
        if h5py.check_string_dtype(dset.dtype) is not None:  # strings come back as str, not bytes
            return np.asarray(dset.asstr()[sel], dtype=object)
        return dset[sel]
    except (OSError, ValueError, RuntimeError) as err:
        raise DataError(f"{path}: array '{name}' could not be read (truncated or corrupt file: {_one_line(err)})") from None


def _require(path: Path, f: h5py.File, name: str, what: str) -> h5py.Dataset:
    if name not in f or not isinstance(f[name], h5py.Dataset):
        present = ", ".join(sorted(k for k in f if isinstance(f[k], h5py.Dataset))) or "none"
        raise DataError(f"{path}: missing array '{name}' ({what}); arrays present: {present}")
    return f[name]


def load_h5(path, charges: str | None = "q_mulliken", molecules=None, check: bool = True) -> MoleculeDataset:
    """Load a dataset in the fastdipole HDF5 layout.

    Args:
        path: the .h5 file.
        charges: name of the per-atom charge array to load as labels (e), or None for none.
        molecules: optional slice / index array / boolean mask of molecules to read; only the atom
            range they span is read from disk, so a slice of a large file loads quickly.
        check: run :func:`validate` (shapes, offsets, NaN/inf, empty molecules, coincident atoms).
    """
    path = Path(path)
    with _open(path) as f:
        try:
            return _load(path, f, charges, molecules, check)
        except _H5_DAMAGE as err:
            raise DataError(f"{path}: could not be read (truncated or corrupt file: {_one_line(err)})") from None


# What h5py raises when a file's metadata is damaged (bad object headers, symbol tables, chunk data).
_H5_DAMAGE = (OSError, RuntimeError, KeyError)


def describe_h5(path) -> tuple[dict[str, tuple[tuple, np.dtype, str | None]], dict]:
    """({array name: (shape, dtype, units attribute or None)}, file attributes) without reading data."""
    path = Path(path)
    with _open(path) as f:
        try:
            arrays = {}
            for name, obj in f.items():
                if isinstance(obj, h5py.Dataset):
                    units = obj.attrs.get("units")
                    arrays[name] = (obj.shape, obj.dtype, units.decode() if isinstance(units, bytes) else units)
            return arrays, dict(f.attrs)
        except _H5_DAMAGE as err:
            raise DataError(f"{path}: could not be read (truncated or corrupt file: {_one_line(err)})") from None


def _load(path: Path, f: h5py.File, charges, molecules, check) -> MoleculeDataset:
    z_set = _require(path, f, "Z", "atomic numbers, per atom")
    r_set = _require(path, f, "R", "positions in Angstrom, per atom")
    _require(path, f, "offsets", "CSR molecule offsets, M+1 entries")
    if "mu" not in f and "mu_vec" not in f:
        _require(path, f, "mu", "dipole magnitude in Debye, per molecule")
    q_set = _require(path, f, charges, "per-atom charges in e") if charges is not None else None
    _check_units(path, r_set, "R", "Angstrom")
    for name in ("mu", "mu_vec"):
        if name in f:
            _check_units(path, f[name], name, "Debye")
    if q_set is not None:
        _check_units(path, q_set, charges, "e")

    n_atoms_file = z_set.shape[0] if z_set.ndim >= 1 else 0
    if r_set.ndim != 2 or r_set.shape[1] != 3:
        raise DataError(f"{path}: array 'R' must have shape (n_atoms, 3), got {r_set.shape}")
    for name, dset in (("R", r_set), (charges, q_set)):
        if dset is not None and dset.shape[0] != n_atoms_file:
            raise DataError(f"{path}: array '{name}' has {dset.shape[0]} entries but array 'Z' has {n_atoms_file} atoms")

    offsets_all = _read(path, f, "offsets").astype(np.int64)
    n_mol_file = len(offsets_all) - 1
    # Offsets must be sound before they are used to pick atom ranges out of the file.
    check_shapes(
        MoleculeDataset(
            Z=np.empty(n_atoms_file, np.int64),
            R=np.empty((n_atoms_file, 3), np.float32),
            offsets=offsets_all,
            mu_debye=np.empty(max(n_mol_file, 0), np.float32),
            source=str(path),
        )
    )

    # Per-molecule arrays: everything else whose first dimension is M (small; read whole).
    per_mol_names = [
        k for k in f
        if isinstance(f[k], h5py.Dataset) and k not in _CORE and k != charges
        and f[k].attrs.get("per", "molecule") != "atom" and not k.startswith("q_")
    ]
    for name in ["mu", "mu_vec", "n_atoms", *per_mol_names]:
        if name in f and f[name].shape[:1] != (n_mol_file,):
            if name in per_mol_names and f[name].ndim >= 1 and f[name].shape[0] == n_atoms_file:
                continue  # a per-atom array we do not use
            raise DataError(
                f"{path}: array '{name}' has {f[name].shape[0] if f[name].ndim else 0} entries "
                f"but array 'offsets' describes {n_mol_file} molecules"
            )
    per_mol_names = [k for k in per_mol_names if f[k].shape[:1] == (n_mol_file,)]

    if molecules is None:
        idx = None
        lo, hi = 0, n_mol_file
    else:
        try:
            idx = np.atleast_1d(np.arange(n_mol_file, dtype=np.int64)[molecules])
        except IndexError as err:
            raise DataError(f"{path}: bad molecule selection for {n_mol_file} molecules ({err})") from None
        if len(idx) == 0:
            raise DataError(f"{path}: the molecule selection is empty")
        lo, hi = int(idx.min()), int(idx.max()) + 1
    a0, a1 = int(offsets_all[lo]), int(offsets_all[hi])

    Z = _read(path, f, "Z", slice(a0, a1)).astype(np.int64)
    R = _read(path, f, "R", slice(a0, a1)).astype(np.float32, copy=False)
    q = None if q_set is None else _read(path, f, charges, slice(a0, a1)).astype(np.float32, copy=False)
    mol_sel = slice(lo, hi)
    mu_vec = _read(path, f, "mu_vec", mol_sel).astype(np.float32, copy=False) if "mu_vec" in f else None
    if "mu" in f:
        mu = _read(path, f, "mu", mol_sel).astype(np.float32, copy=False)
    else:  # only the vector is stored: its norm is the magnitude
        mu = np.linalg.norm(mu_vec.astype(np.float64), axis=1).astype(np.float32)
    extra = {k: _read(path, f, k, mol_sel) for k in per_mol_names}
    offsets = offsets_all[lo : hi + 1] - a0

    if "n_atoms" in f:
        n_atoms = _read(path, f, "n_atoms", mol_sel).astype(np.int64)
        bad = np.flatnonzero(n_atoms != np.diff(offsets))
        if len(bad):
            m = lo + bad[0]
            raise DataError(
                f"{path}: array 'n_atoms' says molecule {m} has {n_atoms[bad[0]]} atoms "
                f"but array 'offsets' gives {np.diff(offsets)[bad[0]]}"
            )

    ds = MoleculeDataset(Z=Z, R=R, offsets=offsets, mu_debye=mu, charges=q, mu_vec_debye=mu_vec,
                         source=str(path), extra=extra)
    if idx is not None and not (len(idx) == hi - lo and np.array_equal(idx, np.arange(lo, hi))):
        ds = ds.subset(idx - lo)
    if check:
        try:
            validate(ds)
        except DataError as err:
            if idx is None or lo == 0 and hi == n_mol_file and np.array_equal(idx, np.arange(n_mol_file)):
                raise
            # Molecule numbers in the message refer to the selection; say so.
            raise DataError(f"{err} (molecule index within the selected molecules)") from None
    return ds


def has_array(path, name: str) -> bool:
    """Whether the HDF5 file ``path`` has a top-level array ``name`` (False when it cannot be read: load_h5
    reports an unreadable file with a proper DataError)."""
    try:
        with h5py.File(path, "r") as f:
            return name in f
    except OSError:
        return False


def save_h5(dataset: MoleculeDataset, path, charges_name: str = "q_mulliken", attrs: dict | None = None) -> Path:
    """Write ``dataset`` in the fastdipole layout (gzip), atomically (:mod:`fastdipole.atomic`).

    ``charges_name`` is the name the per-atom charges are stored under; ``attrs`` are extra file
    attributes (e.g. ``description``, ``sources``).
    """
    path = Path(path)
    check_shapes(dataset)
    n_atoms = dataset.n_atoms
    # Row chunks (not column chunks) so reading a contiguous range of molecules touches few chunks.
    atom_chunk = max(1, min(n_atoms, 1 << 15))
    mol_chunk = max(1, min(dataset.n_molecules, 1 << 14))
    gz = dict(compression="gzip", compression_opts=9, shuffle=True, fletcher32=True)  # checksums catch corrupt chunks
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        def put(name, data, chunk, units=None, per=None):
            data = np.asarray(data)
            kw = dict(gz, chunks=(chunk,) + data.shape[1:]) if data.size else {}
            if data.dtype.kind in "OUS":
                data = np.asarray(data, dtype=object).astype(str).astype(object)
                kw.pop("fletcher32", None)  # HDF5 cannot checksum variable-length strings
                d = f.create_dataset(name, data=data, dtype=h5py.string_dtype(), **kw)
            else:
                d = f.create_dataset(name, data=data, **kw)
            if units:
                d.attrs["units"] = units
            if per:
                d.attrs["per"] = per

        put("Z", dataset.Z.astype(np.int8 if dataset.Z.max(initial=0) < 128 else np.int16), atom_chunk, per="atom")
        put("R", dataset.R.astype(np.float32), atom_chunk, "Angstrom", per="atom")
        if dataset.charges is not None:
            put(charges_name, dataset.charges.astype(np.float32), atom_chunk, CHARGE_UNITS, per="atom")
        put("offsets", dataset.offsets.astype(np.int64), mol_chunk + 1)
        put("mu", dataset.mu_debye.astype(np.float32), mol_chunk, "Debye", per="molecule")
        if dataset.mu_vec_debye is not None:
            put("mu_vec", dataset.mu_vec_debye.astype(np.float32), mol_chunk, "Debye", per="molecule")
        counts = dataset.n_atoms_per_molecule
        put("n_atoms", counts.astype(np.int16 if counts.max(initial=0) < 32768 else np.int32), mol_chunk, per="molecule")
        for name, arr in dataset.extra.items():
            if name in _CORE or name == charges_name:
                raise DataError(f"{dataset.source}: extra array name '{name}' clashes with a layout array")
            put(name, arr, mol_chunk, per="molecule")
        f.attrs["layout"] = "fastdipole-1"
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return path
