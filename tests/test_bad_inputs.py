"""A catalog of malformed and physically absurd inputs, each run through the real CLI (click's runner): exit code 2,
one line on stderr that names the problem, no traceback, and no output file left behind.

The README's "Bad input" section lists the same cases (checked by the last test).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import REPO, TINY_TRAIN, qm9_slice
from fastdipole.cli import main
from fastdipole.data import load_h5, save_h5

FIXTURE_QMUGS = REPO / "tests" / "fixtures" / "qmugs"
TINY = [*TINY_TRAIN, "--epochs", "1"]


@pytest.fixture(scope="module")
def good_h5(qm9_h5_path, tmp_path_factory):
    return qm9_slice(qm9_h5_path, tmp_path_factory.mktemp("catalog"), "good.h5", slice(8000, 8120))


def _edit(good: Path, tmp: Path, edit) -> Path:
    """A copy of the good file with ``edit(h5py.File)`` applied (arrays rewritten in place or replaced)."""
    path = tmp / "bad.h5"
    path.write_bytes(good.read_bytes())
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _replace(name, fn):
    def edit(f):
        data = fn(f[name][()])
        attrs = dict(f[name].attrs)
        del f[name]
        f.create_dataset(name, data=data)
        f[name].attrs.update(attrs)
    return edit


def _set(name, index, value):
    def change(a):
        a = a.copy()
        a[index] = value
        return a
    return _replace(name, change)


def _charged(f):  # molecule 3's charges sum to +1 e, no total_charge array says so
    q = f["q_mulliken"][()].copy()
    off = f["offsets"][()]
    q[off[3]:off[4]] += 1.0 / (off[4] - off[3])
    _replace("q_mulliken", lambda _: q)(f)


def _wide(f):  # molecule 2's last atom 2,000 A away
    R = f["R"][()].copy()
    R[f["offsets"][3] - 1] += 2000.0
    _replace("R", lambda _: R)(f)


def _coincident(f):
    R = f["R"][()].copy()
    R[1] = R[0]
    _replace("R", lambda _: R)(f)


def _empty_molecule(f):
    off = f["offsets"][()].copy()
    off[5] = off[4]  # molecule 4 gets no atoms, molecule 5 takes them
    _replace("offsets", lambda _: off)(f)
    del f["n_atoms"]


def _train(tmp, data, *extra):
    return ["train", "--data", str(data), "--out", str(tmp / "run"), *TINY, *extra], tmp / "run"


# name -> (build(tmp, good_h5) -> (cli args, output path that must not exist), expected text in the error)
TRAIN_CASES = {
    "missing data file": (lambda t, g: _train(t, t / "nope.h5"), "not found"),
    "not an HDF5 file": (lambda t, g: _train(t, _text(t / "bad.h5", "hello")), "bad.h5"),
    "truncated HDF5 file": (lambda t, g: _train(t, _truncated(g, t)), "bad.h5"),
    "missing array R": (lambda t, g: _train(t, _edit(g, t, lambda f: f.__delitem__("R"))), "'R'"),
    "NaN coordinate": (lambda t, g: _train(t, _edit(g, t, _set("R", (17, 1), np.nan))), "molecule"),
    "decreasing offsets": (lambda t, g: _train(t, _edit(g, t, _set("offsets", 3, 0))), "offsets"),
    "offsets past the atoms": (lambda t, g: _train(t, _edit(g, t, _set("offsets", -1, 10**6))), "offsets"),
    "atomic number 0": (lambda t, g: _train(t, _edit(g, t, _set("Z", 5, 0))), "atomic number"),
    "empty molecule": (lambda t, g: _train(t, _edit(g, t, _empty_molecule)), "molecule 4 has no atoms"),
    "coincident atoms": (lambda t, g: _train(t, _edit(g, t, _coincident)), "coincident atoms"),
    "negative dipole": (lambda t, g: _train(t, _edit(g, t, _set("mu", 2, -1.0))), "negative dipole"),
    "wrong units attribute": (lambda t, g: _train(t, _edit(g, t, lambda f: f["R"].attrs.__setitem__("units", "bohr"))),
                              "units"),
    "coordinates of 1e6 Angstrom": (lambda t, g: _train(t, _edit(g, t, _set("R", (30, 0), 1e6))),
                                    "beyond 10000"),
    "molecule 2,000 Angstrom wide": (lambda t, g: _train(t, _edit(g, t, _wide)), "molecule 2 is"),
    "charges summing to +1 e": (lambda t, g: _train(t, _edit(g, t, _charged)), "molecule 3's charges sum to +1"),
    "impossible dipole (5,000 D)": (lambda t, g: _train(t, _edit(g, t, _set("mu", 7, 5000.0))), "molecule 7 has"),
    "no charges for --charges mulliken": (lambda t, g: _train(t, _edit(g, t, lambda f: f.__delitem__("q_mulliken"))),
                                          "q_mulliken"),
    "no dipole vectors for --dipole-target vector": (lambda t, g: _train(t, g, "--dipole-target", "vector"),
                                                     "mu_vec"),
    "--resume with nothing to resume": (lambda t, g: _train(t, g, "--resume"), "nothing to resume"),
}


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _truncated(good: Path, tmp: Path) -> Path:
    path = tmp / "bad.h5"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return path


def _evaluate(tmp, run, *extra):
    return ["evaluate", "--model", str(run), "--out", str(tmp / "eval"), *extra], tmp / "eval"


def _predict(tmp, run, *extra):
    return ["predict", "--model", str(run), "--out", str(tmp / "d.csv"), *extra], tmp / "d.csv"


def _xyz(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


WATER = "3\nwater\nO 0 0 0.1173\nH 0 0.7572 -0.4692\nH 0 -0.7572 -0.4692\n"

# name -> (build(tmp, run) -> (args, output), expected text)
MODEL_CASES = {
    "evaluate: no such run folder": (lambda t, r: _evaluate(t, t / "nope"), "no such run folder"),
    "evaluate: run folder without a checkpoint": (lambda t, r: _evaluate(t, _empty_run(t, r)), "checkpoint_best.pt"),
    "evaluate: data with an element the model lacks": (lambda t, r: _evaluate(t, r, "--data", str(_with_cl(t, r))),
                                                      "Z=17"),
    "predict: element the model lacks (SMILES)": (lambda t, r: _predict(t, r, "--smiles", "CCCl"), "element Cl"),
    "predict: unparsable SMILES": (lambda t, r: _predict(t, r, "--smiles", "C1CC"), "RDKit cannot parse"),
    "predict: unreadable structure file": (lambda t, r: _predict(t, r, str(_xyz(t / "x.xyz", "garbage\n"))),
                                           "x.xyz"),
    "predict: coincident atoms": (lambda t, r: _predict(t, r, str(_xyz(t / "c.xyz", WATER.replace(
        "H 0 0.7572 -0.4692", "H 0 0 0.1173")))), "coincident atoms"),
    "predict: coordinates of 1e6 Angstrom": (lambda t, r: _predict(t, r, str(_xyz(t / "f.xyz", WATER.replace(
        "O 0 0 0.1173", "O 1000000 0 0.1173")))), "beyond 10000"),
    "predict: no molecules": (lambda t, r: _predict(t, r), "no molecules to predict on"),
}

DATA_CASES = {
    "data xyz: missing source": (lambda t: (["data", "xyz", str(t / "none"), "--out", str(t / "o.h5")], t / "o.h5"),
                                 "does not exist"),
    "data xyz: malformed .xyz file": (lambda t: (["data", "xyz", str(_xyz(t / "dsgdb9nsd_000001.xyz", "x\ny\n")),
                                                  "--out", str(t / "o.h5")], t / "o.h5"), "dsgdb9nsd_000001.xyz"),
    "data qmugs: missing DFT properties": (lambda t: (["data", "qmugs", str(FIXTURE_QMUGS), "--level", "dft",
                                                       "--out", str(t / "o.h5")], t / "o.h5"), "DFT:"),
    "data qmugs: missing path": (lambda t: (["data", "qmugs", str(t / "none"), "--level", "gfn2",
                                             "--out", str(t / "o.h5")], t / "o.h5"), "none"),
}


def _empty_run(tmp: Path, run: Path) -> Path:
    empty = tmp / "empty_run"
    empty.mkdir()
    (empty / "config.json").write_text((run / "config.json").read_text())
    return empty


def _with_cl(tmp: Path, run: Path) -> Path:
    data = load_h5(run.parent / "qm9_300.h5", molecules=slice(0, 10))
    data.Z[np.flatnonzero(data.Z == 1)[0]] = 17
    return save_h5(data, tmp / "cl.h5")


def _check(result, output: Path, expected: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not output.exists() or (output.is_dir() and not any(output.iterdir())), f"{output} was left behind"
    assert not list(output.parent.glob("*.tmp")), "a temporary file was left behind"


@pytest.mark.parametrize("name", list(TRAIN_CASES))
def test_train_refuses(name, good_h5, tmp_path):
    build, expected = TRAIN_CASES[name]
    args, output = build(tmp_path, good_h5)
    _check(CliRunner().invoke(main, args), output, expected)


@pytest.mark.parametrize("name", list(MODEL_CASES))
def test_evaluate_and_predict_refuse(name, tiny_run, tmp_path):
    if "SMILES" in name:
        pytest.importorskip("rdkit")
    build, expected = MODEL_CASES[name]
    args, output = build(tmp_path, tiny_run[0])
    _check(CliRunner().invoke(main, args), output, expected)


@pytest.mark.parametrize("name", list(DATA_CASES))
def test_data_commands_refuse(name, tmp_path):
    if "qmugs" in name:
        pytest.importorskip("rdkit")
    build, expected = DATA_CASES[name]
    args, output = build(tmp_path)
    _check(CliRunner().invoke(main, args), output, expected)


def test_the_readme_lists_every_case():
    section = (REPO / "README.md").read_text().split("### Bad input")[1].split("\n## ")[0]
    cases = [*TRAIN_CASES, *MODEL_CASES, *DATA_CASES]
    assert len(cases) >= 25
    for name in cases:
        assert f"| {name} |" in section, name
