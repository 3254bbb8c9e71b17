"""Loading, saving and slicing datasets in the fastdipole HDF5 layout, on real QM9 molecules."""

from __future__ import annotations


import h5py
import numpy as np
import pytest

from fastdipole.data import MoleculeDataset, bundled_sample_path, load_h5, save_h5
from fastdipole.errors import DataError


@pytest.fixture(scope="module")
def sample() -> MoleculeDataset:
    return load_h5(bundled_sample_path())


def test_slice_reads_exactly_the_file_arrays(qm9_h5_path):
    ds = load_h5(qm9_h5_path, molecules=slice(0, 500))
    with h5py.File(qm9_h5_path) as f:
        off = f["offsets"][:501]
        n = off[-1]
        np.testing.assert_array_equal(ds.offsets, off)
        np.testing.assert_array_equal(ds.Z, f["Z"][:n])
        np.testing.assert_array_equal(ds.R, f["R"][:n])
        np.testing.assert_array_equal(ds.charges, f["q_mulliken"][:n])
        np.testing.assert_array_equal(ds.mu_debye, f["mu"][:500])
        np.testing.assert_array_equal(ds.extra["gdb_id"], f["gdb_id"][:500])
    assert ds.Z.dtype == np.int64 and ds.R.dtype == np.float32 and ds.offsets.dtype == np.int64
    assert ds.n_molecules == 500 and ds.n_atoms == n


def test_slice_in_the_middle_rebases_offsets(qm9_h5_path):
    ds = load_h5(qm9_h5_path, molecules=slice(1000, 1010))
    with h5py.File(qm9_h5_path) as f:
        off = f["offsets"][1000:1011]
        np.testing.assert_array_equal(ds.offsets, off - off[0])
        np.testing.assert_array_equal(ds.R, f["R"][off[0] : off[-1]])
        np.testing.assert_array_equal(ds.extra["gdb_id"], f["gdb_id"][1000:1010])


def test_index_array_keeps_given_order(qm9_h5_path):
    block = load_h5(qm9_h5_path, molecules=slice(0, 600))
    pick = np.array([512, 3, 77, 3, 599])
    ds = load_h5(qm9_h5_path, molecules=pick)
    assert ds.n_molecules == 5
    for k, m in enumerate(pick):
        z, r = ds.molecule(k)
        z0, r0 = block.molecule(m)
        np.testing.assert_array_equal(z, z0)
        np.testing.assert_array_equal(r, r0)
    np.testing.assert_array_equal(ds.mu_debye, block.mu_debye[pick])
    np.testing.assert_array_equal(ds.extra["gdb_id"], block.extra["gdb_id"][pick])


def test_charges_none_loads_no_charges(sample):
    ds = load_h5(bundled_sample_path(), charges=None, molecules=slice(0, 10))
    assert ds.charges is None
    np.testing.assert_array_equal(ds.R, sample.R[: ds.n_atoms])


def test_save_load_round_trip_with_optional_arrays(sample, tmp_path):
    ds = sample.subset(np.arange(50))
    rng = np.random.default_rng(1)
    ds.mu_vec_debye = rng.normal(size=(50, 3)).astype(np.float32)
    ds.mu_debye = np.linalg.norm(ds.mu_vec_debye, axis=1).astype(np.float32)
    ds.extra["chembl_id"] = np.array([f"CHEMBL{i}" for i in range(50)], dtype=object)
    path = save_h5(ds, tmp_path / "out.h5")
    assert not (tmp_path / "out.h5.tmp").exists()
    back = load_h5(path)
    for name in ("Z", "R", "offsets", "mu_debye", "charges", "mu_vec_debye"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ds, name), err_msg=name)
    np.testing.assert_array_equal(back.extra["gdb_id"], ds.extra["gdb_id"])
    assert list(back.extra["chembl_id"]) == list(ds.extra["chembl_id"])
    with h5py.File(path) as f:
        assert f["R"].attrs["units"] == "Angstrom"
        assert f["q_mulliken"].attrs["units"] == "e"
        assert f["mu"].attrs["units"] == "Debye"
        assert f["Z"].dtype == np.int8 and f["R"].compression == "gzip"
        np.testing.assert_array_equal(f["n_atoms"][()], np.diff(ds.offsets))


def test_mu_from_mu_vec_when_magnitude_absent(sample, tmp_path):
    ds = sample.subset(np.arange(5))
    vec = np.array([[0.3, 0.4, 0.0]] * 5, dtype=np.float32) * np.arange(1, 6, dtype=np.float32)[:, None]
    with h5py.File(tmp_path / "vec.h5", "w") as f:
        f["Z"], f["R"], f["offsets"], f["mu_vec"] = ds.Z.astype(np.int8), ds.R, ds.offsets, vec
    back = load_h5(tmp_path / "vec.h5", charges=None)
    np.testing.assert_allclose(back.mu_debye, 0.5 * np.arange(1, 6), rtol=1e-6)


def test_save_is_atomic_on_failure(sample, tmp_path):
    path = tmp_path / "keep.h5"
    save_h5(sample.subset(np.arange(3)), path)
    before = path.read_bytes()
    bad = sample.subset(np.arange(3))
    bad.extra["mu"] = np.zeros(3)  # clashes with a layout array: fails half-way through writing
    with pytest.raises(DataError, match="clashes"):
        save_h5(bad, path)
    assert path.read_bytes() == before
    assert not (tmp_path / "keep.h5.tmp").exists()


def test_subset_keeps_order_and_rebuilds_offsets(sample):
    idx = np.array([7, 2, 2, 3999, 0])
    sub = sample.subset(idx)
    np.testing.assert_array_equal(sub.n_atoms_per_molecule, sample.n_atoms_per_molecule[idx])
    assert sub.offsets[0] == 0 and sub.offsets[-1] == sub.n_atoms
    for k, m in enumerate(idx):
        np.testing.assert_array_equal(sub.molecule(k)[1], sample.molecule(m)[1])
        s, e = sample.offsets[m], sample.offsets[m + 1]
        np.testing.assert_array_equal(sub.charges[sub.offsets[k] : sub.offsets[k + 1]], sample.charges[s:e])
    np.testing.assert_array_equal(sub.extra["gdb_id"], sample.extra["gdb_id"][idx])
    # slices and boolean masks select the same molecules as index arrays
    np.testing.assert_array_equal(sample.subset(slice(10, 20)).R, sample.subset(np.arange(10, 20)).R)
    mask = np.zeros(sample.n_molecules, bool)
    mask[[5, 9]] = True
    np.testing.assert_array_equal(sample.subset(mask).Z, sample.subset([5, 9]).Z)


def test_subset_of_100k_molecules_in_permuted_order(sample):
    # Timing is a benchmark's job; this checks the vectorised path on a QM9-sized selection.
    big = sample.subset(np.arange(100_000) % sample.n_molecules)  # 100k molecules, ~1.8M atoms
    idx = np.random.default_rng(0).permutation(big.n_molecules)
    sub = big.subset(idx)
    assert sub.n_molecules == 100_000
    for k in (0, 1, 99_999):
        np.testing.assert_array_equal(sub.molecule(k)[1], big.molecule(idx[k])[1])


def test_molecule_accessor(sample):
    z, r = sample.molecule(-1)
    assert len(z) == sample.n_atoms_per_molecule[-1] and r.shape == (len(z), 3)
    np.testing.assert_array_equal(z, sample.Z[sample.offsets[-2] :])


def test_bundled_sample_is_small(sample):
    assert bundled_sample_path().stat().st_size < 2_000_000
    assert sample.n_molecules == 4000 and sample.charges is not None
    assert np.all(np.diff(sample.extra["gdb_id"]) > 0)
    assert set(np.unique(sample.Z)) == {1, 6, 7, 8, 9}


def test_bundled_sample_is_real_qm9(sample, qm9_h5_path):
    gdb = sample.extra["gdb_id"]
    with h5py.File(qm9_h5_path) as f:
        full_gdb = f["gdb_id"][()]
    rows = np.searchsorted(full_gdb, gdb)
    np.testing.assert_array_equal(full_gdb[rows], gdb)
    check = rows[:: 400]
    full = load_h5(qm9_h5_path, molecules=check)
    mine = sample.subset(np.arange(0, 4000, 400))
    for name in ("Z", "R", "charges", "mu_debye", "offsets"):
        np.testing.assert_array_equal(getattr(mine, name), getattr(full, name), err_msg=name)
