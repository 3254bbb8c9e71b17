"""`fastdipole predict`: dipoles (and atomic charges) of a trained model for your own molecules."""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path

import click

from ..train.run_folder import CHECKPOINTS
from .options import backend_option, device_option, model_option


@click.command("predict")
@click.argument("structures", nargs=-1, type=click.Path(dir_okay=False))
@model_option(required=False, default="qm9")
@click.option("--smiles", multiple=True,
              help="a molecule as SMILES (repeatable): RDKit adds hydrogens and makes an MMFF-relaxed conformer")
@click.option("--smiles-file", "smiles_files", multiple=True, type=click.Path(dir_okay=False),
              help="a file of SMILES, one per line with an optional name after whitespace (repeatable)")
@click.option("--charge", type=float, default=0.0, show_default=True,
              help="total charge (e) of the molecules in STRUCTURES that do not say theirs (an extxyz 'charge' "
                   "field, an .h5 'total_charge' array, SDF formal charges); a SMILES carries its own")
@click.option("--skip-invalid", is_flag=True,
              help="predict the valid molecules and list the others (unknown element, coincident atoms, no 3D "
                   "coordinates, ...) instead of stopping")
@click.option("--which", type=click.Choice(list(CHECKPOINTS)), default="best", show_default=True,
              help="checkpoint to use")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="CSV of the dipoles, one row per input molecule (default: print only)")
@click.option("--atom-charges", type=click.Path(dir_okay=False), default=None,
              help="CSV of the predicted atomic charges, one row per atom")
@click.option("--batch-size", type=int, default=512, show_default=True, help="molecules per prediction batch")
@device_option
@backend_option
def command(structures, run_dir, smiles, smiles_files, charge, skip_invalid, which, out, atom_charges, batch_size,
            device, backend):
    """Dipole moments (D and e*A) and atomic charges (e) of the molecules in STRUCTURES, --smiles-file and --smiles.

    STRUCTURES: SDF / MOL files (every record, read with RDKit), .h5 files in fastdipole's layout, or anything
    ASE reads (xyz, extxyz, pdb, ...; every frame). A molecule is named by its SDF title or extxyz name, else
    FILE:INDEX. Positions in Angstrom. The predicted charges of a molecule sum to its total charge (models
    trained with the total-charge constraint, the default). The dipole vector is measured from the model's
    dipole origin (the centroid of each molecule by default): for a neutral molecule any origin gives the same
    vector, for an ion it is the dipole about the centroid.
    """
    from ..evaluation.screening import ATOM_COLUMNS, MOLECULE_COLUMNS, Screening
    from ..train import load_model, read_config

    run = Path(run_dir)
    config, _ = read_config(run)
    model = load_model(run, which=which, device=device, backend=backend)
    screening = Screening(model, config.species, charge=charge, batch_size=batch_size)
    shown: list[list] = []  # rows kept for the terminal table (all of them without --out)
    with contextlib.ExitStack() as files:
        mol_csv = _csv_writer(files, out, MOLECULE_COLUMNS)
        atom_csv = _csv_writer(files, atom_charges, ATOM_COLUMNS)
        for block in screening.blocks(structures, smiles, smiles_files, skip_invalid):
            if mol_csv is not None:
                mol_csv.writerows(block.rows)
            shown += block.rows if out is None else block.rows[:max(0, _SHOWN_WITH_OUT - len(shown))]
            if atom_csv is not None:
                _write_atoms(atom_csv, block)
        screening.check_outcome(skip_invalid)  # an error here discards the unfinished CSV files
    predicted = [r for r in shown if not r[-1]]
    from ..pretrained import PRETRAINED, pretrained_dir

    shipped = next((name for name in PRETRAINED if run.resolve() == pretrained_dir(name)), None)
    label = f"{shipped} (the model shipped with fastdipole)" if shipped else f"{run} (checkpoint {which})"
    n_skipped = screening.n_molecules - screening.n_predicted
    click.echo(f"{label}: {screening.n_predicted} molecules" + (f", {n_skipped} skipped" if n_skipped else ""))
    col = {name: i for i, name in enumerate(MOLECULE_COLUMNS)}
    width = min(max(len("molecule"), *(len(r[0]) for r in predicted)), 60) if predicted else 8
    click.echo(f"{'molecule':<{width}}  {'formula':>14}{'charge (e)':>11}{'|mu| (D)':>12}{'|mu| (e*A)':>12}")
    for row in predicted:
        name = row[0] if len(row[0]) <= width else row[0][: width - 3] + "..."
        click.echo(f"{name:<{width}}  {row[col['formula']]:>14}{row[col['total_charge_e']]:>+11.0f}"
                   f"{row[col['mu_debye']]:>12.4f}{row[col['mu_e_angstrom']]:>12.4f}")
    if screening.n_molecules > len(shown):
        click.echo(f"... {screening.n_molecules - len(shown)} more molecules in {out}")
    for row in shown:
        if row[-1]:
            click.echo(f"skipped {row[0]}: {row[-1]}", err=True)
    if n_skipped > sum(1 for row in shown if row[-1]):
        click.echo(f"skipped {n_skipped} molecules in all (the 'skipped' column of {out} says why)", err=True)
    if config.charge_constraint == "none" and predicted:
        worst = max(abs(r[col["sum_of_charges_e"]] - r[col["total_charge_e"]]) for r in predicted)
        click.echo(f"note: this model was trained without the total-charge constraint (--loss paper); its charges "
                   f"miss the molecules' total charges by up to {worst:.3f} e")
    if out:
        click.echo(f"wrote {out}")
    if atom_charges:
        click.echo(f"wrote {atom_charges}")


#: With --out, the terminal shows the first this-many molecules (all of them without --out).
_SHOWN_WITH_OUT = 100


def _csv_writer(files: contextlib.ExitStack, path, columns):
    """A csv writer into ``path``.tmp that becomes ``path`` when the stack closes without an error (None: no
    ``path``)."""
    if not path:
        return None
    from ..atomic import atomic_path

    tmp = files.enter_context(atomic_path(path))
    handle = files.enter_context(open(tmp, "w", newline=""))
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(columns)
    return writer


def _write_atoms(writer, block) -> None:
    offsets, Z, q = block.atom_offsets, block.Z.tolist(), block.charges_e.tolist()
    for m, name in enumerate(block.atom_names):
        a, b = int(offsets[m]), int(offsets[m + 1])
        writer.writerows([name, i - a, Z[i], q[i]] for i in range(a, b))
