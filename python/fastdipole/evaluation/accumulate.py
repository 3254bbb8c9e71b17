"""Evaluation metrics of predictions that arrive block by block, in memory bounded by the number of molecules.

:class:`MetricAccumulator` keeps the per-molecule arrays (dipoles, their labels, each molecule's total-charge
excess: ~100 bytes per molecule) and reduces the per-atom ones to running sums per element
(:class:`ChargeSums`), plus a fixed-size random sample of atoms for the charge parity plot. It is the one
implementation of the evaluation metrics: :func:`~fastdipole.evaluation.metrics_from_predictions` feeds it all
predictions at once, streamed evaluation one chunk at a time.
"""

from __future__ import annotations

import numpy as np

from .metrics import direction_agreement, dipole_metrics, dipole_vector_metrics

#: Atoms kept for the charge parity plot of a streamed evaluation.
DEFAULT_SAMPLE_ATOMS = 200_000
_MAX_Z = 119


class ChargeSums:
    """Per-element running sums over atoms of predicted charges x and labels y (e), in float64."""

    FIELDS = ("n", "abs", "sq", "x", "y", "xy", "xx", "yy")

    def __init__(self):
        self.sums = {k: np.zeros(_MAX_Z) for k in self.FIELDS}
        self.abs_centred = 0.0  # sum of |x - y - (mean over the molecule of x - y)|

    def add(self, pred_e, label_e, Z, offsets) -> None:
        x, y = np.asarray(pred_e, np.float64), np.asarray(label_e, np.float64)
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(f"charge predictions and labels must both be (n_atoms,), got {x.shape} and {y.shape}")
        Z = np.asarray(Z, np.int64)
        e = x - y
        for key, values in (("n", None), ("abs", np.abs(e)), ("sq", e * e), ("x", x), ("y", y), ("xy", x * y),
                            ("xx", x * x), ("yy", y * y)):
            self.sums[key] += np.bincount(Z, weights=values, minlength=_MAX_Z)
        counts = np.diff(np.asarray(offsets, np.int64))
        if len(x):
            shift = np.repeat(np.add.reduceat(e, np.asarray(offsets[:-1], np.int64)) / np.maximum(counts, 1), counts)
            self.abs_centred += float(np.abs(e - shift).sum())

    @staticmethod
    def _metrics(s: dict) -> dict:
        n = s["n"]
        if n == 0:
            return {"n_atoms": 0, "charge_mae_e": float("nan"), "charge_rmse_e": float("nan"),
                    "charge_pearson_r": float("nan")}
        mx, my = s["x"] / n, s["y"] / n
        vx, vy = s["xx"] / n - mx * mx, s["yy"] / n - my * my
        cov = s["xy"] / n - mx * my
        # values constant within rounding (raw moments leave noise of ~1e-16 of the mean square): no correlation
        tiny = 1e-12 * max(s["xx"] / n, s["yy"] / n, 1e-300)
        r = float(cov / np.sqrt(vx * vy)) if n >= 2 and vx > tiny and vy > tiny else float("nan")
        return {"n_atoms": int(n), "charge_mae_e": float(s["abs"] / n), "charge_rmse_e": float(np.sqrt(s["sq"] / n)),
                "charge_pearson_r": max(-1.0, min(1.0, r)) if r == r else r}

    def metrics(self) -> dict:
        """charge MAE / RMSE (e), Pearson r over all atoms, the centred MAE and the same per element."""
        total = {k: float(v.sum()) for k, v in self.sums.items()}
        out = self._metrics(total)
        out["charge_mae_centred_e"] = self.abs_centred / total["n"] if total["n"] else float("nan")
        out["charge_by_element"] = {str(z): self._metrics({k: float(v[z]) for k, v in self.sums.items()})
                                    for z in np.flatnonzero(self.sums["n"])}
        return out


class MetricAccumulator:
    """Metrics of :class:`~fastdipole.evaluation.Predictions` added block by block (module doc).

    ``sample_atoms``: about how many atoms (predicted, label charge) to keep for the parity plot out of
    ``expected_atoms`` (each atom kept with the same chance, drawn with ``seed``); None keeps every atom, 0 none."""

    def __init__(self, sample_atoms: int | None = DEFAULT_SAMPLE_ATOMS, expected_atoms: int | None = None,
                 seed: int = 0):
        self.charges = ChargeSums()
        self.has_labels = None
        self.molecule_parts: dict[str, list] = {k: [] for k in ("mu_pred", "mu_label", "dip_pred", "dip_label",
                                                                "mu_vec", "excess")}
        self.sample_parts: list[tuple[np.ndarray, np.ndarray]] = []
        self.n_atoms = 0
        if sample_atoms == 0:
            self.keep_share = 0.0
        else:
            self.keep_share = 1.0 if sample_atoms is None or not expected_atoms else \
                min(1.0, sample_atoms / max(expected_atoms, 1))
        self.rng = np.random.default_rng(seed)

    def add(self, pred) -> "MetricAccumulator":
        offsets = np.asarray(pred.atom_offsets, np.int64)
        parts = self.molecule_parts
        parts["mu_pred"].append(np.asarray(pred.mu_pred_debye, np.float64))
        parts["mu_label"].append(np.asarray(pred.mu_label_debye, np.float64))
        parts["dip_pred"].append(np.asarray(pred.dipole_pred_e_angstrom, np.float64).reshape(-1, 3))
        if pred.mu_vec_label_debye is not None:
            parts["mu_vec"].append(np.asarray(pred.mu_vec_label_debye, np.float64))
        sums = np.add.reduceat(np.asarray(pred.charges_pred, np.float64), offsets[:-1]) if len(pred.charges_pred) \
            else np.zeros(len(offsets) - 1)
        total = np.zeros(len(sums)) if pred.total_charge is None else np.asarray(pred.total_charge, np.float64)
        parts["excess"].append(sums - total)
        self.n_atoms += len(pred.charges_pred)
        labelled = pred.charges_label is not None
        self.has_labels = labelled if self.has_labels is None else (self.has_labels and labelled)
        if labelled:
            self.charges.add(pred.charges_pred, pred.charges_label, pred.Z, offsets)
            parts["dip_label"].append(np.asarray(pred.dipole_label_charges_e_angstrom, np.float64).reshape(-1, 3))
            keep = np.flatnonzero(self.rng.random(len(pred.charges_pred)) < self.keep_share) \
                if self.keep_share < 1.0 else slice(None)
            self.sample_parts.append((np.asarray(pred.charges_label)[keep], np.asarray(pred.charges_pred)[keep]))
        return self

    @classmethod
    def merged(cls, parts: list["MetricAccumulator"]) -> "MetricAccumulator":
        """One accumulator holding the molecules of ``parts`` in order (e.g. the ranks of a distributed run);
        parts that saw no molecules are ignored."""
        out = cls(sample_atoms=None)
        parts = [p for p in parts if p.has_labels is not None]
        for p in parts:
            for key in out.molecule_parts:
                out.molecule_parts[key] += p.molecule_parts[key]
            for key in out.charges.sums:
                out.charges.sums[key] += p.charges.sums[key]
            out.charges.abs_centred += p.charges.abs_centred
            out.sample_parts += p.sample_parts
            out.n_atoms += p.n_atoms
        if parts:
            out.has_labels = all(p.has_labels for p in parts)
        return out

    def _cat(self, key, shape=(0,)):
        return np.concatenate(self.molecule_parts[key]) if self.molecule_parts[key] else np.zeros(shape)

    def metrics(self) -> dict:
        """The dict :func:`~fastdipole.evaluation.metrics_from_predictions` returns (units in the keys)."""
        metrics = dipole_metrics(self._cat("mu_pred"), self._cat("mu_label"))
        n_mu_vec = sum(len(p) for p in self.molecule_parts["mu_vec"])
        if self.molecule_parts["mu_vec"] and n_mu_vec == metrics["n_molecules"]:
            metrics.update(dipole_vector_metrics(self._cat("dip_pred", (0, 3)), self._cat("mu_vec", (0, 3))))
        if self.has_labels:
            metrics.update(self.charges.metrics())
            metrics.update(direction_agreement(self._cat("dip_pred", (0, 3)), self._cat("dip_label", (0, 3))))
        else:
            metrics.update({"n_atoms": int(self.n_atoms), "charge_mae_e": None, "charge_rmse_e": None,
                            "charge_mae_centred_e": None, "direction_agreement": None})
        excess = np.abs(self._cat("excess"))
        metrics.update({"total_charge_mean_abs_e": float(excess.mean()) if len(excess) else float("nan"),
                        "total_charge_max_abs_e": float(excess.max()) if len(excess) else float("nan")})
        return metrics

    def plot_points(self) -> tuple:
        """(|mu| labels, |mu| predictions) in D, and (charge labels, predictions) in e of the kept atoms
        (None without labels)."""
        charges = None
        if self.has_labels and self.sample_parts:
            charges = (np.concatenate([a for a, _ in self.sample_parts]),
                       np.concatenate([b for _, b in self.sample_parts]))
        return self._cat("mu_label"), self._cat("mu_pred"), charges
