"""`fastdipole export`: the exported program loads in a fresh Python without fastdipole and gives predict's numbers."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from fastdipole.cli import main
from fastdipole.data import load_h5
from fastdipole.evaluation.evaluate import predict
from fastdipole.train import load_model

FRESH = r"""
import json, sys
import numpy as np, torch
program = torch.export.load(sys.argv[1]).module()
batch = np.load(sys.argv[2])
charges, dipoles = program(torch.from_numpy(batch["Z"]), torch.from_numpy(batch["R"]),
                           torch.from_numpy(batch["offsets"]), torch.from_numpy(batch["total"]))
assert not any(name.startswith("fastdipole") for name in sys.modules), "fastdipole was imported"
print(json.dumps({"charges": charges.tolist(), "dipoles": dipoles.tolist()}))
"""


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run


def test_exported_model_runs_without_fastdipole(run, tmp_path):
    run_dir, data = run
    out = tmp_path / "model.pt2"
    result = CliRunner().invoke(main, ["export", "--model", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    meta = json.loads(zipfile.ZipFile(out).read(next(n for n in zipfile.ZipFile(out).namelist()
                                                     if n.endswith("fastdipole.json"))))
    assert meta["species"] == [1, 6, 7, 8] and meta["format"] == "fastdipole-export-1"
    # A batch of another size than the one traced, with an ion, in a fresh interpreter with only torch.
    dataset = load_h5(data, molecules=slice(100, 111))
    total = np.zeros(dataset.n_molecules, dtype=np.float32)
    total[3] = 1.0
    dataset.extra["total_charge"] = total
    batch = tmp_path / "batch.npz"
    np.savez(batch, Z=dataset.Z.astype(np.int64), R=dataset.R.astype(np.float32),
             offsets=dataset.offsets.astype(np.int64), total=total)
    done = subprocess.run([sys.executable, "-c", FRESH, str(out), str(batch)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    want = predict(load_model(run_dir), dataset)
    np.testing.assert_allclose(np.array(got["charges"]), want.charges_pred, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(got["dipoles"]), want.dipole_pred_e_angstrom, rtol=1e-5, atol=1e-6)
    sums = np.add.reduceat(np.array(got["charges"]), dataset.offsets[:-1])
    np.testing.assert_allclose(sums, total, atol=1e-5)
