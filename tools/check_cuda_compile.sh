#!/usr/bin/env bash
# Compiles every CUDA kernel file csrc/cuda/*.cu with nvcc, standalone (no torch headers, no GPU needed),
# for sm_80 and sm_90, with warnings as errors (register spills included), then every header csrc/cuda/*.cuh
# and *.h on its own (a one-line .cu that includes only it), so each brings its own includes and namespace.
# Fast: 1-20 s per file.
#
# Usage: tools/check_cuda_compile.sh [extra nvcc flags...]
# Env:   NVCC (default: nvcc on PATH, else $CUDA_HOME/bin/nvcc), CUDA_ARCHS (default "80 90"),
#        FASTDIPOLE_CUDA_CHECK_DIR (where objects go; default a temporary directory, removed afterwards).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
nvcc_bin="${NVCC:-}"
if [[ -z "$nvcc_bin" ]]; then
  if command -v nvcc >/dev/null 2>&1; then
    nvcc_bin="$(command -v nvcc)"
  elif [[ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]]; then
    nvcc_bin="${CUDA_HOME:-/usr/local/cuda}/bin/nvcc"
  else
    echo "check_cuda_compile: nvcc not found (set NVCC or CUDA_HOME)" >&2
    exit 2
  fi
fi
read -r -a archs <<<"${CUDA_ARCHS:-80 90}"

out_dir="${FASTDIPOLE_CUDA_CHECK_DIR:-}"
cleanup=0
if [[ -z "$out_dir" ]]; then
  out_dir="$(mktemp -d)"
  cleanup=1
fi
mkdir -p "$out_dir"
trap '[[ $cleanup == 1 ]] && rm -rf "$out_dir"' EXIT

gencode=()
for a in "${archs[@]}"; do gencode+=(-gencode "arch=compute_${a},code=sm_${a}"); done

shopt -s nullglob
files=("$repo"/csrc/cuda/*.cu)
if [[ ${#files[@]} == 0 ]]; then
  echo "check_cuda_compile: no .cu files in $repo/csrc/cuda" >&2
  exit 2
fi

echo "nvcc: $("$nvcc_bin" --version | tail -n 1)"
status=0
# compile SOURCE OBJECT LABEL: -Werror all-warnings makes nvcc front-end and ptxas warnings errors, including
# register spills (-Xptxas -warn-spills): the kernels must stay spill-free on sm_80 and sm_90. -Xcompiler:
# host code too.
compile() {
  local start ms
  start=$(date +%s%N)
  if "$nvcc_bin" -std=c++17 -O3 -c "$1" -o "$2" -I"$repo/csrc" "${gencode[@]}" \
      -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror -Xptxas -warn-spills ${extra[@]+"${extra[@]}"}; then
    ms=$((($(date +%s%N) - start) / 1000000))
    printf 'ok    %-28s %3d.%d s\n' "$3" $((ms / 1000)) $((ms % 1000 / 100))
  else
    echo "FAIL  $3" >&2
    status=1
  fi
}
extra=("$@")
for f in "${files[@]}"; do
  compile "$f" "$out_dir/$(basename "$f" .cu).o" "$(basename "$f")"
done
# Each header alone: it must include what it uses and open its own namespace (none is meant to be pasted
# into another file's namespace).
for h in "$repo"/csrc/cuda/*.cuh "$repo"/csrc/cuda/*.h; do
  name="$(basename "$h")"
  unit="$out_dir/header_${name//./_}.cu"
  printf '#include "cuda/%s"\n' "$name" >"$unit"
  compile "$unit" "${unit%.cu}.o" "$name (alone)"
done
exit $status
