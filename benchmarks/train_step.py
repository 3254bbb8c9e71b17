"""One full training step (forward + backward + Adam, paper loss), fastdipole vs hippynn, side by side.

Same model settings (2 interaction x 3 atom layers, 20 sensitivities, nf 60 and 128), same batch of real QM9
molecules, one thread, medians over repeats. hippynn runs with its numba and torch.compile ("pytorch") kernels;
its neighbour pairs are precomputed outside the timed step (its pair finding is ~1% of a step), ours are
computed inside ``DipoleModel.forward``. The "GEMM floor" times the dense matrix products of the same step
(forward and backward shapes) alone with torch.mm: no implementation of this model can go below it.

    OMP_NUM_THREADS=1 python benchmarks/train_step.py [--features 60 128] [--repeats 20] [--batch 128]
"""

from __future__ import annotations

import argparse
import warnings

import torch

from _common import header, median_ms, pin_threads, qm9_batch, table

from fastdipole import ops
from fastdipole.nn import DipoleModel
from fastdipole.train import make_optimizer
from fastdipole.ops.reference import molecule_index
from fastdipole.units import DEBYE_PER_E_ANGSTROM

SETTINGS = dict(n_sensitivities=20, dist_soft_min=0.85, dist_soft_max=5.0, dist_hard_max=6.5, n_atom_layers=3)
L1, L2 = 0.04, 0.96


def paper_loss(q_pred, q_true, mu_pred, mu_true):
    """l1 (RMSE_q + MAE_q + mean|q_pred|) + l2 (RMSE_mu + MAE_mu); dipole magnitudes in e*Angstrom."""
    dq, dmu = q_pred - q_true, mu_pred - mu_true
    charge = dq.square().mean().sqrt() + dq.abs().mean() + q_pred.abs().mean()
    dipole = dmu.square().mean().sqrt() + dmu.abs().mean()
    return L1 * charge + L2 * dipole


def fastdipole_step(nf, Z, R, off, mu, q, backend):
    torch.manual_seed(0)
    model = DipoleModel.from_config(n_features=nf, n_interaction_layers=2, backend=backend, **SETTINGS)
    opt = make_optimizer(model.parameters(), lr=1e-3)  # what `fastdipole train` uses

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(Z, R, off)
        paper_loss(out.charges, q, out.magnitude, mu).backward()
        opt.step()

    return step


def hippynn_step(nf, Z, R, off, mu, q, backend):
    from hippynn import custom_kernels
    from hippynn.layers.targets import HCharge
    from hippynn.networks.hipnn import Hipnn

    custom_kernels.set_custom_kernels(backend)
    torch.manual_seed(0)
    net = Hipnn(n_features=nf, n_interaction_layers=2, possible_species=[0, 1, 6, 7, 8, 9], **SETTINGS)
    head = HCharge(net.feature_sizes)
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=1e-3)
    species = torch.tensor([1, 6, 7, 8, 9])
    z0 = (Z[:, None] == species[None, :]).float()
    first, second, _ = ops.reference.neighbor_pairs(R, off, SETTINGS["dist_hard_max"])
    mol = molecule_index(off, R.shape[0])

    def step():
        opt.zero_grad(set_to_none=True)
        r = (R[second] - R[first]).norm(dim=-1)
        charges = head(net(z0, first, second, r))[0].squeeze(-1)
        dipole = R.new_zeros((off.numel() - 1, 3)).index_add(0, mol, charges[:, None] * R)
        paper_loss(charges, q, dipole.norm(dim=-1), mu).backward()
        opt.step()

    return step


def gemm_floor_ms(nf, n_atoms, n_sens=20, n_species=5, n_atom_layers=3, repeats=10):
    """Sum of the medians of every dense GEMM of one forward + backward pass, timed alone."""
    shapes = []  # (m, k, n) for an (m x k) @ (k x n) product

    def linear(fin, fout, needs_input_grad=True):
        shapes.append((n_atoms, fin, fout))  # forward
        shapes.append((fin, n_atoms, fout))  # weight gradient
        if needs_input_grad:
            shapes.append((n_atoms, fout, fin))  # input gradient

    for block, fin in enumerate((n_species, nf)):
        first = block == 0
        linear(n_sens * fin, nf)  # env . V (grad_env is needed for mu/sigma even in block 0)
        linear(fin, nf, needs_input_grad=not first)  # selfint
        linear(nf, nf)  # res_layer of the interaction
        if first:
            linear(fin, nf, needs_input_grad=False)  # adjust_layer
        for _ in range(n_atom_layers):
            linear(nf, nf)  # base
            linear(nf, nf)  # res
    total = 0.0
    for m, k, n in shapes:
        a, b, out = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
        total += median_ms(lambda: torch.mm(a, b, out=out), repeats=repeats, warmup=2)
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, nargs="+", default=[60, 128])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pin_threads(1)
    warnings.filterwarnings("ignore")
    header("Training step: fastdipole vs hippynn 0.1.3 (1 thread, ms per step, median)")
    Z, R, off, mu_debye, q = qm9_batch(args.batch, seed=args.seed)
    mu = mu_debye / DEBYE_PER_E_ANGSTROM
    n_pairs = ops.reference.neighbor_pairs(R, off, 6.5)[0].numel()
    print(f"batch: {args.batch} real QM9 molecules, {R.shape[0]} atoms, {n_pairs} directed pairs < 6.5 A\n")
    rows = []
    for nf in args.features:
        times = {}
        times["fastdipole"] = median_ms(fastdipole_step(nf, Z, R, off, mu, q, ops.resolve_backend("auto")),
                                        args.repeats)
        times["fastdipole (reference ops)"] = median_ms(
            fastdipole_step(nf, Z, R, off, mu, q, "reference"), max(5, args.repeats // 4)
        )
        for backend in ("numba", "pytorch"):
            times[f"hippynn {backend}"] = median_ms(hippynn_step(nf, Z, R, off, mu, q, backend), args.repeats, 5)
        times["GEMM floor"] = gemm_floor_ms(nf, R.shape[0])
        best_hippynn = min(times["hippynn numba"], times["hippynn pytorch"])
        row = {"nf": nf, **{k: round(v, 1) for k, v in times.items()}}
        row["ours / best hippynn"] = times["fastdipole"] / best_hippynn
        row["speed-up vs hippynn"] = best_hippynn / times["fastdipole"]
        row["ours / GEMM floor"] = times["fastdipole"] / times["GEMM floor"]
        rows.append(row)
        print(f"nf={nf}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in times.items()), flush=True)
    print()
    table(rows)


if __name__ == "__main__":
    main()
