"""`fastdipole train`: train a HIP-NN dipole model with the paper's loss (thin wrapper over fastdipole.train)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from ..data.splits import SPLIT_PROTOCOLS
from ..data.streaming import DATA_MODES
from ..nn.dipole import CHARGE_CONSTRAINTS
from ..train.config import (
    CHARGE_INITS,
    CHARGE_MODES,
    DEFAULT_EPOCHS,
    DIPOLE_TARGETS,
    LOSSES,
    PAPER_SETTINGS,
    TrainConfig,
)
from ..train.loss import DIRECTION_FORMS
from .options import backend_option, device_option

_D = TrainConfig()  # defaults shown by --help come from the config itself (fastdipole's recipe)

# CLI option name -> TrainConfig field (where they differ).
_FIELD = {"train": "train_fraction", "valid": "valid_fraction", "lr_patience": "plateau_patience"}


@click.command("train")
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="dataset .h5 file (default: the bundled 4,000-molecule QM9 sample)")
@click.option("--data-mode", type=click.Choice(list(DATA_MODES)), default=_D.data_mode, show_default=True,
              help="memory: load the whole file; stream: read it in chunks (memory bounded by --chunk-molecules, "
                   "training order shuffled by chunks); auto: stream files that would take more than 1 GiB")
@click.option("--chunk-molecules", type=int, default=_D.chunk_molecules, show_default=True,
              help="molecules per chunk read from the file when streaming")
@click.option("--charges", type=click.Choice(list(CHARGE_MODES)), default=_D.charges, show_default=True,
              help="charge labels of the auxiliary loss: none, the file's Mulliken charges, or per-element means")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the split, the weights and the shuffling")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="run folder (default runs/<timestamp>)")
@click.option("--split", type=click.Choice(list(SPLIT_PROTOCOLS)), default=_D.split, show_default=True,
              help="random fractions, or QM9's 110,000 train / 10,000 valid / rest test")
@click.option("--train", type=float, default=0.8, show_default=True, help="training fraction (random split)")
@click.option("--valid", type=float, default=0.1, show_default=True, help="validation fraction (random split)")
@click.option("--epochs", type=int, default=DEFAULT_EPOCHS, show_default=True, help="maximum number of epochs")
@click.option("--batch-size", type=int, default=128, show_default=True, help="molecules per training batch")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate")
@click.option("--n-features", type=int, default=60, show_default=True, help="HIP-NN features per layer")
@click.option("--n-sensitivities", type=int, default=20, show_default=True, help="distance sensitivities")
@click.option("--n-interactions", type=int, default=2, show_default=True, help="interaction layers")
@click.option("--n-atom-layers", type=int, default=3, show_default=True, help="atom layers per interaction block")
@click.option("--l1", type=float, default=_D.l1, show_default=True,
              help="weight of the charge loss terms (the paper's: 0.04, set by --loss paper)")
@click.option("--l2", type=float, default=_D.l2, show_default=True, help="weight of the dipole-magnitude loss terms")
@click.option("--dipole-target", type=click.Choice(list(DIPOLE_TARGETS)), default=_D.dipole_target, show_default=True,
              help="magnitude: |mu| as the paper; vector: the file's dipole vectors (mu_vec, e.g. QMugs), which "
                   "also fixes the sign of the charges")
@click.option("--loss", type=click.Choice(list(LOSSES)), default="fastdipole", show_default=True,
              help="fastdipole: the recipe (total-charge constraint, charge head started at per-element mean "
                   "charges, direction term, l1 = 0.3); paper: the paper's model and loss exactly (l1 = 0.04)")
@click.option("--charge-constraint", type=click.Choice(list(CHARGE_CONSTRAINTS)), default=_D.charge_constraint,
              show_default=True, help="uniform: each molecule's charges sum to its total charge (0, or the file's "
                                      "total_charge array); none: the paper's unconstrained head")
@click.option("--charge-init", type=click.Choice(list(CHARGE_INITS)), default=_D.charge_init, show_default=True,
              help="start of the charge head: the training split's per-element mean charges (element_means_only: "
                   "exactly those, the higher levels' readouts at 0), or random (hippynn)")
@click.option("--direction-weight", type=float, default=_D.direction_weight, show_default=True,
              help="weight of the direction term: hinge on the batch-mean cosine between predicted dipoles and "
                   "the label charges' point dipoles (0: off)")
@click.option("--direction-epochs", type=int, default=_D.direction_epochs, show_default=True,
              help="the direction term acts in the first N epochs only (0: every epoch)")
@click.option("--direction-form", type=click.Choice(list(DIRECTION_FORMS)), default=_D.direction_form,
              show_default=True, help="batch: relu(0.5 - mean cos); molecule: mean relu(-cos)")
@click.option("--charge-warmup-epochs", type=int, default=0, show_default=True,
              help="first epochs train the charge terms only (l2 = 0); needs --charges mulliken|average")
@click.option("--patience", type=int, default=15, show_default=True,
              help="early stopping: epochs without a better validation dipole MAE")
@click.option("--lr-patience", type=int, default=5, show_default=True,
              help="epochs without improvement before the learning rate is halved")
@device_option
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: 1 on <= 2 cores, else all)")
@backend_option
@click.option("--cuda-graphs/--no-cuda-graphs", default=None,
              help="replay each training step from a CUDA graph (batches padded to size buckets; 2-3x faster epochs "
                   "for QM9-sized batches)  [default: on for a CUDA device]")
@click.option("--allow-unphysical", "physical_checks", flag_value=False, default=True,
              help="train even on data the physical checks refuse (coordinates beyond 1e4 Angstrom, molecules wider "
                   "than 1,000 Angstrom, charges not summing to the total charge, impossible dipoles)")
@click.option("--resume", is_flag=True, help="continue the interrupted run in --out from checkpoint_last.pt")
@click.option("--max-minutes", type=float, default=None,
              help="stop before an epoch that would end past this many minutes of training")
@click.option("--progress/--no-progress", default=None,
              help="show the tqdm progress bar  [default: when stderr is a terminal]")
def command(resume, progress, **options):
    """Train a dipole model; writes config.json, split.npz, metrics.csv and checkpoints to the run folder.

    Loss: l1 * (RMSE_q + MAE_q + mean|q|) + l2 * (RMSE_|mu| + MAE_|mu|) [+ direction term], charges in e,
    dipoles in e*Angstrom.
    Metrics are printed in Debye (D) and e*Angstrom (e*A).
    """
    from ..train import read_config, train

    ctx = click.get_current_context()
    given = {k: v for k, v in options.items() if ctx.get_parameter_source(k) != ParameterSource.DEFAULT}
    fields = {_FIELD.get(k, k): v for k, v in options.items()}
    if options["loss"] == "paper":
        clash = [f"--{k.replace('_', '-')} {given[k]}" for k in PAPER_SETTINGS if k in given and given[k] != PAPER_SETTINGS[k]]
        if clash:
            raise click.UsageError(f"--loss paper is the paper's loss exactly; it cannot take {', '.join(clash)}")
    if resume:
        if options["out"] is None:
            raise click.UsageError("--resume needs --out RUN_FOLDER")
        # The saved settings hold; only options given explicitly are checked against / applied to them. A run
        # killed before writing its settings has none: it starts again from the options given.
        from ..train.run_folder import CONFIG_FILE

        base = read_config(options["out"])[0] if (Path(options["out"]) / CONFIG_FILE).exists() else \
            TrainConfig.from_dict(fields)
        fields = {**base.to_dict(), **{_FIELD.get(k, k): v for k, v in given.items()}}
    try:
        config = TrainConfig.from_dict(fields)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    try:
        run_dir = train(config, resume=resume, progress=progress)
    except KeyboardInterrupt:
        sys.exit(130)
    if int(os.environ.get("RANK", "0")) == 0:  # a torchrun process other than rank 0 stays quiet
        click.echo(f"run folder: {run_dir}")
