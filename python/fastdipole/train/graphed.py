"""A training step replayed from CUDA graphs: forward and backward of the paper loss, one graph per batch size.

On a GPU, a HIP-NN step on a QM9 batch is bound by the CPU launching ~200 small kernels, not by the GPU: a
CUDA graph launches them all at once. Graphs need fixed shapes and no host synchronisation, so each batch is
padded up to a size bucket (atoms, pairs and molecules rounded up to ``PadSteps``) and a graph is captured
the first time a bucket is seen (a few buckets cover QM9's batches). The neighbour pairs are found outside
the graph (their number is data-dependent), the loss takes means with per-entry weights that are zero on the
padding (``weighted_paper_loss``), and the optimiser step runs outside as usual.

Padding, chosen so that it changes nothing for the real atoms:
  * pad atoms (at least ``min_pad_atoms``) are one extra molecule (pairs never cross molecules), on a line with
    2 x cutoff between neighbours; the neighbour list runs on the real atoms only;
  * pad pairs join pad atom a to pad atom a + 1 (further apart than the cutoff: zero sensitivity), spread
    evenly over the pad atoms' rows so no row is long;
  * extra molecules are empty; labels and loss weights of all padding are 0.

``capture=False`` runs the same padded computation eagerly (the CPU tests compare it with the plain step).

Safety net: each captured graph is compared with an eager run of the same batch twice, right after capture
(the warm-up's batch) and at its first replay on a new batch (new data in the buffers). A disagreement, or a
capture that fails, turns graphs off with a warning and training goes on eagerly. Later replays are not
checked: they repeat the checked work on refilled buffers.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import Tensor

from .. import ops
from ..nn.dipole import centroid_point_dipole
from ..units import DEBYE_PER_E_ANGSTROM
from .loss import LossTerms, weighted_paper_loss


class PadSteps(NamedTuple):
    """Bucket granularity: padded sizes are multiples of these."""

    atoms: int = 256
    pairs: int = 8192
    molecules: int = 32


def round_up(n: int, step: int) -> int:
    return -(-n // step) * step


class _AtomBuffers(NamedTuple):
    """Device buffers of one (atoms, molecules) bucket: the graph reads them, each step refills them."""

    Z: Tensor  # (N_pad,) int64
    R: Tensor  # (N_pad, 3) Angstrom
    offsets: Tensor  # (M_pad + 1,) int64
    mu: Tensor  # (M_pad,) |mu| labels, e*Angstrom
    mu_vec: Tensor  # (M_pad, 3) dipole vector labels, e*Angstrom (0 unless the target is the vector)
    charges: Tensor  # (N_pad,) charge labels, e
    total: Tensor  # (M_pad,) total charge of each molecule, e (0 on padding)
    atom_w: Tensor  # (N_pad,) 1 / n_atoms on real atoms, 0 on padding
    mol_w: Tensor  # (M_pad,) 1 / n_molecules on real molecules, 0 on padding


class _PairBuffers(NamedTuple):
    first: Tensor  # (P_pad,)
    second: Tensor  # (P_pad,)
    row_offsets: Tensor  # (N_pad + 1,)


class _Graph:
    """A captured step: its static outputs are valid right after a replay."""

    def __init__(self, graph, terms: LossTerms, grads: tuple, checks_left: int = 0):
        self.graph = graph  # torch.cuda.CUDAGraph, or None for an eager result
        self.terms = terms
        self.grads = grads  # one per parameter, in the parameter's own layout (None where unused)
        self.checks_left = checks_left  # replays still to compare with an eager run


class GraphedTrainStep:
    """``step(batch, l1, l2) -> LossTerms``: computes the paper loss of a :class:`~fastdipole.data.Batch` (on
    the CPU; it is padded and copied to the model's device) and leaves the gradients in ``p.grad`` of every
    parameter of ``model``, ready for ``optimizer.step()``. The loss terms are only valid until the next call.

    ``charge_mode``: as in :func:`~fastdipole.train.batch_loss` (``none`` drops the charge term).
    Keeps at most ``max_graphs`` captured graphs (least recently used dropped first).
    """

    def __init__(self, model, charge_mode: str, steps: PadSteps = PadSteps(), min_pad_atoms: int = 64,
                 max_graphs: int = 8, capture: bool | None = None, direction_form: str = "batch",
                 dipole_target: str = "magnitude"):
        self.model = model
        self.direction_form = direction_form
        self.use_vector = dipole_target == "vector"
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.device = self.params[0].device
        self.dtype = self.params[0].dtype
        self.use_charges = charge_mode != "none"
        self.steps = steps
        self.min_pad_atoms = max(int(min_pad_atoms), 2)
        self.max_graphs = max_graphs
        self.capture = (self.device.type == "cuda") if capture is None else capture
        if self.capture and self.device.type != "cuda":
            raise ValueError("CUDA graphs need the model on a CUDA device")
        self.cutoff = float(model.hipnn.dist_hard_max)
        self.pad_species = int(model.hipnn.species[0])
        self._atoms: dict[tuple[int, int], _AtomBuffers] = {}
        self._pairs: dict[tuple[int, int], _PairBuffers] = {}
        self._graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self.captures = 0  # graphs captured so far (a test and the benchmark read it)
        self.capture_error: str | None = None  # why capturing was given up, if it was

    # ---- per step ---------------------------------------------------------------------------------
    def __call__(self, batch, l1: float, l2: float, direction_weight: float = 0.0) -> LossTerms:
        n_atoms, n_mol = int(batch.Z.shape[0]), batch.n_molecules
        n_pad_atoms = round_up(n_atoms + self.min_pad_atoms, self.steps.atoms)
        n_pad_mol = round_up(n_mol + 1, self.steps.molecules)
        atoms = self._atom_buffers(n_pad_atoms, n_pad_mol)
        self._fill_atoms(atoms, batch, n_atoms, n_mol)

        # Pairs of the real atoms (the pad molecule has none: its atoms are 2 x cutoff apart).
        found = ops.neighbor_pairs(atoms.R[:n_atoms], atoms.offsets[: n_mol + 1], self.cutoff,
                                   backend=self.model.hipnn.backend)
        n_pairs = int(found.first.shape[0])
        n_pad_pairs = round_up(n_pairs + 1, self.steps.pairs)
        pairs = self._pair_buffers(n_pad_atoms, n_pad_pairs)
        self._fill_pairs(pairs, found, n_atoms, n_pad_atoms, n_pairs, n_pad_pairs)

        weights = (float(l1), float(l2), float(direction_weight))
        key = (n_pad_atoms, n_pad_pairs, n_pad_mol, *weights)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._record(atoms, pairs, weights)
            if entry.graph is not None:
                self._graphs[key] = entry
                while len(self._graphs) > self.max_graphs:
                    self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
            entry.graph.replay()
            if entry.checks_left > 0:  # the first replay on new data: does the graph still agree with eager?
                entry.checks_left -= 1
                eager = _Graph(None, *self._loss_and_grads(atoms, pairs, weights))
                if not _same_step(entry, eager):
                    self._give_up("a replay disagreed with the eager step on the same batch")
                    entry = eager
        for p, g in zip(self.params, entry.grads):
            p.grad = g
        return entry.terms

    def _give_up(self, why: str) -> None:
        """Stop using CUDA graphs (the steps run eagerly from now on), with a warning saying why."""
        warnings.warn(f"fastdipole: {why}; continuing without CUDA graphs", RuntimeWarning, stacklevel=3)
        self.capture = False
        self.capture_error = why
        self._graphs.clear()

    # ---- buffers ----------------------------------------------------------------------------------
    def _atom_buffers(self, n_pad_atoms: int, n_pad_mol: int) -> _AtomBuffers:
        key = (n_pad_atoms, n_pad_mol)
        if key not in self._atoms:
            dev, dt = self.device, self.dtype
            self._atoms[key] = _AtomBuffers(
                Z=torch.zeros(n_pad_atoms, dtype=torch.long, device=dev),
                R=torch.zeros((n_pad_atoms, 3), dtype=dt, device=dev),
                offsets=torch.zeros(n_pad_mol + 1, dtype=torch.long, device=dev),
                mu=torch.zeros(n_pad_mol, dtype=dt, device=dev),
                mu_vec=torch.zeros((n_pad_mol, 3), dtype=dt, device=dev),
                charges=torch.zeros(n_pad_atoms, dtype=dt, device=dev),
                total=torch.zeros(n_pad_mol, dtype=dt, device=dev),
                atom_w=torch.zeros(n_pad_atoms, dtype=dt, device=dev),
                mol_w=torch.zeros(n_pad_mol, dtype=dt, device=dev),
            )
        return self._atoms[key]

    def _pair_buffers(self, n_pad_atoms: int, n_pad_pairs: int) -> _PairBuffers:
        key = (n_pad_atoms, n_pad_pairs)
        if key not in self._pairs:
            dev = self.device
            self._pairs[key] = _PairBuffers(
                first=torch.zeros(n_pad_pairs, dtype=torch.long, device=dev),
                second=torch.zeros(n_pad_pairs, dtype=torch.long, device=dev),
                row_offsets=torch.zeros(n_pad_atoms + 1, dtype=torch.long, device=dev),
            )
        return self._pairs[key]

    def _fill_atoms(self, buf: _AtomBuffers, batch, n_atoms: int, n_mol: int) -> None:
        """Real atoms and molecules first, then the padding (built on the host, one copy per array)."""
        n_pad_atoms, n_pad_mol = buf.Z.shape[0], buf.mu.shape[0]
        n_extra = n_pad_atoms - n_atoms
        dt = self.dtype
        pad_x = 2.0 * self.cutoff * torch.arange(n_extra, dtype=torch.float64)
        pad_R = torch.stack([pad_x, torch.zeros_like(pad_x), torch.zeros_like(pad_x)], dim=1)
        Z = torch.cat([batch.Z.cpu().long(), torch.full((n_extra,), self.pad_species, dtype=torch.long)])
        R = torch.cat([batch.R.cpu().to(dt), pad_R.to(dt)])
        offsets = torch.cat([batch.offsets.cpu().long(),
                             torch.full((n_pad_mol - n_mol,), n_pad_atoms, dtype=torch.long)])
        mu = torch.zeros(n_pad_mol, dtype=dt)
        mu[:n_mol] = batch.mu_debye.cpu().to(dt) / DEBYE_PER_E_ANGSTROM
        mu_vec = torch.zeros((n_pad_mol, 3), dtype=dt)
        if self.use_vector:
            if batch.mu_vec_debye is None:
                raise ValueError("this step was built for the vector dipole target, but the batch has no mu_vec")
            mu_vec[:n_mol] = batch.mu_vec_debye.cpu().to(dt) / DEBYE_PER_E_ANGSTROM
        charges = torch.zeros(n_pad_atoms, dtype=dt)
        if self.use_charges:
            if batch.charges is None:
                raise ValueError("this step was built for a charge loss, but the batch has no charge labels")
            charges[:n_atoms] = batch.charges.cpu().to(dt)
        total = torch.zeros(n_pad_mol, dtype=dt)
        if batch.total_charge is not None:
            total[:n_mol] = batch.total_charge.cpu().to(dt)
        atom_w = torch.zeros(n_pad_atoms, dtype=dt)
        atom_w[:n_atoms] = 1.0 / max(n_atoms, 1)
        mol_w = torch.zeros(n_pad_mol, dtype=dt)
        mol_w[:n_mol] = 1.0 / max(n_mol, 1)
        for dst, src in zip(buf, (Z, R, offsets, mu, mu_vec, charges, total, atom_w, mol_w)):
            dst.copy_(src)

    def _fill_pairs(self, buf: _PairBuffers, found, n_atoms: int, n_pad_atoms: int, n_pairs: int,
                    n_pad_pairs: int) -> None:
        """Real pairs, then pad pairs among the pad atoms, spread evenly over their rows. Pad atom a pairs with
        a ^ 1 (the last one, when their number is odd, with a - 1): the pad atoms fall into closed groups of 2
        or 3, as molecules do, so kernels that work per group of atoms no pair leaves see small groups."""
        n_extra, n_fill = n_pad_atoms - n_atoms, n_pad_pairs - n_pairs
        counts = torch.full((n_extra,), n_fill // n_extra, dtype=torch.long)
        counts[: n_fill % n_extra] += 1
        pad_atom = torch.arange(n_extra, dtype=torch.long)
        partner = pad_atom ^ 1
        if n_extra % 2:  # the last pad atom has no a ^ 1
            partner[-1] = n_extra - 2
        first = torch.repeat_interleave(n_atoms + pad_atom, counts)
        second = torch.repeat_interleave(n_atoms + partner, counts)
        rows = n_pairs + torch.cumsum(counts, 0)  # row_offsets[n_atoms + 1 :]
        buf.first[:n_pairs].copy_(found.first)
        buf.first[n_pairs:].copy_(first)
        buf.second[:n_pairs].copy_(found.second)
        buf.second[n_pairs:].copy_(second)
        buf.row_offsets[: n_atoms + 1].copy_(found.row_offsets[: n_atoms + 1])
        buf.row_offsets[n_atoms + 1 :].copy_(rows)

    # ---- graphs -----------------------------------------------------------------------------------
    def _loss_and_grads(self, atoms: _AtomBuffers, pairs: _PairBuffers, weights: tuple[float, float, float]):
        l1, l2, direction_weight = weights
        out = self.model.forward_from_pairs(atoms.Z, atoms.R, atoms.offsets, ops.Pairs(*pairs), atoms.total)
        label_dipole = None
        if direction_weight > 0 and self.use_charges:
            label_dipole = centroid_point_dipole(atoms.charges, atoms.R, atoms.offsets)
        terms = weighted_paper_loss(out.charges, atoms.charges if self.use_charges else None, out.magnitude,
                                    atoms.mu, atoms.atom_w, atoms.mol_w, l1, l2, pred_dipole=out.dipole,
                                    label_dipole=label_dipole, direction_weight=direction_weight,
                                    direction_form=self.direction_form,
                                    label_vector=atoms.mu_vec if self.use_vector else None)
        grads = torch.autograd.grad(terms.total, self.params, allow_unused=True)
        # autograd.grad returns gradients in whatever layout backward made (int_weights' comes transposed);
        # .backward() would have copied them into the parameter's layout, and fused Adam on CUDA needs that.
        grads = tuple(g if g is None or g.stride() == p.stride() else torch.empty_like(p).copy_(g)
                      for p, g in zip(self.params, grads))
        return LossTerms(*(t.detach() if t is not None else None for t in terms)), grads

    def _record(self, atoms: _AtomBuffers, pairs: _PairBuffers, weights: tuple[float, float, float]) -> _Graph:
        """Captures the step for this bucket (after warm-up runs on a side stream, as CUDA graphs need), or
        just runs it when not capturing. The inputs are already in the buffers: the result is this step's."""
        if not self.capture:
            return _Graph(None, *self._loss_and_grads(atoms, pairs, weights))
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                eager = _Graph(None, *self._loss_and_grads(atoms, pairs, weights))
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                terms, grads = self._loss_and_grads(atoms, pairs, weights)
        except RuntimeError as err:  # e.g. an op that synchronises with the host: train on, without graphs
            torch.cuda.synchronize(self.device)
            self._give_up(f"CUDA graph capture failed ({str(err).splitlines()[0]})")
            return eager  # the warm-up computed this very step
        graph.replay()  # capture records without running: this step's numbers come from the first replay
        self.captures += 1
        entry = _Graph(graph, terms, grads, checks_left=1)
        if not _same_step(entry, eager):  # the warm-up ran eagerly on the same inputs
            self._give_up("the captured step disagreed with the eager step on the same batch")
            return eager
        return entry


def _same_step(a: _Graph, b: _Graph, rtol: float = 1e-4) -> bool:
    """Whether two results of one step agree: loss terms and gradients, to rtol relative to each tensor's largest
    entry (graph and eager runs differ only where a kernel sums in a different order, ~1e-7 in float32)."""
    for x, y in [*zip(a.terms, b.terms), *zip(a.grads, b.grads)]:
        if (x is None) != (y is None):
            return False
        if x is not None:
            scale = float(y.detach().abs().nan_to_num().max()) if y.numel() else 0.0
            if not torch.allclose(x, y, rtol=rtol, atol=rtol * max(scale, 1e-6), equal_nan=True):
                return False
    return True
