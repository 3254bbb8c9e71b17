"""fastdipole.ase.DipoleCalculator: dipoles and charges of ASE Atoms, analytic dipole derivatives (atomic polar
tensors) against finite differences, and IR intensities through ase.vibrations.Infrared with EMT forces."""

from __future__ import annotations

import numpy as np
import pytest

from fastdipole.data import load_h5
from fastdipole.evaluation.evaluate import predict
from fastdipole.train import load_model

ase = pytest.importorskip("ase")
from ase import Atoms  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402

from fastdipole.ase import DipoleCalculator  # noqa: E402


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run


def _atoms(dataset, m):
    Z, R = dataset.molecule(m)
    return Atoms(numbers=Z, positions=R.astype(np.float64))


def test_dipole_and_charges_match_the_model(run):
    run_dir, data = run
    dataset = load_h5(data, molecules=slice(0, 3))
    want = predict(load_model(run_dir), dataset)
    for m in range(3):
        atoms = _atoms(dataset, m)
        atoms.calc = DipoleCalculator(run_dir)
        a, b = want.atom_offsets[m], want.atom_offsets[m + 1]
        np.testing.assert_allclose(atoms.get_dipole_moment(), want.dipole_pred_e_angstrom[m], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(atoms.get_charges(), want.charges_pred[a:b], rtol=1e-4, atol=1e-5)
        assert abs(atoms.get_charges().sum()) < 1e-10  # neutral, in float64


def test_total_charge_from_info_or_argument(run):
    run_dir, data = run
    atoms = _atoms(load_h5(data, molecules=slice(5, 6)), 0)
    atoms.info["charge"] = 1
    atoms.calc = DipoleCalculator(run_dir)
    assert atoms.get_charges().sum() == pytest.approx(1.0, abs=1e-10)
    atoms.calc = DipoleCalculator(run_dir, charge=-1)  # the argument wins over atoms.info
    assert atoms.get_charges().sum() == pytest.approx(-1.0, abs=1e-10)


@pytest.mark.parametrize("charge", [0.0, 1.0])
def test_dipole_derivatives_match_finite_differences_and_the_sum_rule(run, charge):
    run_dir, data = run
    atoms = _atoms(load_h5(data, molecules=slice(7, 8)), 0)
    calc = DipoleCalculator(run_dir, charge=charge)
    atoms.calc = calc
    apt = calc.get_dipole_derivatives(atoms)  # (n, 3, 3): d mu_b / d R_(i, a)
    h = 1e-5
    fd = np.zeros_like(apt)
    for i in range(len(atoms)):
        for a in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[i, a] += h
            minus.positions[i, a] -= h
            plus.calc, minus.calc = calc, calc
            fd[i, a] = (plus.get_dipole_moment() - minus.get_dipole_moment()) / (2 * h)
    np.testing.assert_allclose(apt, fd, atol=1e-6, rtol=1e-5)
    # The dipole is measured from the centroid, so moving the whole molecule changes nothing, ions included:
    # the tensors sum to zero (about a fixed origin they would sum to Q times the identity).
    np.testing.assert_allclose(apt.sum(axis=0), np.zeros((3, 3)), atol=1e-9)


def test_ir_intensities_with_emt_forces(run, tmp_path):
    from ase.optimize import BFGS
    from ase.vibrations import Infrared

    run_dir, data = run
    atoms = _atoms(load_h5(data, molecules=slice(11, 12)), 0)
    atoms.calc = DipoleCalculator(run_dir, forces_from=EMT())
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=200)  # EMT's minimum: its modes are real
    ir = Infrared(atoms, name=str(tmp_path / "ir"), delta=0.01)
    ir.run()
    ir.read()
    intensities = ir.intensities  # (D/A)^2 amu^-1, from ASE's finite differences of our dipoles
    assert len(intensities) == 3 * len(atoms)
    assert np.isfinite(intensities).all() and (intensities >= 0).all() and intensities.max() > 0
    # The same intensities from our analytic dipole derivatives and ASE's normal modes (rows of ir.modes:
    # eigenvectors of the mass-weighted Hessian over the 3n coordinates).
    apt = atoms.calc.get_dipole_derivatives(atoms).reshape(-1, 3)  # (3n, 3), e
    inv_sqrt_mass = np.repeat(atoms.get_masses() ** -0.5, 3)
    analytic = np.array([np.sum(((mode * inv_sqrt_mass) @ apt) ** 2)
                         for mode in ir.modes]) * 4.80320**2  # (e/sqrt(amu))^2 -> (D/A)^2/amu
    big = intensities > 1e-3 * intensities.max()
    np.testing.assert_allclose(analytic[big], intensities[big], rtol=2e-2)
