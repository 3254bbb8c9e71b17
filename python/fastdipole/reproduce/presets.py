"""Presets of `fastdipole reproduce`: data sizes, model size and the fixed training budget of every run.

Every run of a preset trains for a fixed number of epochs (``epochs``; ``recipe_epochs`` in the recipe
search): no wall-clock budget and no early stopping (patience = the epoch count), so arms are compared after
the same number of optimizer steps whatever the machine's load. The learning-rate plateau schedule stays
(it is part of the training recipe and depends only on the validation curve).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..train.config import PAPER_L1, RECIPE_L1

#: Studies a reproduce run can contain (``--only`` picks a subset).
STUDIES = ("recipes", "main", "sweep", "size", "qmugs")


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
    epochs: int = 100  #: epochs of every main / sweep / size run
    batch_size: int = 128
    lr: float = 1e-3
    plateau_patience: int = 5
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    jobs: int = 1  #: trainings run in parallel (processes)
    # recipe search: every candidate of plan.RECIPE_CANDIDATES on a smaller pool
    recipe_n_train: int = 5_000
    recipe_epochs: int = 20
    recipe_seeds: int = 5  #: the first this-many seeds
    # extra studies, on the first ``extra_seeds`` seeds
    extra_seeds: int = 1
    l1_sweep: tuple[float, ...] = (0.0, 0.01, PAPER_L1, 0.1, RECIPE_L1)
    train_sizes: tuple[int, ...] = (5_000, 20_000, 50_000)
    # QMugs-style section (GFN2-xTB fixture)
    qmugs_epochs: int = 40
    qmugs_test_fraction: float = 0.2  #: share of molecules (all their conformers) held out for testing
    eval_batch_size: int = 512
    studies: tuple[str, ...] = STUDIES  #: studies run when ``--only`` is not given
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
        batch_size=64,
        seeds=(0, 1),
        recipe_n_train=100,
        recipe_epochs=1,
        recipe_seeds=1,
        l1_sweep=(0.0, PAPER_L1, RECIPE_L1),
        train_sizes=(100, 200),
        qmugs_epochs=2,
    ),
    "cpu": Preset(
        name="cpu",
        description=(
            "QM9 subset for a 2-core CPU box: 10,000 training / 1,000 validation / 10,000 test molecules, "
            "nf = 60, 40 epochs per run, 5 paired seeds, 2 runs in parallel; recipe search on 5,000 molecules, "
            "20 epochs"
        ),
        n_train=10_000,
        n_valid=1_000,
        n_test=10_000,
        n_features=60,
        epochs=40,
        jobs=2,
        recipe_n_train=5_000,
        recipe_epochs=20,
        recipe_seeds=5,
        extra_seeds=1,
        l1_sweep=(0.0, 0.01, PAPER_L1, 0.1, RECIPE_L1),
        train_sizes=(2_500, 10_000, 25_000),
        qmugs_epochs=40,
    ),
    "paper": Preset(
        name="paper",
        description=(
            "the paper's data protocol on one GPU: 110,000 training / 10,000 validation / rest (10,831) test "
            "molecules, nf = 128, 3 paired seeds x 5 arms, a fixed 16 epochs per run (not to convergence: sized "
            "so that the 15 runs, all at once on one H200 with CUDA graphs, fit in about 8 minutes)"
        ),
        n_train=110_000,
        n_valid=10_000,
        n_test=None,
        n_features=128,
        epochs=16,
        plateau_patience=10,
        seeds=(0, 1, 2),
        jobs=15,
        studies=("main",),
        recipe_n_train=20_000,
        recipe_epochs=20,
        recipe_seeds=3,
        l1_sweep=(0.0, 0.01, PAPER_L1, 0.1, RECIPE_L1),
        train_sizes=(5_000, 20_000, 50_000, 110_000),
        qmugs_epochs=200,
        eval_batch_size=1024,
        notes=(
            "Epochs sized from the H200 figures in benchmarks/README.md: a graphed training step of 128 QM9 "
            "molecules takes 1.5-1.9 ms, so 15 runs x 16 epochs x 860 steps x ~1.8 ms ~ 7 min of GPU time when "
            "the runs share the GPU (processes time-slice it); pass --epochs N for longer training.",
        ),
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
