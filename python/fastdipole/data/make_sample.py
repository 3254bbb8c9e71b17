"""Make the bundled sample ``sample/qm9_sample.h5``: 4,000 random real QM9 molecules (fixed seed).

Usage: python -m fastdipole.data.make_sample [QM9_H5] [--n 4000] [--seed 0] [--out PATH]
The source is the full QM9 file in our layout (``qm9_mulliken.h5``, built from qm9pack 1.0.3).
Molecules keep their original order (sorted by gdb id); ``gdb_id`` identifies them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .h5io import bundled_sample_path, load_h5, save_h5

DEFAULT_SOURCE = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "qm9" / "qm9_mulliken.h5"
SAMPLE_SIZE = 4000
SAMPLE_SEED = 0


def make_sample(source=DEFAULT_SOURCE, out=None, n: int = SAMPLE_SIZE, seed: int = SAMPLE_SEED) -> Path:
    full = load_h5(source, charges="q_mulliken")
    pick = np.sort(np.random.default_rng(seed).choice(full.n_molecules, size=n, replace=False))
    sample = full.subset(pick)
    sample.extra = {"gdb_id": sample.extra["gdb_id"]}  # drop the all-True 'characterized' flag
    out = bundled_sample_path() if out is None else Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_h5(
        sample,
        out,
        attrs={
            "description": f"{n} QM9 molecules drawn at random (numpy default_rng({seed})) from the 130,831 "
            "characterized QM9 molecules: Z, R [Angstrom], Mulliken charges q_mulliken [e], dipole magnitude mu [Debye]",
            "citation": "R. Ramakrishnan, P. O. Dral, M. Rupp, O. A. von Lilienfeld, Sci. Data 1, 140022 (2014)",
            "sources": "qm9pack==1.0.3 (PyPI, MIT licence) CSV data, via qm9_mulliken.h5",
        },
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default=str(DEFAULT_SOURCE), help="full QM9 .h5 in our layout")
    parser.add_argument("--n", type=int, default=SAMPLE_SIZE, help="number of molecules")
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED, help="random seed")
    parser.add_argument("--out", default=None, help="output path (default: the bundled sample)")
    args = parser.parse_args(argv)
    path = make_sample(args.source, args.out, args.n, args.seed)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
