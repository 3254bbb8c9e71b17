"""CUDA code checks that need no GPU: every kernel compiles with nvcc, and the cell-list geometry is right.

* ``tools/check_cuda_compile.sh`` compiles each ``csrc/cuda/*.cu`` standalone (no torch headers) for sm_80 and
  sm_90 with warnings as errors, and each header ``csrc/cuda/*.cuh`` / ``*.h`` alone (skipped when nvcc is
  absent).
* ``tests/cuda_host/cell_grid_check.cpp`` compiles the cell-grid functions the GPU neighbour list uses
  (``csrc/cuda/cell_grid.h``) with the host compiler and compares an emulation of the GPU cell-list search
  with brute force on random and adversarial molecules (skipped when no C++ compiler is found).
* ``tests/cuda_host/kernel_emulation_check.cpp`` runs the CUDA kernels themselves on a CPU emulator
  (``tests/cuda_host/emu``: one fiber per CUDA thread, real barriers and warp collectives, garbage-filled
  shared memory) on real QM9 molecules and a dense cluster of them, and compares every op, forward and
  backward, float32 and float64, every envsum kernel choice of ``fastdipole.ops.kernels.ENVSUM_KERNELS``, with
  the CPU kernels (neighbour pairs bit for bit). Set
  ``FASTDIPOLE_CUDA_EMULATION_ASAN=1`` to build it with AddressSanitizer as well (minutes, not seconds):
  then every out-of-bounds access of a kernel, also on malformed indices, fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastdipole.ops import kernels

REPO = Path(__file__).resolve().parents[1]
CUDA_SOURCES = sorted((REPO / "csrc" / "cuda").glob("*.cu"))
CUDA_HEADERS = sorted([*(REPO / "csrc" / "cuda").glob("*.cuh"), *(REPO / "csrc" / "cuda").glob("*.h")])


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    candidate = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
    return str(candidate) if candidate.exists() else None


def _cxx() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


def test_cuda_sources_exist():
    names = {p.name for p in CUDA_SOURCES}
    assert {"neighbors.cu", "envsum.cu", "dipole.cu"} <= names, names


def test_every_cuda_kernel_compiles_standalone(tmp_path):
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (set CUDA_HOME)")
    env = dict(os.environ, NVCC=nvcc, FASTDIPOLE_CUDA_CHECK_DIR=str(tmp_path))
    proc = subprocess.run(
        ["bash", str(REPO / "tools" / "check_cuda_compile.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for src in CUDA_SOURCES:
        assert f"ok    {src.name}" in proc.stdout, proc.stdout
        obj = tmp_path / (src.stem + ".o")
        assert obj.exists() and obj.stat().st_size > 0, f"no object for {src.name}"
    assert {"envsum_lanes.cuh", "kernel_plan.h", "launchers.h"} <= {h.name for h in CUDA_HEADERS}
    for header in CUDA_HEADERS:  # each compiles alone: its own includes and namespace
        assert f"ok    {header.name} (alone)" in proc.stdout, proc.stdout


def test_cell_list_geometry_matches_brute_force_on_host(tmp_path):
    cxx = _cxx()
    if cxx is None:
        pytest.skip("no C++ compiler found")
    exe = tmp_path / "cell_grid_check"
    build = subprocess.run(
        [cxx, "-std=c++17", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror",
         "-Wno-free-nonheap-object",  # GCC 13 false positive on std::vector at -O2 (seen on the GPU image)
         f"-I{REPO / 'csrc'}", str(REPO / "tests" / "cuda_host" / "cell_grid_check.cpp"), "-o", str(exe)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("ok cell_grid_check"), run.stdout


def _write_molecules(path: Path) -> int:
    """Real QM9 molecules (150 small ones, an empty one, a ~1,900-atom cluster of 100 more) for the emulator."""
    h5 = Path(os.environ.get("FASTDIPOLE_QM9_H5", REPO.parent / "shared" / "data" / "qm9" / "qm9_mulliken.h5"))
    if not h5.exists():
        return 0
    import h5py

    with h5py.File(h5, "r") as f:
        off = f["offsets"][3000:3251]
        R = f["R"][off[0] : off[-1]].astype(np.float64)
    off = off - off[0]
    side = 5
    cluster = []
    for m in range(100):  # 7 Angstrom apart: every molecule has neighbours in the next ones
        x = R[off[150 + m] : off[151 + m]]
        cluster.append(x - x.mean(0) + 7.0 * np.array([m % side, (m // side) % side, m // side**2]))
    cluster = np.concatenate(cluster)
    R_all = np.concatenate([R[: off[150]], cluster])
    counts = [*np.diff(off[:151]), 0, len(cluster)]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    with open(path, "wb") as fh:
        np.array([len(R_all), len(offsets) - 1], dtype=np.int64).tofile(fh)
        R_all.tofile(fh)
        offsets.tofile(fh)
    return len(R_all)


def test_cuda_kernels_match_cpu_kernels_on_emulator(tmp_path):
    cxx = _cxx()
    if cxx is None:
        pytest.skip("no C++ compiler found")
    emulate = subprocess.run([sys.executable, str(REPO / "tests" / "cuda_host" / "emulate.py"), str(tmp_path)],
                             capture_output=True, text=True, timeout=60)
    assert emulate.returncode == 0, emulate.stdout + emulate.stderr
    sources = [REPO / "tests" / "cuda_host" / "kernel_emulation_check.cpp"]
    sources += [tmp_path / "cuda" / f"{name}.cu.cpp" for name in ("neighbors", "envsum", "dipole")]
    sources += [REPO / "csrc" / "cpu" / f"{name}.cpp" for name in ("neighbors", "envsum", "dipole")]
    # -ffp-contract=off as the CPU kernels' CMake flags; -U_FORTIFY_SOURCE: the fibers longjmp across stacks.
    flags = ["-std=c++17", "-O1", "-ffp-contract=off", "-U_FORTIFY_SOURCE", "-DFASTDIPOLE_NO_MULTIVERSION",
             "-Wall", "-Wextra", "-Wno-unknown-pragmas"]
    sanitize = os.environ.get("FASTDIPOLE_CUDA_EMULATION_ASAN") == "1"
    if sanitize:
        flags += ["-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    includes = [f"-I{REPO / 'tests' / 'cuda_host' / 'emu'}", f"-I{tmp_path}", f"-I{REPO / 'csrc'}"]
    exe = tmp_path / "kernel_emulation_check"
    build = subprocess.run([cxx, *flags, *includes, *map(str, sources), "-o", str(exe)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    data = tmp_path / "molecules.bin"
    n_atoms = _write_molecules(data)
    # every envsum kernel choice the CUDA tests run (the default and each forced kernel), in one run
    choices = ",".join(kernels.ENVSUM_KERNELS)
    args = [str(exe), *([str(data)] if n_atoms else []), "--kernels", choices]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    run = subprocess.run(args, capture_output=True, text=True, timeout=3600 if sanitize else 900, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("ok kernel_emulation_check"), run.stdout + run.stderr
    if n_atoms:  # ran on the QM9 molecules, not the random fallback
        assert run.stdout.startswith(f"ok kernel_emulation_check: {n_atoms} atoms"), run.stdout
    assert f"envsum kernels {choices}:" in run.stdout, run.stdout
    runs = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", run.stdout.split("envsum kernels")[1])}
    for kernel in ("forward_lanes", "forward_block", "backward_lanes", "backward_tiled"):
        assert runs[kernel] > 0, run.stdout  # every kernel ran
    assert runs["refused"] > 0, run.stdout  # lanes/lanes in float64 and beyond 32 sensitivities
