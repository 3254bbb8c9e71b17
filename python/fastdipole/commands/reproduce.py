"""`fastdipole reproduce`: the charge study (recipe search, paired arms per seed, l1 sweep, size curve) and REPORT.md."""

from __future__ import annotations

import sys

import click

from ..reproduce.presets import PRESETS, STUDIES
from .options import backend_option, device_option


def _parse_ints(values, what: str) -> list[int]:
    out = []
    for value in values:
        for part in str(value).replace(",", " ").split():
            try:
                out.append(int(part))
            except ValueError:
                raise click.UsageError(f"{what}: expected integers, got {part!r}") from None
    return out


def _parse_studies(values) -> list[str] | None:
    if not values:
        return None
    studies = [p for v in values for p in str(v).replace(",", " ").split()]
    bad = [s for s in studies if s not in STUDIES]
    if bad:
        raise click.UsageError(f"--only: unknown {', '.join(bad)}; choose from {', '.join(STUDIES)}")
    return [s for s in STUDIES if s in studies]


@click.command("reproduce", context_settings={"allow_extra_args": True})
@click.option("--data", type=click.Path(exists=True, dir_okay=False), default=None,
              help="QM9 .h5 file with q_mulliken (default: the bundled 4,000-molecule sample, fine for --preset smoke)")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="report folder, e.g. reports/cpu; rerunning the same command continues an interrupted reproduce")
@click.option("--preset", type=click.Choice(list(PRESETS)), default="cpu", show_default=True,
              help="smoke: tiny test; cpu: QM9 subset for a 2-core box (about 2 hours, 5 seeds); "
                   "paper: the paper's data protocol on one GPU (main study, 3 seeds)")
@click.option("--seeds", default=None, metavar="S [S ...]",
              help="seeds, e.g. --seeds 0 1 2 3 4 (default: the preset's); the first ones run the extra studies")
@click.option("--only", multiple=True, metavar="STUDY[,STUDY]",
              help=f"run only these studies: {', '.join(STUDIES)} (default: the preset's; runs they share are "
                   "trained once)")
@click.option("--jobs", type=int, default=None,
              help="trainings at once, each in its own process (default: the preset's; cpu: 2)")
@click.option("--qmugs", "qmugs", type=click.Path(exists=True), default=None,
              help="QMugs-style SDF folder (e.g. tests/fixtures/qmugs) for the GFN2-xTB section; skipped when absent")
@backend_option
@device_option
@click.option("--threads", type=int, default=None, help="torch threads per training (default: cores / jobs)")
@click.option("--epochs", type=int, default=None, help="override the preset's fixed epoch count of the main / sweep / size runs")
@click.option("--max-runs", type=int, default=None,
              help="train at most this many runs now, then write the (partial) report; rerun to continue")
@click.option("--report-only", is_flag=True, help="only rebuild figures and REPORT.md from finished runs")
@click.option("--quiet", is_flag=True,
              help="print only one line per finished run (epoch lines still go to OUT/logs/RUN.log)")
@click.pass_context
def command(ctx, data, out, preset, seeds, only, jobs, qmugs, backend, device, threads, epochs, max_runs,
            report_only, quiet):
    """Test the paper's claim fairly: does an auxiliary charge loss make dipole models better?

    Trains every arm (dipole-only, the paper's exact loss, the paper's loss with neutral charges, fastdipole's
    recipe, average charges) for each seed with the same split, initial weights and fixed number of epochs,
    scores them on one shared test set, runs the recipe search, the l1 sweep and the training-size curve, and
    writes OUT/REPORT.md (per-seed rows, medians, paired differences with bootstrap intervals) with PNG figures.
    Dipoles in e*A and D, charges in e.
    """
    from ..reproduce.pipeline import ReproduceOptions, reproduce

    extra = list(ctx.args)
    if extra and seeds is None:
        raise click.UsageError(f"unexpected arguments: {' '.join(extra)}")
    seed_list = _parse_ints([seeds, *extra], "--seeds") if seeds is not None else None
    if seed_list is not None and len(set(seed_list)) != len(seed_list):
        raise click.UsageError("--seeds: each seed once")
    opts = ReproduceOptions(
        out=out, data=data, preset=preset, seeds=seed_list, only=_parse_studies(only), jobs=jobs, qmugs=qmugs,
        backend=backend, device=device, threads=threads, epochs=epochs, max_runs=max_runs,
        report_only=report_only, echo=not quiet, command=" ".join(["fastdipole", *sys.argv[1:]]),
    )
    try:
        reproduce(opts, say=click.echo)
    except KeyboardInterrupt:
        click.echo("interrupted; run the same command again to continue where it stopped", err=True)
        sys.exit(130)
