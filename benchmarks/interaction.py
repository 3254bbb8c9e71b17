"""Interaction-kernel speed: fastdipole's fused Gaussian envsum vs hippynn 0.1.3's custom kernels.

Inputs: real QM9 molecules (default 128, drawn with a fixed seed), all pairs within 6.5 Angstrom,
n_sens = 20 sensitivities with hippynn's initial mu/sigma (soft min 0.85 A, soft max 5.0 A), random
float32 features of width 60 and 128, and a random upstream gradient dL/d env.

Two views, medians in ms:
  * kernels: fastdipole's forward op (sensitivities computed inside) vs hippynn envsum on precomputed
    sensitivities; fastdipole's backward op (sensesum + featsum + d s/d(r, mu, sigma), fused) vs hippynn's
    sensesum + featsum kernels alone.
  * autograd: forward from (z, r, mu, sigma) to env including the sensitivities (hippynn computes them
    with torch ops), and the backward to all four, as a training step runs them.
hippynn backends: "numba" (its CPU default), "pytorch" (torch.compile of its dense torch kernels).
Numba gets as many threads as torch (NUMBA_NUM_THREADS).

    OMP_NUM_THREADS=1 python benchmarks/interaction.py [--qm9 PATH] [--features 60,128]
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from functools import partial

from _common import QM9_H5 as DEFAULT_QM9
from _common import median_ms as _median_ms

# Each case stops after ~20 s so the slow anchors (naive torch at 20k atoms) don't dominate the run.
median_ms = partial(_median_ms, warmup=2, budget_s=20.0, min_runs=5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qm9", type=Path, default=Path(os.environ.get("FASTDIPOLE_QM9_H5", DEFAULT_QM9)))
    parser.add_argument("--n-molecules", type=int, default=128)
    parser.add_argument("--features", default="60,128")
    parser.add_argument("--n-sens", type=int, default=20)
    parser.add_argument("--cutoff", type=float, default=6.5, help="Angstrom")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", default="numba,pytorch", help="hippynn kernel backends to compare with")
    args = parser.parse_args()

    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    import fastdipole.ops as fops
    from fastdipole.ops import reference

    if not fops.extension_available():
        print(f"fastdipole extension not built: {fops.extension_error()}", file=sys.stderr)
        return 1
    import fastdipole.ops.ops  # noqa: F401  (registers autograd for torch.ops.fastdipole.*)
    if not args.qm9.exists():
        print(f"QM9 file {args.qm9} not found", file=sys.stderr)
        return 1

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from neighbors import load_qm9_batch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from hippynn.custom_kernels import populate_custom_kernel_availability
        from hippynn.custom_kernels.registry import MessagePassingKernels

        populate_custom_kernel_availability()
    backends = {}
    for name in args.backends.split(","):
        try:
            backends[name] = MessagePassingKernels.get_implementation(name)
        except Exception as err:  # noqa: BLE001 - report and go on without that backend
            print(f"(hippynn backend {name!r} unavailable: {err})", file=sys.stderr)

    ops = torch.ops.fastdipole
    R, offsets = load_qm9_batch(args.qm9, args.n_molecules, args.seed)
    pf, ps, ro = ops.neighbor_pairs(R, offsets, args.cutoff)
    r = fops.pair_distances(R, pf, ps)
    S = args.n_sens
    # hippynn's initial sensitivity parameters (as nn/sensitivity.py): mu in A, sigma multiplies 1/r differences.
    mu = (1.0 / torch.linspace(1.0 / 5.0, 1.0 / 0.85, S)).float()
    sigma = torch.full((S,), 2.0 * S * 0.85)
    cutoff = args.cutoff
    gen = torch.Generator().manual_seed(args.seed)

    rows = []
    for F in [int(f) for f in args.features.split(",")]:
        z = torch.randn((R.shape[0], F), generator=gen)
        grad_env = torch.randn((R.shape[0], S, F), generator=gen)
        sens = reference.sensitivities(r, mu, sigma, cutoff)
        results: dict[str, dict[str, float]] = {}

        # --- kernels only ---
        res = {}
        res["kernel fwd"] = median_ms(lambda: ops.gaussian_envsum(z, r, pf, ps, ro, mu, sigma, cutoff), args.repeats)
        res["kernel bwd"] = median_ms(
            lambda: ops.gaussian_envsum_backward(grad_env, z, r, pf, ps, ro, mu, sigma, cutoff), args.repeats
        )
        results["fastdipole"] = res
        for name, impl in backends.items():
            res = {}
            res["kernel fwd"] = median_ms(lambda: impl.envsum_impl(sens, z, pf, ps), args.repeats)
            res["kernel bwd"] = median_ms(
                lambda: (impl.sensesum_impl(grad_env, z, pf, ps), impl.featsum_impl(grad_env, sens, pf, ps)),
                args.repeats,
            )
            results[f"hippynn {name}"] = res

        # --- autograd: (z, r, mu, sigma) -> env -> grads ---
        leaves = [t.clone().requires_grad_(True) for t in (z, r, mu, sigma)]

        def ours_forward():
            return ops.gaussian_envsum(leaves[0], leaves[1], pf, ps, ro, leaves[2], leaves[3], cutoff)

        def hippynn_forward(impl):
            s = reference.sensitivities(leaves[1], leaves[2], leaves[3], cutoff)
            return impl.envsum(s, leaves[0], pf, ps)

        def fwd_bwd(forward):
            env = forward()
            torch.autograd.grad(env, leaves, grad_env)

        forwards = {"fastdipole": ours_forward}
        forwards.update({f"hippynn {n}": (lambda impl=impl: hippynn_forward(impl)) for n, impl in backends.items()})
        for label, forward in forwards.items():
            t_fwd = median_ms(forward, args.repeats)
            t_all = median_ms(lambda: fwd_bwd(forward), args.repeats)
            results[label]["autograd fwd"] = t_fwd
            results[label]["autograd fwd+bwd"] = t_all

        # Same function: check before reporting speed.
        env_ours = ours_forward().detach()
        for label in results:
            if label.startswith("hippynn"):
                env_h = hippynn_forward(backends[label.split()[1]]).detach()
                err = float((env_h - env_ours).abs().max() / env_ours.abs().max())
                assert err < 1e-5, f"{label} and fastdipole disagree: max rel err {err:.2e}"
        rows.append((F, results))

    n_atoms, n_pairs = R.shape[0], pf.numel()
    print()
    print("command: OMP_NUM_THREADS=%s python %s" % (os.environ.get("OMP_NUM_THREADS", "?"), " ".join(sys.argv)))
    print(
        f"torch {torch.__version__}, {args.threads} thread(s); {args.n_molecules} QM9 molecules, {n_atoms} atoms, "
        f"{n_pairs} pairs (cutoff {cutoff} A), n_sens {S}, float32; median ms of up to {args.repeats} runs\n"
    )
    cols = ["kernel fwd", "kernel bwd", "autograd fwd", "autograd fwd+bwd"]
    print("| features | implementation | " + " | ".join(f"{c} ms" for c in cols) + " | " + " | ".join(f"{c} x" for c in cols) + " |")
    print("|" + "---|" * (2 + 2 * len(cols)))
    for F, results in rows:
        ours = results["fastdipole"]
        for label, res in results.items():
            speedups = [f"{res[c] / ours[c]:.1f}" if label != "fastdipole" else "1" for c in cols]
            print(f"| {F} | {label} | " + " | ".join(f"{res[c]:.3f}" for c in cols) + " | " + " | ".join(speedups) + " |")
    print("\nx = implementation time / fastdipole time (how many times faster fastdipole is).")
    print("kernel bwd of hippynn = sensesum + featsum only (no sensitivity derivatives); fastdipole's includes them.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
