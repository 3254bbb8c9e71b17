"""The runs of a `reproduce`: which trainings each study needs, named ``<config>-seed<k>``.

Runs are shared between studies where the settings are identical (the main ``mulliken`` run of the
first seed is also the l1 = 0.04 point of the sweep and the main-size point of the size study), so
nothing is trained twice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .presets import PAPER_L1, PAPER_L2, STUDIES, Preset

#: Charge modes of the main comparison, in table order.
CONFIGS = ("none", "mulliken", "average")


@dataclass(frozen=True)
class RunSpec:
    """One training run of a reproduce (folder ``runs/<name>``).

    ``n_train`` selects the training pool file (``data/pool_n<n_train>.h5``); ``dataset`` is ``qm9``
    (the ``--data`` file) or ``qmugs`` (the converted ``--qmugs`` SDF files).
    """

    name: str
    charges: str
    seed: int
    n_train: int
    epochs: int
    l1: float = PAPER_L1
    l2: float = PAPER_L2
    warmup_epochs: int = 0
    dataset: str = "qm9"
    studies: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "RunSpec":
        values = dict(values)
        values["studies"] = tuple(values.get("studies", ()))
        return cls(**values)


def l1_label(l1: float) -> str:
    return f"{l1:g}"


def plan_runs(preset: Preset, seeds, only=STUDIES, qmugs: bool = False, warmup_supported: bool = True) -> list[RunSpec]:
    """Every run the chosen studies need, in a good training order (main runs first, seed by seed).

    The l1 sweep keeps l2 = 0.96 fixed, so l1 = 0 is exactly the dipole-only (``none``) run.
    The size study scales the epoch cap by ``n_train(main) / n_train`` so each run takes about the
    same number of optimizer steps.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("need at least one seed")
    unknown = set(only) - set(STUDIES)
    if unknown:
        raise ValueError(f"unknown studies {sorted(unknown)}; choose from {', '.join(STUDIES)}")
    first = seeds[0]
    runs: dict[str, RunSpec] = {}

    def add(spec: RunSpec, study: str) -> None:
        old = runs.get(spec.name)
        if old is None:
            runs[spec.name] = dataclasses.replace(spec, studies=(study,))
        elif study not in old.studies:
            runs[spec.name] = dataclasses.replace(old, studies=(*old.studies, study))

    def main_run(charges: str, seed: int) -> RunSpec:
        return RunSpec(f"{charges}-seed{seed}", charges, seed, preset.n_train, preset.epochs)

    if "main" in only:
        for seed in seeds:
            for charges in CONFIGS:
                add(main_run(charges, seed), "main")
    if "sweep" in only:
        for l1 in preset.l1_sweep:
            if l1 == 0:
                add(main_run("none", first), "sweep")  # l1 = 0 with l2 fixed is the dipole-only loss
            elif l1 == PAPER_L1:
                add(main_run("mulliken", first), "sweep")
            else:
                name = f"mulliken-l1_{l1_label(l1)}-seed{first}"
                add(RunSpec(name, "mulliken", first, preset.n_train, preset.epochs, l1=float(l1)), "sweep")
    if "size" in only:
        for n in preset.train_sizes:
            for charges in ("none", "mulliken"):
                if n == preset.n_train:
                    add(main_run(charges, first), "size")
                else:
                    epochs = max(1, round(preset.epochs * preset.n_train / n))
                    add(RunSpec(f"{charges}-n{n}-seed{first}", charges, first, int(n), epochs), "size")
    if "warmup" in only and warmup_supported and preset.warmup_epochs > 0:
        add(main_run("none", first), "warmup")
        add(main_run("mulliken", first), "warmup")
        k = preset.warmup_epochs
        add(RunSpec(f"mulliken-warmup{k}-seed{first}", "mulliken", first, preset.n_train, preset.epochs,
                    warmup_epochs=k), "warmup")
    if "qmugs" in only and qmugs:
        for seed in seeds:
            for charges in ("none", "mulliken"):
                add(RunSpec(f"qmugs-{charges}-seed{seed}", charges, seed, 0, preset.qmugs_epochs, dataset="qmugs"),
                    "qmugs")
    return list(runs.values())


def pool_sizes(specs: list[RunSpec]) -> list[int]:
    """Training-pool sizes the QM9 runs need (one pool file each)."""
    return sorted({s.n_train for s in specs if s.dataset == "qm9"})
