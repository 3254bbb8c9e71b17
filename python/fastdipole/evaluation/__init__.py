"""Evaluation of trained dipole models: batched predictions, error metrics and parity plots.

Units: dipoles in Debye (D) and e*Angstrom (e*A), charges in e.
"""

from .evaluate import EvaluationResult, Predictions, evaluate, metrics_from_predictions, predict, save_evaluation
from .metrics import charge_metrics, dipole_metrics, total_charge_metrics
from .plots import parity_plot

__all__ = [
    "EvaluationResult",
    "Predictions",
    "charge_metrics",
    "dipole_metrics",
    "evaluate",
    "metrics_from_predictions",
    "parity_plot",
    "predict",
    "save_evaluation",
    "total_charge_metrics",
]
