"""`fastdipole export`: a trained model as a torch.export program that runs with PyTorch alone."""

from __future__ import annotations

import click

from .options import model_option

from ..train.run_folder import CHECKPOINTS


@click.command("export")
@model_option()
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="output file, e.g. model.pt2")
@click.option("--which", type=click.Choice(list(CHECKPOINTS)), default="best", show_default=True,
              help="checkpoint to export")
def command(run_dir, out, which):
    """Write the model as a torch.export program (load with torch.export.load(FILE).module(); no fastdipole needed).

    It takes (Z int64, R float32 Angstrom, offsets int64, total_charge float32 e) of a flat batch and returns
    (charges in e, dipoles in e*Angstrom). See fastdipole/export.py for the details.
    """
    from ..export import export_model

    path = export_model(run_dir, out, which)
    click.echo(f"wrote {path}: torch.export.load('{path}').module()(Z, R, offsets, total_charge) -> (charges, dipoles)")
