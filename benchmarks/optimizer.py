"""Adam step time for a DipoleModel's parameters: torch's default, foreach and fused implementations.

    OMP_NUM_THREADS=1 python benchmarks/optimizer.py [--features 60]
"""

from __future__ import annotations

import argparse

import torch

from _common import header, median_ms, pin_threads, table

from fastdipole.nn import DipoleModel


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=60)
    args = parser.parse_args()
    pin_threads(1)
    header(f"Adam step, DipoleModel nf={args.features} (1 thread, ms, median of 50)")
    model = DipoleModel.from_config(n_features=args.features)
    rows = []
    for name, kwargs in (("default", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, **kwargs)
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        rows.append({"Adam": name, "ms/step": median_ms(opt.step, 50)})
    table(rows)


if __name__ == "__main__":
    main()
