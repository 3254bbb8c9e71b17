"""HIP-NN representation: species one-hot -> interaction blocks -> per-layer atom features."""

from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import Tensor, nn

from .. import ops
from ..errors import ModelInputError
from .interaction import InteractionLayer

#: Pairs closer than this (Angstrom) are "coincident atoms": 1/r would blow up the sensitivities.
MIN_PAIR_DISTANCE = 0.1


class ResidualLayer(nn.Module):
    """hippynn's ``ResNetWrapper``: ``y = res_layer(softplus(base_layer(x, ...))) + adjust_layer(x)``.

    ``adjust_layer`` (Linear without bias) exists only when input and output widths differ.
    """

    def __init__(self, base_layer: nn.Module, nf_in: int, nf_mid: int, nf_out: int):
        super().__init__()
        self.base_layer = base_layer
        self.res_layer = nn.Linear(nf_mid, nf_out)
        self.activation = nn.Softplus()
        self.adjust_layer = nn.Linear(nf_in, nf_out, bias=False) if nf_in != nf_out else None

    def forward(self, x: Tensor, *args) -> Tensor:
        out = self.res_layer(self.activation(self.base_layer(x, *args)))
        return out + (self.adjust_layer(x) if self.adjust_layer is not None else x)


class HIPNN(nn.Module):
    """HIP-NN as hippynn 0.1.3 implements it (resnet blocks, softplus), on flat batches.

    Use as a layer: ``features = HIPNN(...)(Z, R, offsets)`` gives the list
    ``[z^0 (one-hot), z^1, ..., z^L]`` of per-atom features (n_atoms, width). ``Z`` (n_atoms,) atomic
    numbers, ``R`` (n_atoms, 3) positions in Angstrom, ``offsets`` (n_molecules + 1,) int64 CSR: molecule
    m owns atoms ``offsets[m]:offsets[m+1]``. Gradients flow to ``R`` (forces, dipole derivatives).

    Parameter names, shapes and initialisation match ``hippynn.networks.Hipnn`` so state dicts load
    either way. ``backend`` (``auto``, ``compiled``, ``reference``; see :mod:`fastdipole.ops`) is resolved once,
    here, and used by every op of the model. ``memory_budget_bytes`` bounds the pair tensors of one batch (checked
    with the inputs, before the neighbour list is built; None: half the device's free memory).
    """

    def __init__(
        self,
        species: Sequence[int] = (1, 6, 7, 8, 9),
        n_features: int = 60,
        n_sensitivities: int = 20,
        dist_soft_min: float = 0.85,
        dist_soft_max: float = 5.0,
        dist_hard_max: float = 6.5,
        n_interaction_layers: int = 2,
        n_atom_layers: int = 3,
        backend: str = "auto",
        validate_inputs: bool = True,
        memory_budget_bytes: int | None = None,
    ):
        super().__init__()
        species = sorted(int(s) for s in species)
        if not species or species[0] < 1 or len(set(species)) != len(species):
            raise ValueError(f"species must be distinct atomic numbers >= 1, got {species}")
        self.species = species
        self.n_features = n_features
        self.dist_hard_max = float(dist_hard_max)
        self.backend = ops.resolve_backend(backend)  # resolved once: "compiled" or "reference"
        self.validate_inputs = validate_inputs
        self.memory_budget_bytes = memory_budget_bytes
        self.feature_sizes = (len(species), *([n_features] * n_interaction_layers))
        # Atomic number -> one-hot column (-1 = not a species of this model); not in the state dict.
        lookup = torch.full((max(species) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(species)] = torch.arange(len(species))
        self.register_buffer("species_lookup", lookup, persistent=False)

        self.blocks = nn.ModuleList()
        for nf_in, nf_out in zip(self.feature_sizes[:-1], self.feature_sizes[1:]):
            interaction = InteractionLayer(
                nf_in, nf_out, n_sensitivities, dist_soft_min, dist_soft_max, dist_hard_max, self.backend
            )
            block = nn.ModuleList([ResidualLayer(interaction, nf_in, nf_out, nf_out)])
            for _ in range(n_atom_layers):
                linear = nn.Linear(nf_out, nf_out)
                nn.init.xavier_normal_(linear.weight)
                block.append(ResidualLayer(linear, nf_out, nf_out, nf_out))
            self.blocks.append(block)

    # ---- inputs ---------------------------------------------------------------------------------
    def one_hot(self, Z: Tensor, offsets: Tensor | None = None, check: bool | None = None) -> Tensor:
        """One-hot species features (n_atoms, n_species) in the dtype of the model's parameters.

        ``check`` (default: ``validate_inputs``) raises on atomic numbers that are not species of the model;
        it reads a flag back from the device, so steps that must not synchronise (CUDA graphs) pass False."""
        Z = Z.long()
        in_range = (Z >= 0) & (Z < self.species_lookup.numel())
        column = torch.where(in_range, self.species_lookup[Z.clamp(0, self.species_lookup.numel() - 1)], -1)
        check = self.validate_inputs if check is None else check
        if check and Z.numel() and bool((column < 0).any()):
            atom = int((column < 0).nonzero()[0, 0])
            where = _locate(atom, offsets)
            raise ModelInputError(
                f"element Z={int(Z[atom])} at {where} is not one of the model's species {self.species}"
            )
        dtype = self.blocks[0][0].base_layer.int_weights.dtype
        return nn.functional.one_hot(column.clamp_min(0), len(self.species)).to(dtype)

    def pairs_and_distances(self, R: Tensor, offsets: Tensor) -> tuple[ops.Pairs, Tensor]:
        """Neighbour pairs within ``dist_hard_max`` and their distances (Angstrom, differentiable in R)."""
        if self.validate_inputs:
            self.check_memory(R, offsets)
        pairs = ops.neighbor_pairs(R.detach(), offsets, self.dist_hard_max, backend=self.backend)
        r = ops.pair_distances(R, pairs.first, pairs.second)
        if self.validate_inputs and r.numel() and bool((r < MIN_PAIR_DISTANCE).any()):
            p = int((r < MIN_PAIR_DISTANCE).nonzero()[0, 0])
            i, j = int(pairs.first[p]), int(pairs.second[p])
            raise ModelInputError(
                f"atoms {i} and {j} ({_locate(i, offsets)}) are {float(r[p]):.3g} Angstrom apart "
                f"(coincident atoms; minimum is {MIN_PAIR_DISTANCE} Angstrom)"
            )
        return pairs, r

    def pair_memory_estimate(self, R: Tensor, offsets: Tensor) -> tuple[int, int]:
        """(estimated neighbour pairs, bytes the pair-sized tensors of a forward and backward take): pair indices
        and distances, and the envsum backward's (pairs x features) scratch; the reference ops also materialise
        (pairs x sensitivities x features) terms and test all n^2 atom pairs of each molecule."""
        n_pairs, n_squared = ops.estimate_pairs(R, offsets, self.dist_hard_max)
        elem = R.element_size()
        n_sens = self.blocks[0][0].base_layer.n_sens
        if self.backend == "reference":
            return n_pairs, n_pairs * elem * n_sens * (self.n_features + 1) + n_squared * 48
        return n_pairs, n_pairs * (16 + elem * (2 + n_sens + self.n_features))

    def check_memory(self, R: Tensor, offsets: Tensor) -> None:
        """Raise ModelInputError, before anything is allocated, when the batch's pair tensors would exceed
        ``memory_budget_bytes`` (None: half of the memory the device has free now)."""
        n_pairs, need = self.pair_memory_estimate(R, offsets)
        budget = self.memory_budget_bytes if self.memory_budget_bytes is not None else _free_memory(R.device) // 2
        if budget is not None and need > budget:
            raise ModelInputError(
                f"the batch of {offsets.numel() - 1} molecule(s), {R.shape[0]:,} atoms would make about "
                f"{n_pairs:,} neighbour pairs needing about {need / 1e9:.3g} GB, more than the memory budget of "
                f"{budget / 1e9:.3g} GB; use smaller batches (--batch-size / --eval-batch-size) or split the system")

    # ---- forward --------------------------------------------------------------------------------
    def forward(self, Z: Tensor, R: Tensor, offsets: Tensor) -> list[Tensor]:
        """Per-layer atom features ``[z^0, ..., z^L]`` for a flat batch of molecules."""
        if self.validate_inputs:
            _check_batch(Z, R, offsets)
        pairs, r = self.pairs_and_distances(R, offsets)
        return self.features_from_pairs(self.one_hot(Z, offsets).to(R.dtype), r, pairs)

    def forward_from_pairs(self, Z: Tensor, R: Tensor, pairs: ops.Pairs) -> list[Tensor]:
        """:meth:`forward` with the neighbour pairs (within ``dist_hard_max``) given and no input checks: no host
        synchronisation, so it can run inside a CUDA graph."""
        r = ops.pair_distances(R, pairs.first, pairs.second)
        return self.features_from_pairs(self.one_hot(Z, check=False).to(R.dtype), r, pairs)

    def features_from_pairs(self, z0: Tensor, r: Tensor, pairs: ops.Pairs) -> list[Tensor]:
        """Same as :meth:`forward` with one-hot features and pairs already computed."""
        features = [z0]
        z = z0
        for block in self.blocks:
            z = block[0](z, r, pairs)
            for layer in block[1:]:
                z = layer(z)
            features.append(z)
        return features

    # ---- hippynn interop ------------------------------------------------------------------------
    def load_hippynn_state_dict(self, state_dict: dict) -> None:
        """Load a ``hippynn.networks.Hipnn`` state dict (parameter keys are identical by construction)."""
        self.load_state_dict(state_dict)


def _free_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` now (None when unknown)."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None


def _locate(atom: int, offsets: Tensor | None) -> str:
    """'atom 7 of molecule 3 (batch atom 52)' for error messages."""
    if offsets is None:
        return f"atom {atom}"
    mol = int(torch.searchsorted(offsets, torch.tensor(atom, device=offsets.device), right=True)) - 1
    return f"atom {atom - int(offsets[mol])} of molecule {mol} (batch atom {atom})"


def _check_batch(Z: Tensor, R: Tensor, offsets: Tensor) -> None:
    """Shape/consistency checks with one-line messages (cheap: no per-atom host syncs)."""
    if R.ndim != 2 or R.shape[1] != 3:
        raise ModelInputError(f"R must have shape (n_atoms, 3) in Angstrom, got {tuple(R.shape)}")
    if Z.shape != (R.shape[0],):
        raise ModelInputError(f"Z must have shape ({R.shape[0]},) to match R, got {tuple(Z.shape)}")
    if offsets.ndim != 1 or offsets.numel() < 1 or offsets.dtype != torch.long:
        raise ModelInputError("offsets must be a 1-D int64 tensor of length n_molecules + 1")
    if int(offsets[0]) != 0 or int(offsets[-1]) != R.shape[0]:
        raise ModelInputError(
            f"offsets must start at 0 and end at n_atoms={R.shape[0]}, got {int(offsets[0])}..{int(offsets[-1])}"
        )
    steps = offsets[1:] - offsets[:-1]
    if steps.numel() and bool((steps < 0).any()):
        mol = int((steps < 0).nonzero()[0, 0])
        raise ModelInputError(f"offsets decrease at molecule {mol}")
    if R.numel() and not bool(torch.isfinite(R).all()):
        atom = int((~torch.isfinite(R)).any(dim=1).nonzero()[0, 0])
        raise ModelInputError(f"non-finite coordinate at {_locate(atom, offsets)}")
