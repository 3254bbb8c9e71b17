"""GPU benchmarks of fastdipole's CUDA kernels: training step, neighbour list, kernel bandwidth.

Sections (each runs on its own; a failing or unavailable one is reported and skipped):
  1. copy bandwidth: device-to-device copy of a 1 GiB buffer (bytes read + written per second), the
     yardstick of section 3;
  2. neighbour list (cutoff 6.5 Angstrom, full list): fastdipole's CUDA op vs vesin-torch on the GPU
     (if importable) on a batch of real QM9 molecules (vesin sees them spread in one non-periodic box)
     and on single random molecules at liquid density (0.1 atoms / Angstrom^3);
  3. kernel bandwidth: each CUDA kernel's useful bytes (inputs read once + outputs written once) per
     second as a fraction of the measured copy bandwidth: the default envsum kernels and, as "op[label]"
     rows, the other kernels forced (fastdipole.ops.kernels: FORWARD_ALTERNATIVES, BACKWARD_ALTERNATIVES);
  4. training step (forward + backward + fused Adam, paper loss, 128 QM9 molecules, 2 interaction x 3 atom
     layers, 20 sensitivities, nf 128 and 60): fastdipole with its CUDA kernels (eager with and without
     input checks, with --cuda-graphs; torch.compile with --train-variants all) vs hippynn 0.1.3 with its
     triton kernels (and its pytorch kernels), if hippynn is importable. Both sides use the same fused Adam.
Times are medians (CUDA events for single kernels, wall clock with synchronisation for whole ops/steps).
Prints markdown tables and writes everything to --json.

    python benchmarks/gpu.py [--json OUT.json] [--qm9 PATH] [--quick]
    python benchmarks/gpu.py --device cpu --quick     # harness check without a GPU (numbers meaningless)

Needs: torch with CUDA, fastdipole built with its CUDA kernels (pip install --no-build-isolation .),
numpy, h5py, the QM9 file (env FASTDIPOLE_QM9_H5). Optional: hippynn==0.1.3 (pure Python; its triton kernels
use the triton that ships with CUDA torch wheels), vesin-torch==0.6.2 (one py3 wheel with libraries for
torch 2.3 ... 2.14). On an offline GPU machine carry these wheels (tools/prepare_gpu_carry.sh downloads
them): scikit-build-core, pathspec, packaging, pybind11 (to build), h5py, pytest, iniconfig, pluggy (tests),
hippynn, vesin-torch (anchors); tools/gpu_session.sh installs them with pip --no-index.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from fastdipole.ops import kernels

REPO = Path(__file__).resolve().parents[1]
DEFAULT_QM9 = Path(os.environ.get("FASTDIPOLE_QM9_H5", REPO.parent / "shared" / "data" / "qm9" / "qm9_mulliken.h5"))
CUTOFF = 6.5  # Angstrom
DENSITY_PER_A3 = 0.1
SETTINGS = dict(n_sensitivities=20, dist_soft_min=0.85, dist_soft_max=5.0, dist_hard_max=CUTOFF, n_atom_layers=3)
L1, L2 = 0.04, 0.96  # paper loss weights (charges, dipoles)


# ---------------------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------------------
def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def wall_ms(fn, device: str, repeats: int, warmup: int = 2, budget_s: float = 15.0) -> float:
    """Median wall time (ms) of fn() with the device synchronised around each call."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    start = time.perf_counter()
    for k in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(1e3 * (time.perf_counter() - t0))
        if k >= 2 and time.perf_counter() - start > budget_s:
            break
    return statistics.median(times)


def event_ms(fn, device: str, repeats: int, warmup: int = 2) -> float:
    """Median device time (ms) of fn() from CUDA events (wall clock on the CPU)."""
    if device != "cuda":
        return wall_ms(fn, device, repeats, warmup)
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def table(title: str, rows: list[dict]) -> None:
    print(f"\n## {title}\n")
    if not rows:
        print("(nothing)\n")
        return
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------
def qm9_batch(path: Path, n_molecules: int, seed: int = 0):
    """n random real QM9 molecules: Z (int64), R (float64, Angstrom), offsets, |mu| (Debye), Mulliken q (e)."""
    import h5py

    with h5py.File(path, "r") as f:
        off = f["offsets"][:]
        n_total = len(off) - 1
        pick = np.sort(np.random.default_rng(seed).choice(n_total, size=min(n_molecules, n_total), replace=False))
        lo, hi = off[pick[0]], off[pick[-1] + 1]  # one contiguous read, then slice
        Z_all, R_all, q_all = f["Z"][lo:hi], f["R"][lo:hi], f["q_mulliken"][lo:hi]
        mu = f["mu"][:][pick]
    parts = [(off[m] - lo, off[m + 1] - lo) for m in pick]
    Z = np.concatenate([Z_all[a:b] for a, b in parts]).astype(np.int64)
    R = np.concatenate([R_all[a:b] for a, b in parts]).astype(np.float64)
    q = np.concatenate([q_all[a:b] for a, b in parts]).astype(np.float64)
    counts = [b - a for a, b in parts]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Z, R, offsets, mu.astype(np.float64), q


def random_molecule(n_atoms: int, seed: int = 0) -> np.ndarray:
    side = (n_atoms / DENSITY_PER_A3) ** (1.0 / 3.0)
    return np.random.default_rng(seed).uniform(0.0, side, size=(n_atoms, 3))


# ---------------------------------------------------------------------------------------------------------
# 1. copy bandwidth
# ---------------------------------------------------------------------------------------------------------
def copy_bandwidth(device: str, quick: bool) -> dict:
    n_bytes = (64 if quick else 1024) * 2**20
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = event_ms(lambda: dst.copy_(src), device, repeats=10 if quick else 30)
    gbs = 2 * n_bytes / (ms * 1e-3) / 1e9
    return {"buffer_MiB": n_bytes / 2**20, "copy_ms": ms, "copy_GB_per_s": gbs}


# ---------------------------------------------------------------------------------------------------------
# 2. neighbour list
# ---------------------------------------------------------------------------------------------------------
def vesin_pairs(device: str):
    """fn(R) -> (i, j) from vesin-torch on `device`, or None when vesin-torch is not importable."""
    try:
        from vesin_torch import NeighborList  # the vesin-torch wheel
    except ImportError:
        try:
            from vesin.torch import NeighborList  # some vesin versions re-export it here
        except ImportError:
            return None
    nl = NeighborList(cutoff=CUTOFF, full_list=True)

    def run(R: torch.Tensor):
        box = torch.zeros((3, 3), dtype=R.dtype, device=R.device)
        return nl.compute(points=R, box=box, periodic=False, quantities="ij", copy=True)

    return run


def spread(R: np.ndarray, offsets: np.ndarray, spacing: float = 40.0) -> np.ndarray:
    """Molecules moved onto a cubic grid `spacing` Angstrom apart: one system with no inter-molecule pairs."""
    n = len(offsets) - 1
    side = int(np.ceil(n ** (1.0 / 3.0)))
    out = R.copy()
    for m in range(n):
        shift = spacing * np.array([m % side, (m // side) % side, m // side**2])
        out[offsets[m] : offsets[m + 1]] += shift
    return out


def neighbor_section(args, device: str, fd) -> list[dict]:
    rows = []
    vesin = vesin_pairs(device)
    n_mol = 128 if args.quick else 1024
    _, R_np, off_np, _, _ = qm9_batch(args.qm9, n_mol, seed=1)
    cases = [(f"{n_mol} QM9 molecules", R_np, off_np, spread(R_np, off_np))]
    for n in (2_000,) if args.quick else (2_000, 20_000, 100_000):
        R = random_molecule(n, seed=n)
        cases.append((f"1 molecule, {n} atoms", R, np.array([0, n], dtype=np.int64), R))
    for name, R, off, R_vesin in cases:
        Rt = torch.tensor(R, dtype=torch.float32, device=device)
        offt = torch.tensor(off, device=device)
        first, _, _ = fd.neighbor_pairs(Rt, offt, CUTOFF)
        ours = wall_ms(lambda: fd.neighbor_pairs(Rt, offt, CUTOFF), device, repeats=5 if args.quick else 20)
        row = {"case": name, "atoms": len(R), "pairs": int(first.numel()), "fastdipole_ms": ours}
        if vesin is not None:
            Rv = torch.tensor(R_vesin, dtype=torch.float64, device=device)
            try:
                i, _ = vesin(Rv)
                row["vesin_pairs"] = int(i.numel())
                row["vesin_ms"] = wall_ms(lambda: vesin(Rv), device, repeats=5 if args.quick else 20)
                row["ratio_ours_over_vesin"] = ours / row["vesin_ms"]
            except Exception as err:  # vesin without CUDA support, etc.
                row["vesin_ms"] = f"error: {type(err).__name__}: {str(err)[:80]}"
        else:
            row["vesin_ms"] = "vesin-torch not importable"
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------------
# 3. kernel bandwidth
# ---------------------------------------------------------------------------------------------------------
# Envsum kernel choices timed beside the defaults: the row label "op[label]" and the op's kernel choice come
# from fastdipole.ops.kernels (FORWARD_ALTERNATIVES, BACKWARD_ALTERNATIVES).
def bandwidth_section(args, device: str, fd, copy_gbs: float) -> list[dict]:
    rows = []
    n_mol = 128 if args.quick else 1024
    _, R_np, off_np, _, q_np = qm9_batch(args.qm9, n_mol, seed=2)
    for dtype in (torch.float32, torch.float64):
        es = torch.finfo(dtype).bits // 8
        R = torch.tensor(R_np, dtype=dtype, device=device)
        off = torch.tensor(off_np, device=device)
        q = torch.tensor(q_np, dtype=dtype, device=device)
        N, M = R.shape[0], off.numel() - 1
        first, second, row = fd.neighbor_pairs(R, off, CUTOFF)
        P = first.numel()
        r = (R[second] - R[first]).norm(dim=-1)
        repeats = 5 if args.quick else 50
        cases = []
        cases.append(("neighbor_pairs", lambda: fd.neighbor_pairs(R, off, CUTOFF),
                      3 * N * es + 8 * (M + 1) + 8 * (2 * P + N + 1)))
        for S, F in ((20, 128), (20, 60), (20, 5)):
            z = torch.randn((N, F), dtype=dtype, device=device)
            mu = 1.0 / torch.linspace(1.0 / 5.0, 1.0 / 0.85, S, dtype=dtype, device=device)
            sigma = torch.full((S,), 2.0 * S * 0.85, dtype=dtype, device=device)
            env = fd.gaussian_envsum(z, r, first, second, row, mu, sigma, CUTOFF)
            grad_env = torch.randn_like(env)
            index_bytes = 8 * (2 * P + N + 1)
            fwd_bytes = es * (N * F + P + 2 * S + N * S * F) + index_bytes
            bwd_bytes = es * (N * S * F + N * F + P + 2 * S) + index_bytes + es * (N * F + P + 2 * S)
            def forward(kernel="auto", z=z, mu=mu, sigma=sigma):
                return lambda: fd.gaussian_envsum(z, r, first, second, row, mu, sigma, CUTOFF, kernel)

            def backward(kernel="auto", z=z, mu=mu, sigma=sigma, g=grad_env):
                return lambda: fd.gaussian_envsum_backward(g, z, r, first, second, row, mu, sigma, CUTOFF,
                                                           [True] * 4, kernel)

            cases.append((f"gaussian_envsum S={S} F={F}", forward(), fwd_bytes))
            for label, kernel in kernels.FORWARD_ALTERNATIVES.items():
                cases.append((f"gaussian_envsum[{label}] S={S} F={F}", forward(kernel), fwd_bytes))
            cases.append((f"gaussian_envsum_backward S={S} F={F}", backward(), bwd_bytes))
            for label, kernel in kernels.BACKWARD_ALTERNATIVES.items():
                cases.append((f"gaussian_envsum_backward[{label}] S={S} F={F}", backward(kernel), bwd_bytes))
        grad_mu = torch.randn((M, 3), dtype=dtype, device=device)
        cases.append(("segmented_dipole", lambda: fd.segmented_dipole(q, R, off), es * (4 * N + 3 * M) + 8 * (M + 1)))
        cases.append(("segmented_dipole_backward", lambda: fd.segmented_dipole_backward(grad_mu, q, R, off),
                      es * (3 * M + 4 * N + 4 * N) + 8 * (M + 1)))
        for name, fn, n_bytes in cases:
            ms = event_ms(fn, device, repeats)
            gbs = n_bytes / (ms * 1e-3) / 1e9
            rows.append({"kernel": name, "dtype": str(dtype).replace("torch.", ""), "atoms": N, "pairs": P,
                         "ms": ms, "useful_MB": n_bytes / 1e6, "GB_per_s": gbs,
                         "fraction_of_copy": gbs / copy_gbs if copy_gbs else float("nan")})
    return rows


# ---------------------------------------------------------------------------------------------------------
# 4. training step
# ---------------------------------------------------------------------------------------------------------
def paper_loss(q_pred, q_true, mu_pred, mu_true):
    """l1 (RMSE_q + MAE_q + mean|q_pred|) + l2 (RMSE_mu + MAE_mu); dipole magnitudes in e*Angstrom."""
    dq, dmu = q_pred - q_true, mu_pred - mu_true
    charge = dq.square().mean().sqrt() + dq.abs().mean() + q_pred.abs().mean()
    dipole = dmu.square().mean().sqrt() + dmu.abs().mean()
    return L1 * charge + L2 * dipole


def fastdipole_step(nf, batch, device, validate, compiled=False):
    """One training step of fastdipole as `fastdipole train` runs it (fused Adam); compiled: the model under
    torch.compile(dynamic=True) (its first steps compile: time them apart from the steady state)."""
    from fastdipole.nn import DipoleModel
    from fastdipole.train.optim import make_optimizer

    Z, R, off, mu, q = batch
    torch.manual_seed(0)
    model = DipoleModel.from_config(n_features=nf, n_interaction_layers=2, backend="compiled",
                                    validate_inputs=validate, dipole_origin="absolute", **SETTINGS).to(device)
    opt = make_optimizer(model.parameters(), lr=1e-3)
    forward = torch.compile(model, dynamic=True) if compiled else model

    def step():
        opt.zero_grad(set_to_none=True)
        out = forward(Z, R, off)
        paper_loss(out.charges, q, out.magnitude, mu).backward()
        opt.step()

    return step


def fastdipole_graphed_step(nf, batch, device):
    """One training step with --cuda-graphs: pad to the size bucket, neighbour list, graph replay, fused Adam.
    The batch starts on the host, as the trainer's batches do (the H2D copies are timed)."""
    from fastdipole.data.batching import Batch
    from fastdipole.nn import DipoleModel
    from fastdipole.train.graphed import GraphedTrainStep
    from fastdipole.train.optim import make_optimizer
    from fastdipole.units import DEBYE_PER_E_ANGSTROM

    Z, R, off, mu, q = (t.cpu() for t in batch)
    host_batch = Batch(Z=Z, R=R, offsets=off, mu_debye=mu * DEBYE_PER_E_ANGSTROM, charges=q, index=None)
    torch.manual_seed(0)
    model = DipoleModel.from_config(n_features=nf, n_interaction_layers=2, backend="compiled",
                                    validate_inputs=False, dipole_origin="absolute", **SETTINGS).to(device)
    opt = make_optimizer(model.parameters(), lr=1e-3)
    graphed = GraphedTrainStep(model, "mulliken")

    def step():
        opt.zero_grad(set_to_none=True)
        graphed(host_batch, L1, L2)
        opt.step()

    return step


def hippynn_step(nf, batch, device, backend):
    from hippynn import custom_kernels
    from hippynn.layers.targets import HCharge
    from hippynn.networks.hipnn import Hipnn

    from fastdipole.ops import molecule_index, reference
    from fastdipole.train.optim import make_optimizer

    custom_kernels.set_custom_kernels(backend)
    Z, R, off, mu, q = batch
    torch.manual_seed(0)
    net = Hipnn(n_features=nf, n_interaction_layers=2, possible_species=[0, 1, 6, 7, 8, 9], **SETTINGS).to(device)
    head = HCharge(net.feature_sizes).to(device)
    opt = make_optimizer([*net.parameters(), *head.parameters()], lr=1e-3)  # the same fused Adam as ours
    species = torch.tensor([1, 6, 7, 8, 9], device=device)
    z0 = (Z[:, None] == species[None, :]).float()
    first, second, _ = reference.neighbor_pairs(R, off, CUTOFF)  # precomputed: hippynn's pair finding is ~1%
    mol = molecule_index(off, R.shape[0])

    def step():
        opt.zero_grad(set_to_none=True)
        r = (R[second] - R[first]).norm(dim=-1)
        charges = head(net(z0, first, second, r))[0].squeeze(-1)
        dipole = R.new_zeros((off.numel() - 1, 3)).index_add(0, mol, charges[:, None] * R)
        paper_loss(charges, q, dipole.norm(dim=-1), mu).backward()
        opt.step()

    return step


def training_section(args, device: str) -> list[dict]:
    from fastdipole.units import DEBYE_PER_E_ANGSTROM

    Z_np, R_np, off_np, mu_np, q_np = qm9_batch(args.qm9, 128, seed=3)
    batch = (torch.tensor(Z_np, device=device), torch.tensor(R_np, dtype=torch.float32, device=device),
             torch.tensor(off_np, device=device), torch.tensor(mu_np / DEBYE_PER_E_ANGSTROM, dtype=torch.float32,
                                                               device=device),
             torch.tensor(q_np, dtype=torch.float32, device=device))
    repeats = 5 if args.quick else 50
    rows = []
    variants = [
        ("fastdipole_ms", lambda nf: fastdipole_step(nf, batch, device, validate=True)),
        ("fastdipole_no_checks_ms", lambda nf: fastdipole_step(nf, batch, device, validate=False)),
        ("fastdipole_cuda_graphs_ms", lambda nf: fastdipole_graphed_step(nf, batch, device)),
        ("fastdipole_compiled_ms", lambda nf: fastdipole_step(nf, batch, device, validate=False, compiled=True)),
        ("hippynn_triton_ms", lambda nf: hippynn_step(nf, batch, device, "triton")),
        ("hippynn_pytorch_ms", lambda nf: hippynn_step(nf, batch, device, "pytorch")),
    ]
    known = [v[0] for v in variants]
    wanted = known if args.train_variants == "all" else [f"{v}_ms" for v in args.train_variants.split(",")]
    unknown = [w[:-3] for w in wanted if w not in known]
    if unknown:
        raise ValueError(f"unknown --train-variants {unknown}; known: {[k[:-3] for k in known]}")
    for nf in (128, 60):
        timed, nf_rows = {}, []
        for label, make in variants:
            if label not in wanted:
                continue
            row = {"n_features": nf, "atoms": len(R_np), "variant": label[:-3], "first_step_s": "-", "median_ms": "-"}
            try:
                t0 = time.perf_counter()
                step = make(nf)
                step()  # the first step compiles where anything compiles
                sync(device)
                row["first_step_s"] = time.perf_counter() - t0
                row["median_ms"] = timed[label] = wall_ms(step, device, repeats=repeats, warmup=3)
            except Exception as err:  # hippynn or triton missing, ...
                row["median_ms"] = f"error: {type(err).__name__}: {str(err)[:80]}"
            nf_rows.append(row)
        rows += nf_rows
        for row in nf_rows:
            for anchor in ("hippynn_triton_ms", "hippynn_pytorch_ms"):
                ok = anchor in timed and isinstance(row.get("median_ms"), float)
                row[f"{anchor[:-3]}_over_this"] = timed[anchor] / row["median_ms"] if ok else "-"
    return rows


# ---------------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    parser.add_argument("--qm9", type=Path, default=DEFAULT_QM9, help="QM9 HDF5 file (env FASTDIPOLE_QM9_H5)")
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: harness check only")
    parser.add_argument("--sections", default="copy,neighbors,bandwidth,training")
    parser.add_argument("--train-variants", default="fastdipole,fastdipole_no_checks,fastdipole_cuda_graphs,"
                        "hippynn_triton,hippynn_pytorch",
                        help="training-step rows to run, comma-separated, or 'all' (adds fastdipole_compiled: "
                             "torch.compile, about a minute of compiling)")
    args = parser.parse_args()
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device (use --device cpu for a harness check)", file=sys.stderr)
        return 2

    import fastdipole._C as ext
    import fastdipole.ops.ops  # noqa: F401

    fd = torch.ops.fastdipole
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    results: dict = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
                     "fastdipole_with_cuda": bool(ext.with_cuda), "quick": args.quick, "sections": {}}
    print(f"# fastdipole GPU benchmarks\n\ndevice: {name}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"fastdipole CUDA kernels: {ext.with_cuda}, date {time.strftime('%Y-%m-%d %H:%M')}")
    wanted = set(args.sections.split(","))
    copy_gbs = 0.0

    def section(key, title, fn):
        if key not in wanted:
            return None
        try:
            out = fn()
        except Exception:
            out = {"error": traceback.format_exc()}
            print(f"\n## {title}\n\nFAILED:\n```\n{out['error']}```")
            results["sections"][key] = out
            return None
        results["sections"][key] = out
        table(title, out if isinstance(out, list) else [out])
        return out

    copy = section("copy", "Device-to-device copy bandwidth (read + write)", lambda: copy_bandwidth(device, args.quick))
    if copy:
        copy_gbs = copy["copy_GB_per_s"]
    section("neighbors", "Neighbour list, cutoff 6.5 Angstrom (median ms, wall clock incl. syncs)",
            lambda: neighbor_section(args, device, fd))
    section("bandwidth", "Kernel bandwidth: useful bytes / time, as a fraction of copy bandwidth",
            lambda: bandwidth_section(args, device, fd, copy_gbs))
    section("training", "Training step, 128 QM9 molecules (median ms: forward + backward + Adam)",
            lambda: training_section(args, device))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
        print(f"\nwrote {args.json}")
    failed = [k for k, v in results["sections"].items() if isinstance(v, dict) and "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
