"""The paper's training loss: dipole-magnitude errors plus an auxiliary atomic-charge loss.

    L = l1 * (RMSE_q + MAE_q + mean|q_hat|) + l2 * (RMSE_mu + MAE_mu)

q terms compare predicted atomic charges with the labels (e) over all atoms of the batch;
``mean|q_hat|`` is an L1 penalty on the predicted charges (it keeps charges small where the labels
leave them free); mu terms compare predicted dipole *magnitudes* with the label magnitudes, both in
e*Angstrom. Charge mode ``none`` drops the whole l1 term (and needs no labels).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..units import DEBYE_PER_E_ANGSTROM
from .config import CHARGE_MODES

#: The paper's loss weights: charges (l1) and dipole magnitude (l2).
DEFAULT_L1 = 0.04
DEFAULT_L2 = 0.96


class LossTerms(NamedTuple):
    """Total loss and its parts (scalar tensors). Charge parts are None when the charge term is off."""

    total: Tensor
    dipole_rmse: Tensor  #: e*Angstrom
    dipole_mae: Tensor  #: e*Angstrom
    charge_rmse: Tensor | None  #: e
    charge_mae: Tensor | None  #: e
    charge_abs_mean: Tensor | None  #: mean |q_hat|, e

    def as_floats(self) -> dict[str, float | None]:
        """Plain floats for logging (None for terms that are off), read in one device-to-host copy (on a GPU
        each separate read would wait for the device)."""
        present = {k: v for k, v in self._asdict().items() if v is not None}
        values = torch.stack([v.detach().reshape(()).to(torch.float64) for v in present.values()]).tolist()
        out: dict[str, float | None] = dict.fromkeys(self._fields)
        out.update(zip(present, values))
        return out


def _loss_terms(pred_charges, label_charges, pred_magnitude, label_magnitude, l1, l2, atom_mean,
                molecule_mean) -> LossTerms:
    """The paper's loss with the means over atoms and over molecules given as functions."""
    if pred_magnitude.ndim != 1 or pred_magnitude.shape != label_magnitude.shape:
        raise ValueError(
            "dipole magnitudes must both have shape (n_molecules,), got "
            f"{tuple(pred_magnitude.shape)} and {tuple(label_magnitude.shape)}"
        )
    d_mu = pred_magnitude - label_magnitude
    mu_rmse, mu_mae = torch.sqrt(molecule_mean(d_mu * d_mu)), molecule_mean(d_mu.abs())
    total = l2 * (mu_rmse + mu_mae)
    if label_charges is None:
        return LossTerms(total, mu_rmse, mu_mae, None, None, None)
    if pred_charges.ndim != 1 or pred_charges.shape != label_charges.shape:
        raise ValueError(
            f"charges must both have shape (n_atoms,), got {tuple(pred_charges.shape)} and {tuple(label_charges.shape)}"
        )
    d_q = pred_charges - label_charges
    q_rmse, q_mae = torch.sqrt(atom_mean(d_q * d_q)), atom_mean(d_q.abs())
    q_abs = atom_mean(pred_charges.abs())
    total = total + l1 * (q_rmse + q_mae + q_abs)
    return LossTerms(total, mu_rmse, mu_mae, q_rmse, q_mae, q_abs)


def paper_loss(
    pred_charges: Tensor,
    label_charges: Tensor | None,
    pred_magnitude_e_angstrom: Tensor,
    label_magnitude_e_angstrom: Tensor,
    l1: float = DEFAULT_L1,
    l2: float = DEFAULT_L2,
) -> LossTerms:
    """The paper's loss. ``label_charges=None`` (charge mode ``none``) drops the l1 term.

    Shapes: charges (n_atoms,), magnitudes (n_molecules,). Mismatched shapes raise instead of
    broadcasting (hippynn's (M,) vs (M,1) pitfall silently builds an M x M error matrix).
    """
    return _loss_terms(pred_charges, label_charges, pred_magnitude_e_angstrom, label_magnitude_e_angstrom, l1, l2,
                       torch.mean, torch.mean)


def weighted_paper_loss(
    pred_charges: Tensor,
    label_charges: Tensor | None,
    pred_magnitude_e_angstrom: Tensor,
    label_magnitude_e_angstrom: Tensor,
    atom_weights: Tensor,
    molecule_weights: Tensor,
    l1: float = DEFAULT_L1,
    l2: float = DEFAULT_L2,
) -> LossTerms:
    """:func:`paper_loss` over a padded batch: every mean is ``sum(weight * x)`` with weights ``1 / n_real`` on
    the real atoms (molecules) and 0 on the padding, so the padding adds nothing and the shapes never depend on
    how many entries are real (what a CUDA graph needs). Equal to :func:`paper_loss` on the real entries up to
    float rounding."""
    return _loss_terms(pred_charges, label_charges, pred_magnitude_e_angstrom, label_magnitude_e_angstrom, l1, l2,
                       lambda x: torch.sum(atom_weights * x), lambda x: torch.sum(molecule_weights * x))


def batch_loss(output, batch, charge_mode: str, l1: float = DEFAULT_L1, l2: float = DEFAULT_L2) -> LossTerms:
    """Loss of a model ``output`` (DipoleOutput) on a ``batch`` (labels: mu in Debye, charges in e).

    ``charge_mode``: ``none`` ignores the batch's charges; ``mulliken`` / ``average`` use them (the
    loader already holds the right labels: the file's charges or the per-element means).
    """
    if charge_mode not in CHARGE_MODES:
        raise ValueError(f"charge_mode must be one of {CHARGE_MODES}, got {charge_mode!r}")
    labels = None
    if charge_mode != "none":
        if batch.charges is None:
            raise ValueError(f"charge mode '{charge_mode}' needs per-atom charge labels but the batch has none")
        labels = batch.charges
    label_mag = batch.mu_debye / DEBYE_PER_E_ANGSTROM
    return paper_loss(output.charges, labels, output.magnitude, label_mag, l1, l2)
