"""`TrainConfig`: every setting of a training run, saved as the run's ``config.json``.

Defaults are hippynn's QM9-like settings: 2 interaction layers x 3 atom layers, 20 sensitivities, distances
0.85 / 5.0 / 6.5 Angstrom, Adam lr 1e-3, batch 128, and fastdipole's recipe for the charges: total-charge
constraint, charge head started at the per-element mean charges, direction term, l1 = 0.3 (charges) and
l2 = 0.96 (dipole magnitude). ``loss="paper"`` gives the paper's loss exactly (l1 = 0.04).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from ..device import DEVICES

#: The paper's loss weights: charges (l1) and dipole magnitude (l2).
PAPER_L1 = 0.04
PAPER_L2 = 0.96

CHARGE_MODES = ("none", "mulliken", "average")
#: ``fastdipole``: the recipe below (defaults of the charge_* and direction_* fields); ``paper``: the paper's
#: model and loss exactly (unconstrained charge head, hippynn's initialisation, no direction term).
LOSSES = ("fastdipole", "paper")
#: How the charge head starts: ``element_means``: level-0 readout = the training split's mean label charge
#: per element (charge modes with labels only); ``element_means_only``: the same, with the readouts of the
#: higher levels zero, so the first charges are exactly the per-element means; ``random``: hippynn's.
CHARGE_INITS = ("element_means", "element_means_only", "random")
#: The recipe's charge weight (measured in reports/charges-cpu/REPORT.md: with l1 = 0.3 the charges come much
#: closer to Mulliken at no cost in dipole accuracy); the paper's is 0.04.
RECIPE_L1 = 0.3
#: What the dipole terms of the loss compare: ``magnitude``: |mu_pred| with |mu| (the paper; sign-blind);
#: ``vector``: the predicted vector with the file's ``mu_vec`` (|mu_pred - mu_vec|), which fixes the sign.
DIPOLE_TARGETS = ("magnitude", "vector")
#: The paper's settings that ``loss="paper"`` enforces.
PAPER_SETTINGS = {"charge_constraint": "none", "charge_init": "random", "direction_weight": 0.0, "l1": PAPER_L1,
                  "l2": PAPER_L2, "dipole_target": "magnitude"}
#: Values of fields that config.json files written before the field existed were trained with (l1 and l2 were
#: always saved).
LEGACY_SETTINGS = {"loss": "paper", **{k: v for k, v in PAPER_SETTINGS.items() if k not in ("l1", "l2")}}

#: Epochs of a default ``fastdipole train`` (sized so the bundled sample trains in a few minutes on 2 CPU cores).
DEFAULT_EPOCHS = 80


@dataclass
class TrainConfig:
    """Settings of one training run (units: Angstrom, e, e*Angstrom; lr per Adam step).

    ``data=None`` means the bundled QM9 sample; ``out=None`` means ``runs/<timestamp>``;
    ``species=None`` takes the elements present in the data; ``threads=None`` uses 1 thread on
    machines with <= 2 cores, else all cores; ``max_minutes=None`` means no time limit.
    """

    # data
    data: str | None = None
    charges: str = "mulliken"  # none | mulliken | average
    charge_array: str = "q_mulliken"  # per-atom label array read from the file (e)
    split: str = "random"  # random | qm9
    train_fraction: float = 0.8
    valid_fraction: float = 0.1
    seed: int = 0
    out: str | None = None
    # memory: load the whole file; stream: read it in chunks of chunk_molecules molecules, shuffled by chunks
    # (fastdipole.data.streaming); auto: stream files whose arrays would take more than 1 GiB in memory
    data_mode: str = "auto"
    chunk_molecules: int = 16_384
    # model (hippynn's HIPNN arguments)
    species: list[int] | None = None
    n_features: int = 60
    n_sensitivities: int = 20
    n_interactions: int = 2
    n_atom_layers: int = 3
    dist_soft_min: float = 0.85
    dist_soft_max: float = 5.0
    dist_hard_max: float = 6.5
    dipole_origin: str = "centroid"
    dipole_target: str = "magnitude"  # magnitude: |mu| as the paper | vector: the file's mu_vec (see DIPOLE_TARGETS)
    charge_constraint: str = "uniform"  # uniform (charges sum to the total charge) | none (the paper's head)
    charge_init: str = "element_means_only"  # see CHARGE_INITS
    # optimisation
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 128
    lr: float = 1e-3
    l1: float = RECIPE_L1  # weight of the charge terms (the paper's: 0.04, with --loss paper)
    l2: float = PAPER_L2  # weight of the dipole-magnitude terms
    charge_warmup_epochs: int = 0  # first epochs train the charge terms only (l2 = 0); needs charge labels
    loss: str = "fastdipole"  # fastdipole | paper (forces PAPER_SETTINGS)
    direction_weight: float = 1.0  # weight of the direction term (train.loss); needs charge labels to act
    direction_epochs: int = 0  # the direction term acts in the first this-many epochs (0: in every epoch)
    direction_form: str = "batch"  # batch | molecule (see train.loss)
    plateau_patience: int = 5  # epochs without a better valid dipole MAE before lr *= plateau_factor
    plateau_factor: float = 0.5
    patience: int = 15  # early stopping: epochs without a better valid dipole MAE
    min_lr: float = 1e-5  # early stopping: stop once the lr falls below this
    eval_batch_size: int = 512
    # machine
    device: str = "auto"
    threads: int | None = None
    backend: str = "auto"  # auto | compiled (C++/CUDA kernels) | reference (pure PyTorch); see fastdipole.ops
    # replay each padded batch size's training step from a CUDA graph: None (auto) = on CUDA devices only,
    # True = asked for (a note when the device is not CUDA), False = never
    cuda_graphs: bool | None = None
    physical_checks: bool = True  # refuse physically absurd data (fastdipole.data.physics); False: go on anyway
    max_minutes: float | None = None

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.loss == "paper":
            for name, value in PAPER_SETTINGS.items():
                setattr(self, name, value)
        from ..nn.dipole import CHARGE_CONSTRAINTS
        from .loss import DIRECTION_FORMS

        if self.charge_constraint not in CHARGE_CONSTRAINTS:
            raise ValueError(f"charge_constraint must be one of {CHARGE_CONSTRAINTS}, got {self.charge_constraint!r}")
        if self.charge_init not in CHARGE_INITS:
            raise ValueError(f"charge_init must be one of {CHARGE_INITS}, got {self.charge_init!r}")
        if self.direction_form not in DIRECTION_FORMS:
            raise ValueError(f"direction_form must be one of {DIRECTION_FORMS}, got {self.direction_form!r}")
        if self.dipole_target not in DIPOLE_TARGETS:
            raise ValueError(f"dipole_target must be one of {DIPOLE_TARGETS}, got {self.dipole_target!r}")
        if self.direction_weight < 0 or self.direction_epochs < 0:
            raise ValueError("need direction_weight >= 0 and direction_epochs >= 0")
        from ..data.splits import SPLIT_PROTOCOLS

        if self.split not in SPLIT_PROTOCOLS:
            raise ValueError(f"split must be one of {SPLIT_PROTOCOLS}, got {self.split!r}")
        if self.charges not in CHARGE_MODES:
            raise ValueError(f"charges must be one of {CHARGE_MODES}, got {self.charges!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        from ..ops import BACKENDS

        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        from ..data.streaming import DATA_MODES

        if self.data_mode not in DATA_MODES:
            raise ValueError(f"data_mode must be one of {DATA_MODES}, got {self.data_mode!r}")
        if self.chunk_molecules < 1:
            raise ValueError(f"chunk_molecules must be >= 1, got {self.chunk_molecules}")
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("need epochs >= 0, batch_size >= 1 and lr > 0")
        if self.l1 < 0 or self.l2 < 0:
            raise ValueError(f"loss weights must be >= 0, got l1={self.l1}, l2={self.l2}")
        if self.charge_warmup_epochs < 0:
            raise ValueError(f"charge_warmup_epochs must be >= 0, got {self.charge_warmup_epochs}")
        if self.charge_warmup_epochs and self.charges == "none":
            raise ValueError("charge_warmup_epochs needs charge labels (charges 'mulliken' or 'average', not 'none')")

    @staticmethod
    def resolved_later(name: str, value) -> bool:
        """Whether ``value`` of field ``name`` means "whatever the run resolves" (species None: the data's
        elements; data_mode "auto": memory or stream by file size), so it matches any saved value."""
        return (name == "species" and value is None) or (name == "data_mode" and value == "auto")

    # ---- (de)serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys (e.g. run metadata in config.json) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    # ---- derived settings --------------------------------------------------------------------------
    def data_path(self) -> Path:
        """The dataset file (the bundled sample when ``data`` is None), resolved to an absolute path."""
        if self.data is None:
            from ..data import bundled_sample_path

            return bundled_sample_path()
        return Path(self.data).expanduser().resolve()

    def model_kwargs(self) -> dict:
        """Keyword arguments of :meth:`fastdipole.nn.DipoleModel.from_config` (needs ``species``)."""
        if self.species is None:
            raise ValueError("species unknown: resolve it from the data first")
        return dict(
            species=[int(s) for s in self.species],
            n_features=self.n_features,
            n_sensitivities=self.n_sensitivities,
            dist_soft_min=self.dist_soft_min,
            dist_soft_max=self.dist_soft_max,
            dist_hard_max=self.dist_hard_max,
            n_interaction_layers=self.n_interactions,
            n_atom_layers=self.n_atom_layers,
            dipole_origin=self.dipole_origin,
            charge_constraint=self.charge_constraint,
        )

    def direction_weight_at(self, epoch: int) -> float:
        """Weight of the direction term in ``epoch`` (1-based): 0 without charge labels or past
        ``direction_epochs``."""
        if self.charges == "none" or (self.direction_epochs and epoch > self.direction_epochs):
            return 0.0
        return float(self.direction_weight)

    def uses_element_mean_init(self) -> bool:
        """Whether the charge head starts from the training split's per-element mean charges."""
        return self.charges != "none" and self.charge_init != "random"

    def resolved_threads(self) -> int:
        """Threads for torch: as configured, else 1 on <= 2 cores (shared small boxes) or all cores."""
        if self.threads is not None:
            return max(1, int(self.threads))
        cores = os.cpu_count() or 1
        return 1 if cores <= 2 else cores
