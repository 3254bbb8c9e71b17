"""Presets of `fastdipole reproduce`: data sizes, model size and training budget of every run.

Every run of a preset gets the same budget: an epoch cap (``epochs``, scaled by training-set size in
the size study so each run takes about the same number of optimizer steps) and a wall-clock budget
per run (``max_minutes``; the trainer stops before an epoch that would overrun it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

#: The paper's loss weights: charges (l1) and dipole magnitude (l2).
PAPER_L1 = 0.04
PAPER_L2 = 0.96

#: Studies a reproduce run can contain (``--only`` picks a subset).
STUDIES = ("main", "sweep", "size", "warmup", "qmugs")


@dataclass(frozen=True)
class Preset:
    """Settings shared by all runs of one `reproduce` (sizes in molecules, times in minutes)."""

    name: str
    description: str
    # data: a fixed test set drawn once, and a training pool (train + validation) per training size
    n_train: int | None  #: training molecules of the main runs (None: every molecule not in valid/test)
    n_valid: int  #: validation molecules (early stopping, lr schedule), same count for every run
    n_test: int | None  #: test molecules (None: every molecule not used for training / validation)
    # model (hippynn's HIP-NN arguments)
    n_features: int
    n_sensitivities: int = 20
    n_interactions: int = 2
    n_atom_layers: int = 3
    # optimisation (budget)
    epochs: int = 100  #: epoch cap of a main run
    max_minutes: float | None = None  #: wall-clock budget of one run's training
    batch_size: int = 128
    lr: float = 1e-3
    patience: int = 15
    plateau_patience: int = 5
    seeds: tuple[int, ...] = (0, 1, 2)
    jobs: int = 1  #: trainings run in parallel (processes)
    # extra studies (all on the first seed)
    l1_sweep: tuple[float, ...] = (0.0, 0.01, PAPER_L1, 0.1, 0.3)
    train_sizes: tuple[int, ...] = (5_000, 20_000, 50_000)
    warmup_epochs: int = 2  #: charge-only epochs (l2 = 0) of the warm-up study
    signflip_molecules: int = 1_000  #: validation molecules scored for the per-epoch sign-flip fraction
    # QMugs-style section (GFN2-xTB fixture)
    qmugs_epochs: int = 40
    qmugs_max_minutes: float | None = 2.0
    qmugs_test_fraction: float = 0.2  #: share of molecules (all their conformers) held out for testing
    eval_batch_size: int = 512
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "Preset":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke",
        description="tiny end-to-end check (a few hundred molecules, 2 epochs, nf = 8); numbers mean nothing",
        n_train=200,
        n_valid=60,
        n_test=100,
        n_features=8,
        n_sensitivities=8,
        n_interactions=1,
        n_atom_layers=1,
        epochs=2,
        max_minutes=None,
        batch_size=64,
        patience=10,
        seeds=(0, 1),
        l1_sweep=(0.0, PAPER_L1, 0.3),
        train_sizes=(100, 200),
        warmup_epochs=1,
        signflip_molecules=30,
        qmugs_epochs=2,
        qmugs_max_minutes=None,
    ),
    "cpu": Preset(
        name="cpu",
        description=(
            "QM9 subset for a 2-core CPU box: 20,000 training / 2,000 validation / 10,000 test molecules, "
            "nf = 60, 40-epoch cap and 7 min per run, 2 runs in parallel"
        ),
        n_train=20_000,
        n_valid=2_000,
        n_test=10_000,
        n_features=60,
        epochs=40,
        max_minutes=7.0,
        jobs=2,
        train_sizes=(5_000, 20_000, 50_000),
        signflip_molecules=1_000,
        qmugs_epochs=40,
        qmugs_max_minutes=1.0,
    ),
    "paper": Preset(
        name="paper",
        description=(
            "the full protocol for a GPU node: 110,000 training / 10,000 validation / rest (10,831) test "
            "molecules, nf = 128, up to 2,000 epochs with early stopping"
        ),
        n_train=110_000,
        n_valid=10_000,
        n_test=None,
        n_features=128,
        epochs=2_000,
        max_minutes=None,
        patience=50,
        plateau_patience=10,
        train_sizes=(5_000, 20_000, 50_000, 110_000),
        signflip_molecules=2_000,
        qmugs_epochs=500,
        qmugs_max_minutes=30.0,
        eval_batch_size=1024,
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
