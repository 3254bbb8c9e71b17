"""Batched, gradient-free predictions of a DipoleModel on a dataset, and their error metrics."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ..data import MoleculeDataset
from ..device import resolve_device
from ..nn.dipole import centroid_point_dipole
from ..units import DEBYE_PER_E_ANGSTROM
from .accumulate import DEFAULT_SAMPLE_ATOMS, MetricAccumulator


class Predictions(NamedTuple):
    """Predictions for the evaluated molecules, in the order of ``index``.

    index: int64 (M,) molecule indices into the dataset. mu_pred_debye / mu_label_debye: (M,) dipole
    magnitudes, Debye. charges_pred: (N,) predicted atomic charges, e, atoms concatenated in molecule
    order; atom_offsets: int64 (M+1,) CSR offsets into it. charges_label: (N,) labels (e) or None.
    dipole_pred_e_angstrom: (M, 3) predicted dipole vectors, e*Angstrom, in the model's dipole origin.
    dipole_label_charges_e_angstrom: (M, 3) point dipoles of the label charges about each centroid, e*Angstrom
    (None without labels). Z: (N,) atomic numbers of the atoms. total_charge: (M,) total charges, e.
    mu_vec_label_debye: (M, 3) label dipole vectors, Debye (None when the dataset has none).
    """

    index: np.ndarray
    mu_pred_debye: np.ndarray
    mu_label_debye: np.ndarray
    charges_pred: np.ndarray
    charges_label: np.ndarray | None
    atom_offsets: np.ndarray
    dipole_pred_e_angstrom: np.ndarray | None = None
    dipole_label_charges_e_angstrom: np.ndarray | None = None
    Z: np.ndarray | None = None
    total_charge: np.ndarray | None = None
    mu_vec_label_debye: np.ndarray | None = None


class EvaluationResult(NamedTuple):
    """``metrics`` (JSON-ready dict, units in the key names), the raw ``predictions`` (None for a streamed
    evaluation) and ``plot_points``: (|mu| labels, |mu| predictions) in D and (charge labels, predictions) in e,
    or None without labels (a streamed evaluation keeps a random sample of the atoms)."""

    metrics: dict
    predictions: Predictions | None
    plot_points: tuple | None = None


@torch.no_grad()
def predict(model, dataset, indices=None, batch_size: int = 512, device=None, charges=None) -> Predictions:
    """Run ``model`` over molecules ``indices`` (default all) in batches, without gradients.

    ``dataset``: a :class:`MoleculeDataset` in memory, or an :class:`~fastdipole.data.streaming.H5Stream`
    (read chunk by chunk: memory bounded by the chunk size and the predictions kept). ``charges`` replaces the
    charge labels (e), as in :func:`~fastdipole.data.streaming.loader_for`.
    """
    from ..data.streaming import loader_for

    param = next(model.parameters())
    loader = loader_for(dataset, indices, batch_size, dtype=param.dtype, charges=charges)
    return predict_batches(model, loader, device)


@torch.no_grad()
def predict_batches(model, batches, device=None) -> Predictions:
    """:func:`predict` over any iterable of :class:`~fastdipole.data.Batch` (labels are taken from the batches)."""
    param = next(model.parameters())
    device = param.device if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    keys = ("index", "mu_pred", "mu_label", "dip_pred", "dip_label", "q_pred", "q_label", "counts", "Z", "total",
            "mu_vec")
    parts: dict[str, list] = {k: [] for k in keys}
    has_labels = has_vectors = True
    try:
        for batch in batches:
            total = None if batch.total_charge is None else batch.total_charge.to(device)
            out = model(batch.Z.to(device), batch.R.to(device), batch.offsets.to(device), total)
            parts["index"].append(batch.index.numpy())
            parts["mu_pred"].append(out.magnitude.double().cpu().numpy() * DEBYE_PER_E_ANGSTROM)
            parts["mu_label"].append(batch.mu_debye.double().numpy())
            parts["dip_pred"].append(out.dipole.double().cpu().numpy())
            parts["q_pred"].append(out.charges.double().cpu().numpy())
            parts["Z"].append(batch.Z.numpy())
            parts["total"].append(np.zeros(batch.n_molecules) if batch.total_charge is None
                                  else batch.total_charge.double().numpy())
            has_labels &= batch.charges is not None
            if batch.charges is not None:
                parts["q_label"].append(batch.charges.double().numpy())
                parts["dip_label"].append(centroid_point_dipole(batch.charges.double(), batch.R.double(),
                                                                batch.offsets).numpy())
            has_vectors &= batch.mu_vec_debye is not None
            if batch.mu_vec_debye is not None:
                parts["mu_vec"].append(batch.mu_vec_debye.double().numpy())
            parts["counts"].append(np.diff(batch.offsets.numpy()))
    finally:
        model.train(was_training)

    def cat(key, empty_shape=(0,), dtype=np.float64):
        return np.concatenate(parts[key]) if parts[key] else np.zeros(empty_shape, dtype)

    counts = cat("counts", dtype=np.int64)
    atom_offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=atom_offsets[1:])
    return Predictions(
        index=cat("index", dtype=np.int64),
        mu_pred_debye=cat("mu_pred"),
        mu_label_debye=cat("mu_label"),
        charges_pred=cat("q_pred"),
        charges_label=cat("q_label") if has_labels else None,
        atom_offsets=atom_offsets,
        dipole_pred_e_angstrom=cat("dip_pred", (0, 3)),
        dipole_label_charges_e_angstrom=cat("dip_label", (0, 3)) if has_labels else None,
        Z=cat("Z", dtype=np.int64),
        total_charge=cat("total"),
        mu_vec_label_debye=cat("mu_vec", (0, 3)) if has_vectors else None,
    )


def metrics_from_predictions(pred: Predictions) -> dict:
    """Dipole metrics (D, e*A, %); mean and max |total charge error| (e); with charge labels also charge
    MAE / RMSE (e) raw, per element and after removing each molecule's mean charge, the Pearson r, and the share
    of molecules whose predicted dipole points with the label charges' point dipole (``direction_agreement``).
    Computed by :class:`~fastdipole.evaluation.accumulate.MetricAccumulator`, as a streamed evaluation is."""
    return MetricAccumulator(sample_atoms=None).add(pred).metrics()


def evaluate(model, dataset: MoleculeDataset, indices=None, batch_size: int = 512, device=None,
             charges=None) -> EvaluationResult:
    """Predict molecules ``indices`` of ``dataset`` and compute their error metrics.

    Returns ``EvaluationResult(metrics, predictions)``; ``metrics`` keys carry their units
    (``dipole_mae_debye``, ``dipole_mae_e_angstrom``, ``charge_mae_e``, ...).
    """
    from ..data.streaming import H5Stream

    if isinstance(dataset, H5Stream):
        if charges is not None:
            raise ValueError("charges= replaces labels of an in-memory dataset only")
        return evaluate_streamed(model, dataset, indices, batch_size, device)
    pred = predict(model, dataset, indices, batch_size, device, charges)
    acc = MetricAccumulator(sample_atoms=None).add(pred)
    return EvaluationResult(acc.metrics(), pred, acc.plot_points())


def evaluate_streamed(model, stream, indices=None, batch_size: int = 512, device=None,
                      sample_atoms: int = DEFAULT_SAMPLE_ATOMS) -> EvaluationResult:
    """:func:`evaluate` over an :class:`~fastdipole.data.streaming.H5Stream`, batch by batch: memory grows with
    the molecules (~100 bytes each), not their atoms; the charge parity plot gets about ``sample_atoms`` atoms."""
    acc = accumulate(model, stream, indices, batch_size, device, sample_atoms)
    return EvaluationResult(acc.metrics(), None, acc.plot_points())


def accumulate(model, dataset, indices=None, batch_size: int = 512, device=None,
               sample_atoms: int | None = DEFAULT_SAMPLE_ATOMS) -> MetricAccumulator:
    """Predict ``indices`` of ``dataset`` (in memory or an :class:`~fastdipole.data.streaming.H5Stream`) batch by
    batch into a :class:`MetricAccumulator` (``sample_atoms`` as there)."""
    from ..data.streaming import loader_for

    param = next(model.parameters())
    loader = loader_for(dataset, indices, batch_size, dtype=param.dtype)
    n_atoms = int(np.diff(dataset.offsets)[loader.indices].sum())
    acc = MetricAccumulator(sample_atoms=sample_atoms, expected_atoms=n_atoms)
    for batch in loader:
        acc.add(predict_batches(model, [batch], device))
    return acc


def save_evaluation(result: EvaluationResult, out_dir, title: str = "", extra: dict | None = None) -> dict:
    """Write ``metrics.json`` (plus ``extra`` fields), ``dipole_parity.png`` and, with labels, ``charge_parity.png``.

    Returns the written paths by name. Files are replaced atomically.
    """
    from pathlib import Path

    from ..atomic import atomic_write_json
    from .plots import parity_plot

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mu_label, mu_pred, charges = result.plot_points
    paths = {"metrics": atomic_write_json({**(extra or {}), **result.metrics}, out / "metrics.json")}
    paths["dipole_parity"] = parity_plot(
        mu_label, mu_pred, out / "dipole_parity.png", quantity="dipole magnitude |mu|", units="D", title=title,
    )
    if charges is not None:
        paths["charge_parity"] = parity_plot(
            charges[0], charges[1], out / "charge_parity.png", quantity="atomic charge", units="e", title=title,
        )
    return paths
