"""Predictions for any number of input molecules in blocks: what ``fastdipole predict`` runs.

Inputs are taken in order (structure files, then SMILES files, then SMILES). An .h5 file is streamed in chunks
of ``block_molecules`` molecules (:class:`~fastdipole.data.streaming.H5Stream`): a chunk is checked as a whole
(vectorised) and, only when that finds a problem, molecule by molecule, so a bad record is named and, with
``skip_invalid``, skipped. Other files (SDF through RDKit's forward reader, the rest through ``ase.io.iread``)
and SMILES are read record by record, in blocks of ``block_molecules``, and checked per record. Each
:class:`Block` carries the rows of its molecules, so the caller can write them as they come: memory is bounded
by the block size, not by the number of molecules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..data.dataset import TOTAL_CHARGE_KEY, MoleculeDataset
from ..data.elements import symbol
from ..data.structures import (
    H5_SUFFIXES,
    MAX_LISTED_PROBLEMS,
    Record,
    _dataset,
    _smiles_record,
    iter_file,
    iter_h5,
    iter_smiles_file,
    record_problem,
)
from ..errors import DataError
from ..units import DEBYE_PER_E_ANGSTROM
from .evaluate import predict

#: Molecules per block (an .h5 chunk) of ``fastdipole predict``.
DEFAULT_BLOCK_MOLECULES = 16_384
#: Without --skip-invalid, inputs larger than this stop at the first block with invalid molecules.
EARLY_STOP_MOLECULES = 10_000

#: Columns of a molecule row that carry predictions (units in the names); a skipped molecule leaves them empty.
VALUE_COLUMNS = ("mu_debye", "mu_e_angstrom", "mu_x_e_angstrom", "mu_y_e_angstrom", "mu_z_e_angstrom",
                 "total_charge_e", "sum_of_charges_e")
MOLECULE_COLUMNS = ("molecule", "n_atoms", "formula", *VALUE_COLUMNS, "skipped")
ATOM_COLUMNS = ("molecule", "atom", "Z", "charge_e")


@dataclass
class Block:
    """Consecutive input molecules: ``rows`` (one per molecule, :data:`MOLECULE_COLUMNS`, input order) and, for the
    predicted ones, their atoms (``atom_molecule`` names, ``Z``, ``charges_e``, ``atom_offsets`` CSR)."""

    rows: list[list]
    atom_names: list[str]
    Z: np.ndarray
    charges_e: np.ndarray
    atom_offsets: np.ndarray
    problems: list[tuple[str, str]]  # (molecule name, why it cannot be predicted)


class Screening:
    """Runs ``model`` over all inputs block by block; counts molecules and problems as it goes."""

    def __init__(self, model, species, charge: float = 0.0, batch_size: int = 512, block_molecules: int | None = None):
        self.model, self.species, self.charge = model, sorted(int(s) for s in species), float(charge)
        self.batch_size = int(batch_size)
        self.block_molecules = int(block_molecules or DEFAULT_BLOCK_MOLECULES)
        self.n_molecules = self.n_predicted = 0
        self.problems: list[tuple[str, str]] = []  # the first MAX_LISTED_PROBLEMS
        self.n_problems = 0

    def blocks(self, structures=(), smiles=(), smiles_files=(), skip_invalid: bool = True) -> Iterator[Block]:
        """Every input molecule, in input order, in blocks. Without ``skip_invalid`` a large input stops at the
        first block with invalid molecules once ``EARLY_STOP_MOLECULES`` have been read (a small one is read to
        the end, so the error lists every invalid molecule)."""
        if not structures and not smiles and not smiles_files:
            raise DataError("no molecules to predict on: give structure files, --smiles or --smiles-file")
        for block in self._all_blocks(structures, smiles, smiles_files):
            yield block
            if not skip_invalid and self.n_problems and self.n_molecules >= EARLY_STOP_MOLECULES:
                self.check_outcome(skip_invalid, complete=False)

    def _all_blocks(self, structures, smiles, smiles_files) -> Iterator[Block]:
        for path in structures:
            path = Path(path)
            if path.suffix.lower() in H5_SUFFIXES and path.is_file():
                yield from self._h5_blocks(path)
            else:
                yield from self._record_blocks(iter_file(path, self.charge))
        for path in smiles_files:
            yield from self._record_blocks(iter_smiles_file(path))
        if smiles:
            yield from self._record_blocks(_smiles_record(s) for s in smiles)

    def _record_blocks(self, records: Iterator[Record]) -> Iterator[Block]:
        """Blocks of ``block_molecules`` records, taken from ``records`` as they come."""
        block: list[Record] = []
        for record in records:
            block.append(record)
            if len(block) == self.block_molecules:
                yield self._records_block(block)
                block = []
        if block:
            yield self._records_block(block)

    def check_outcome(self, skip_invalid: bool, complete: bool = True) -> None:
        """After all blocks: the one error about invalid molecules (without ``skip_invalid``), or about none left.
        ``complete=False``: called before the end of the input (the counts are of the molecules read so far)."""
        if self.n_problems and not skip_invalid:
            listed = "; ".join(f"{name}: {why}" for name, why in self.problems)
            more = f"; and {self.n_problems - len(self.problems)} more" if self.n_problems > len(self.problems) else ""
            read = f"{self.n_molecules} molecules" if complete else f"the first {self.n_molecules} molecules read"
            stopped = "" if complete else " (reading stopped there)"
            raise DataError(f"{self.n_problems} of {read} cannot be predicted ({listed}{more}){stopped}; "
                            "--skip-invalid predicts the others")
        if self.n_predicted == 0:
            name, why = self.problems[0]
            raise DataError(f"none of the {self.n_molecules} molecules can be predicted ({name}: {why})")

    # ---- sources ------------------------------------------------------------------------------------------

    def _h5_blocks(self, path: Path) -> Iterator[Block]:
        from ..data.streaming import H5Stream

        stream = H5Stream(path, charges=None, chunk_molecules=self.block_molecules, species=self.species)
        has_totals = TOTAL_CHARGE_KEY in stream.extra
        for lo, hi in stream.chunk_ranges():
            names = [f"{path}:{m}" for m in range(lo, hi)]
            try:
                chunk = stream.read(lo, hi)
            except DataError:  # find which molecules, one by one
                yield self._records_block(list(iter_h5(path, self.charge, slice(lo, hi), check=False)))
                continue
            if not has_totals:
                chunk.extra[TOTAL_CHARGE_KEY] = np.full(chunk.n_molecules, self.charge, dtype=np.float32)
            yield self._predicted_block(chunk, names, [None] * len(names))

    def _records_block(self, records: list[Record]) -> Block:
        if not records:
            return self._predicted_block(None, [], [])
        for r in records:
            r.problem = record_problem(r, self.species)
        good = [r for r in records if r.problem is None]
        dataset = _dataset(good) if good else None
        block = self._predicted_block(dataset, [r.name for r in records], [r.problem for r in records],
                                      [r.Z for r in records])
        return block

    # ---- one block ------------------------------------------------------------------------------------------

    def _predicted_block(self, dataset: MoleculeDataset | None, names: list[str], problems: list,
                         all_Z: list | None = None) -> Block:
        """Rows of molecules ``names`` (``problems[k]`` None: predicted, in order, from ``dataset``)."""
        self.n_molecules += len(names)
        block_problems = [(n, p) for n, p in zip(names, problems) if p is not None]
        self.n_problems += len(block_problems)
        self.problems += block_problems[:max(0, MAX_LISTED_PROBLEMS - len(self.problems))]
        empty = Block([], [], np.zeros(0, np.int64), np.zeros(0), np.zeros(1, np.int64), block_problems)
        if not names:
            return empty
        pred = predict(self.model, dataset, batch_size=self.batch_size) if dataset is not None else None
        good_names = [n for n, p in zip(names, problems) if p is None]
        self.n_predicted += len(good_names)
        rows: list[list] = []
        m = 0
        if pred is not None:
            offsets = pred.atom_offsets
            sums = np.add.reduceat(pred.charges_pred, offsets[:-1]) if len(pred.charges_pred) else np.zeros(0)
            mu_d = pred.mu_pred_debye
            vec = pred.dipole_pred_e_angstrom
            formulas = hill_formulas(pred.Z, offsets)
        for k, (name, problem) in enumerate(zip(names, problems)):
            if problem is None:
                n = int(offsets[m + 1] - offsets[m])
                rows.append([name, n, formulas[m], float(mu_d[m]), float(mu_d[m] / DEBYE_PER_E_ANGSTROM),
                             float(vec[m, 0]), float(vec[m, 1]), float(vec[m, 2]), float(pred.total_charge[m]),
                             float(sums[m]), ""])
                m += 1
            else:
                Z = all_Z[k] if all_Z is not None else np.zeros(0, np.int64)
                rows.append([name, len(Z), formula(Z) if len(Z) else "", *[""] * len(VALUE_COLUMNS), problem])
        if pred is None:
            return Block(rows, [], np.zeros(0, np.int64), np.zeros(0), np.zeros(1, np.int64), block_problems)
        return Block(rows, good_names, pred.Z, pred.charges_pred, pred.atom_offsets, block_problems)


def formula(Z) -> str:
    """Hill formula of atomic numbers Z: C and H first when there is carbon, then alphabetical."""
    return hill_formulas(np.asarray(Z, dtype=np.int64), np.array([0, len(Z)]))[0]


def hill_formulas(Z: np.ndarray, offsets: np.ndarray) -> list[str]:
    """:func:`formula` of every molecule of a flat batch (``offsets`` CSR), each distinct composition spelled
    once (a block of 16,384 QM9 molecules holds 100-330 distinct compositions)."""
    counts = np.diff(offsets)
    if len(counts) == 0:
        return []
    elements, column = np.unique(np.asarray(Z, dtype=np.int64), return_inverse=True)
    molecule = np.repeat(np.arange(len(counts)), counts)
    table = np.bincount(molecule * len(elements) + column.reshape(-1),
                        minlength=len(counts) * len(elements)).reshape(len(counts), len(elements))
    compositions, which = np.unique(table, axis=0, return_inverse=True)
    spelled = [_hill({symbol(int(z)): int(n) for z, n in zip(elements, row) if n}) for row in compositions]
    return [spelled[k] for k in which.reshape(-1)]


def _hill(counts: dict[str, int]) -> str:
    first = [s for s in ("C", "H") if "C" in counts and s in counts]
    order = first + sorted(s for s in counts if s not in first)
    return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in order)
