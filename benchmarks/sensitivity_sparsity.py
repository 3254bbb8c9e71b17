"""How sparse the Gaussian sensitivities are on real molecules: the fraction of (pair, v) terms the kernels keep
(s > 1e-10) and of groups of 4 sensitivity slots with at least one such term (what the CUDA lanes kernels skip
whole). Sets the expectation for the group skip in csrc/cuda/envsum_lanes.cuh.

    python benchmarks/sensitivity_sparsity.py [--qm9 PATH] [--molecules 1024] [--model RUN_FOLDER]

Without --model: HIP-NN's initial mu / sigma (20 sensitivities, 0.85 / 5.0 / 6.5 Angstrom, fastdipole's
defaults); with --model: each interaction layer's trained mu / sigma.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_QM9 = Path(os.environ.get("FASTDIPOLE_QM9_H5", REPO.parent / "shared" / "data" / "qm9" / "qm9_mulliken.h5"))
DROP = 1e-10  # terms with s <= 1e-10 are skipped by every kernel (as hippynn's numba kernels)
GROUP = 4     # sensitivity slots per group in the CUDA lanes kernels


def active_fractions(s: torch.Tensor) -> tuple[float, float]:
    """(fraction of active terms, fraction of active groups of 4 slots) of sensitivities s (pairs, n_sens);
    slots past n_sens (padding to a multiple of 4) are inactive."""
    active = s > DROP
    pad = (-active.shape[1]) % GROUP
    padded = torch.nn.functional.pad(active, (0, pad))
    groups = padded.view(active.shape[0], -1, GROUP).any(dim=-1)
    return active.double().mean().item(), groups.double().mean().item()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qm9", type=Path, default=DEFAULT_QM9)
    parser.add_argument("--molecules", type=int, default=1024)
    parser.add_argument("--model", type=Path, default=None, help="a run folder of `fastdipole train`")
    args = parser.parse_args()

    from fastdipole import ops
    from fastdipole.nn.sensitivity import InverseGaussianSensitivity

    with h5py.File(args.qm9, "r") as f:
        offsets = f["offsets"][: args.molecules + 1].astype(np.int64)
        R = torch.tensor(f["R"][: offsets[-1]], dtype=torch.float64)
    if args.model is None:
        layers = [("initial", InverseGaussianSensitivity(20, 0.85, 5.0, 6.5))]
    else:
        from fastdipole.train import load_model

        from fastdipole.nn.interaction import InteractionLayer

        model = load_model(args.model)
        found = [m for m in model.modules() if isinstance(m, InteractionLayer)]
        layers = [(f"interaction {k + 1} (trained)", m.sensitivity) for k, m in enumerate(found)]
    cutoff = max(float(s.dist_hard_max) for _, s in layers)
    pairs = ops.neighbor_pairs(R, torch.from_numpy(offsets), cutoff)
    r = (R[pairs.second] - R[pairs.first]).norm(dim=-1)
    print(f"{args.molecules} QM9 molecules, {R.shape[0]} atoms, {r.numel()} pairs within {cutoff} Angstrom\n")
    print("| sensitivities | n_sens | active terms | active groups of 4 |\n|---|---|---|---|")
    with torch.no_grad():
        for name, sens in layers:
            s = sens(r.to(sens.mu.dtype))
            terms, groups = active_fractions(s)
            print(f"| {name} | {s.shape[1]} | {terms:.1%} | {groups:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
