"""Runs the planned trainings resumably, each a `fastdipole train` run folder, and scores them on the test set.

State of a run folder ``<out>/runs/<name>``:

- ``test_metrics.json`` present: finished (skipped on reruns);
- ``summary.json`` present (training ended) but no test metrics: only the test evaluation is redone;
- ``checkpoint_last.pt`` present: interrupted; resumed with the trainer's exact resume;
- otherwise: trained from scratch (a folder left without a checkpoint is cleared first).

Several runs can train at once in separate processes (``jobs``), each with its own threads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..atomic import atomic_write_json
from ..errors import FastDipoleError
from ..evaluation.metrics import error_tail
from ..train import TrainConfig, load_model, read_config, train
from ..train.run_folder import CONFIG_FILE, LAST, RESUMABLE_FIELDS, RUN_FILES, SUMMARY_FILE, checkpoint_path
from .plan import RunSpec

TEST_METRICS = "test_metrics.json"
TEST_PREDICTIONS = "test_predictions.npz"
LOG_DIR = "logs"  # <out>/logs/<run>.log: the trainer refuses a non-empty new run folder, so logs live outside
# Files the trainer and this runner write into a run folder (the only ones a restart may delete).
_RUN_FILES = (*RUN_FILES, TEST_METRICS, TEST_PREDICTIONS)


@dataclass
class RunEnv:
    """Everything a worker needs to train and score runs (plain values, so it pickles to subprocesses)."""

    out_dir: str
    preset: dict
    species: list[int]
    pools: dict[str, str]  # "qm9:<n_train>" / "qmugs" -> pool file
    tests: dict[str, str]  # "qm9" / "qmugs" -> test file
    n_train: dict[str, int]  # "qm9:<n_train>" / "qmugs" -> training molecules of that pool
    n_valid: dict[str, int]  # "qm9:<n_train>" / "qmugs" -> validation molecules of that pool
    qmugs_species: list[int] = field(default_factory=list)
    backend: str = "auto"
    device: str = "auto"
    threads: int | None = None
    echo: bool = True  # print the trainer's lines (prefixed with the run name) besides the run's log

    def run_dir(self, spec: RunSpec) -> Path:
        return Path(self.out_dir) / "runs" / spec.name

    def pool_key(self, spec: RunSpec) -> str:
        return "qmugs" if spec.dataset == "qmugs" else f"qm9:{spec.n_train}"


def train_config(spec: RunSpec, env: RunEnv) -> TrainConfig:
    """The :class:`TrainConfig` of a run: the preset's model, the spec's arm settings, l1 / l2, seed and fixed
    epoch count (early stopping and the lr floor off, so every run trains exactly ``spec.epochs`` epochs)."""
    p = SimpleNamespace(**env.preset)
    key = env.pool_key(spec)
    n_train, n_valid = env.n_train[key], env.n_valid[key]
    n_pool = n_train + n_valid  # the pool file holds exactly these; the trainer's test split is empty
    values = dict(
        data=env.pools[key],
        charge_array="q_mulliken",
        split="random",
        train_fraction=n_train / n_pool,
        valid_fraction=n_valid / n_pool,
        seed=spec.seed,
        out=str(env.run_dir(spec)),
        species=list(env.qmugs_species if spec.dataset == "qmugs" else env.species),
        n_features=p.n_features,
        n_sensitivities=p.n_sensitivities,
        n_interactions=p.n_interactions,
        n_atom_layers=p.n_atom_layers,
        epochs=spec.epochs,
        batch_size=p.batch_size,
        lr=p.lr,
        plateau_patience=p.plateau_patience,
        patience=spec.epochs + 1,
        min_lr=0.0,
        eval_batch_size=p.eval_batch_size,
        device=env.device,
        threads=env.threads,
        backend=env.backend,
        **spec.config_settings(),
    )
    return TrainConfig(**values)


# ---- one run -----------------------------------------------------------------------------------------


def run_state(run_dir) -> str:
    """``done``, ``trained`` (needs only the test evaluation), ``partial`` (resume) or ``new``."""
    run_dir = Path(run_dir)
    if (run_dir / TEST_METRICS).exists() and (run_dir / SUMMARY_FILE).exists():
        return "done"
    if (run_dir / SUMMARY_FILE).exists():
        return "trained"
    if (run_dir / LAST).exists() and (run_dir / CONFIG_FILE).exists():
        return "partial"
    return "new"


def check_run_settings(run_dir, config: TrainConfig) -> None:
    """Refuse a run folder whose saved settings differ from the planned ones (other preset, data, ...)."""
    saved, _ = read_config(run_dir)
    diffs = []
    for name, value in config.to_dict().items():
        if name in RESUMABLE_FIELDS or name == "data" or TrainConfig.resolved_later(name, value):
            continue
        if getattr(saved, name) != value:
            diffs.append(f"{name}={getattr(saved, name)!r} (planned {value!r})")
    if saved.data_path() != config.data_path():
        diffs.append(f"data={saved.data!r} (planned {config.data!r})")
    if diffs:
        raise FastDipoleError(f"{run_dir}: made with other settings: {', '.join(diffs)}; use another --out")


def execute_run(spec_dict: dict, env_dict: dict) -> dict:
    """Train (or resume) one run and score it on the test set; returns its test metrics.

    Top-level function of plain arguments so it runs in worker processes as well.
    """
    from ..data import load_h5

    spec, env = RunSpec.from_dict(spec_dict), RunEnv(**env_dict)
    run_dir = env.run_dir(spec)
    config = train_config(spec, env)
    state = run_state(run_dir)
    if state != "new":
        check_run_settings(run_dir, config)
    if state == "done":
        return {**json.loads((run_dir / TEST_METRICS).read_text()), "action": "skipped"}

    log_file = None

    def log(msg: str) -> None:
        log_file.write(msg + "\n")
        log_file.flush()
        if env.echo:
            print(f"[{spec.name}] {msg}", flush=True)

    t0 = time.perf_counter()
    action = {"trained": "evaluated", "partial": "resumed", "new": "trained"}[state]
    if state == "new" and run_dir.exists():
        for name in _RUN_FILES:  # leftovers of a run stopped before its first checkpoint
            (run_dir / name).unlink(missing_ok=True)
        if any(run_dir.iterdir()):
            raise FastDipoleError(f"{run_dir}: holds files that are not a fastdipole run; "
                                  "remove them or use another --out")
    (Path(env.out_dir) / LOG_DIR).mkdir(parents=True, exist_ok=True)
    log_file = open(Path(env.out_dir) / LOG_DIR / f"{spec.name}.log", "a")
    try:
        if state in ("new", "partial"):
            dataset = load_h5(config.data, charges="q_mulliken", check=False)
            resume = state == "partial"
            log(f"{'resuming' if resume else 'starting'} {spec.name}: {spec.arm} {dict(spec.settings)}, "
                f"l1={spec.l1:g}, l2={spec.l2:g}, seed={spec.seed}, {config.epochs} epochs")
            train(config, resume=resume, dataset=dataset, progress=False, log=log)
        metrics = score_on_test(run_dir, env, spec, log)
    finally:
        log_file.close()
    metrics["action"] = action
    metrics["session_seconds"] = time.perf_counter() - t0
    return metrics


def _device(name: str) -> str:
    from ..device import resolve_device

    return str(resolve_device(name))


def score_on_test(run_dir: Path, env: RunEnv, spec: RunSpec, log=print) -> dict:
    """Evaluate the best checkpoint on the test set; writes ``test_metrics.json`` and ``test_predictions.npz``."""
    from ..data import load_h5
    from ..evaluation import evaluate
    from ..train import load_checkpoint

    config, meta = read_config(run_dir)
    t0 = time.perf_counter()
    test_path = env.tests["qmugs" if spec.dataset == "qmugs" else "qm9"]
    test = load_h5(test_path, charges="q_mulliken", check=False)
    device = _device(env.device)
    model = load_model(run_dir, "best", device=device, backend=env.backend)
    result = evaluate(model, test, None, env.preset["eval_batch_size"], device)
    pred = result.predictions
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    best = load_checkpoint(checkpoint_path(run_dir, "best"))
    metrics = {
        "run": spec.name,
        "spec": spec.to_dict(),
        "test_file": str(test_path),
        **result.metrics,
        **error_tail(pred.mu_pred_debye, pred.mu_label_debye),
        "checkpoint": "best",
        "best_epoch": int(best["epoch"]),
        "epochs_completed": summary["epochs_completed"],
        "stop_reason": summary["stop_reason"],
        "train_seconds": summary["elapsed_seconds"],
        "eval_seconds": time.perf_counter() - t0,
        "split_sizes": meta["run"]["split_sizes"],
        "backend": meta["run"]["backend"],
        "threads": meta["run"]["threads"],
        "device": meta["run"]["device"],
    }
    np.savez_compressed(
        run_dir / (TEST_PREDICTIONS + ".tmp.npz"),
        mu_pred_debye=pred.mu_pred_debye.astype(np.float32),
        mu_label_debye=pred.mu_label_debye.astype(np.float32),
        charges_pred_e=pred.charges_pred.astype(np.float32),
        charges_label_e=pred.charges_label.astype(np.float32),
        atom_offsets=pred.atom_offsets,
        Z=pred.Z.astype(np.int8),
        dipole_pred_e_angstrom=pred.dipole_pred_e_angstrom.astype(np.float32),
        dipole_label_charges_e_angstrom=pred.dipole_label_charges_e_angstrom.astype(np.float32),
    )
    os.replace(run_dir / (TEST_PREDICTIONS + ".tmp.npz"), run_dir / TEST_PREDICTIONS)
    atomic_write_json(metrics, run_dir / TEST_METRICS)
    log(f"test ({metrics['n_molecules']} molecules): |mu| MAE {metrics['dipole_mae_debye']:.4f} D "
        f"({metrics['dipole_mae_e_angstrom']:.4f} e*A), charge MAE vs Mulliken {metrics['charge_mae_e']:.4f} e, "
        f"direction agreement {100 * metrics['direction_agreement']:.1f} %, "
        f"mean |total charge| {metrics['total_charge_mean_abs_e']:.2e} e")
    return metrics


def load_test_predictions(run_dir) -> dict[str, np.ndarray]:
    with np.load(Path(run_dir) / TEST_PREDICTIONS) as f:
        return {k: f[k] for k in f.files}


# ---- many runs ---------------------------------------------------------------------------------------


def run_all(specs: list[RunSpec], env: RunEnv, jobs: int = 1, max_runs: int | None = None,
            say=print) -> dict[str, dict]:
    """Run every spec not finished yet (at most ``max_runs`` trainings now); returns metrics of finished runs.

    ``jobs > 1`` trains that many runs at once in worker processes (spawned, so each has its own torch).
    """
    results: dict[str, dict] = {}
    todo = []
    for spec in specs:
        if run_state(env.run_dir(spec)) == "done":
            results[spec.name] = execute_run(spec.to_dict(), dataclasses.asdict(env))  # checks settings, reads
        else:
            todo.append(spec)
    if max_runs is not None:
        todo = todo[: max(0, max_runs)]
    say(f"{len(results)} of {len(specs)} runs already finished; {len(todo)} to run now"
        + (f" ({jobs} at a time)" if jobs > 1 and len(todo) > 1 else ""))
    if not todo:
        return results
    env_dict = dataclasses.asdict(env)
    total, count = len(todo), 0

    def report(spec: RunSpec, m: dict) -> None:
        nonlocal count
        count += 1
        results[spec.name] = m
        say(f"[{count}/{total}] {spec.name}: {m['action']}, {m['epochs_completed']} epochs "
            f"({m['stop_reason']}), {m['session_seconds'] / 60:.1f} min; test |mu| MAE "
            f"{m['dipole_mae_e_angstrom']:.4f} e*A ({m['dipole_mae_debye']:.4f} D)")

    if jobs <= 1 or total == 1:
        for spec in todo:
            report(spec, execute_run(spec.to_dict(), env_dict))
        return results

    _run_parallel(todo, env_dict, jobs, report)
    return results


def _child(spec_dict: dict, env_dict: dict, queue) -> None:
    """Worker process: one run; reports ("ok", metrics), ("error", message) or ("interrupted", None)."""
    name = spec_dict["name"]
    try:
        queue.put((name, "ok", execute_run(spec_dict, env_dict)))
    except KeyboardInterrupt:
        queue.put((name, "interrupted", None))
    except FastDipoleError as err:
        queue.put((name, "error", str(err)))
    except Exception as err:  # noqa: BLE001 - reported to the parent, which stops the reproduce
        import traceback

        traceback.print_exc()
        queue.put((name, "error", f"{type(err).__name__}: {err}"))


def _run_parallel(todo: list[RunSpec], env_dict: dict, jobs: int, report) -> None:
    """Train ``todo`` with up to ``jobs`` runs at once, one spawned process per run.

    One process per run (not a pool) so that Ctrl-C stops exactly the running trainings: each saves
    its last completed epoch, and nothing queued starts afterwards. A failed run stops the scheduling
    of new runs; the running ones finish and the error is raised.
    """
    import multiprocessing
    import queue as queue_mod
    import signal

    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    messages = ctx.Queue()
    waiting = list(todo)
    running: dict[str, multiprocessing.process.BaseProcess] = {}
    specs = {s.name: s for s in todo}
    failure = None
    try:
        while waiting or running:
            while waiting and len(running) < jobs and failure is None:
                spec = waiting.pop(0)
                proc = ctx.Process(target=_child, args=(spec.to_dict(), env_dict, messages), name=spec.name)
                proc.start()
                running[spec.name] = proc
            if failure is not None:
                waiting.clear()
            try:
                name, status, payload = messages.get(timeout=1.0)
            except queue_mod.Empty:
                for name, proc in list(running.items()):  # killed without a word (e.g. out of memory)
                    if not proc.is_alive() and proc.exitcode not in (0, None):
                        running.pop(name)
                        failure = failure or f"run {name} died (exit code {proc.exitcode}); see logs/{name}.log"
                continue
            proc = running.pop(name, None)
            if proc is not None:
                proc.join()
            if status == "ok":
                report(specs[name], payload)
            elif status == "interrupted":
                raise KeyboardInterrupt
            else:
                failure = failure or f"run {name} failed: {payload}"
    except KeyboardInterrupt:
        for proc in running.values():  # forward Ctrl-C (if only this process got it); each saves its epoch
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGINT)
        for proc in running.values():
            proc.join(timeout=60)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        raise
    if failure is not None:
        raise FastDipoleError(failure)
