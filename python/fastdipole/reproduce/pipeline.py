"""`reproduce()`: prepare data, plan and run every training (resumably), then write figures and REPORT.md.

``<out>/reproduce.json`` remembers the preset and each invocation (wall time, runs trained); a rerun
with other settings is refused, a rerun with the same settings continues where the last one stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_write_json, atomic_write_text
from ..data import bundled_sample_path, load_h5, mulliken_point_charge_baseline
from ..train.run_folder import CONFIG_FILE
from .datafiles import SUBSET_SEED, ReproduceError, prepare_qm9_files
from .figures import direction_curves, learning_curves, main_figures, size_plot, sweep_plot
from .plan import plan_runs, pool_sizes
from .presets import get_preset
from .report import ReportInputs, write_report
from .runner import TEST_METRICS, RunEnv, run_all, run_state
from .tables import size_data, sweep_data

STATE_FILE = "reproduce.json"
GITIGNORE = """# written by `fastdipole reproduce`: the run folders and data files a rerun regenerates (commit the report)
data/
runs/
"""


@dataclass
class ReproduceOptions:
    """Options of `fastdipole reproduce` (None: the preset's value)."""

    out: str
    data: str | None = None
    preset: str = "cpu"
    seeds: list[int] | None = None
    only: list[str] | None = None
    jobs: int | None = None
    qmugs: str | None = None
    backend: str = "auto"
    device: str = "auto"
    threads: int | None = None
    epochs: int | None = None
    max_runs: int | None = None
    report_only: bool = False
    echo: bool = True
    command: str | None = None  #: the command line that asked for this reproduce (recorded in reproduce.json)


def _preset(opts: ReproduceOptions):
    preset = get_preset(opts.preset)
    changes = {}
    if opts.epochs is not None:
        changes["epochs"] = int(opts.epochs)
    return preset.replace(**changes) if changes else preset


def _check_state(out: Path, preset_dict: dict, data: str) -> dict:
    path = out / STATE_FILE
    if not path.exists():
        return {"preset": preset_dict, "data": data, "invocations": []}
    state = json.loads(path.read_text())
    old = state.get("preset", {})
    diffs = [k for k in preset_dict if k != "jobs" and json.dumps(old.get(k)) != json.dumps(preset_dict[k])]
    if diffs or state.get("data") != data:
        what = ", ".join(diffs + (["data"] if state.get("data") != data else []))
        raise ReproduceError(f"{out}: made with other settings ({what} differ); choose another --out")
    return state


def reproduce(opts: ReproduceOptions, say=print) -> Path:
    """Run (or continue) a reproduce into ``opts.out``; returns the path of REPORT.md."""
    t_start = time.perf_counter()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    preset = _preset(opts)
    seeds = [int(s) for s in (opts.seeds or preset.seeds)]
    studies = list(opts.only or preset.studies)
    jobs = int(opts.jobs or preset.jobs)
    source = str(Path(opts.data).expanduser().resolve()) if opts.data else str(bundled_sample_path())
    state = _check_state(out, preset.to_dict(), source)
    invocation = {"command": opts.command or "reproduce()",
                  "started": time.strftime("%Y-%m-%d %H:%M:%S"), "jobs": jobs, "seeds": seeds, "studies": studies,
                  "trained": [], "wall_seconds": 0.0}
    state["invocations"].append(invocation)
    if not (out / ".gitignore").exists():
        atomic_write_text(GITIGNORE, out / ".gitignore")
    notes: list[str] = list(preset.notes)

    def save_state() -> None:
        invocation["wall_seconds"] = time.perf_counter() - t_start
        atomic_write_json(state, out / STATE_FILE)

    save_state()
    try:
        # QMugs-style data first: whether it is usable decides which runs are planned.
        qmugs_info = None
        if "qmugs" in studies:
            qmugs_info = _prepare_qmugs(opts.qmugs, out, preset, say)
        specs = plan_runs(preset, seeds, studies, qmugs=bool(qmugs_info and not qmugs_info.get("skipped")))
        qm9_specs = [s for s in specs if s.dataset == "qm9"]
        files = prepare_qm9_files(source, out / "data", pool_sizes(qm9_specs) or [preset.n_train], preset.n_valid,
                                  preset.n_test, log=say)
        threads = opts.threads
        if threads is None and jobs > 1:
            threads = max(1, (os.cpu_count() or 1) // jobs)
        env = RunEnv(
            out_dir=str(out),
            preset=preset.to_dict(),
            species=files.species,
            pools={f"qm9:{n}": str(p) for n, p in files.pools.items()},
            tests={"qm9": str(files.test)},
            n_train={f"qm9:{n}": n for n in files.pools},
            n_valid={f"qm9:{n}": files.n_valid for n in files.pools},
            backend=opts.backend,
            device=opts.device,
            threads=threads,
            echo=opts.echo,
        )
        if qmugs_info and not qmugs_info.get("skipped"):
            env.pools["qmugs"], env.tests["qmugs"] = qmugs_info["pool"], qmugs_info["test"]
            env.n_train["qmugs"], env.n_valid["qmugs"] = qmugs_info["n_train"], qmugs_info["n_valid"]
            env.qmugs_species = qmugs_info["species"]

        if opts.report_only:
            results = {s.name: json.loads((env.run_dir(s) / TEST_METRICS).read_text())
                       for s in specs if run_state(env.run_dir(s)) == "done"}
        else:
            results = run_all(specs, env, jobs=jobs, max_runs=opts.max_runs, say=say)
            invocation["trained"] = [k for k, v in results.items() if v.get("action") != "skipped"]
            save_state()

        say("writing figures and report")
        test = load_h5(files.test, charges="q_mulliken", check=False)
        baseline_test = mulliken_point_charge_baseline(test)
        baseline_full = mulliken_point_charge_baseline(load_h5(source, charges="q_mulliken", check=False))
        if qmugs_info and not qmugs_info.get("skipped"):
            qmugs_test = load_h5(qmugs_info["test"], charges="q_mulliken", check=False)
            qmugs_info["baseline"] = mulliken_point_charge_baseline(qmugs_test)
        figs = _figures(out, specs, seeds, results, preset)
        main_config = None
        main_run = out / "runs" / f"recipe-seed{seeds[0]}" / CONFIG_FILE
        if main_run.exists():
            main_config = json.loads(main_run.read_text())
        environment = environment_info(results, opts.device, threads)
        save_state()
        report = write_report(ReportInputs(
            out_dir=out, preset=preset.to_dict(), seeds=seeds, studies=studies, specs=specs, results=results,
            data={"source": files.source, "source_n_molecules": files.source_n_molecules, "n_test": files.n_test,
                  "n_valid": files.n_valid, "species": files.species, "subset_seed": SUBSET_SEED},
            baseline_test=baseline_test, baseline_full=baseline_full, figures=figs, environment=environment,
            invocations=state["invocations"], command_line=command_line(opts, preset.name, seeds, studies, jobs),
            notes=notes, qmugs=qmugs_info, main_config=main_config,
        ))
    finally:
        invocation["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        save_state()
    say(f"report: {report}")
    return report


def command_line(opts: ReproduceOptions, preset: str, seeds, studies, jobs: int) -> str:
    parts = ["fastdipole reproduce"]
    if opts.data:
        parts.append(f"--data {opts.data}")
    parts += [f"--out {opts.out}", f"--preset {preset}", "--seeds " + " ".join(map(str, seeds))]
    if list(studies) != list(get_preset(preset).studies):
        parts.append("--only " + ",".join(studies))
    parts.append(f"--jobs {jobs}")
    if opts.qmugs:
        parts.append(f"--qmugs {opts.qmugs}")
    if opts.epochs is not None:
        parts.append(f"--epochs {opts.epochs}")
    return " ".join(parts)


def _prepare_qmugs(path, out: Path, preset, say) -> dict:
    from .qmugs_data import prepare_qmugs_files, rdkit_missing

    if not path:
        return {"skipped": "no `--qmugs PATH_TO_SDF_DIR` given"}
    why = rdkit_missing()
    if why:
        return {"skipped": why}
    q = prepare_qmugs_files(path, out / "data", preset.qmugs_test_fraction, log=say)
    info = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(q).items()}
    info["source"] = str(path)
    return info


def _figures(out: Path, specs, seeds, results, preset) -> dict:
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figs = main_figures(out, fig_dir, seeds, results)
    done = [s for s in specs if s.name in results]
    extra = seeds[: max(1, preset.extra_seeds)]
    for key, make in (
        ("learning_curves", lambda p: learning_curves(out, done, seeds, p)),
        ("direction_curves", lambda p: direction_curves(out, done, seeds, p)),
        ("sweep", lambda p: sweep_plot(sweep_data(results, preset.l1_sweep, extra), p)),
        ("size", lambda p: size_plot(size_data(results, preset.train_sizes, preset.n_train, extra), p)),
    ):
        path = make(fig_dir / f"{key}.png")
        if path is not None:
            figs[key] = path
    return figs


def environment_info(results: dict, device: str, threads) -> dict:
    """Versions, machine and git state for the report."""
    import numpy as np
    import torch

    from .. import __version__
    from ..device import resolve_device
    from ..ops import extension_available

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        mem = None
    backends = sorted({m.get("backend") or m.get("kernels") for m in results.values()} - {None})
    run_threads = sorted({m.get("threads") for m in results.values() if m.get("threads")})
    return {
        "fastdipole": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "backend": ", ".join(backends) if backends else ("compiled" if extension_available() else "reference"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem,
        "platform": platform.platform(),
        "device": str(resolve_device(device))
        + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else ""),
        "threads_per_run": ", ".join(map(str, run_threads)) if run_threads else (threads or "default"),
        "git": _git_state(),
    }


def _git_state() -> str:
    repo = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(["git", "--no-optional-locks", "-C", str(repo), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
