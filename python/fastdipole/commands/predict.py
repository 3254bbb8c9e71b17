"""`fastdipole predict`: dipoles (and atomic charges) of a trained model for your own molecules."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import click

from ..train.run_folder import CHECKPOINTS
from ..units import DEBYE_PER_E_ANGSTROM
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
    from ..data.structures import read_structures
    from ..evaluation.evaluate import predict
    from ..train import load_model, read_config

    run = Path(run_dir)
    config, _ = read_config(run)
    dataset, records = read_structures(structures, smiles, species=config.species, charge=charge,
                                       smiles_files=smiles_files, skip_invalid=skip_invalid)
    model = load_model(run, which=which, device=device, backend=backend)
    pred = predict(model, dataset, batch_size=batch_size)

    rows, atom_rows, m = [], [], 0
    for record in records:
        row = {"molecule": record.name, "n_atoms": len(record.Z), "formula": _formula(record.Z) if len(record.Z) else "",
               **dict.fromkeys(_VALUE_COLUMNS, ""), "skipped": record.problem or ""}
        if record.problem is None:
            a, b = dataset.offsets[m], dataset.offsets[m + 1]
            vec = pred.dipole_pred_e_angstrom[m]
            row.update({"mu_debye": float(pred.mu_pred_debye[m]),
                        "mu_e_angstrom": float(pred.mu_pred_debye[m] / DEBYE_PER_E_ANGSTROM),
                        "mu_x_e_angstrom": float(vec[0]), "mu_y_e_angstrom": float(vec[1]),
                        "mu_z_e_angstrom": float(vec[2]), "total_charge_e": float(pred.total_charge[m]),
                        "sum_of_charges_e": float(pred.charges_pred[a:b].sum())})
            atom_rows += [{"molecule": record.name, "atom": int(i - a), "Z": int(dataset.Z[i]),
                           "charge_e": float(pred.charges_pred[i])} for i in range(a, b)]
            m += 1
        rows.append(row)
    predicted = [r for r in rows if not r["skipped"]]
    from ..pretrained import PRETRAINED, pretrained_dir

    shipped = next((name for name in PRETRAINED if run.resolve() == pretrained_dir(name)), None)
    label = f"{shipped} (the model shipped with fastdipole)" if shipped else f"{run} (checkpoint {which})"
    click.echo(f"{label}: {len(predicted)} molecules"
               + (f", {len(rows) - len(predicted)} skipped" if len(predicted) < len(rows) else ""))
    width = min(max(len("molecule"), *(len(r["molecule"]) for r in predicted)), 60)
    click.echo(f"{'molecule':<{width}}  {'formula':>14}{'charge (e)':>11}{'|mu| (D)':>12}{'|mu| (e*A)':>12}")
    for row in predicted:
        name = row["molecule"] if len(row["molecule"]) <= width else row["molecule"][: width - 3] + "..."
        click.echo(f"{name:<{width}}  {row['formula']:>14}{row['total_charge_e']:>+11.0f}"
                   f"{row['mu_debye']:>12.4f}{row['mu_e_angstrom']:>12.4f}")
    for row in rows:
        if row["skipped"]:
            click.echo(f"skipped {row['molecule']}: {row['skipped']}", err=True)
    if config.charge_constraint == "none":
        worst = max(abs(r["sum_of_charges_e"] - r["total_charge_e"]) for r in predicted)
        click.echo(f"note: this model was trained without the total-charge constraint (--loss paper); its charges "
                   f"miss the molecules' total charges by up to {worst:.3f} e")
    if out:
        _write_csv(out, list(rows[0]), rows)
        click.echo(f"wrote {out}")
    if atom_charges:
        _write_csv(atom_charges, ["molecule", "atom", "Z", "charge_e"], atom_rows)
        click.echo(f"wrote {atom_charges}")


#: Columns of a predicted molecule's row that a skipped one leaves empty (units in the names).
_VALUE_COLUMNS = ("mu_debye", "mu_e_angstrom", "mu_x_e_angstrom", "mu_y_e_angstrom", "mu_z_e_angstrom",
                  "total_charge_e", "sum_of_charges_e")


def _formula(Z) -> str:
    """Hill formula of atomic numbers Z: C and H first when there is carbon, then alphabetical."""
    from collections import Counter

    from ..data.elements import symbol

    counts = Counter(symbol(z) for z in Z)
    first = [s for s in ("C", "H") if "C" in counts and s in counts]
    order = first + sorted(s for s in counts if s not in first)
    return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in order)


def _write_csv(path, columns, rows) -> None:
    """Writes the rows atomically (path.tmp, then rename), so an interrupted run leaves no half file."""
    from ..atomic import atomic_write_text

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(text.getvalue(), path)
