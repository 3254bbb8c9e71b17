"""`fastdipole baseline ...`: reference numbers that need no model."""

from __future__ import annotations

import click


@click.group("baseline")
def command():
    """Baselines that need no trained model."""


@command.command("mulliken")
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False), help="dataset .h5 file")
@click.option("--charges", default="q_mulliken", show_default=True, help="per-atom charge array (e)")
@click.option("--split-file", type=click.Path(dir_okay=False), default=None, help="split .npz (from make_split)")
@click.option("--split", "split_name", default="test", show_default=True, help="which split of --split-file")
def mulliken(data_path, charges, split_file, split_name):
    """Point-charge dipole |sum q_i (R_i - centroid)| from the label charges vs the label |mu|."""
    from ..data import load_h5, load_split, mulliken_point_charge_baseline, split_indices

    ds = load_h5(data_path, charges=charges)
    indices = None
    where = "all molecules"
    if split_file is not None:
        indices = split_indices(load_split(split_file), split_name, ds.n_molecules, source=split_file)
        where = f"split '{split_name}' of {split_file}"
    r = mulliken_point_charge_baseline(ds, indices)
    click.echo(f"Mulliken point-charge dipole baseline on {data_path} ({where}, {r['n_molecules']} molecules)")
    click.echo(f"MAE  {r['mae_e_angstrom']:.4f} e*A = {r['mae_debye']:.4f} D")
    click.echo(f"RMSE {r['rmse_e_angstrom']:.4f} e*A = {r['rmse_debye']:.4f} D")
    click.echo(
        f"mean relative error {r['mean_relative_error_percent']:.2f}% "
        f"(over {r['n_molecules_relative']} molecules with mu > 0)"
    )
