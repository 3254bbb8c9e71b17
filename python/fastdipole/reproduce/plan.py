"""The runs of a `reproduce`: arms (training recipes), and which runs each study needs, named ``<arm>-seed<k>``.

An *arm* is a set of :class:`~fastdipole.train.TrainConfig` settings. Every run of one seed shares the split
of the training pool and the initial weights (the trainer seeds both from the run's seed; arms that start
the charge head at per-element mean charges change only that layer). Runs are shared between studies where
the settings are identical (the recipe run of the first seed is also the l1 = RECIPE_L1 point of the sweep and
a point of the size study), so nothing is trained twice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..train.config import PAPER_L1, PAPER_L2, RECIPE_L1
from .presets import STUDIES, Preset

#: Arms of the main comparison, in table order: name -> TrainConfig settings and l1 (the rest: TrainConfig
#: defaults, i.e. fastdipole's recipe).
MAIN_ARMS: dict[str, dict] = {
    "dipole-only": {"charges": "none", "l1": RECIPE_L1},  # l1 is unused: no charge term
    "paper": {"charges": "mulliken", "loss": "paper", "l1": PAPER_L1},
    "paper-neutral": {"charges": "mulliken", "charge_init": "random", "direction_weight": 0.0, "l1": PAPER_L1},
    "recipe": {"charges": "mulliken", "l1": RECIPE_L1},
    "average": {"charges": "average", "l1": RECIPE_L1},
}

#: What each arm is, for the report.
ARM_DESCRIPTIONS = {
    "dipole-only": "dipole terms only (l1 term off); same model as the recipe (neutral charges)",
    "paper": "the paper's model and loss exactly: unconstrained charge head, hippynn's initialisation, "
             "l1 = 0.04 on Mulliken charges",
    "paper-neutral": "the paper's loss (l1 = 0.04) with the total-charge constraint (charges sum to 0); random "
                     "initialisation",
    "recipe": f"fastdipole's default recipe on Mulliken charges (from the recipe search: neutral charges, charge "
              f"head started at the per-element means, batch direction hinge, l1 = {RECIPE_L1})",
    "average": "the recipe with per-element average charges as labels",
}

#: Settings every recipe-search candidate spells out (so a later change of TrainConfig's defaults leaves
#: the finished search runs valid): the paper's loss with the total-charge constraint (`neutral`), Mulliken labels.
SEARCH_BASE = {"charges": "mulliken", "loss": "fastdipole", "charge_constraint": "uniform", "charge_init": "random",
                "direction_weight": 0.0, "direction_epochs": 0, "direction_form": "batch"}

#: Candidates of the recipe search (l2 = 0.96; l1 = 0.04 unless a candidate says otherwise): name -> settings.
RECIPE_CANDIDATES: dict[str, dict] = {
    "paper": {**SEARCH_BASE, "loss": "paper", "charge_constraint": "none"},
    "neutral": SEARCH_BASE,
    "neutral-means": {**SEARCH_BASE, "charge_init": "element_means"},
    "neutral-means-only": {**SEARCH_BASE, "charge_init": "element_means_only"},
    "means-batch-hinge": {**SEARCH_BASE, "charge_init": "element_means", "direction_weight": 1.0},
    "means-only-batch-hinge": {**SEARCH_BASE, "charge_init": "element_means_only", "direction_weight": 1.0},
    "means-molecule-hinge": {**SEARCH_BASE, "charge_init": "element_means", "direction_weight": 1.0,
                             "direction_form": "molecule"},
    "means-molecule-hinge-5ep": {**SEARCH_BASE, "charge_init": "element_means", "direction_weight": 1.0,
                                 "direction_form": "molecule", "direction_epochs": 5},
    "dipole-only": {**SEARCH_BASE, "charges": "none"},
    # a larger charge weight on top of the best start (the sweep of the main study varies l1 of the recipe)
    "means-only-batch-hinge-l1_0.1": {**SEARCH_BASE, "charge_init": "element_means_only", "direction_weight": 1.0,
                                      "l1": 0.1},
    "means-only-batch-hinge-l1_0.3": {**SEARCH_BASE, "charge_init": "element_means_only", "direction_weight": 1.0,
                                      "l1": 0.3},
}


@dataclass(frozen=True)
class RunSpec:
    """One training run of a reproduce (folder ``runs/<name>``).

    ``settings``: TrainConfig fields of the arm (charges, loss, charge_init, ...), as sorted (key, value) pairs
    so the spec stays hashable. ``n_train`` selects the training pool file (``data/pool_n<n_train>.h5``);
    ``dataset`` is ``qm9`` (the ``--data`` file) or ``qmugs`` (the converted ``--qmugs`` SDF files).
    """

    name: str
    arm: str
    seed: int
    n_train: int
    epochs: int
    settings: tuple = ()
    l1: float = PAPER_L1
    l2: float = PAPER_L2
    dataset: str = "qm9"
    studies: tuple[str, ...] = field(default=())

    @property
    def charges(self) -> str:
        return dict(self.settings).get("charges", "mulliken")

    def config_settings(self) -> dict:
        """The arm's TrainConfig fields plus l1 / l2."""
        return {**dict(self.settings), "l1": self.l1, "l2": self.l2}

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["settings"] = dict(self.settings)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "RunSpec":
        values = dict(values)
        values["settings"] = tuple(sorted(dict(values.get("settings", {})).items()))
        values["studies"] = tuple(values.get("studies", ()))
        return cls(**values)


def l1_label(l1: float) -> str:
    return f"{l1:g}"


def make_spec(arm: str, settings: dict, seed: int, n_train: int, epochs: int, name: str | None = None,
              **kw) -> RunSpec:
    """A run of ``arm``: its ``settings`` (an ``l1`` there becomes the spec's, default the paper's 0.04)."""
    settings = dict(settings)
    kw.setdefault("l1", float(settings.pop("l1", PAPER_L1)))
    settings.pop("l1", None)
    return RunSpec(name or f"{arm}-seed{seed}", arm, int(seed), int(n_train), int(epochs),
                   tuple(sorted(settings.items())), **kw)


def plan_runs(preset: Preset, seeds, only=STUDIES, qmugs: bool = False) -> list[RunSpec]:
    """Every run the chosen studies need, in a good training order (main runs first, seed by seed).

    Every QM9 run trains for the preset's fixed number of epochs (no wall-clock budget, no early stopping).
    The l1 sweep varies l1 of the recipe with l2 = 0.96 fixed; the size study trains dipole-only and the
    recipe on nested pools; the recipe search trains every candidate of ``RECIPE_CANDIDATES``. The sweep and
    the size study use the first ``preset.extra_seeds`` seeds.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("need at least one seed")
    unknown = set(only) - set(STUDIES)
    if unknown:
        raise ValueError(f"unknown studies {sorted(unknown)}; choose from {', '.join(STUDIES)}")
    extra_seeds = seeds[: max(1, preset.extra_seeds)]
    runs: dict[str, RunSpec] = {}

    def add(spec: RunSpec, study: str) -> None:
        old = runs.get(spec.name)
        if old is None:
            runs[spec.name] = dataclasses.replace(spec, studies=(study,))
        elif study not in old.studies:
            runs[spec.name] = dataclasses.replace(old, studies=(*old.studies, study))

    def main_run(arm: str, seed: int) -> RunSpec:
        return make_spec(arm, MAIN_ARMS[arm], seed, preset.n_train, preset.epochs)

    if "main" in only:
        for seed in seeds:
            for arm in MAIN_ARMS:
                add(main_run(arm, seed), "main")
    if "recipes" in only:
        for seed in seeds[: max(1, preset.recipe_seeds)]:
            for arm, settings in RECIPE_CANDIDATES.items():
                add(make_spec(arm, settings, seed, preset.recipe_n_train, preset.recipe_epochs,
                              name=f"search-{arm}-seed{seed}"), "recipes")
    if "sweep" in only:
        for seed in extra_seeds:
            for l1 in preset.l1_sweep:
                if l1 == 0:
                    add(main_run("dipole-only", seed), "sweep")  # l1 = 0 with l2 fixed is the dipole-only loss
                elif l1 == RECIPE_L1:
                    add(main_run("recipe", seed), "sweep")
                else:
                    add(make_spec("recipe", MAIN_ARMS["recipe"], seed, preset.n_train, preset.epochs,
                                  name=f"recipe-l1_{l1_label(l1)}-seed{seed}", l1=float(l1)), "sweep")
    if "size" in only:
        for seed in extra_seeds:
            for n in preset.train_sizes:
                for arm in ("dipole-only", "recipe"):
                    if n == preset.n_train:
                        add(main_run(arm, seed), "size")
                    else:
                        add(make_spec(arm, MAIN_ARMS[arm], seed, n, preset.epochs, name=f"{arm}-n{n}-seed{seed}"),
                            "size")
    if "qmugs" in only and qmugs:
        for seed in seeds:
            for arm in ("dipole-only", "recipe"):
                add(make_spec(arm, MAIN_ARMS[arm], seed, 0, preset.qmugs_epochs, name=f"qmugs-{arm}-seed{seed}",
                              dataset="qmugs"), "qmugs")
    return list(runs.values())


def pool_sizes(specs: list[RunSpec]) -> list[int]:
    """Training-pool sizes the QM9 runs need (one pool file each)."""
    return sorted({s.n_train for s in specs if s.dataset == "qm9"})
