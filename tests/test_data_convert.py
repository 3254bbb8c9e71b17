"""Converters: original QM9 .xyz files (folder / tarballs) and qm9pack CSVs, round-tripped against real molecules."""

from __future__ import annotations

import csv
import importlib.util
import random
import tarfile

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from fastdipole.cli import main
from fastdipole.data import load_h5
from fastdipole.data.elements import symbol
from fastdipole.data.qm9pack import build_from_qm9pack
from fastdipole.data.qm9xyz import build_from_xyz, parse_qm9_xyz
from fastdipole.errors import DataError

# gdb 1-5 (small), 2693 (a coordinate -8.7796E-6 written '*^-6' in the original file), 23311, 61269
GDB_IDS = [1, 2, 3, 4, 5, 2693, 23311, 61269]


@pytest.fixture(scope="module")
def real(qm9_h5_path):
    with h5py.File(qm9_h5_path) as f:
        gdb = f["gdb_id"][()]
    rows = np.searchsorted(gdb, GDB_IDS)
    assert np.array_equal(gdb[rows], GDB_IDS)
    return load_h5(qm9_h5_path, molecules=rows)


def mathematica(x: float) -> str:
    """Format like the QM9 files: plain decimals, Mathematica '*^' exponents for tiny numbers."""
    x = float(x)
    if x != 0 and abs(x) < 1e-4:
        mantissa, exponent = f"{x:.10e}".split("e")
        return f"{mantissa}*^{int(exponent)}"
    return repr(x)


def xyz_text(Z, R, q, gdb, mu) -> str:
    # A, B, C (GHz) come before mu; they are set to distinct non-zero values so a wrong field fails
    props = [157.7118, 157.70997, 157.70699, float(mu), 13.21, -0.3877, 0.1171, 0.5048, 35.3641,
             0.044749, -40.47893, -40.476062, -40.475117, -40.498597, 6.469]
    lines = [str(len(Z)), f"gdb {gdb}\t" + "\t".join(mathematica(p) for p in props) + "\t"]
    for z, r, c in zip(Z, R, q):
        lines.append(f"{symbol(z)}\t" + "\t".join(mathematica(v) for v in (*r, c)))
    lines += ["1341.307\t1341.3284\t1562.6731", "C\tC", "InChI=1S/CH4/h1H4\tInChI=1S/CH4/h1H4", ""]
    return "\n".join(lines)


def write_xyz_dir(real, folder):
    folder.mkdir()
    for m, gdb in enumerate(real.extra["gdb_id"]):
        Z, R = real.molecule(m)
        q = real.charges[real.offsets[m] : real.offsets[m + 1]]
        (folder / f"dsgdb9nsd_{gdb:06d}.xyz").write_text(xyz_text(Z, R, q, gdb, real.mu_debye[m]))
    return folder


def assert_same(converted, real):
    for name in ("Z", "R", "offsets", "mu_debye", "charges"):
        np.testing.assert_array_equal(getattr(converted, name), getattr(real, name), err_msg=name)
    np.testing.assert_array_equal(converted.extra["gdb_id"], real.extra["gdb_id"])


def test_fortran_exponent_is_written_and_parsed(real):
    m = GDB_IDS.index(2693)
    Z, R = real.molecule(m)
    q = real.charges[real.offsets[m] : real.offsets[m + 1]]
    text = xyz_text(Z, R, q, 2693, real.mu_debye[m])
    assert "*^-6" in text
    gdb, Zp, Rp, qp, mu = parse_qm9_xyz(text)
    assert gdb == 2693 and mu == pytest.approx(float(real.mu_debye[m]))
    np.testing.assert_array_equal(Rp.astype(np.float32), R)
    assert Rp[1, 0] == pytest.approx(-8.7796e-6)


def test_directory_round_trip(real, tmp_path):
    folder = write_xyz_dir(real, tmp_path / "xyz")
    out = build_from_xyz(folder, tmp_path / "qm9.h5")
    assert_same(load_h5(out), real)


def test_single_xyz_file(real, tmp_path):
    folder = write_xyz_dir(real, tmp_path / "xyz")
    first = sorted(folder.iterdir())[0]
    out = build_from_xyz(first, tmp_path / "one.h5")
    one = load_h5(out)
    assert one.n_molecules == 1
    assert_same(one, real.subset([0]))


@pytest.mark.parametrize("mode, suffix", [("w:bz2", ".tar.bz2"), ("w:gz", ".tar.gz"), ("w", ".tar")])
def test_tarball_round_trip_sorted_by_gdb(real, tmp_path, mode, suffix):
    folder = write_xyz_dir(real, tmp_path / "xyz")
    files = sorted(folder.iterdir())
    random.Random(0).shuffle(files)  # archive order must not matter
    tarball = tmp_path / f"dsgdb9nsd{suffix}"
    with tarfile.open(tarball, mode) as tar:
        for path in files:
            tar.add(path, arcname=path.name)
    out = build_from_xyz(tarball, tmp_path / "qm9.h5")
    assert_same(load_h5(out), real)


def test_cli_xyz(real, tmp_path):
    folder = write_xyz_dir(real, tmp_path / "xyz")
    result = CliRunner().invoke(main, ["data", "xyz", str(folder), "--out", str(tmp_path / "cli.h5")])
    assert result.exit_code == 0, result.output
    assert f"{len(GDB_IDS)} molecules" in result.output
    assert_same(load_h5(tmp_path / "cli.h5"), real)


def test_bad_xyz_names_file_and_line(real, tmp_path):
    folder = write_xyz_dir(real, tmp_path / "xyz")
    bad = folder / "dsgdb9nsd_000003.xyz"
    lines = bad.read_text().splitlines()
    lines[3] = "O\t0.1\tnot-a-number\t0.3\t-0.5"
    bad.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"dsgdb9nsd_000003\.xyz: line 4"):
        build_from_xyz(folder, tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_not_a_tarball(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="junk.tar.gz"):
        build_from_xyz(junk, tmp_path / "x.h5")


def qm9pack_row(real, m):
    Z, R = real.molecule(m)
    q = real.charges[real.offsets[m] : real.offsets[m + 1]]
    gdb = int(real.extra["gdb_id"][m])
    return {
        "XYZ_file": f"dsgdb9nsd_{gdb:06d}.xyz", "Index": gdb, "N_atoms": len(Z),
        "Elements": "[" + ",".join(f"'{symbol(z)}'" for z in Z) + "]",
        "XYZ_Ang": "[" + ",".join("[" + ",".join(repr(float(v)) for v in r) + "]" for r in R) + "]",
        "Mulliken_pop": "[" + ",".join(repr(float(c)) for c in q) + "]",
        "Dipole_debye": repr(float(real.mu_debye[m])),
    }


def test_qm9pack_csv_format_round_trip(real, tmp_path):
    # CSVs in qm9pack's format, split over two parts and out of order: the result is sorted by gdb id
    rows = [qm9pack_row(real, m) for m in range(real.n_molecules)]
    for name, part in (("qm9_part1.csv", rows[5:]), ("qm9_part2.csv", rows[:5])):
        with open(tmp_path / name, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]), quoting=csv.QUOTE_NONNUMERIC)
            writer.writeheader()
            writer.writerows(part)
    result = CliRunner().invoke(main, ["data", "qm9", "--csv-dir", str(tmp_path), "--out", str(tmp_path / "p.h5")])
    assert result.exit_code == 0, result.output
    assert_same(load_h5(tmp_path / "p.h5"), real)


@pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None, reason="qm9pack not installed (pip install fastdipole[qm9])")
def test_qm9pack_package_matches_shared_file(qm9_h5_path, tmp_path):
    out = build_from_qm9pack(tmp_path / "qm9pack.h5", max_rows_per_file=100)
    ours = load_h5(out)
    assert ours.n_molecules == 300
    with h5py.File(qm9_h5_path) as f:
        rows = np.searchsorted(f["gdb_id"][()], ours.extra["gdb_id"])
    assert_same(ours, load_h5(qm9_h5_path, molecules=rows))
