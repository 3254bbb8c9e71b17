"""`fastdipole data qmugs PATH --level dft|gfn2 --out FILE`: QMugs SDF files -> our HDF5 layout."""

from __future__ import annotations

import click

from ..data.qmugs import LEVELS


@click.command("qmugs")
@click.argument("path", type=click.Path(exists=True))
@click.option("--level", required=True, type=click.Choice(list(LEVELS), case_sensitive=False),
              help="which labels to read: DFT:... (omega-B97X-D/def2-SVP) or GFN2:... (GFN2-xTB) properties")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="output .h5 file")
def command(path, level, out_path):
    """QMugs conformers from SDF files: a folder tree (CHEMBL*/conf_NN.sdf), multi-molecule SDFs, or one file.

    Writes Z, R [Angstrom], q_mulliken [e], mu and mu_vec [Debye], chembl_id, conf_id and total_charge [e],
    sorted by (chembl_id, conf_id). Needs RDKit: pip install fastdipole[qmugs].
    """
    import numpy as np

    from ..data import load_h5
    from ..data.qmugs import build_from_qmugs

    out = build_from_qmugs(path, level.lower(), out_path, progress=True)
    ds = load_h5(out, charges=None, check=False)
    n_ids = len(np.unique(ds.extra["chembl_id"]))
    click.echo(
        f"wrote {out}: {ds.n_molecules} conformers of {n_ids} molecules, {ds.n_atoms} atoms "
        f"({level.upper()} labels; mu mean {ds.mu_debye.mean():.3f} D)"
    )
