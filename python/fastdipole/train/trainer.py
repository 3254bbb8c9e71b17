"""Training loop: data checks, split, charge labels, Adam + ReduceLROnPlateau, early stopping, atomic
checkpoints and exact resume. No click here: ``train(config)`` is the Python API.

``train`` runs named steps: prepare the run folder (and, with ``resume``, read everything the run saved),
build the data, build the model, the epoch loop, finish. Resuming is decided once, in :func:`_prepare`: the
later steps take the saved split, charge means and checkpoint from the :class:`_Saved` it returns, or make
new ones. File names and reading a run back live in :mod:`fastdipole.train.run_folder`.
"""

from __future__ import annotations

import json
import math
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import __version__
from ..atomic import atomic_write_json
from ..data.streaming import H5Stream, choose_data_mode, loader_for
from ..data import (
    MoleculeDataset,
    average_charge_labels,
    check_physics,
    check_species,
    element_mean_charges,
    has_array,
    load_h5,
    load_split,
    make_split,
    molecules_without_pairs,
    save_split,
    validate,
)
from ..device import resolve_device
from ..errors import DataError, FastDipoleError
from ..evaluation.accumulate import MetricAccumulator
from ..evaluation.evaluate import accumulate
from ..nn import DipoleModel
from ..units import DEBYE_PER_E_ANGSTROM
from .checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from .config import TrainConfig
from .distributed import SINGLE, Distributed, DistributedError, LauncherStop, agree, barrier, \
    broadcast_from_writer, collective_failure, from_environment, gather_objects, leave, step_means, \
    stopped_by_launcher
from .graphed import GraphedTrainStep
from .history import read_history, write_history
from .loss import batch_loss
from .optim import make_optimizer
from .run_folder import (
    BEST,
    CHARGE_MEANS_FILE,
    CONFIG_FILE,
    LAST,
    RESUMABLE_FIELDS,
    RUN_FILES,
    SPLIT_FILE,
    SUMMARY_FILE,
    RunFolderError,
    default_run_dir,
    read_config,
)

# Per-molecule array naming the molecule a conformer belongs to (QMugs files): a random split keeps each
# group in one part, so no conformer of a test molecule is trained on.
SPLIT_GROUP_KEY = "chembl_id"


class TrainingError(FastDipoleError):
    """Training cannot go on (e.g. the loss became NaN)."""


@dataclass
class _Saved:
    """What an interrupted run left in its folder, read once when it is resumed."""

    meta: dict  # config.json's "run" entry
    split: dict[str, np.ndarray]
    charge_means: dict[int, float] | None
    checkpoint: dict  # checkpoint_last.pt
    history: list[dict]  # metrics.csv rows up to the checkpoint's epoch


@dataclass
class _Progress:
    """Where the epoch loop stands (saved in every checkpoint)."""

    epoch: int = 0  # completed epochs
    best: float = math.inf  # best validation |mu| MAE, e*Angstrom
    best_epoch: int = 0
    stale: int = 0  # epochs without a better validation MAE
    history: list[dict] = field(default_factory=list)


# ---- training -----------------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    dataset: MoleculeDataset | None = None,
    progress: bool | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    log: Callable[[str], None] | None = None,
    distributed: Distributed | None = None,
) -> Path:
    """Train a dipole model as ``config`` says; returns the run folder.

    ``resume=True`` continues the run in ``config.out`` from ``checkpoint_last.pt`` exactly (same
    split, same shuffling, next epoch). ``dataset`` skips reading ``config.data`` (it must be that
    file's content). ``progress``: the tqdm bar on stderr (None: only when stderr is a terminal, so a log
    redirected to a file gets the per-epoch lines, not one line per bar refresh). ``on_epoch`` gets each
    epoch's metrics row; ``log`` gets the printed lines (default: tqdm-safe print). Ctrl-C leaves
    ``checkpoint_last.pt`` at the last completed epoch.

    ``distributed``: this process's place in a multi-process run (:mod:`fastdipole.train.distributed`); by
    default the one torchrun describes, if it launched this process, else a one-process run. Only rank 0
    writes the run folder and prints.
    """
    device = resolve_device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FastDipoleError("--device cuda asked for, but torch sees no CUDA GPU (use --device cpu or auto)")
    dist = distributed if distributed is not None else from_environment(device)
    try:
        return _train(config, resume, dataset, progress, on_epoch, log, dist, device)
    finally:
        if distributed is None:
            leave(dist)  # the group this call joined


def _train(config, resume, dataset, progress, on_epoch, log, dist: Distributed, device) -> Path:
    if dist.active and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    writer = dist.is_writer
    say = (log or (lambda msg: _tqdm().write(msg))) if writer else (lambda msg: None)
    if dist.active and config.out is None:  # one timestamped folder for all ranks: rank 0's
        config = config.replace(out=broadcast_from_writer(str(default_run_dir()), dist))
    # Setup reads only; every rank checks it and they agree before rank 0 writes anything.
    try:
        # Workers that torchrun restarted (--max-restarts) continue the run their predecessors checkpointed.
        restarted = dist.restart_count > 0 and config.out is not None and (Path(config.out) / LAST).exists()
        config, run_dir, saved = _prepare(config, resume or restarted, writer)
        torch.set_num_threads(config.resolved_threads())
        backend = _resolved_backend(config.backend)  # fails early if compiled kernels are asked for but missing
        # Data, split and charge labels come before anything is written (their errors leave no files).
        config, dataset, split, labels, means = _build_data(config, dataset, saved, dist, say)
    except BaseException:
        agree(False, dist)
        raise
    if not agree(True, dist):
        raise DistributedError(f"rank {dist.rank}: another training process failed while setting up (its error "
                               "is printed above)")
    if isinstance(dataset, H5Stream):
        dataset.mark_checked()  # every rank checked its share of the chunks, and all passed
    if dist.restart_count > 0 and saved is not None:
        say(f"torchrun restarted the workers (restart {dist.restart_count}): resuming from the last checkpoint")
    isolated = [] if isinstance(dataset, H5Stream) else molecules_without_pairs(dataset, config.dist_hard_max)
    if len(isolated):
        say(f"warning: {dataset.source}: {len(isolated)} molecule(s) have no two atoms within the "
            f"{config.dist_hard_max:g} Angstrom cutoff (the model sees isolated atoms), first: molecule {isolated[0]}")
    meta = _write_run_files(config, run_dir, dataset, split, means, saved, device, backend, dist)
    model, optimizer, scheduler = _build_model(config, device, backend, dataset, split, means, saved)
    state = _start(run_dir, model, optimizer, scheduler, saved, say, writer)
    barrier(dist)  # the run folder is complete before any rank trains

    loader = loader_for(dataset, split["train"], config.batch_size, shuffle=True, seed=config.seed,
                        dtype=torch.float32, charges=labels, rank=dist.rank, world_size=dist.world_size)
    graphed_step = None
    if dist.active and device.type == "cuda" and config.cuda_graphs is not False:
        # Not yet: the graphed step would need DDP's gradient all-reduce outside the captured graph.
        say("note: CUDA graphs are off in distributed runs (eager steps on each GPU)")
    elif device.type == "cuda" and config.cuda_graphs is not False:  # on by default on a GPU
        graphed_step = GraphedTrainStep(model, config.charges, direction_form=config.direction_form,
                                        dipole_target=config.dipole_target)
        say("training steps replay from CUDA graphs (--no-cuda-graphs: plain eager steps)")
    elif config.cuda_graphs:
        say(f"note: --cuda-graphs needs a CUDA device; training on {device} without them")
    grouped = f", conformers grouped by {SPLIT_GROUP_KEY}" if SPLIT_GROUP_KEY in dataset.extra and \
        config.split == "random" else ""
    say(f"training on {dataset.n_molecules} molecules of {dataset.source} "
        f"(train {len(split['train'])}, valid {len(split['valid'])}, test {len(split['test'])}{grouped}), "
        f"charges={config.charges}, {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"device {device}, {torch.get_num_threads()} thread(s), backend {meta['backend']}")
    if isinstance(dataset, H5Stream):
        say(f"streaming {dataset.source} in chunks of {dataset.chunk_molecules} molecules (shuffled by chunks; "
            f"--data-mode memory loads the whole file)")
    if dist.active:
        say(f"distributed: {dist.world_size} processes ({dist.backend}), {config.batch_size} molecules per process "
            f"and step ({dist.world_size * config.batch_size} per step)")
    if backend == "reference" and config.backend == "auto":
        say("note: the compiled fastdipole kernels are not available; using the pure-PyTorch reference ops "
            "(several times slower; build the package with `pip install --no-build-isolation .`)")

    step_model = model
    if dist.active:
        step_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    resume_hint = (f"{run_dir / LAST} holds epoch {{epoch}}; continue with the same torchrun command and --resume, "
                   f"or let torchrun restart the workers (--max-restarts), which resume by themselves")
    try:
        with stopped_by_launcher(dist):
            stop_reason = _epoch_loop(config, run_dir, model, step_model, optimizer, scheduler, loader, dataset,
                                      split, state, device, graphed_step, progress, on_epoch, say, dist)
    except LauncherStop:
        raise DistributedError(f"rank {dist.rank} of {dist.world_size}: stopped by torchrun (another training "
                               f"process failed; torchrun names it); " + resume_hint.format(epoch=state.epoch)) from None
    except RuntimeError as err:
        if not dist.active or isinstance(err, FastDipoleError):
            raise
        raise collective_failure(err, dist, "; " + resume_hint.format(epoch=state.epoch)) from None
    return _finish(run_dir, state, stop_reason, say) if writer else run_dir


def _prepare(config: TrainConfig, resume: bool, writer: bool = True) -> tuple[TrainConfig, Path, _Saved | None]:
    """The run folder and the settings to train with; with ``resume``, everything the run saved. Only the
    ``writer`` (rank 0 of a distributed run) removes files."""
    run_dir = Path(config.out) if config.out else default_run_dir()
    saved = None
    if _stopped_before_first_checkpoint(run_dir):  # nothing to resume: clear its files and start again
        if writer:
            for leftover in run_dir.iterdir():
                leftover.unlink(missing_ok=True)
        resume = False
    if resume:
        if not (run_dir / CONFIG_FILE).exists() or not (run_dir / LAST).exists():
            raise RunFolderError(f"{run_dir}: nothing to resume (needs {CONFIG_FILE} and {LAST})")
        previous, raw = read_config(run_dir)
        config = _check_resume_config(previous, config, run_dir)
        for leftover in run_dir.glob("*.tmp") if writer else ():  # a write cut short; its target is intact
            leftover.unlink(missing_ok=True)
        checkpoint = load_checkpoint(run_dir / LAST)  # on CPU: RNG states must stay CPU tensors
        means_path = run_dir / CHARGE_MEANS_FILE
        means = ({int(z): float(v) for z, v in json.loads(means_path.read_text())["means_e"].items()}
                 if means_path.exists() else None)
        # Rows past the checkpoint (written just before an interruption) are redone.
        history = [row for row in read_history(run_dir) if row["epoch"] <= checkpoint["epoch"]]
        saved = _Saved(raw.get("run", {}), load_split(run_dir / SPLIT_FILE), means, checkpoint, history)
    elif writer and run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        # (rank 0 alone: it may be clearing a setup-only folder while the others look; its error reaches all)
        raise RunFolderError(
            f"{run_dir}: run folder exists and is not empty; use --resume to continue it or choose another --out"
        )
    return config.replace(out=str(run_dir)), run_dir, saved


def _stopped_before_first_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds only files of a training killed while setting up (no checkpoint yet)."""
    if not run_dir.is_dir() or (run_dir / LAST).exists():
        return False
    files = list(run_dir.iterdir())
    return bool(files) and all(f.is_file() and (f.name in RUN_FILES or f.suffix == ".tmp") for f in files)


def _check_resume_config(saved: TrainConfig, asked: TrainConfig, run_dir: Path) -> TrainConfig:
    """``saved`` with the resumable fields of ``asked``; refuses changes that would alter the run."""
    diffs = []
    for name, value in asked.to_dict().items():
        if name in RESUMABLE_FIELDS or name == "data":
            continue
        if TrainConfig.resolved_later(name, value):
            continue
        if getattr(saved, name) != value:
            diffs.append(f"{name}={value!r} (run has {getattr(saved, name)!r})")
    if asked.data is not None and saved.data is not None and asked.data_path() != saved.data_path():
        diffs.append(f"data={str(asked.data_path())!r} (run has {saved.data!r})")
    if diffs:
        raise RunFolderError(f"{run_dir}: --resume cannot change settings of the run: {', '.join(diffs)}")
    return saved.replace(**{k: getattr(asked, k) for k in RESUMABLE_FIELDS if k != "out"})


def _build_data(config: TrainConfig, dataset: MoleculeDataset | None, saved: _Saved | None,
                dist: Distributed = SINGLE, say: Callable[[str], None] = print):
    """The checked dataset (a :class:`MoleculeDataset` in memory, or an :class:`H5Stream` whose chunks were all
    read and checked once, each rank checking its share), the config with its species, data path and data mode,
    the split, the loss's charge labels (None: the file's, or none; for a stream a function of a chunk) and the
    per-element means (average mode)."""
    path = config.data_path()
    mode = choose_data_mode(config.data_mode, path) if dataset is None else "memory"
    wanted = config.charges != "none" or (dataset is None and has_array(path, config.charge_array))
    if mode == "stream":
        dataset = H5Stream(path, charges=config.charge_array if wanted else None,
                           chunk_molecules=config.chunk_molecules, physical_checks=config.physical_checks)
        has_charges, has_vectors = dataset.has_charges, dataset.mu_vec_debye is not None
    else:
        if dataset is None:
            dataset = load_h5(path, charges=config.charge_array if wanted else None, check=True)
        else:
            validate(dataset)
        if config.physical_checks:
            check_physics(dataset)
        has_charges, has_vectors = dataset.charges is not None, dataset.mu_vec_debye is not None
    if config.dipole_target == "vector" and not has_vectors:
        raise DataError(f"{dataset.source}: --dipole-target vector needs dipole vectors (array 'mu_vec')")
    if config.charges != "none" and not has_charges:
        raise DataError(f"{dataset.source}: charge mode '{config.charges}' needs per-atom charges ('{config.charge_array}')")
    if mode == "stream":
        species = sorted(int(z) for z in (config.species or dataset.elements()))
        dataset.species = species
        # One pass over the file now, so that bad data stops the run here and not mid-epoch (where, in a
        # distributed run, only one rank would see the error); training then reads without checking again.
        started = time.perf_counter()
        dataset.check(dist.rank, dist.world_size)
        shared = f", each of the {dist.world_size} processes a share" if dist.active else ""
        say(f"checked the {dataset.n_molecules} molecules of {dataset.source} before training "
            f"({time.perf_counter() - started:.1f} s{shared})")
    else:
        species = sorted(int(z) for z in (config.species or np.unique(dataset.Z)))
        check_species(dataset, species)
    config = config.replace(species=species, data=str(path), data_mode=mode)

    if saved is not None:
        if saved.meta.get("n_molecules") not in (None, dataset.n_molecules):
            raise DataError(f"{dataset.source}: has {dataset.n_molecules} molecules but the run was trained on "
                            f"{saved.meta['n_molecules']}; cannot resume on different data")
        split = saved.split
    else:
        # Conformers of one molecule (QMugs' chembl_id) stay in one part of a random split.
        groups = dataset.extra.get(SPLIT_GROUP_KEY) if config.split == "random" else None
        split = make_split(dataset.n_molecules, protocol=config.split, train=config.train_fraction,
                           valid=config.valid_fraction, seed=config.seed, groups=groups)
        if len(split["valid"]) == 0:
            raise DataError(f"{dataset.source}: the validation split is empty ({dataset.n_molecules} molecules, "
                            f"valid={config.valid_fraction}); early stopping needs validation molecules")

    labels, means = None, None  # average mode: per-element training means (computed once, saved)
    if config.charges == "average":
        means = saved.charge_means if saved is not None and saved.charge_means else \
            _train_means(dataset, split["train"])
        labels = (lambda chunk: average_charge_labels(chunk, means)) if mode == "stream" else \
            average_charge_labels(dataset, means)
    return config, dataset, split, labels, means


def _train_means(dataset, train) -> dict[int, float]:
    """Per-element mean label charges (e) over the training molecules, in memory or streamed."""
    if isinstance(dataset, H5Stream):
        return dataset.element_mean_charges(train)
    return element_mean_charges(dataset, train)


def _write_run_files(config, run_dir: Path, dataset, split, means, saved: _Saved | None, device, backend,
                     dist: Distributed = SINGLE) -> dict:
    """Split and charge means (new runs) and ``config.json`` with the run's metadata (rank 0 only); returns
    the metadata."""
    meta = _run_metadata(config, dataset, split, saved, device, backend, dist)
    if not dist.is_writer:
        return meta
    run_dir.mkdir(parents=True, exist_ok=True)
    if saved is None:
        save_split(split, run_dir / SPLIT_FILE)
        if means is not None:
            atomic_write_json({"units": "e", "computed_on": "train split", "charge_array": config.charge_array,
                               "means_e": {str(z): v for z, v in sorted(means.items())}}, run_dir / CHARGE_MEANS_FILE)
    atomic_write_json({**config.to_dict(), "run": meta}, run_dir / CONFIG_FILE)
    return meta


def _run_metadata(config, dataset, split, saved: _Saved | None, device, backend, dist: Distributed) -> dict:
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    meta = {
        "species": config.species,
        "data_path": str(config.data_path()),
        "n_molecules": dataset.n_molecules,
        "n_atoms": dataset.n_atoms,
        "split_sizes": {k: int(len(v)) for k, v in split.items()},
        "device": str(device),
        "threads": torch.get_num_threads(),
        "backend": backend,
        "versions": _versions(),
        "created": (saved.meta.get("created") if saved else None) or now,
    }
    if dist.active:
        meta["distributed"] = {"world_size": dist.world_size, "backend": dist.backend,
                               "molecules_per_step": dist.world_size * config.batch_size}
    if saved is not None:
        meta["resumed"] = [*saved.meta.get("resumed", []), now]
    return meta


def _build_model(config: TrainConfig, device, backend: str, dataset, split, means, saved: _Saved | None):
    """Model, optimiser and schedule; the seed fixes the initial weights (a resumed run loads its own)."""
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    model = DipoleModel.from_config(backend=backend, **config.model_kwargs()).to(device=device, dtype=torch.float32)
    if config.uses_element_mean_init() and saved is None:
        _init_charge_head(model, config, means if means is not None else _train_means(dataset, split["train"]))
    optimizer = make_optimizer(model.parameters(), config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience
    )
    return model, optimizer, scheduler


def _init_charge_head(model: DipoleModel, config: TrainConfig, means_e: dict[int, float]) -> None:
    """Start the charge head at the training split's per-element mean label charges (``config.charge_init``):
    the first predictions then point the dipoles roughly like the labels', in the basin the labels choose."""
    head = model.charges
    head.set_element_charges(model.hipnn.species, means_e)
    if config.charge_init == "element_means_only":
        with torch.no_grad():
            for layer in head.layers[1:]:
                layer.weight.zero_()
                layer.bias.zero_()


def _start(run_dir: Path, model, optimizer, scheduler, saved: _Saved | None, say, writer: bool = True) -> _Progress:
    """The loop's starting point: the saved checkpoint of a resumed run, else epoch 0 (saved as such by the
    ``writer``)."""
    if saved is None:
        state = _Progress()
        if writer:
            write_history(state.history, run_dir)
            _save(run_dir / LAST, model, optimizer, scheduler, state, {})
        return state
    ck = saved.checkpoint
    model.load_state_dict(ck["model"])
    optimizer.load_state_dict(ck["optimizer"])
    scheduler.load_state_dict(ck["scheduler"])
    set_rng_state(ck["rng"])
    state = _Progress(ck["epoch"], ck["best_metric"], ck["best_epoch"], ck["epochs_without_improvement"],
                      saved.history)
    if writer:
        write_history(state.history, run_dir)
    say(f"resuming {run_dir} after epoch {state.epoch} (best valid |mu| MAE "
        f"{state.best * DEBYE_PER_E_ANGSTROM:.4f} D at epoch {state.best_epoch})")
    return state


def _epoch_loop(config, run_dir: Path, model, step_model, optimizer, scheduler, loader, dataset, split,
                state: _Progress, device, graphed_step, progress, on_epoch, say, dist: Distributed = SINGLE) -> str:
    """Epochs ``state.epoch + 1 .. config.epochs``: train, validate, log, checkpoint (rank 0); returns why it
    stopped. ``step_model`` is ``model`` or its DistributedDataParallel wrapper (used for the training steps)."""
    writer = dist.is_writer
    t0 = time.perf_counter()
    elapsed_before = state.history[-1]["elapsed_seconds"] if state.history else 0.0
    epoch_times: list[float] = []
    bar = _tqdm()(total=max(config.epochs - state.epoch, 0) * len(loader),
                  disable=(None if progress is None else not progress) if writer else True,  # None: on a terminal
                  unit="batch", dynamic_ncols=True, file=sys.stderr)
    last_valid = state.history[-1]["valid_dipole_mae_debye"] if state.history else None
    stop_reason = "max epochs"
    try:
        for epoch in range(state.epoch + 1, config.epochs + 1):
            lr = optimizer.param_groups[0]["lr"]
            # rank 0 decides for all: the time budget depends on each rank's own clock
            reason = broadcast_from_writer(
                _stop_reason(config, lr, state.stale, time.perf_counter() - t0, epoch_times), dist)
            if reason:
                stop_reason = reason
                break
            t_epoch = time.perf_counter()
            bar.set_description(f"epoch {epoch}/{config.epochs}")
            train_terms = _train_epoch(step_model, loader, optimizer, config, device, epoch, bar, last_valid,
                                       graphed_step, dist)
            valid = _validate(model, dataset, split["valid"], config.eval_batch_size, device, dist)
            warmup = epoch <= config.charge_warmup_epochs  # charge-only epochs: no lr schedule / patience yet
            if not warmup:
                scheduler.step(valid["dipole_mae_e_angstrom"])
            improved = valid["dipole_mae_e_angstrom"] < state.best
            if improved:
                state.best, state.best_epoch, state.stale = valid["dipole_mae_e_angstrom"], epoch, 0
            elif not warmup:
                state.stale += 1
            epoch_seconds = time.perf_counter() - t_epoch
            epoch_times.append(epoch_seconds)
            row = {
                "epoch": epoch,
                "lr": lr,
                **{f"train_{k}": v for k, v in train_terms.items()},
                **{f"valid_{k}": valid.get(k) for k in _VALID_COLUMNS},
                "epoch_seconds": epoch_seconds,
                "elapsed_seconds": elapsed_before + time.perf_counter() - t0,
            }
            state.epoch = epoch
            state.history.append(row)
            if writer:
                write_history(state.history, run_dir)
                if improved:
                    _save(run_dir / BEST, model, optimizer, scheduler, state, row)
                _save(run_dir / LAST, model, optimizer, scheduler, state, row)
            last_valid = valid["dipole_mae_debye"]
            bar.set_postfix({"loss": f"{train_terms['loss']:.4f}", "valid MAE": f"{last_valid:.3f} D"})
            say(_epoch_line(row, improved))
            if on_epoch is not None:
                on_epoch(row)
    except KeyboardInterrupt:
        bar.close()
        if not writer:
            raise
        done = load_checkpoint(run_dir / LAST)["epoch"]
        say(f"interrupted; {run_dir / LAST} holds epoch {done} (the last completed one). "
            f"Resume with: fastdipole train --out {run_dir} --resume")
        raise
    bar.close()
    return stop_reason


#: Validation metrics logged per epoch (as ``valid_<key>`` columns of metrics.csv).
_VALID_COLUMNS = ("dipole_mae_debye", "dipole_rmse_debye", "dipole_mae_e_angstrom", "dipole_rmse_e_angstrom",
                  "charge_mae_e", "charge_rmse_e", "direction_agreement", "total_charge_mean_abs_e")


def _finish(run_dir: Path, state: _Progress, stop_reason: str, say) -> Path:
    best = state.best
    summary = {
        "stop_reason": stop_reason,
        "epochs_completed": state.epoch,
        "best_epoch": state.best_epoch,
        "best_valid_dipole_mae_e_angstrom": best if math.isfinite(best) else None,
        "best_valid_dipole_mae_debye": best * DEBYE_PER_E_ANGSTROM if math.isfinite(best) else None,
        "elapsed_seconds": state.history[-1]["elapsed_seconds"] if state.history else 0.0,
    }
    atomic_write_json(summary, run_dir / SUMMARY_FILE)
    say(f"done ({stop_reason}) after {state.epoch} epochs: best valid |mu| MAE {best * DEBYE_PER_E_ANGSTROM:.4f} D "
        f"({best:.4f} e*A) at epoch {state.best_epoch}; run folder {run_dir}")
    return run_dir


def _validate(model, dataset, indices, batch_size, device, dist: Distributed) -> dict:
    """Validation metrics, batch by batch (a streamed file's validation split is never held in memory); in a
    distributed run each rank predicts a contiguous share of the split (its own part of the file) and the ranks
    merge their sums, so every rank computes the same numbers."""
    share = np.array_split(np.asarray(indices), dist.world_size)[dist.rank] if dist.active else indices
    acc = accumulate(model, dataset, share, batch_size, device, sample_atoms=0)
    if dist.active:
        acc = MetricAccumulator.merged(gather_objects(acc, dist))
    return acc.metrics()


def _train_epoch(model, loader, optimizer, config, device, epoch, bar, last_valid, graphed_step=None,
                 dist: Distributed = SINGLE) -> dict:
    """One pass over the training split; returns molecule-weighted means of the loss terms.

    ``graphed_step`` (a :class:`GraphedTrainStep`, CUDA only) replaces the model's forward and backward by
    CUDA graph replays; the data were validated when loaded, so its batches skip the model's input checks."""
    model.train()
    loader.set_epoch(epoch - 1)  # the shuffle of epoch k depends only on (seed, k): exact resume
    l2 = 0.0 if epoch <= config.charge_warmup_epochs else config.l2  # charge-only warm-up: no dipole term
    w_dir = config.direction_weight_at(epoch)
    means = step_means(dist) if dist.active else None  # loss means over all ranks' molecules of the step
    sums: dict[str, float] = {}
    weight = 0
    for batch in loader:
        optimizer.zero_grad(set_to_none=True)
        if graphed_step is not None:
            terms = graphed_step(batch, config.l1, l2, w_dir)  # leaves the gradients in p.grad
        else:
            batch = batch.to(device)
            out = model(batch.Z, batch.R, batch.offsets, batch.total_charge)
            terms = batch_loss(out, batch, config.charges, config.l1, l2, w_dir, config.direction_form,
                               config.dipole_target, means)
        values = terms.as_floats()  # one device-to-host read for all loss terms
        if not math.isfinite(values["total"]):
            raise TrainingError(f"loss became {values['total']} in epoch {epoch}; try a smaller --lr")
        if graphed_step is None:
            terms.total.backward()
        optimizer.step()
        n = batch.n_molecules
        weight += n
        for key, value in values.items():
            if value is not None:
                sums[key] = sums.get(key, 0.0) + value * n
        postfix = {"loss": f"{values['total']:.4f}"}
        if last_valid is not None:
            postfix["valid MAE"] = f"{last_valid:.3f} D"
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)
    names = {"total": "loss", "dipole_rmse": "dipole_rmse_e_angstrom", "dipole_mae": "dipole_mae_e_angstrom",
             "charge_rmse": "charge_rmse_e", "charge_mae": "charge_mae_e", "charge_abs_mean": "charge_abs_mean_e",
             "direction": "direction_hinge"}
    return {names[k]: (v / weight if weight else None) for k, v in sums.items()}


def _stop_reason(config: TrainConfig, lr: float, stale: int, elapsed: float, epoch_times: list[float]) -> str | None:
    if lr < config.min_lr:
        return f"learning rate {lr:.2g} below the floor {config.min_lr:.2g}"
    if stale >= config.patience:
        return f"no better valid dipole MAE for {stale} epochs"
    if config.max_minutes is not None and config.max_minutes > 0 and epoch_times:
        # Stop when the next epoch (estimated from the last ones) would overrun the time budget;
        # at least one epoch always runs.
        estimate = float(np.mean(epoch_times[-3:]))
        if elapsed + estimate > 60.0 * config.max_minutes:
            return f"time budget of {config.max_minutes:g} min"
    return None


def _epoch_line(row: dict, improved: bool) -> str:
    line = (f"epoch {row['epoch']}: loss {row['train_loss']:.4f}, valid |mu| MAE {row['valid_dipole_mae_debye']:.4f} D "
            f"({row['valid_dipole_mae_e_angstrom']:.4f} e*A), RMSE {row['valid_dipole_rmse_debye']:.4f} D")
    if row.get("valid_charge_mae_e") is not None:
        line += f", charge MAE {row['valid_charge_mae_e']:.4f} e"
    if row.get("valid_direction_agreement") is not None:
        line += f", direction agreement {100 * row['valid_direction_agreement']:.1f} %"
    line += f", lr {row['lr']:.2g}, {row['epoch_seconds']:.1f} s"
    return line + (" *" if improved else "")


def _save(path, model, optimizer, scheduler, state: _Progress, row) -> None:
    save_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler, epoch=state.epoch,
                    best_metric=state.best, best_epoch=state.best_epoch, epochs_without_improvement=state.stale,
                    metrics=row)


def _versions() -> dict:
    import h5py

    from ..ops import extension_available

    return {
        "fastdipole": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "python": platform.python_version(),
        "extension": bool(extension_available()),
    }


def _resolved_backend(choice: str) -> str:
    from ..ops import resolve_backend

    try:
        return resolve_backend(choice)
    except RuntimeError as err:
        raise FastDipoleError(" ".join(str(err).split())) from None


def _tqdm():
    from tqdm.auto import tqdm

    return tqdm
