"""`fastdipole predict`: a trained model on structure files (ASE), .h5 files and SMILES (RDKit)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from click.testing import CliRunner

from fastdipole.cli import main
from fastdipole.data import load_h5, save_h5
from fastdipole.evaluation.evaluate import predict
from fastdipole.train import load_model

ase_io = pytest.importorskip("ase.io")
from ase import Atoms  # noqa: E402


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run


def as_atoms(dataset, m):
    a, b = dataset.offsets[m], dataset.offsets[m + 1]
    return Atoms(numbers=dataset.Z[a:b], positions=dataset.R[a:b].astype(np.float64))


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_xyz_and_h5_give_the_model_s_dipoles(run, tmp_path):
    run_dir, data = run
    dataset = load_h5(data, molecules=slice(0, 5))
    xyz = tmp_path / "five.xyz"
    ase_io.write(xyz, [as_atoms(dataset, m) for m in range(5)], format="extxyz")
    h5 = tmp_path / "five.h5"
    save_h5(dataset, h5)
    out = tmp_path / "dipoles.csv"
    result = CliRunner().invoke(main, ["predict", "--model", str(run_dir), str(xyz), str(h5), "--out", str(out),
                                       "--atom-charges", str(tmp_path / "q.csv"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert [r["molecule"] for r in rows] == [f"{xyz}:{k}" for k in range(5)] + [f"{h5}:{k}" for k in range(5)]
    # the same numbers as the model's own batched prediction on the dataset (float32 through xyz text)
    want = predict(load_model(run_dir, device="cpu"), dataset)
    got = np.array([float(r["mu_debye"]) for r in rows])
    np.testing.assert_allclose(got[:5], want.mu_pred_debye, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[5:], want.mu_pred_debye, rtol=1e-6, atol=1e-7)
    vec = np.array([[float(r[f"mu_{c}_e_angstrom"]) for c in "xyz"] for r in rows])
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), [float(r["mu_e_angstrom"]) for r in rows], rtol=1e-6)
    np.testing.assert_allclose(got, [4.80320 * float(r["mu_e_angstrom"]) for r in rows], rtol=1e-4)
    charges = read_csv(tmp_path / "q.csv")
    assert len(charges) == 2 * int(dataset.offsets[-1])
    total = sum(float(q["charge_e"]) for q in charges if q["molecule"] == f"{h5}:0")
    assert total == pytest.approx(float(rows[5]["total_charge_e"]), abs=1e-5)
    assert "|mu| (D)" in result.output and "|mu| (e*A)" in result.output


def test_magnitude_does_not_change_when_the_molecule_is_rotated_and_moved(run, tmp_path):
    run_dir, data = run
    atoms = as_atoms(load_h5(data, molecules=slice(7, 8)), 0)
    moved = atoms.copy()
    moved.rotate(73, (1, 2, 3), center="COM")
    moved.translate((5.0, -3.0, 12.0))
    path = tmp_path / "two.xyz"
    ase_io.write(path, [atoms, moved], format="extxyz")
    out = tmp_path / "d.csv"
    result = CliRunner().invoke(main, ["predict", "--model", str(run_dir), str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    a, b = (float(r["mu_debye"]) for r in read_csv(out))
    assert a > 0 and b == pytest.approx(a, rel=1e-4)


def test_smiles_molecules(run, tmp_path):
    pytest.importorskip("rdkit")
    run_dir, _ = run
    out = tmp_path / "s.csv"
    result = CliRunner().invoke(main, ["predict", "--model", str(run_dir), "--smiles", "O", "--smiles", "CC(=O)N",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert [(r["molecule"], r["formula"], r["n_atoms"]) for r in rows] == [("O", "H2O", "3"), ("CC(=O)N", "C2H5NO", "9")]
    assert all(np.isfinite(float(r["mu_debye"])) for r in rows)


@pytest.mark.parametrize("args, message", [
    (["--smiles", "CCCl"], "1 of 1 molecules cannot be predicted (CCCl: element Cl is not one of the model's "
                           "elements (H, C, N, O))"),
    (["--smiles", "C1CC"], "C1CC: RDKit cannot parse it"),
    (["NOPE.xyz"], "NOPE.xyz: no such file"),
    ([], "no molecules to predict on"),
])
def test_bad_input_is_one_line(run, args, message):
    if args and args[0] == "--smiles":
        pytest.importorskip("rdkit")
    result = CliRunner().invoke(main, ["predict", "--model", str(run[0]), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_coincident_atoms_name_the_file_and_frame(run, tmp_path):
    path = tmp_path / "bad.xyz"
    ase_io.write(path, [Atoms("OH2", positions=[(0, 0, 0), (0.96, 0, 0), (-0.24, 0.93, 0)]),
                        Atoms("OH2", positions=[(0, 0, 0), (0, 0, 0), (-0.24, 0.93, 0)])], format="extxyz")
    result = CliRunner().invoke(main, ["predict", "--model", str(run[0]), str(path)])
    assert result.exit_code == 2 and f"{path}:1: atoms 0 and 1 are 0 Angstrom apart" in result.output, result.output


def _sdf(path, molecules, titles):
    """An SDF file of real QM9 geometries (RDKit writer, V2000, $$$$-separated), titled records."""
    Chem = pytest.importorskip("rdkit.Chem")
    writer = Chem.SDWriter(str(path))
    for (Z, R), title in zip(molecules, titles):
        mol = Chem.RWMol()
        for z in Z:
            mol.AddAtom(Chem.Atom(int(z)))
        conf = Chem.Conformer(len(Z))
        for i, pos in enumerate(R):
            conf.SetAtomPosition(i, [float(c) for c in pos])
        conf.Set3D(bool(np.any(np.asarray(R)[:, 2] != 0)))  # a drawing (every z = 0) is written as 2D
        mol.AddConformer(conf, assignId=True)
        mol.SetProp("_Name", title)
        writer.write(mol)
    writer.close()
    return path


def test_every_sdf_record_is_predicted_and_named(run, tmp_path):
    run_dir, data = run
    dataset = load_h5(data, molecules=slice(10, 13))
    path = _sdf(tmp_path / "three.sdf", [dataset.molecule(m) for m in range(3)], ["alpha", "", "gamma"])
    out = tmp_path / "d.csv"
    result = CliRunner().invoke(main, ["predict", "--model", str(run_dir), str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert [r["molecule"] for r in rows] == ["alpha", f"{path}:1", "gamma"]  # untitled record: FILE:INDEX
    want = predict(load_model(run_dir, device="cpu"), dataset)
    np.testing.assert_allclose([float(r["mu_debye"]) for r in rows], want.mu_pred_debye, rtol=1e-4, atol=1e-5)
    assert all(r["skipped"] == "" for r in rows)


def test_invalid_records_are_all_listed_or_skipped(run, tmp_path):
    """A file where some records hold Cl or S: one error naming each by default; --skip-invalid predicts the rest."""
    run_dir, data = run
    dataset = load_h5(data, molecules=slice(20, 25))
    frames = [as_atoms(dataset, m) for m in range(5)]
    for k, element in ((1, 17), (3, 16)):  # make an H of records 1 and 3 a Cl and an S
        numbers = frames[k].get_atomic_numbers()
        numbers[np.flatnonzero(numbers == 1)[0]] = element
        frames[k].set_atomic_numbers(numbers)
        frames[k].info["name"] = f"odd{k}"
    path = tmp_path / "mixed.xyz"
    ase_io.write(path, frames, format="extxyz")
    refused = CliRunner().invoke(main, ["predict", "--model", str(run_dir), str(path)])
    assert refused.exit_code == 2 and "2 of 5 molecules cannot be predicted" in refused.output
    assert "odd1: element Cl is not one of the model's elements" in refused.output
    assert "odd3: element S is not one of the model's elements" in refused.output
    out = tmp_path / "d.csv"
    result = CliRunner().invoke(main, ["predict", "--model", str(run_dir), str(path), "--skip-invalid",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert [r["molecule"] for r in rows] == [f"{path}:0", "odd1", f"{path}:2", "odd3", f"{path}:4"]
    assert [bool(r["skipped"]) for r in rows] == [False, True, False, True, False]
    assert rows[1]["mu_debye"] == "" and float(rows[2]["mu_debye"]) > 0
    assert "skipped odd1: element Cl" in result.stderr and "skipped odd3: element S" in result.stderr


def test_a_2d_sdf_record_is_refused_by_name(run, tmp_path):
    run_dir, data = run
    Z, R = load_h5(data, molecules=slice(30, 31)).molecule(0)
    flat = R.copy()
    flat[:, 2] = 0.0  # written with the 2D flag, as drawing programs do
    path = _sdf(tmp_path / "flat.sdf", [(Z, flat)], ["drawing"])
    result = CliRunner().invoke(main, ["predict", "--model", str(run_dir), str(path)])
    assert result.exit_code == 2 and "drawing: no 3D coordinates" in result.output, result.output


def test_smiles_file_with_names(run, tmp_path):
    pytest.importorskip("rdkit")
    path = tmp_path / "list.smi"
    path.write_text("# a comment\nCCO ethanol\n\nc1ccccc1O\tphenol\nCC(=O)O\n")
    out = tmp_path / "d.csv"
    result = CliRunner().invoke(main, ["predict", "--model", str(run[0]), "--smiles-file", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert [r["molecule"] for r in read_csv(out)] == ["ethanol", "phenol", f"{path}:5"]


def test_ions_get_their_total_charge(run, tmp_path):
    """SMILES formal charges, an extxyz 'charge' field and --charge set each molecule's total charge."""
    pytest.importorskip("rdkit")
    run_dir, data = run
    dataset = load_h5(data, molecules=slice(0, 3))
    frames = [as_atoms(dataset, m) for m in range(3)]
    frames[1].info["charge"] = -1  # the file says this frame is an anion
    xyz = tmp_path / "three.xyz"
    ase_io.write(xyz, frames, format="extxyz")
    out = tmp_path / "ions.csv"
    atom_q = tmp_path / "q.csv"
    result = CliRunner().invoke(main, ["predict", "--model", str(run_dir), str(xyz), "--charge", "1",
                                       "--smiles", "[NH4+]", "--smiles", "CC(=O)[O-]", "--out", str(out),
                                       "--atom-charges", str(atom_q), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert [float(r["total_charge_e"]) for r in rows] == [1.0, -1.0, 1.0, 1.0, -1.0]
    sums = {}
    for r in read_csv(atom_q):
        sums[r["molecule"]] = sums.get(r["molecule"], 0.0) + float(r["charge_e"])
    for r in rows:
        assert sums[r["molecule"]] == pytest.approx(float(r["total_charge_e"]), abs=1e-5), r["molecule"]
        assert float(r["sum_of_charges_e"]) == pytest.approx(float(r["total_charge_e"]), abs=1e-5)


def test_a_large_input_stops_at_the_first_block_with_invalid_molecules(run, tmp_path, monkeypatch, qm9_h5_path):
    """Without --skip-invalid a large .h5 stops once a block holds molecules the model cannot take (here F, which
    the tiny model lacks) instead of predicting the rest first; no CSV is left behind."""
    import fastdipole.evaluation.screening as screening

    run_dir, _ = run
    monkeypatch.setattr(screening, "DEFAULT_BLOCK_MOLECULES", 100)
    monkeypatch.setattr(screening, "EARLY_STOP_MOLECULES", 100)
    path = tmp_path / "with_f.h5"
    save_h5(load_h5(qm9_h5_path, molecules=slice(100, 400)), path)  # molecule 180 (index 80 here) has F
    out = tmp_path / "d.csv"
    result = CliRunner().invoke(main, ["predict", "--model", str(run_dir), str(path), "--out", str(out)])
    assert result.exit_code == 2
    assert "1 of the first 100 molecules read cannot be predicted" in result.output
    assert "(reading stopped there)" in result.output
    assert f"{path}:80: element F" in result.output
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))
    skipped = CliRunner().invoke(main, ["predict", "--model", str(run_dir), str(path), "--out", str(out),
                                        "--skip-invalid"])
    assert skipped.exit_code == 0, skipped.output
    rows = read_csv(out)
    assert len(rows) == 300 and rows[80]["skipped"].startswith("element F")
    assert "... 200 more molecules" in skipped.output  # the terminal shows the first 100


def test_hill_formulas_of_a_block_match_molecule_by_molecule_counting():
    """The vectorised formulas of the CSV against plain counting (Hill order: C, H, then alphabetical), on the
    bundled QM9 sample plus molecules without carbon and with one atom."""
    from collections import Counter

    from fastdipole.data import bundled_sample_path
    from fastdipole.data.elements import symbol
    from fastdipole.evaluation.screening import formula, hill_formulas

    ds = load_h5(bundled_sample_path(), check=False)
    Z = np.concatenate([ds.Z, [8, 1, 1], [7, 1, 1, 1], [17], [1, 9]])
    offsets = np.concatenate([ds.offsets, ds.offsets[-1] + np.cumsum([3, 4, 1, 2])])

    def counted(z):
        c = Counter(symbol(int(a)) for a in z)
        first = [s for s in ("C", "H") if "C" in c and s in c]
        order = first + sorted(s for s in c if s not in first)
        return "".join(s + (str(c[s]) if c[s] > 1 else "") for s in order)

    expected = [counted(Z[a:b]) for a, b in zip(offsets[:-1], offsets[1:])]
    assert hill_formulas(Z, offsets) == expected
    assert expected[-4:] == ["H2O", "H3N", "Cl", "FH"] and formula([6, 1, 1, 1, 1]) == "CH4"


def test_structure_files_and_smiles_files_are_read_in_blocks(run, tmp_path):
    """A 40-frame xyz file comes in blocks of 16, 16 and 8 records with the whole file's predictions; the frames
    are read one at a time (the reader is a generator), so memory is bounded by the block size."""
    from fastdipole.data.structures import iter_file
    from fastdipole.evaluation.screening import Screening

    run_dir, data = run
    dataset = load_h5(data, molecules=slice(0, 40))
    xyz = tmp_path / "forty.xyz"
    ase_io.write(xyz, [as_atoms(dataset, m) for m in range(40)], format="extxyz")
    frames = iter_file(xyz)
    assert next(frames).name == f"{xyz}:0"  # one record read, not the file
    model = load_model(run_dir, device="cpu")
    screening = Screening(model, model.hipnn.species, block_molecules=16)
    blocks = list(screening.blocks([xyz]))
    assert [len(b.rows) for b in blocks] == [16, 16, 8]
    got = np.array([row[3] for b in blocks for row in b.rows])
    np.testing.assert_allclose(got, predict(model, dataset).mu_pred_debye, rtol=1e-4, atol=1e-5)
    smiles = tmp_path / "s.smi"
    smiles.write_text("# comment\nO water\n\nC methane\nN\n")
    blocks = list(Screening(model, model.hipnn.species, block_molecules=2).blocks(smiles_files=[smiles]))
    assert [[row[0] for row in b.rows] for b in blocks] == [["water", "methane"], [f"{smiles}:5"]]
