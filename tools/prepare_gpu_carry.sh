#!/usr/bin/env bash
# Prepares build/gpu_carry/ (ignored by git) for tools/gpu_session.sh on an offline GPU machine
# (CPython 3.12, x86_64, torch with CUDA already installed there):
#   wheels/        the wheels below, downloaded with pip for CPython 3.12 / manylinux x86_64 (~3.5 MB)
#   qm9_slice.h5   the first 6,000 molecules of the real QM9 file, same arrays and layout (~2 MB)
#
# Wheels (installed on the GPU machine with pip --no-index --no-deps, only where missing): the anchors of
# benchmarks/gpu.py, hippynn==0.1.3 (pure Python; its triton kernels use the triton that ships with CUDA torch
# wheels) and vesin-torch==0.6.2 (one wheel with libraries for torch 2.3 ... 2.14). The lent H200 image already
# has torch, numpy, h5py, pytest, scikit-build-core, pybind11, cmake and ninja (device tool's KINDS.md); set
# GPU_CARRY_EXTRA="numpy h5py pytest ..." to carry more for another machine.
#
# Usage: tools/prepare_gpu_carry.sh [PYTHON_VERSION=3.12]      (needs PyPI; run from anywhere)
# Then, with the device tool: run(command="tools/gpu_session.sh", carry=["build/gpu_carry"])
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py_version="${1:-3.12}"
carry="$repo/build/gpu_carry"
python="${PYTHON:-$repo/.venv/bin/python}"
[[ -x "$python" ]] || python="$(command -v python3)"
qm9="${FASTDIPOLE_QM9_H5:-$repo/../shared/data/qm9/qm9_mulliken.h5}"

mkdir -p "$carry/wheels"
"$python" -m pip download --quiet --dest "$carry/wheels" --only-binary=:all: --no-deps \
  --python-version "$py_version" --implementation cp --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  hippynn==0.1.3 vesin-torch==0.6.2 ${GPU_CARRY_EXTRA:-}

"$python" - "$qm9" "$carry/qm9_slice.h5" <<'EOF'
"""First 6,000 molecules of the QM9 file, every per-atom and per-molecule array, offsets rebased."""
import sys

import h5py
import numpy as np

src, dst, n = sys.argv[1], sys.argv[2], 6000
with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
    off = f["offsets"][: n + 1]
    for name, ds in f.items():
        if name == "offsets":
            data = off - off[0]
        elif ds.shape and ds.shape[0] == len(f["offsets"]) - 1:
            data = ds[:n]
        else:
            data = ds[off[0] : off[-1]]
        g.create_dataset(name, data=data, compression="gzip")
    for key, value in f.attrs.items():
        g.attrs[key] = value
    g.attrs["slice"] = f"first {n} molecules of {src}"
print(f"wrote {dst}: {n} molecules, {int(off[-1] - off[0])} atoms")
EOF
du -sh "$carry/wheels" "$carry/qm9_slice.h5"
ls "$carry/wheels"
