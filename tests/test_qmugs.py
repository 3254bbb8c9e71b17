"""`fastdipole data qmugs`: QMugs SDF files -> HDF5, on the GFN2-xTB-labelled fixture in tests/fixtures/qmugs.

The fixture is made by tools/make_qmugs_fixture.py (RDKit geometries, tblite GFN2-xTB labels); the DFT
path is checked on a tiny SDF with clearly synthetic values written here. Every expected value is
read back from the SDF records with RDKit, independently of the converter.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from fastdipole.cli import main
from fastdipole.data import load_h5
from fastdipole.errors import DataError

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "qmugs"


@pytest.fixture(scope="module")
def Chem():
    return pytest.importorskip("rdkit.Chem")


@pytest.fixture(scope="module")
def sdf_records(Chem) -> dict:
    """(chembl_id, conf_id) -> RDKit molecule, for every record of every fixture SDF."""
    records = {}
    for path in sorted(FIXTURE.rglob("*.sdf")):
        for mol in Chem.SDMolSupplier(str(path), removeHs=False, sanitize=False):
            assert mol is not None, path
            key = (mol.GetProp("CHEMBL_ID"), int(mol.GetProp("CONF_ID").removeprefix("conf_")))
            assert key not in records, f"fixture has {key} twice"
            records[key] = mol
    return records


@pytest.fixture(scope="module")
def gfn2_h5(Chem, tmp_path_factory) -> Path:
    from fastdipole.data.qmugs import build_from_qmugs

    return build_from_qmugs(FIXTURE, "gfn2", tmp_path_factory.mktemp("qmugs") / "qmugs_gfn2.h5")


def floats(mol, prop: str) -> np.ndarray:
    return np.array(mol.GetProp(prop).split("|"), dtype=np.float64)


# ---------------------------------------------------------------------------------------------------
# The fixture converted at the GFN2 level


def test_fixture_is_small_and_has_both_layouts(sdf_records):
    total_bytes = sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file())
    assert total_bytes < 1_000_000
    per_conformer = list(FIXTURE.glob("CHEMBL*/conf_*.sdf"))
    multi = list((FIXTURE / "multi").glob("*.sdf"))
    assert len(per_conformer) >= 20 and len(multi) == 1
    assert len(sdf_records) > len(per_conformer)  # the multi-molecule file adds records


def test_gfn2_arrays_match_the_sdf_records(gfn2_h5, sdf_records):
    ds = load_h5(gfn2_h5)  # load_h5 also validates the layout (offsets, NaN, coincident atoms)
    assert ds.n_molecules == len(sdf_records)
    for m in range(ds.n_molecules):
        key = (ds.extra["chembl_id"][m], int(ds.extra["conf_id"][m]))
        mol = sdf_records[key]
        a, b = ds.offsets[m], ds.offsets[m + 1]
        assert b - a == mol.GetNumAtoms()  # explicit hydrogens kept, nothing dropped
        np.testing.assert_array_equal(ds.Z[a:b], [atom.GetAtomicNum() for atom in mol.GetAtoms()])
        np.testing.assert_allclose(ds.R[a:b], mol.GetConformer().GetPositions(), atol=1e-5)
        np.testing.assert_allclose(ds.charges[a:b], floats(mol, "GFN2:MULLIKEN_CHARGES"), atol=1e-6)
        dipole = floats(mol, "GFN2:DIPOLE")
        np.testing.assert_allclose(ds.mu_vec_debye[m], dipole[:3], atol=1e-5)
        assert ds.mu_debye[m] == pytest.approx(dipole[3], abs=1e-4)


def test_elements_cover_qmugs_set(gfn2_h5):
    ds = load_h5(gfn2_h5)
    assert set(np.unique(ds.Z).tolist()) == {1, 6, 7, 8, 9, 15, 16, 17, 35, 53}


def test_charges_sum_to_the_molecular_charge(gfn2_h5, sdf_records, Chem):
    ds = load_h5(gfn2_h5)
    sums = np.add.reduceat(ds.charges.astype(np.float64), ds.offsets[:-1])
    total = ds.extra["total_charge"].astype(np.int64)
    expected = [Chem.GetFormalCharge(sdf_records[(c, int(k))]) for c, k in zip(ds.extra["chembl_id"], ds.extra["conf_id"])]
    np.testing.assert_array_equal(total, expected)
    assert {-1, 0, 1} <= set(total.tolist())  # the fixture holds a cation and an anion
    np.testing.assert_allclose(sums, total, atol=1e-4)


def test_mu_is_the_norm_of_mu_vec(gfn2_h5):
    ds = load_h5(gfn2_h5)
    np.testing.assert_allclose(np.linalg.norm(ds.mu_vec_debye, axis=1), ds.mu_debye, rtol=1e-6)
    assert (ds.mu_debye >= 0).all() and np.median(ds.mu_debye) > 1.0  # drug-like molecules are polar


def test_sorted_by_chembl_number_then_conformer_and_unique(gfn2_h5, sdf_records):
    ds = load_h5(gfn2_h5)
    keys = [(int(c.removeprefix("CHEMBL")), int(k)) for c, k in zip(ds.extra["chembl_id"], ds.extra["conf_id"])]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert sorted(keys) == sorted((int(c.removeprefix("CHEMBL")), k) for c, k in sdf_records)


def test_dtypes_and_units(gfn2_h5):
    with h5py.File(gfn2_h5, "r") as f:
        assert f["Z"].dtype == np.int8 and f["R"].dtype == np.float32 and f["offsets"].dtype == np.int64
        assert f["q_mulliken"].dtype == np.float32 and f["mu"].dtype == np.float32
        assert f["mu_vec"].shape == (f["mu"].shape[0], 3)
        assert f["R"].attrs["units"] == "Angstrom"
        assert f["q_mulliken"].attrs["units"] == "e"
        assert f["mu"].attrs["units"] == "Debye" and f["mu_vec"].attrs["units"] == "Debye"
        assert h5py.check_string_dtype(f["chembl_id"].dtype) is not None
        assert f["conf_id"].dtype.kind == "i"
        assert f.attrs["level"] == "GFN2-xTB"


def test_single_file_and_folder_give_the_same_molecules(tmp_path, sdf_records):
    from fastdipole.data.qmugs import build_from_qmugs

    multi = next((FIXTURE / "multi").glob("*.sdf"))
    ds = load_h5(build_from_qmugs(multi, "gfn2", tmp_path / "multi.h5"))
    full = load_h5(build_from_qmugs(FIXTURE, "GFN2", tmp_path / "all.h5"))
    assert 1 < ds.n_molecules < full.n_molecules
    for m in range(ds.n_molecules):
        j = next(i for i in range(full.n_molecules)
                 if full.extra["chembl_id"][i] == ds.extra["chembl_id"][m] and full.extra["conf_id"][i] == ds.extra["conf_id"][m])
        np.testing.assert_array_equal(ds.molecule(m)[1], full.molecule(j)[1])


# ---------------------------------------------------------------------------------------------------
# Command line


def test_cli_converts_the_fixture(tmp_path, gfn2_h5):
    out = tmp_path / "cli.h5"
    result = CliRunner().invoke(main, ["data", "qmugs", str(FIXTURE), "--level", "gfn2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "conformers of 38 molecules" in result.output
    a, b = load_h5(out), load_h5(gfn2_h5)
    np.testing.assert_array_equal(a.R, b.R)
    np.testing.assert_array_equal(a.charges, b.charges)
    np.testing.assert_array_equal(a.extra["chembl_id"], b.extra["chembl_id"])


def test_click_command_object_directly(tmp_path, Chem):
    from fastdipole.commands.data_qmugs import command

    out = tmp_path / "direct.h5"
    result = CliRunner().invoke(command, [str(FIXTURE / "multi"), "--level", "gfn2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert load_h5(out).n_molecules > 1


def test_cli_reports_bad_input_in_one_line(tmp_path, Chem):
    result = CliRunner().invoke(main, ["data", "qmugs", str(FIXTURE), "--level", "dft", "--out", str(tmp_path / "x.h5")])
    assert result.exit_code == 2
    assert "error:" in result.output and "missing property 'DFT:MULLIKEN_CHARGES'" in result.output
    assert not (tmp_path / "x.h5").exists()


# ---------------------------------------------------------------------------------------------------
# DFT level: a tiny SDF with synthetic values (QMugs DFT numbers cannot be computed here)


def write_sdf(Chem, path: Path, mols) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with Chem.SDWriter(str(path)) as w:
        for mol in mols:
            w.write(mol)
    return path


def fixture_mol(Chem, name="CHEMBL9900002/conf_00.sdf"):
    return next(iter(Chem.SDMolSupplier(str(FIXTURE / name), removeHs=False, sanitize=False)))


def test_dft_level_reads_dft_properties(tmp_path, Chem):
    from fastdipole.data.qmugs import build_from_qmugs

    mols = []
    for conf, chembl in ((2, "CHEMBL7"), (0, "CHEMBL7"), (0, "CHEMBL12")):
        mol = Chem.Mol(fixture_mol(Chem))
        n = mol.GetNumAtoms()
        # Synthetic test data, not DFT: alternating +-0.1 e charges (sum 0) and a 3-4-0 D dipole.
        q = [0.1 * (-1) ** i for i in range(n - n % 2)] + [0.0] * (n % 2)
        mol.SetProp("CHEMBL_ID", chembl)
        mol.SetProp("CONF_ID", str(conf))  # plain integers are accepted as well as conf_NN
        mol.SetProp("DFT:MULLIKEN_CHARGES", "|".join(f"{v:.3f}" for v in q))
        mol.SetProp("DFT:DIPOLE", f"{conf + 3.0}|4.0|0.0|{np.hypot(conf + 3.0, 4.0):.3f}")
        mols.append(mol)
    src = write_sdf(Chem, tmp_path / "dft" / "synthetic.sdf", mols)
    ds = load_h5(build_from_qmugs(src.parent, "dft", tmp_path / "dft.h5"))
    assert list(ds.extra["chembl_id"]) == ["CHEMBL7", "CHEMBL7", "CHEMBL12"]  # CHEMBL7 < CHEMBL12
    assert list(ds.extra["conf_id"]) == [0, 2, 0]
    np.testing.assert_allclose(ds.mu_vec_debye, [[3, 4, 0], [5, 4, 0], [3, 4, 0]])
    np.testing.assert_allclose(ds.mu_debye, [5.0, np.hypot(5, 4), 5.0], rtol=1e-6)
    n = mols[0].GetNumAtoms()
    np.testing.assert_allclose(ds.charges[:n], [0.1 * (-1) ** i for i in range(n - n % 2)] + [0.0] * (n % 2), atol=1e-7)
    # The GFN2 fields were kept in the file too, but the DFT level must not have read them.
    assert not np.allclose(ds.charges[:n], floats(mols[0], "GFN2:MULLIKEN_CHARGES"), atol=1e-3)
    with h5py.File(tmp_path / "dft.h5") as f:
        assert f.attrs["level"].startswith("DFT")


# ---------------------------------------------------------------------------------------------------
# Bad input: one-line DataError naming the file and the molecule


def convert_error(Chem, path: Path, level="gfn2") -> str:
    from fastdipole.data.qmugs import build_from_qmugs

    with pytest.raises(DataError) as info:
        build_from_qmugs(path, level, path.parent / "out.h5")
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert not (path.parent / "out.h5").exists()
    return msg


def test_unknown_element(tmp_path, Chem):
    mol = Chem.RWMol(fixture_mol(Chem))
    mol.GetAtomWithIdx(3).SetAtomicNum(14)  # silicon is not in QMugs
    path = write_sdf(Chem, tmp_path / "si.sdf", [mol])
    msg = convert_error(Chem, path)
    assert str(path) in msg and "CHEMBL9900002 conf 0" in msg and "atom 3 (counted from 0) is element Si" in msg


def test_charge_count_mismatch(tmp_path, Chem):
    mol = fixture_mol(Chem)
    charges = mol.GetProp("GFN2:MULLIKEN_CHARGES").split("|")
    mol.SetProp("GFN2:MULLIKEN_CHARGES", "|".join(charges[:-1]))
    path = write_sdf(Chem, tmp_path / "q.sdf", [mol])
    msg = convert_error(Chem, path)
    assert str(path) in msg and "CHEMBL9900002" in msg
    assert f"{len(charges) - 1} charges but the molecule has {len(charges)} atoms" in msg


@pytest.mark.parametrize("prop", ["GFN2:DIPOLE", "GFN2:MULLIKEN_CHARGES", "CONF_ID", "CHEMBL_ID"])
def test_missing_property_is_named(tmp_path, Chem, prop):
    mol = fixture_mol(Chem)
    mol.ClearProp(prop)
    path = write_sdf(Chem, tmp_path / "missing.sdf", [fixture_mol(Chem, "CHEMBL9900001/conf_00.sdf"), mol])
    msg = convert_error(Chem, path)
    assert str(path) in msg and "record 1" in msg and f"missing property '{prop}'" in msg


def test_inconsistent_dipole_total(tmp_path, Chem):
    mol = fixture_mol(Chem)
    x, y, z, total = floats(mol, "GFN2:DIPOLE")
    mol.SetProp("GFN2:DIPOLE", f"{x}|{y}|{z}|{total + 0.5}")
    path = write_sdf(Chem, tmp_path / "dip.sdf", [mol])
    msg = convert_error(Chem, path)
    assert str(path) in msg and "CHEMBL9900002" in msg and "does not match the total" in msg


def test_dipole_with_wrong_number_of_fields(tmp_path, Chem):
    mol = fixture_mol(Chem)
    mol.SetProp("GFN2:DIPOLE", "1.0|2.0|2.0")
    msg = convert_error(Chem, write_sdf(Chem, tmp_path / "dip3.sdf", [mol]))
    assert "has 3 values, expected 4" in msg


def test_non_numeric_charge(tmp_path, Chem):
    mol = fixture_mol(Chem)
    mol.SetProp("GFN2:MULLIKEN_CHARGES", mol.GetProp("GFN2:MULLIKEN_CHARGES").replace("|", "|abc|", 1))
    msg = convert_error(Chem, write_sdf(Chem, tmp_path / "nan.sdf", [mol]))
    assert "'GFN2:MULLIKEN_CHARGES' is not '|'-separated numbers" in msg


def test_unreadable_record_is_named_by_index(tmp_path, Chem):
    good = (FIXTURE / "CHEMBL9900001" / "conf_00.sdf").read_text()
    lines = (FIXTURE / "CHEMBL9900002" / "conf_00.sdf").read_text().splitlines(keepends=True)
    lines[3] = "garbage counts line\n"  # the V2000 counts line
    path = tmp_path / "broken.sdf"
    path.write_text(good + "".join(lines) + good.replace("conf_00", "conf_01"))
    msg = convert_error(Chem, path)
    assert str(path) in msg and "record 1" in msg and "cannot parse" in msg


def test_duplicate_conformer_names_both_places(tmp_path, Chem):
    src = tmp_path / "dup"
    shutil.copytree(FIXTURE / "CHEMBL9900002", src / "CHEMBL9900002")
    shutil.copy(FIXTURE / "CHEMBL9900002" / "conf_00.sdf", src / "copy.sdf")
    from fastdipole.data.qmugs import build_from_qmugs

    with pytest.raises(DataError, match="CHEMBL9900002 conf 0 appears twice") as info:
        build_from_qmugs(src, "gfn2", tmp_path / "dup.h5")
    assert "copy.sdf" in str(info.value) and "conf_00.sdf" in str(info.value)


def test_coincident_atoms_name_the_record(tmp_path, Chem):
    mol = fixture_mol(Chem)
    conf = mol.GetConformer()
    conf.SetAtomPosition(5, conf.GetAtomPosition(4))
    path = write_sdf(Chem, tmp_path / "close.sdf", [fixture_mol(Chem, "CHEMBL9900001/conf_00.sdf"), mol])
    msg = convert_error(Chem, path)
    assert str(path) in msg and "record 1 (CHEMBL9900002 conf 0)" in msg
    assert "the molecule has coincident atoms 4 and 5" in msg


def test_folder_without_sdf_files(tmp_path, Chem):
    (tmp_path / "empty" / "CHEMBL1").mkdir(parents=True)
    msg = convert_error(Chem, tmp_path / "empty" / "CHEMBL1")
    assert "no .sdf files found" in msg


def test_non_sdf_file_is_refused(tmp_path, Chem):
    archive = tmp_path / "structures.tar.gz"
    archive.write_bytes(b"not an sdf")
    msg = convert_error(Chem, archive)
    assert str(archive) in msg and "expected an .sdf file or a folder" in msg


def test_unknown_level(tmp_path, Chem):
    msg = convert_error(Chem, FIXTURE / "multi" / "extra_molecules.sdf", level="b3lyp")
    assert "unknown QMugs level 'b3lyp'" in msg


def test_missing_rdkit_says_how_to_install(tmp_path, monkeypatch):
    from fastdipole.data.qmugs import build_from_qmugs

    monkeypatch.setitem(sys.modules, "rdkit", None)  # makes `import rdkit` fail like an absent package
    with pytest.raises(DataError, match=r"pip install fastdipole\[qmugs\]"):
        build_from_qmugs(FIXTURE, "gfn2", tmp_path / "x.h5")


# ---------------------------------------------------------------------------------------------------
# The converted file trains


def test_short_training_run_on_the_converted_fixture(gfn2_h5, tmp_path):
    train_api = pytest.importorskip("fastdipole.train")
    config = train_api.TrainConfig(
        data=str(gfn2_h5), out=str(tmp_path / "run"), epochs=2, batch_size=16, n_features=8,
        n_sensitivities=8, species=[1, 6, 7, 8, 9, 15, 16, 17, 35, 53], device="cpu", threads=1,
    )
    lines = []
    run_dir = train_api.train(config, progress=False, log=lines.append)
    rows = train_api.read_history(run_dir)
    assert [row["epoch"] for row in rows] == [1, 2]
    for row in rows:
        for key in ("train_loss", "train_charge_rmse_e", "valid_dipole_mae_debye"):
            assert row[key] is not None and np.isfinite(row[key]) and row[key] > 0, (key, row)
    n_molecules = load_h5(gfn2_h5).n_molecules
    assert any(f"training on {n_molecules} molecules" in line for line in lines)
