#!/usr/bin/env bash
# Builds the whole package against a CUDA build of torch (2.14.1+cu130, from this machine's local wheel
# store) with nvcc, so the torch-facing CUDA registration (csrc/register_cuda.cpp) can never rot, then checks
# that every op has a CUDA kernel registered. No GPU needed: the kernels are compiled, not run.
#
# Separate build folder (build/cuda-check) so the CPU build cache stays untouched.
# Usage: tools/check_cuda_build.sh      Env: CUDA_VENV (default /tmp/fastdipole-cuda-venv, reused when present)
# Skips (exit 0, with a message) when nvcc is missing or the CUDA torch cannot be installed here.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CUDA_VENV:-/tmp/fastdipole-cuda-venv}"
command -v nvcc >/dev/null 2>&1 || { echo "check_cuda_build: nvcc not found, skipped"; exit 0; }

if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import torch; assert torch.version.cuda" 2>/dev/null; then
  python3 -m venv "$venv"
  if ! timeout 900 "$venv/bin/pip" install -q torch==2.14.1 numpy scikit-build-core pybind11 ninja "cmake>=3.26"; then
    echo "check_cuda_build: could not install the CUDA build of torch here, skipped"
    exit 0
  fi
fi
cd "$repo"
start=$SECONDS
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0}" \
  "$venv/bin/pip" install -q --no-build-isolation --no-deps -C build-dir=build/cuda-check .
echo "check_cuda_build: built against $("$venv/bin/python" -c 'import torch; print(torch.__version__)') in $((SECONDS - start)) s"
cd /tmp
"$venv/bin/python" - <<'PY'
import torch
import fastdipole._C  # noqa: F401  (loads the CUDA registration)

ops = ["neighbor_pairs", "gaussian_envsum", "gaussian_envsum_backward", "segmented_dipole", "segmented_dipole_backward"]
missing = [op for op in ops if not torch._C._dispatch_has_kernel_for_dispatch_key(f"fastdipole::{op}", "CUDA")]
assert not missing, f"no CUDA kernel registered for {missing}"
print(f"check_cuda_build: CUDA kernels registered for all {len(ops)} ops")
PY
