"""`fastdipole reproduce`: the paper's Tables 1-3, figures and extra studies from real training runs.

Python API: ``reproduce(ReproduceOptions(out=..., data=..., preset="cpu"))`` -> path of REPORT.md.
Modules: ``presets`` (budgets), ``plan`` (which runs), ``datafiles`` (test set and training pools),
``runner`` (resumable, parallel runs), ``stats`` (summary statistics), ``tables``, ``figures``, ``report``, ``pipeline`` (all of it in order).
"""

from .pipeline import ReproduceOptions, reproduce
from .plan import RunSpec, plan_runs
from .presets import PRESETS, STUDIES, Preset, get_preset

__all__ = [
    "PRESETS",
    "STUDIES",
    "Preset",
    "ReproduceOptions",
    "RunSpec",
    "get_preset",
    "plan_runs",
    "reproduce",
]
