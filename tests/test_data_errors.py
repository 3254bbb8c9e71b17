"""Every kind of bad input gives one clear DataError line naming the file, the array and the molecule."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from fastdipole.data import MoleculeDataset, bundled_sample_path, check_species, load_h5, validate
from fastdipole.errors import DataError


@pytest.fixture(scope="module")
def mols() -> MoleculeDataset:
    """20 real QM9 molecules from the bundled sample."""
    return load_h5(bundled_sample_path(), molecules=slice(0, 20))


def arrays_of(ds: MoleculeDataset) -> dict:
    return {
        "Z": ds.Z.astype(np.int8), "R": ds.R.copy(), "offsets": ds.offsets.copy(),
        "mu": ds.mu_debye.copy(), "q_mulliken": ds.charges.copy(), "gdb_id": ds.extra["gdb_id"].copy(),
    }


def write(path, arrays: dict, units: dict | None = None):
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f[k] = v
        for k, u in (units or {}).items():
            f[k].attrs["units"] = u
    return path


def load_error(path, **kw) -> str:
    with pytest.raises(DataError) as info:
        load_h5(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def test_good_file_loads(mols, tmp_path):
    ds = load_h5(write(tmp_path / "ok.h5", arrays_of(mols)))
    assert ds.n_molecules == 20


def test_missing_array_lists_present_ones(mols, tmp_path):
    a = arrays_of(mols)
    del a["R"]
    msg = load_error(write(tmp_path / "noR.h5", a))
    assert "missing array 'R'" in msg and "Z, gdb_id, mu, offsets, q_mulliken" in msg


def test_misnamed_charge_array(mols, tmp_path):
    msg = load_error(write(tmp_path / "q.h5", arrays_of(mols)), charges="q_hirshfeld")
    assert "missing array 'q_hirshfeld'" in msg and "q_mulliken" in msg


def test_missing_dipole(mols, tmp_path):
    a = arrays_of(mols)
    del a["mu"]
    assert "missing array 'mu'" in load_error(write(tmp_path / "nomu.h5", a))


def test_offsets_not_matching_atom_count(mols, tmp_path):
    a = arrays_of(mols)
    a["offsets"][-1] -= 1
    msg = load_error(write(tmp_path / "off.h5", a))
    assert "'offsets' ends at" in msg and f"{mols.n_atoms} atoms" in msg


def test_offsets_not_starting_at_zero(mols, tmp_path):
    a = arrays_of(mols)
    a["offsets"][0] = 1
    assert "'offsets' must start at 0" in load_error(write(tmp_path / "off0.h5", a))


def test_offsets_decreasing_names_molecule(mols, tmp_path):
    a = arrays_of(mols)
    a["offsets"][6] = a["offsets"][5] - 1
    assert "'offsets' decreases at molecule 5" in load_error(write(tmp_path / "dec.h5", a))


def test_empty_molecule_names_molecule(mols, tmp_path):
    a = arrays_of(mols)
    off = a["offsets"]
    a["offsets"] = np.insert(off, 4, off[4])  # molecule 4 now has no atoms; 21 molecules
    a["mu"] = np.insert(a["mu"], 4, 1.0)
    a["gdb_id"] = np.insert(a["gdb_id"], 4, 0)
    assert "molecule 4 has no atoms" in load_error(write(tmp_path / "empty.h5", a))


@pytest.mark.parametrize("name", ["R", "q_mulliken"])
def test_per_atom_length_mismatch(mols, tmp_path, name):
    a = arrays_of(mols)
    a[name] = a[name][:-1]
    msg = load_error(write(tmp_path / "len.h5", a))
    assert f"'{name}' has {mols.n_atoms - 1} entries" in msg


@pytest.mark.parametrize("name", ["mu", "gdb_id"])
def test_per_molecule_length_mismatch(mols, tmp_path, name):
    a = arrays_of(mols)
    a[name] = a[name][:-1]
    msg = load_error(write(tmp_path / "len.h5", a))
    assert f"'{name}' has 19 entries" in msg and "20 molecules" in msg


def test_n_atoms_disagreeing_with_offsets(mols, tmp_path):
    a = arrays_of(mols)
    a["n_atoms"] = np.diff(a["offsets"]).astype(np.int16)
    a["n_atoms"][11] += 1
    assert "'n_atoms' says molecule 11" in load_error(write(tmp_path / "nat.h5", a))


@pytest.mark.parametrize(
    "name, molecule, value",
    [("R", 7, np.nan), ("R", 0, np.inf), ("q_mulliken", 13, np.nan), ("q_mulliken", 19, -np.inf), ("mu", 9, np.nan)],
)
def test_non_finite_values_name_array_and_molecule(mols, tmp_path, name, molecule, value):
    a = arrays_of(mols)
    if name == "mu":
        a[name][molecule] = value
    else:
        a[name][a["offsets"][molecule] + 1] = value  # second atom of the molecule
    msg = load_error(write(tmp_path / "nan.h5", a))
    shown = "charges" if name == "q_mulliken" else name
    assert f"'{shown}': molecule {molecule} has a NaN or infinite value" in msg


def test_coincident_atoms_name_molecule_and_atoms(mols, tmp_path):
    a = arrays_of(mols)
    s = a["offsets"][5]
    a["R"][s + 3] = a["R"][s + 2] + np.float32(0.05)  # 0.087 Angstrom apart
    msg = load_error(write(tmp_path / "close.h5", a))
    assert "molecule 5 has coincident atoms 2 and 3" in msg and "'R'" in msg


def test_coincident_atoms_across_sizes_report_first_molecule(mols):
    ds = mols.subset(np.arange(20))
    sizes = ds.n_atoms_per_molecule
    late = 18
    early = int(np.flatnonzero(sizes != sizes[late])[3])  # a molecule of another size, earlier in the file
    for m in (late, early):
        s = ds.offsets[m]
        ds.R[s + 1] = ds.R[s]
    with pytest.raises(DataError, match=f"molecule {early} has coincident atoms 0 and 1"):
        validate(ds)


@pytest.mark.parametrize("threshold", [0.1, 1.0, 1.1])
def test_close_atom_search_flags_the_molecules_all_pairs_flag(threshold):
    """The neighbour-list search of the check against the all-pairs distances, on the 4,000 real molecules of the bundled sample (at
    1.0 and 1.1 Angstrom some C-H and N-H bonds are below the threshold, so both sides flag many molecules)."""
    from fastdipole.data.dataset import minimum_pair_distances, molecules_with_close_atoms

    ds = load_h5(bundled_sample_path(), check=False)
    ds.R[ds.offsets[7] + 1] = ds.R[ds.offsets[7]]  # one molecule with coincident atoms
    expected = np.flatnonzero(minimum_pair_distances(ds) < threshold)
    assert len(expected) >= 1
    np.testing.assert_array_equal(molecules_with_close_atoms(ds, threshold), expected)


def test_atoms_just_above_threshold_are_fine(mols):
    ds = mols.subset(np.arange(20))
    s = ds.offsets[2]
    ds.R[s + 1] = ds.R[s] + np.array([0.11, 0, 0], np.float32)
    validate(ds)


def test_single_atom_molecules_are_valid(mols, tmp_path):
    # methane (gdb 1 is not in the sample; use the first carbon of molecule 0) as a lone atom
    a = arrays_of(mols)
    s = a["offsets"][0]
    lone = {
        "Z": np.concatenate([a["Z"][s : s + 1], a["Z"]]),
        "R": np.concatenate([a["R"][s : s + 1], a["R"]]),
        "offsets": np.concatenate([[0], a["offsets"] + 1]),
        "mu": np.concatenate([[0.0], a["mu"]]).astype(np.float32),
        "q_mulliken": np.concatenate([[0.0], a["q_mulliken"]]).astype(np.float32),
    }
    ds = load_h5(write(tmp_path / "lone.h5", lone))
    assert ds.n_atoms_per_molecule[0] == 1 and ds.n_molecules == 21


def test_element_outside_species(mols):
    has_n = [m for m in range(20) if 7 in mols.molecule(m)[0]]
    with pytest.raises(DataError, match=f"molecule {has_n[0]} contains element Z=7") as info:
        check_species(mols, [1, 6, 8, 9])
    assert mols.source in str(info.value)
    with pytest.raises(DataError, match=f"molecule {has_n[0]} contains element Z=7"):
        validate(mols, species=[1, 6, 8, 9])
    check_species(mols, [1, 6, 7, 8, 9])


def test_invalid_atomic_number(mols, tmp_path):
    a = arrays_of(mols)
    a["Z"][a["offsets"][3]] = 0
    assert "'Z': molecule 3 has invalid atomic number 0" in load_error(write(tmp_path / "z0.h5", a))


def test_wrong_units_attribute(mols, tmp_path):
    msg = load_error(write(tmp_path / "bohr.h5", arrays_of(mols), units={"R": "Bohr"}))
    assert "'R' has units 'Bohr', expected 'Angstrom'" in msg
    ok = load_h5(write(tmp_path / "ang.h5", arrays_of(mols), units={"R": "Angstrom", "mu": "D", "q_mulliken": "e"}))
    assert ok.n_molecules == 20


def test_wrong_shape_of_positions(mols, tmp_path):
    a = arrays_of(mols)
    a["R"] = a["R"][:, :2].copy()
    assert "'R' must have shape (n_atoms, 3)" in load_error(write(tmp_path / "r2.h5", a))


def test_truncated_file(mols, tmp_path):
    path = write(tmp_path / "full.h5", arrays_of(mols))
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    assert "truncated" in load_error(cut)


def test_non_hdf5_file(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("this is not HDF5\n")
    assert "not a readable HDF5 file" in load_error(path)


def test_nonexistent_file(tmp_path):
    assert "file not found" in load_error(tmp_path / "nope.h5")


def test_selection_out_of_range(tmp_path, mols):
    path = write(tmp_path / "ok.h5", arrays_of(mols))
    assert "bad molecule selection" in load_error(path, molecules=[0, 20])


def test_corrupt_chunk_is_detected(mols, tmp_path):
    from fastdipole.data import save_h5

    path = save_h5(mols, tmp_path / "chk.h5")
    with h5py.File(path) as f:
        info = f["R"].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    middle = info.byte_offset + info.size // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    bad = tmp_path / "bad_chunk.h5"
    bad.write_bytes(bytes(data))
    msg = load_error(bad)
    assert "array 'R' could not be read" in msg
