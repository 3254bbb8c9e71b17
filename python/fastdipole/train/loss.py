"""The paper's training loss (dipole-magnitude errors plus an auxiliary atomic-charge loss) and the optional
direction term of fastdipole's recipe.

    L = l1 * (RMSE_q + MAE_q + mean|q_hat|) + l2 * (RMSE_mu + MAE_mu) [+ w_dir * D]

q terms compare predicted atomic charges with the labels (e) over all atoms of the batch;
``mean|q_hat|`` is an L1 penalty on the predicted charges (it keeps charges small where the labels
leave them free); mu terms compare predicted dipole *magnitudes* with the label magnitudes, both in
e*Angstrom. Charge mode ``none`` drops the whole l1 term (and needs no labels).

|mu| is the same for q and -q, so the dipole terms cannot choose the sign of the charges; only the small
charge term can, and training often settles in the flipped basin. D (off unless ``direction_weight`` > 0)
is a hinge on the cosine between the predicted dipole and the label charges' point dipole
``sum_i q_label_i (R_i - centroid)``: ``D = relu(DIRECTION_MARGIN - mean_m cos_m)`` over the batch's
molecules whose label dipole is at least ``MIN_DIRECTION_E_ANGSTROM``. It is zero once the batch's dipoles
mostly point with the labels, so it picks the basin without pulling single molecules whose point-charge
dipole points elsewhere (a per-molecule hinge did, at a cost in accuracy).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..nn.dipole import centroid_point_dipole
from ..units import DEBYE_PER_E_ANGSTROM
from .config import CHARGE_MODES, PAPER_L1, PAPER_L2

#: Direction term: zero while the batch-mean cosine is above this margin.
DIRECTION_MARGIN = 0.5
#: Molecules whose label point dipole is smaller than this (e*Angstrom) have no direction to agree with.
MIN_DIRECTION_E_ANGSTROM = 1e-3
#: Forms of the direction term (exploration): ``batch`` = relu(margin - mean cos), ``molecule`` = mean relu(-cos).
DIRECTION_FORMS = ("batch", "molecule")


class LossTerms(NamedTuple):
    """Total loss and its parts (scalar tensors). Charge parts are None when the charge term is off."""

    total: Tensor
    dipole_rmse: Tensor  #: e*Angstrom
    dipole_mae: Tensor  #: e*Angstrom
    charge_rmse: Tensor | None  #: e
    charge_mae: Tensor | None  #: e
    charge_abs_mean: Tensor | None  #: mean |q_hat|, e
    direction: Tensor | None = None  #: direction hinge D (dimensionless), None when off

    def as_floats(self) -> dict[str, float | None]:
        """Plain floats for logging (None for terms that are off), read in one device-to-host copy (on a GPU
        each separate read would wait for the device)."""
        present = {k: v for k, v in self._asdict().items() if v is not None}
        values = torch.stack([v.detach().reshape(()).to(torch.float64) for v in present.values()]).tolist()
        out: dict[str, float | None] = dict.fromkeys(self._fields)
        out.update(zip(present, values))
        return out


def _loss_terms(pred_charges, label_charges, pred_magnitude, label_magnitude, l1, l2, atom_mean,
                molecule_mean, pred_dipole=None, label_dipole=None, direction_weight=0.0,
                direction_form="batch", label_vector=None) -> LossTerms:
    """The loss with the means over atoms and over molecules given as functions. With ``label_vector``
    ((n_molecules, 3), e*Angstrom) the dipole terms compare vectors: the error is |pred_dipole - label_vector|."""
    if pred_magnitude.ndim != 1 or pred_magnitude.shape != label_magnitude.shape:
        raise ValueError(
            "dipole magnitudes must both have shape (n_molecules,), got "
            f"{tuple(pred_magnitude.shape)} and {tuple(label_magnitude.shape)}"
        )
    if label_vector is None:
        d_mu = pred_magnitude - label_magnitude
    else:
        if pred_dipole is None or pred_dipole.shape != label_vector.shape:
            raise ValueError("the vector dipole target needs predicted and label vectors of shape (n_molecules, 3)")
        d_mu = torch.linalg.vector_norm(pred_dipole - label_vector, dim=-1)
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
    direction = None
    if direction_weight > 0:
        if pred_dipole is None or label_dipole is None:
            raise ValueError("the direction term needs the predicted and the label-charge dipole vectors")
        direction = _direction_hinge(pred_dipole, label_dipole, molecule_mean, direction_form)
        total = total + direction_weight * direction
    return LossTerms(total, mu_rmse, mu_mae, q_rmse, q_mae, q_abs, direction)


def _direction_hinge(pred_dipole: Tensor, label_dipole: Tensor, molecule_mean, form: str) -> Tensor:
    """Hinge on cos(predicted dipole, label point dipole) over molecules with a label direction (module doc)."""
    if pred_dipole.shape != label_dipole.shape or pred_dipole.ndim != 2 or pred_dipole.shape[1] != 3:
        raise ValueError(f"dipole vectors must both be (n_molecules, 3), got {tuple(pred_dipole.shape)} "
                         f"and {tuple(label_dipole.shape)}")
    label_norm = torch.linalg.vector_norm(label_dipole, dim=-1)
    has_direction = (label_norm >= MIN_DIRECTION_E_ANGSTROM).to(pred_dipole.dtype)
    pred_norm = torch.linalg.vector_norm(pred_dipole, dim=-1)
    cos = (pred_dipole * label_dipole).sum(-1) / (pred_norm * label_norm).clamp_min(1e-12)
    if form == "molecule":
        return molecule_mean(has_direction * torch.relu(-cos))
    if form != "batch":
        raise ValueError(f"direction_form must be one of {DIRECTION_FORMS}, got {form!r}")
    # Mean over the molecules that have a direction: the weights of molecule_mean, renormalised.
    mean_cos = molecule_mean(has_direction * cos) / molecule_mean(has_direction).clamp_min(1e-12)
    return torch.relu(DIRECTION_MARGIN - mean_cos)


def paper_loss(
    pred_charges: Tensor,
    label_charges: Tensor | None,
    pred_magnitude_e_angstrom: Tensor,
    label_magnitude_e_angstrom: Tensor,
    l1: float = PAPER_L1,
    l2: float = PAPER_L2,
    *,
    pred_dipole: Tensor | None = None,
    label_dipole: Tensor | None = None,
    direction_weight: float = 0.0,
    direction_form: str = "batch",
    label_vector: Tensor | None = None,
) -> LossTerms:
    """The paper's loss (exactly, with the default ``direction_weight=0`` and no ``label_vector``). ``label_charges=None`` (charge mode
    ``none``) drops the l1 term. ``pred_dipole`` / ``label_dipole`` ((n_molecules, 3), e*Angstrom) feed the
    direction term when ``direction_weight`` > 0.

    Shapes: charges (n_atoms,), magnitudes (n_molecules,). Mismatched shapes raise instead of
    broadcasting (hippynn's (M,) vs (M,1) pitfall silently builds an M x M error matrix). ``label_vector``
    ((n_molecules, 3), e*Angstrom) makes the dipole terms compare ``pred_dipole`` with it instead of magnitudes.
    """
    return _loss_terms(pred_charges, label_charges, pred_magnitude_e_angstrom, label_magnitude_e_angstrom, l1, l2,
                       torch.mean, torch.mean, pred_dipole, label_dipole, direction_weight, direction_form,
                       label_vector)


def weighted_paper_loss(
    pred_charges: Tensor,
    label_charges: Tensor | None,
    pred_magnitude_e_angstrom: Tensor,
    label_magnitude_e_angstrom: Tensor,
    atom_weights: Tensor,
    molecule_weights: Tensor,
    l1: float = PAPER_L1,
    l2: float = PAPER_L2,
    *,
    pred_dipole: Tensor | None = None,
    label_dipole: Tensor | None = None,
    direction_weight: float = 0.0,
    direction_form: str = "batch",
    label_vector: Tensor | None = None,
) -> LossTerms:
    """:func:`paper_loss` over a padded batch: every mean is ``sum(weight * x)`` with weights ``1 / n_real`` on
    the real atoms (molecules) and 0 on the padding, so the padding adds nothing and the shapes never depend on
    how many entries are real (what a CUDA graph needs). Equal to :func:`paper_loss` on the real entries up to
    float rounding."""
    return _loss_terms(pred_charges, label_charges, pred_magnitude_e_angstrom, label_magnitude_e_angstrom, l1, l2,
                       lambda x: torch.sum(atom_weights * x), lambda x: torch.sum(molecule_weights * x),
                       pred_dipole, label_dipole, direction_weight, direction_form, label_vector)


def batch_loss(output, batch, charge_mode: str, l1: float = PAPER_L1, l2: float = PAPER_L2,
               direction_weight: float = 0.0, direction_form: str = "batch",
               dipole_target: str = "magnitude", means=None) -> LossTerms:
    """Loss of a model ``output`` (DipoleOutput) on a ``batch`` (labels: mu in Debye, charges in e).

    ``charge_mode``: ``none`` ignores the batch's charges; ``mulliken`` / ``average`` use them (the
    loader already holds the right labels: the file's charges or the per-element means).
    ``direction_weight`` > 0 adds the direction term against the label charges' point dipole (about each
    molecule's centroid). ``dipole_target="vector"`` compares the predicted dipole vectors with the batch's
    ``mu_vec_debye`` (about the centroid; for an ion the label must be about the same origin).
    ``means``: (atom_mean, molecule_mean) functions replacing ``torch.mean``; a distributed run passes means
    over the atoms and molecules of all processes' batches (:func:`fastdipole.train.distributed.step_means`).
    """
    atom_mean, molecule_mean = means if means is not None else (torch.mean, torch.mean)
    if charge_mode not in CHARGE_MODES:
        raise ValueError(f"charge_mode must be one of {CHARGE_MODES}, got {charge_mode!r}")
    labels = None
    if charge_mode != "none":
        if batch.charges is None:
            raise ValueError(f"charge mode '{charge_mode}' needs per-atom charge labels but the batch has none")
        labels = batch.charges
    label_mag = batch.mu_debye / DEBYE_PER_E_ANGSTROM
    label_vector = None
    if dipole_target == "vector":
        if batch.mu_vec_debye is None:
            raise ValueError("the vector dipole target needs dipole vectors (mu_vec) but the batch has none")
        label_vector = batch.mu_vec_debye / DEBYE_PER_E_ANGSTROM
    label_dipole = None
    if direction_weight > 0 and labels is not None:
        label_dipole = centroid_point_dipole(labels, batch.R, batch.offsets)
    pred_dipole = output.dipole if label_dipole is not None or label_vector is not None else None
    return _loss_terms(output.charges, labels, output.magnitude, label_mag, l1, l2, atom_mean, molecule_mean,
                       pred_dipole, label_dipole, direction_weight if label_dipole is not None else 0.0,
                       direction_form, label_vector)
