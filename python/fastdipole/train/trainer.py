"""Training loop: data checks, split, charge labels, Adam + ReduceLROnPlateau, early stopping,
atomic checkpoints and exact resume. No click here: ``train(config)`` is the Python API.

Run folder: ``config.json``, ``split.npz``, ``charge_means.json`` (average mode), ``metrics.csv``,
``checkpoint_last.pt``, ``checkpoint_best.pt``, ``summary.json``.
"""

from __future__ import annotations

import json
import math
import platform
import random
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import __version__
from ..data import (
    BatchLoader,
    MoleculeDataset,
    average_charge_labels,
    check_species,
    element_mean_charges,
    load_h5,
    load_split,
    make_split,
    save_split,
    validate,
)
from ..errors import DataError, FastDipoleError
from ..evaluation.evaluate import evaluate, resolve_device
from ..nn import DipoleModel
from ..units import DEBYE_PER_E_ANGSTROM
from .checkpoint import atomic_write_json, load_checkpoint, save_checkpoint, set_rng_state
from .config import LEGACY_SETTINGS, TrainConfig
from .history import read_history, write_history
from .loss import batch_loss
from .graphed import GraphedTrainStep
from .optim import make_optimizer

CONFIG_FILE = "config.json"
SPLIT_FILE = "split.npz"
CHARGE_MEANS_FILE = "charge_means.json"
LAST = "checkpoint_last.pt"
BEST = "checkpoint_best.pt"
SUMMARY_FILE = "summary.json"
# Per-molecule array naming the molecule a conformer belongs to (QMugs files): a random split keeps each
# group in one part, so no conformer of a test molecule is trained on.
SPLIT_GROUP_KEY = "chembl_id"

#: Settings that may change when a run is resumed (they do not change the function being trained).
RESUMABLE_FIELDS = ("epochs", "max_minutes", "device", "threads", "kernels", "cuda_graphs", "eval_batch_size", "out",
                    "extra")


class RunFolderError(FastDipoleError):
    """The run folder cannot be used as asked (not empty without --resume, nothing to resume, ...)."""


class TrainingError(FastDipoleError):
    """Training cannot go on (e.g. the loss became NaN)."""


# ---- run folder helpers -------------------------------------------------------------------------------


def default_run_dir() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def read_config(run_dir) -> tuple[TrainConfig, dict]:
    """The run's :class:`TrainConfig` and the whole ``config.json`` (with run metadata)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise RunFolderError(f"{run_dir}: no {CONFIG_FILE} (not a fastdipole run folder)")
    raw = json.loads(path.read_text())
    # A field missing from an older config.json takes the value that run was trained with, not today's default.
    return TrainConfig.from_dict({**LEGACY_SETTINGS, **raw}), raw


def load_model(run_dir, which: str = "best", device="cpu", kernels: str | None = "auto") -> DipoleModel:
    """The trained :class:`DipoleModel` of a run (``which``: ``best`` or ``last`` checkpoint), in eval mode."""
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    config, _ = read_config(run_dir)
    path = Path(run_dir) / (BEST if which == "best" else LAST)
    if not path.exists():
        raise RunFolderError(f"{run_dir}: no {path.name} (the run has not finished an epoch)")
    state = load_checkpoint(path)
    model = DipoleModel.from_config(kernels=kernels, **config.model_kwargs())
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval()


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


def file_has_array(path: Path, name: str) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return name in f
    except OSError:
        return False  # load_h5 reports an unreadable file with a proper DataError


def _load_data(config: TrainConfig) -> MoleculeDataset:
    """Load (and validate) the dataset; charge labels are required unless the charge mode is ``none``."""
    path = config.data_path()
    needs = config.charges != "none"
    charges = config.charge_array if needs or file_has_array(path, config.charge_array) else None
    return load_h5(path, charges=charges, check=True)


def _check_resume_config(saved: TrainConfig, asked: TrainConfig, run_dir: Path) -> TrainConfig:
    """``saved`` with the resumable fields of ``asked``; refuses changes that would alter the run."""
    diffs = []
    for name, value in asked.to_dict().items():
        if name in RESUMABLE_FIELDS or name == "data":
            continue
        if name == "species" and value is None:
            continue
        if getattr(saved, name) != value:
            diffs.append(f"{name}={value!r} (run has {getattr(saved, name)!r})")
    if asked.data is not None and saved.data is not None and asked.data_path() != saved.data_path():
        diffs.append(f"data={str(asked.data_path())!r} (run has {saved.data!r})")
    if diffs:
        raise RunFolderError(f"{run_dir}: --resume cannot change settings of the run: {', '.join(diffs)}")
    return saved.replace(**{k: getattr(asked, k) for k in RESUMABLE_FIELDS if k != "out"})


# ---- training -----------------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    dataset: MoleculeDataset | None = None,
    progress: bool | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Train a dipole model as ``config`` says; returns the run folder.

    ``resume=True`` continues the run in ``config.out`` from ``checkpoint_last.pt`` exactly (same
    split, same shuffling, next epoch). ``dataset`` skips reading ``config.data`` (it must be that
    file's content). ``progress``: the tqdm bar on stderr (None: only when stderr is a terminal, so a log
    redirected to a file gets the per-epoch lines, not one line per bar refresh). ``on_epoch`` gets each
    epoch's metrics row; ``log`` gets the printed lines (default: tqdm-safe print). Ctrl-C leaves ``checkpoint_last.pt`` at the last completed epoch.
    """
    say = log or (lambda msg: _tqdm().write(msg))
    run_dir = Path(config.out) if config.out else default_run_dir()

    if resume:
        if not (run_dir / CONFIG_FILE).exists() or not (run_dir / LAST).exists():
            raise RunFolderError(f"{run_dir}: nothing to resume (needs {CONFIG_FILE} and {LAST})")
        saved, meta = read_config(run_dir)
        config = _check_resume_config(saved, config, run_dir)
    elif run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise RunFolderError(
            f"{run_dir}: run folder exists and is not empty; use --resume to continue it or choose another --out"
        )
    config = config.replace(out=str(run_dir))

    torch.set_num_threads(config.resolved_threads())
    device = resolve_device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FastDipoleError("--device cuda asked for, but torch sees no CUDA GPU (use --device cpu or auto)")
    kernel_backend = _resolved_kernels(config.kernels)  # fails early if compiled kernels are asked for but missing
    dtype = torch.float32

    # Data first, so bad data fails with a one-line DataError before anything is written.
    if dataset is None:
        dataset = _load_data(config)
    else:
        validate(dataset)
    if config.charges != "none" and dataset.charges is None:
        raise DataError(f"{dataset.source}: charge mode '{config.charges}' needs per-atom charges ('{config.charge_array}')")
    species = sorted(int(z) for z in (config.species or np.unique(dataset.Z)))
    check_species(dataset, species)
    config = config.replace(species=species, data=str(config.data_path()))

    # Split and charge labels are computed before anything is written (their errors leave no files).
    groups = None
    if resume:
        split = load_split(run_dir / SPLIT_FILE)
        if meta.get("run", {}).get("n_molecules") not in (None, dataset.n_molecules):
            raise DataError(
                f"{dataset.source}: has {dataset.n_molecules} molecules but the run was trained on "
                f"{meta['run']['n_molecules']}; cannot resume on different data"
            )
    else:
        # Conformers of one molecule (QMugs' chembl_id) stay in one part of a random split.
        groups = dataset.extra.get(SPLIT_GROUP_KEY) if config.split == "random" else None
        split = make_split(dataset.n_molecules, protocol=config.split, train=config.train_fraction,
                           valid=config.valid_fraction, seed=config.seed, groups=groups)
        if len(split["valid"]) == 0:
            raise DataError(f"{dataset.source}: the validation split is empty ({dataset.n_molecules} molecules, "
                            f"valid={config.valid_fraction}); early stopping needs validation molecules")

    # Charge labels of the loss: the file's (mulliken), per-element training means (average), none.
    labels, means = None, None
    means_path = run_dir / CHARGE_MEANS_FILE
    if config.charges == "average":
        if resume and means_path.exists():
            means = {int(z): float(v) for z, v in json.loads(means_path.read_text())["means_e"].items()}
        else:
            means = element_mean_charges(dataset, split["train"])
        labels = average_charge_labels(dataset, means)

    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        save_split(split, run_dir / SPLIT_FILE)
        if means is not None:
            atomic_write_json({"units": "e", "computed_on": "train split", "charge_array": config.charge_array,
                               "means_e": {str(z): v for z, v in sorted(means.items())}}, means_path)

    run_meta = {
        "species": species,
        "data_path": str(config.data_path()),
        "n_molecules": dataset.n_molecules,
        "n_atoms": dataset.n_atoms,
        "split_sizes": {k: int(len(v)) for k, v in split.items()},
        "device": str(device),
        "threads": torch.get_num_threads(),
        "kernels": kernel_backend,
        "versions": _versions(),
    }
    created = meta.get("run", {}).get("created") if resume else None
    run_meta["created"] = created or time.strftime("%Y-%m-%d %H:%M:%S")
    if resume:
        run_meta["resumed"] = [*meta.get("run", {}).get("resumed", []), time.strftime("%Y-%m-%d %H:%M:%S")]
    atomic_write_json({**config.to_dict(), "run": run_meta}, run_dir / CONFIG_FILE)

    # Model, optimiser, schedule. The seed fixes the initial weights; shuffling is seeded per epoch.
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    kernels = None if config.kernels == "auto" else config.kernels
    model = DipoleModel.from_config(kernels=kernels, **config.model_kwargs()).to(device=device, dtype=dtype)
    if config.uses_element_mean_init() and not resume:
        _init_charge_head(model, config, means if means is not None else element_mean_charges(dataset, split["train"]))
    optimizer = make_optimizer(model.parameters(), config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience
    )
    loader = BatchLoader(dataset, split["train"], config.batch_size, shuffle=True, seed=config.seed,
                         dtype=dtype, charges=labels)
    graphed_step = None
    if device.type == "cuda" and config.cuda_graphs is not False:  # on by default on a GPU
        graphed_step = GraphedTrainStep(model, config.charges, direction_form=config.direction_form)
        say("training steps replay from CUDA graphs (--no-cuda-graphs: plain eager steps)")
    elif config.cuda_graphs:
        say(f"note: --cuda-graphs needs a CUDA device; training on {device} without them")

    start_epoch, best, best_epoch, stale = 0, math.inf, 0, 0
    history: list[dict] = []
    if resume:
        state = load_checkpoint(run_dir / LAST)  # on CPU: RNG states must stay CPU tensors
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start_epoch, best, best_epoch = state["epoch"], state["best_metric"], state["best_epoch"]
        stale = state["epochs_without_improvement"]
        # Rows past the checkpoint (written just before an interruption) are redone.
        history = [row for row in read_history(run_dir) if row["epoch"] <= start_epoch]
        write_history(history, run_dir)
        say(f"resuming {run_dir} after epoch {start_epoch} (best valid |mu| MAE "
            f"{best * DEBYE_PER_E_ANGSTROM:.4f} D at epoch {best_epoch})")
    else:
        write_history(history, run_dir)
        _save(run_dir / LAST, model, optimizer, scheduler, 0, best, best_epoch, stale, {})

    grouped = f", conformers grouped by {SPLIT_GROUP_KEY}" if groups is not None else ""
    say(f"training on {dataset.n_molecules} molecules of {dataset.source} "
        f"(train {len(split['train'])}, valid {len(split['valid'])}, test {len(split['test'])}{grouped}), "
        f"charges={config.charges}, {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"device {device}, {torch.get_num_threads()} thread(s), kernels {run_meta['kernels']}")

    if kernel_backend == "reference" and config.kernels == "auto":
        say("note: the compiled fastdipole kernels are not available; using the pure-PyTorch reference ops "
            "(several times slower; build the package with `pip install --no-build-isolation .`)")
    t0 = time.perf_counter()
    elapsed_before = history[-1]["elapsed_seconds"] if history else 0.0
    epoch_times: list[float] = []
    stop_reason = "max epochs"
    epoch = start_epoch
    bar = _tqdm()(total=max(config.epochs - start_epoch, 0) * len(loader),
                  disable=None if progress is None else not progress,  # None: tqdm's "only on a terminal"
                  unit="batch", dynamic_ncols=True, file=sys.stderr)
    last_valid = history[-1]["valid_dipole_mae_debye"] if history else None
    try:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            lr = optimizer.param_groups[0]["lr"]
            reason = _stop_reason(config, lr, stale, time.perf_counter() - t0, epoch_times)
            if reason:
                stop_reason = reason
                epoch -= 1
                break
            t_epoch = time.perf_counter()
            bar.set_description(f"epoch {epoch}/{config.epochs}")
            train_terms = _train_epoch(model, loader, optimizer, config, device, epoch, bar, last_valid, graphed_step)

            result = evaluate(model, dataset, split["valid"], config.eval_batch_size, device)
            valid = result.metrics
            warmup = epoch <= config.charge_warmup_epochs  # charge-only epochs: no lr schedule / patience yet
            if not warmup:
                scheduler.step(valid["dipole_mae_e_angstrom"])
            if valid["dipole_mae_e_angstrom"] < best:
                best, best_epoch, stale = valid["dipole_mae_e_angstrom"], epoch, 0
                improved = True
            else:
                stale += 0 if warmup else 1
                improved = False
            epoch_seconds = time.perf_counter() - t_epoch
            epoch_times.append(epoch_seconds)
            row = {
                "epoch": epoch,
                "lr": lr,
                **{f"train_{k}": v for k, v in train_terms.items()},
                "valid_dipole_mae_debye": valid["dipole_mae_debye"],
                "valid_dipole_rmse_debye": valid["dipole_rmse_debye"],
                "valid_dipole_mae_e_angstrom": valid["dipole_mae_e_angstrom"],
                "valid_dipole_rmse_e_angstrom": valid["dipole_rmse_e_angstrom"],
                "valid_charge_mae_e": valid.get("charge_mae_e"),
                "valid_charge_rmse_e": valid.get("charge_rmse_e"),
                "valid_direction_agreement": valid.get("direction_agreement"),
                "valid_total_charge_mean_abs_e": valid.get("total_charge_mean_abs_e"),
                "epoch_seconds": epoch_seconds,
                "elapsed_seconds": elapsed_before + time.perf_counter() - t0,
            }
            history.append(row)
            write_history(history, run_dir)
            if improved:
                _save(run_dir / BEST, model, optimizer, scheduler, epoch, best, best_epoch, stale, row)
            _save(run_dir / LAST, model, optimizer, scheduler, epoch, best, best_epoch, stale, row)
            last_valid = valid["dipole_mae_debye"]
            bar.set_postfix({"loss": f"{train_terms['loss']:.4f}", "valid MAE": f"{last_valid:.3f} D"})
            say(_epoch_line(row, improved))
            if on_epoch is not None:
                on_epoch(row)
    except KeyboardInterrupt:
        bar.close()
        done = load_checkpoint(run_dir / LAST)["epoch"]
        say(f"interrupted; {run_dir / LAST} holds epoch {done} (the last completed one). "
            f"Resume with: fastdipole train --out {run_dir} --resume")
        raise
    bar.close()

    summary = {
        "stop_reason": stop_reason,
        "epochs_completed": epoch,
        "best_epoch": best_epoch,
        "best_valid_dipole_mae_e_angstrom": best if math.isfinite(best) else None,
        "best_valid_dipole_mae_debye": best * DEBYE_PER_E_ANGSTROM if math.isfinite(best) else None,
        "elapsed_seconds": history[-1]["elapsed_seconds"] if history else 0.0,
    }
    atomic_write_json(summary, run_dir / SUMMARY_FILE)
    say(f"done ({stop_reason}) after {epoch} epochs: best valid |mu| MAE {best * DEBYE_PER_E_ANGSTROM:.4f} D "
        f"({best:.4f} e*A) at epoch {best_epoch}; run folder {run_dir}")
    return run_dir


def _train_epoch(model, loader, optimizer, config, device, epoch, bar, last_valid, graphed_step=None) -> dict:
    """One pass over the training split; returns molecule-weighted means of the loss terms.

    ``graphed_step`` (a :class:`GraphedTrainStep`, CUDA only) replaces the model's forward and backward by
    CUDA graph replays; the data were validated when loaded, so its batches skip the model's input checks."""
    model.train()
    loader.set_epoch(epoch - 1)  # the shuffle of epoch k depends only on (seed, k): exact resume
    l2 = 0.0 if epoch <= config.charge_warmup_epochs else config.l2  # charge-only warm-up: no dipole term
    w_dir = config.direction_weight_at(epoch)
    sums: dict[str, float] = {}
    weight = 0
    for batch in loader:
        optimizer.zero_grad(set_to_none=True)
        if graphed_step is not None:
            terms = graphed_step(batch, config.l1, l2, w_dir)  # leaves the gradients in p.grad
        else:
            batch = batch.to(device)
            out = model(batch.Z, batch.R, batch.offsets, batch.total_charge)
            terms = batch_loss(out, batch, config.charges, config.l1, l2, w_dir, config.direction_form)
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


def _save(path, model, optimizer, scheduler, epoch, best, best_epoch, stale, row) -> None:
    save_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch, best_metric=best,
                    best_epoch=best_epoch, epochs_without_improvement=stale, metrics=row)


def _resolved_kernels(choice: str) -> str:
    from ..ops import resolve_backend

    try:
        return resolve_backend(None if choice == "auto" else choice)
    except RuntimeError as err:
        raise FastDipoleError(" ".join(str(err).split())) from None


def _tqdm():
    from tqdm.auto import tqdm

    return tqdm
