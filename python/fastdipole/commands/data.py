"""`fastdipole data ...`: build dataset files in our HDF5 layout and inspect them."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np


@click.group("data")
def command():
    """Build and inspect dataset files (HDF5: Z, R [Angstrom], charges [e], mu [Debye], offsets)."""


@command.command("qm9")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="output .h5 file")
@click.option("--csv-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="folder holding qm9pack's qm9_part*.csv (default: the installed qm9pack package)")
def qm9(out_path, csv_dir):
    """QM9 with Mulliken charges from the PyPI package qm9pack 1.0.3 (pip install fastdipole[qm9])."""
    from ..data.qm9pack import build_from_qm9pack

    path = build_from_qm9pack(out_path, csv_dir=csv_dir)
    _summary(path)


@command.command("xyz")
@click.argument("source", type=click.Path(exists=True))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="output .h5 file")
def xyz(source, out_path):
    """QM9 from the original dsgdb9nsd_*.xyz files: one file, a folder or a .tar/.tar.gz/.tar.bz2 of them."""
    from ..data.qm9xyz import build_from_xyz

    path = build_from_xyz(source, out_path)
    _summary(path)


def _summary(path: Path) -> None:
    from ..data import load_h5

    ds = load_h5(path, charges=None, check=False)
    click.echo(f"wrote {path}: {ds.n_molecules} molecules, {ds.n_atoms} atoms")


# Units the layout documents for arrays stored without a ``units`` attribute.
_DEFAULT_UNITS = {"R": "Angstrom", "mu": "Debye", "mu_vec": "Debye", "q_": "e"}


@command.command("info")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--charges", default=None, help="per-atom charge array to check (default: the first q_* array)")
def info(path, charges):
    """Molecule and atom counts, elements, arrays and units of a dataset file (validates it)."""
    from ..data import load_h5
    from ..data.elements import symbol
    from ..data.h5io import describe_h5

    path = Path(path)
    arrays, attrs = describe_h5(path)
    if charges is None:
        charges = next((k for k in sorted(arrays) if k.startswith("q_")), None)
    ds = load_h5(path, charges=charges)
    counts = ds.n_atoms_per_molecule
    click.echo(f"file: {path}")
    click.echo(f"molecules: {ds.n_molecules}")
    click.echo(f"atoms: {ds.n_atoms} ({counts.min()} to {counts.max()} per molecule, mean {counts.mean():.2f})")
    z, n = np.unique(ds.Z, return_counts=True)
    click.echo("elements: " + ", ".join(f"{symbol(a)} {c}" for a, c in zip(z, n)))
    click.echo(f"mu: mean {ds.mu_debye.mean():.4f} D, max {ds.mu_debye.max():.4f} D")
    click.echo("arrays:")
    for name, (shape, dtype, units) in sorted(arrays.items()):
        if units is None and _DEFAULT_UNITS.get(name if not name.startswith("q_") else "q_"):
            units = f"{_DEFAULT_UNITS[name if not name.startswith('q_') else 'q_']} (no units attribute; layout default)"
        click.echo(f"  {name:<16} {str(dtype):<8} {str(shape):<16} {units or ''}")
    for key in ("description", "sources"):
        if key in attrs:
            click.echo(f"{key}: {attrs[key]}")


def _register_qmugs() -> None:
    # `data qmugs` lives in its own module (RDKit is imported only when it runs).
    from .data_qmugs import command as qmugs

    command.add_command(qmugs)


_register_qmugs()
