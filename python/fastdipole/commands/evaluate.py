"""`fastdipole evaluate`: errors of a trained run on a dataset split, as a table, metrics.json and parity plots."""

from __future__ import annotations

from pathlib import Path

import click

from ..data.splits import SPLIT_PARTS
from ..data.streaming import DATA_MODES
from ..train.run_folder import CHECKPOINTS
from .options import backend_option, device_option, model_option


@click.command("evaluate")
@model_option()
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="dataset .h5 file (default: the run's training data)")
@click.option("--split", "split_name", type=click.Choice([*SPLIT_PARTS, "all"]), default="test",
              show_default=True, help="which molecules: a split of the run (or of --split-file), or all")
@click.option("--split-file", type=click.Path(dir_okay=False), default=None,
              help="split .npz whose indices refer to --data (default: the run's split.npz for the run's data)")
@click.option("--which", type=click.Choice(list(CHECKPOINTS)), default="best", show_default=True,
              help="checkpoint to evaluate")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="output folder (default: <run>/eval_<split>)")
@click.option("--charges", "charge_array", default=None,
              help="per-atom charge array to compare with, e (default: the run's, skipped when the file lacks it)")
@click.option("--batch-size", type=int, default=512, show_default=True, help="molecules per prediction batch")
@click.option("--data-mode", type=click.Choice(list(DATA_MODES)), default="auto", show_default=True,
              help="memory: load the whole file; stream: read it in chunks (memory bounded by the chunk size and "
                   "the predictions kept for the metrics); auto: stream files that would take more than 1 GiB")
@device_option
@backend_option
def command(run_dir, data, split_name, split_file, which, out, charge_array, batch_size, data_mode, device, backend):
    """Dipole MAE/RMSE (D and e*A), mean relative error (%) and, against charge labels, charge MAE/RMSE (e) raw,
    centred per molecule and per element, the charge parity's Pearson r and the share of molecules whose dipole
    points with the label charges' point dipole; the total-charge error (e) of every molecule."""
    from ..data import check_species, has_array, load_h5, load_split, split_indices
    from ..data.elements import SYMBOLS
    from ..data.streaming import H5Stream, choose_data_mode
    from ..evaluation import evaluate, save_evaluation
    from ..train import load_checkpoint, load_model, read_config
    from ..train.run_folder import SPLIT_FILE, checkpoint_path

    run = Path(run_dir)
    config, meta = read_config(run)
    checkpoint = checkpoint_path(run, which)  # before reading data: a run with no checkpoint says so first
    run_data = Path(meta.get("run", {}).get("data_path") or config.data_path())
    data_path = Path(data).expanduser().resolve() if data else run_data
    same_data = data_path == run_data.resolve()
    charge_array = charge_array or config.charge_array
    labels = charge_array if has_array(data_path, charge_array) else None
    if choose_data_mode(data_mode, data_path) == "stream":
        dataset = H5Stream(data_path, charges=labels, species=config.species, physical_checks=False)
        has_labels = dataset.has_charges
    else:
        dataset = load_h5(data_path, charges=labels)
        check_species(dataset, config.species)
        has_labels = dataset.charges is not None

    label = split_name
    if split_name == "all":
        indices = None
    elif split_file is not None:
        indices = split_indices(load_split(split_file), split_name, dataset.n_molecules, source=split_file)
    elif same_data:
        indices = split_indices(load_split(run / SPLIT_FILE), split_name, dataset.n_molecules,
                                source=str(run / SPLIT_FILE))
    else:
        click.echo(f"note: {data_path} is not the run's data; evaluating all its molecules "
                   f"(give --split-file to select a split)")
        indices, label = None, "all"
    if out is None:
        out = run / (f"eval_{label}" if same_data else f"eval_{data_path.stem}_{label}")

    model = load_model(run, which=which, device=device, backend=backend)
    epoch = load_checkpoint(checkpoint)["epoch"]
    result = evaluate(model, dataset, indices, batch_size)
    m = result.metrics
    title = f"{run.name} ({which}, epoch {epoch}) on {data_path.name}, {label}"
    paths = save_evaluation(result, out, title=title, extra={
        "run": str(run), "checkpoint": which, "epoch": epoch, "data": str(data_path), "split": label,
        "charge_labels": charge_array if has_labels else None,
    })

    click.echo(f"{run} (checkpoint {which}, epoch {epoch}) on {data_path}, split {label}")
    click.echo(f"{'':<30}{'MAE':>12}{'RMSE':>12}")
    click.echo(f"{'dipole |mu| (D)':<30}{m['dipole_mae_debye']:>12.4f}{m['dipole_rmse_debye']:>12.4f}")
    click.echo(f"{'dipole |mu| (e*A)':<30}{m['dipole_mae_e_angstrom']:>12.4f}{m['dipole_rmse_e_angstrom']:>12.4f}")
    click.echo(f"{'mean relative error |mu| (%)':<30}{m['dipole_mean_relative_error_percent']:>12.2f}")
    if m.get("charge_mae_e") is not None:
        click.echo(f"{'atomic charge (e)':<30}{m['charge_mae_e']:>12.4f}{m['charge_rmse_e']:>12.4f}"
                   f"   vs '{charge_array}'")
        click.echo(f"{'  centred per molecule (e)':<30}{m['charge_mae_centred_e']:>12.4f}"
                   f"{'':>12}   after removing each molecule's mean charge")
        for z, e in m["charge_by_element"].items():
            click.echo(f"{'  ' + SYMBOLS[int(z)] + ' (e)':<30}{e['charge_mae_e']:>12.4f}{e['charge_rmse_e']:>12.4f}"
                       f"   {e['n_atoms']} atoms")
        click.echo(f"charge parity: Pearson r {m['charge_pearson_r']:.3f} (predicted vs '{charge_array}')")
        click.echo(f"dipole direction: {100 * m['direction_agreement']:.1f} % of {m['n_molecules_direction']} "
                   f"molecules point with the '{charge_array}' point-charge dipole (cos > 0)")
    click.echo(f"total charge: mean |sum q - Q| {m['total_charge_mean_abs_e']:.2e} e, "
               f"max {m['total_charge_max_abs_e']:.2e} e (Q: the molecule's total charge)")
    click.echo(f"molecules: {m['n_molecules']}, atoms: {m['n_atoms']}")
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
