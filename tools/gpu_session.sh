#!/usr/bin/env bash
# One GPU validation session for fastdipole's CUDA kernels: build from source, CUDA tests, compute-sanitizer,
# benchmarks. Run from the repository root on a machine with an NVIDIA GPU, torch with CUDA (e.g. torch
# 2.11.0+cu130, Python 3.12), nvcc (13.0), CMake and ninja; no internet needed.
#
#   tools/gpu_session.sh [STEP ...]
#   STEP: env deps build compile tests bench sanitize profile   (default: env deps build tests bench sanitize)
# Env knobs: TEST_FILES (tests step), BENCH_ARGS (gpu.py arguments), SANITIZE_TOOLS, STEP_TIMEOUT_<STEP>.
# Each step logs to $LOGS/<step>.log (default build/gpu_session) and has a time limit (env STEP_TIMEOUT_<STEP>,
# seconds); a failing step does not stop the later ones. $LOGS/summary.txt gets one line per step: status,
# seconds. Exit status 0 iff every step ran and passed. Where $OUT is set (the device tool's folder of files
# that come back, at most 8 of them), the logs are bundled into $OUT/gpu_session.tgz after every step (so a
# call cut short still returns what finished), and summary.txt and gpu_bench.json are copied there too.
# The whole default session is sized for one 10-minute call on an H100/H200 (about 6-8 minutes).
#
# Steps:
#   env       nvidia-smi, python / torch / nvcc / cmake / ninja versions, compute-sanitizer location
#   deps      pip install --no-index from $FASTDIPOLE_CARRY/wheels whatever of the list below is missing
#   build     CUDA_HOME=... TORCH_CUDA_ARCH_LIST=<this GPU> pip install --no-build-isolation --no-deps -v .
#             (timed; the build dir build/<wheel tag> is reused by later calls)
#   compile   tools/check_cuda_compile.sh (every .cu and every header alone for sm_80 and sm_90, -Werror; CI too)
#   tests     pytest: the CUDA tests, the CPU op / error / hippynn-parity / graphed-step tests (junit xml; -n 8)
#   bench     python benchmarks/gpu.py --json $LOGS/gpu_bench.json, benchmarks/gpu_variants.py (each other envsum
#             kernel, forced through the ops' kernel choice, vs the default, to gpu_variants.md), then
#             benchmarks/gpu_profile.py (per-kernel times, to gpu_profile.log), then benchmarks/screening.py
#             --device cuda (`predict` end to end, to screening_cuda.log)
#   sanitize  compute-sanitizer --tool T for T in $SANITIZE_TOOLS (default: memcheck racecheck synccheck
#             initcheck) on tools/cuda_smoke.py (PYTORCH_NO_CUDA_MEMORY_CACHING=1: every tensor its own
#             allocation, exact bounds); memcheck, racecheck and synccheck must be clean, initcheck is reported
#             only; each run is capped at $SANITIZE_TIMEOUT s (default 120)
#   profile   Nsight Compute (ncu), if installed, on the envsum kernels of benchmarks/gpu_profile.py
#             --ncu-target (1024 QM9 molecules, S 20, F 128, float32; each kernel choice): speed of light,
#             occupancy, launch statistics, warp states, scheduler and memory sections, to ncu.log. Skipped
#             (and passed) where ncu is missing; a refused counter access (ERR_NVGPUCTRPERM) fails the step.
#
# Carried files ($FASTDIPOLE_CARRY, default build/gpu_carry; made on a networked machine by
# tools/prepare_gpu_carry.sh and passed to the device tool as carry=["build/gpu_carry"]):
#   wheels/       whatever the GPU machine lacks of: scikit-build-core, pybind11 (build); numpy, h5py, pytest
#                 (tests); hippynn==0.1.3, vesin-torch==0.6.2 (benchmark anchors)
#   qm9_slice.h5  6,000 real QM9 molecules for the tests and benchmarks (FASTDIPOLE_QM9_H5 overrides)
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
LOGS="${LOGS:-$repo/build/gpu_session}"
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
carry="${FASTDIPOLE_CARRY:-$repo/build/gpu_carry}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export PATH="$CUDA_HOME/bin:$PATH"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1
if [[ -z "${FASTDIPOLE_QM9_H5:-}" ]]; then
  if [[ -f "$carry/qm9_slice.h5" ]]; then
    export FASTDIPOLE_QM9_H5="$carry/qm9_slice.h5"
  elif [[ -f "$repo/../shared/data/qm9/qm9_mulliken.h5" ]]; then
    export FASTDIPOLE_QM9_H5="$repo/../shared/data/qm9/qm9_mulliken.h5"
  elif [[ -f "$repo/shared/data/qm9/qm9_mulliken.h5" ]]; then
    export FASTDIPOLE_QM9_H5="$repo/shared/data/qm9/qm9_mulliken.h5"
  fi
fi

declare -A DEFAULT_TIMEOUT=([env]=30 [deps]=60 [build]=300 [compile]=120 [tests]=200 [bench]=200 [sanitize]=260
  [profile]=150)
set -m  # each background step gets its own process group, so a timeout can stop all of it

steps=("$@")
[[ ${#steps[@]} -eq 0 ]] && steps=(env deps build tests bench sanitize)
summary="$LOGS/summary.txt"
overall=0

bundle() {  # copies what the device tool should bring back into $OUT (when set)
  [[ -n "${OUT:-}" && -d "${OUT:-}" ]] || return 0
  tar czf "$OUT/gpu_session.tgz" -C "$LOGS" . 2>/dev/null
  cp -f "$summary" "$OUT/summary.txt" 2>/dev/null
  [[ -f "$LOGS/gpu_bench.json" ]] && cp -f "$LOGS/gpu_bench.json" "$OUT/gpu_bench.json"
  return 0
}

run_step() {  # run_step NAME: runs step_NAME in a subshell under its time limit, logs to $LOGS/NAME.log
  local name="$1" start end rc limit var
  var="STEP_TIMEOUT_${name^^}"
  limit="${!var:-${DEFAULT_TIMEOUT[$name]}}"
  start=$(date +%s)
  echo "=== $name ($(date '+%F %T'), limit ${limit} s)"
  # Job control (set -m) gives the step its own process group: a step past its limit is killed with its
  # children (nvcc, pytest).
  ( "step_$name" ) >"$LOGS/$name.log" 2>&1 &
  local pid=$!
  ( sleep "$limit"; kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null ) &
  local watchdog=$!
  wait "$pid"
  rc=$?
  kill -- "-$watchdog" 2>/dev/null || kill "$watchdog" 2>/dev/null  # the watchdog and its sleep
  wait "$watchdog" 2>/dev/null
  end=$(date +%s)
  local status="PASS"
  [[ $rc -ne 0 ]] && status="FAIL(rc=$rc)" && overall=1
  [[ $rc -eq 77 ]] && status="SKIPPED" && overall=1
  [[ $((end - start)) -ge $limit ]] && status="TIMEOUT(${limit}s)" && overall=1
  printf '%-9s %-14s %5d s\n' "$name" "$status" "$((end - start))" | tee -a "$summary"
  tail -n 25 "$LOGS/$name.log" | cut -c1-300 | sed 's/^/    /'
  bundle
}

sanitizer_bin() {
  local c
  for c in "$(command -v compute-sanitizer 2>/dev/null)" "$CUDA_HOME/bin/compute-sanitizer" \
    "$CUDA_HOME/compute-sanitizer/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer; do
    [[ -n "$c" && -x "$c" ]] && { echo "$c"; return 0; }
  done
  return 1
}

ncu_bin() {
  local c
  for c in "$(command -v ncu 2>/dev/null)" "$CUDA_HOME/bin/ncu" "$CUDA_HOME"/nsight-compute*/ncu \
    /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu; do
    [[ -n "$c" && -x "$c" ]] && { echo "$c"; return 0; }
  done
  return 1
}

step_env() {
  date
  nvidia-smi || true
  "$PYTHON" - <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, "capability", f"{p.major}.{p.minor}", "memory GiB", round(p.total_memory / 2**30, 1),
          "SMs", p.multi_processor_count)
EOF
  nvcc --version || true
  cmake --version || true
  ninja --version || true
  echo "compute-sanitizer: $(sanitizer_bin || echo 'not found')"
  echo "ncu: $(ncu_bin || echo 'not found')"
  echo "FASTDIPOLE_QM9_H5=${FASTDIPOLE_QM9_H5:-unset}"
  echo "carry: $carry"; ls -la "$carry" "$carry/wheels" 2>/dev/null || true
}

step_deps() {
  local missing=() pkg mod
  for pkg in scikit-build-core:scikit_build_core pybind11:pybind11 numpy:numpy h5py:h5py pytest:pytest \
    hippynn:hippynn vesin-torch:vesin_torch ninja:ninja cmake:cmake; do
    mod="${pkg#*:}"
    "$PYTHON" -c "import $mod" 2>/dev/null || missing+=("${pkg%%:*}")
  done
  echo "missing: ${missing[*]:-none}"
  [[ ${#missing[@]} -eq 0 ]] && return 0
  local rc=0
  for pkg in "${missing[@]}"; do
    if [[ "$pkg" == ninja || "$pkg" == cmake ]]; then
      command -v "$pkg" >/dev/null && { echo "$pkg: using the system one"; continue; }
    fi
    "$PYTHON" -m pip install --no-index --no-deps --find-links "$carry/wheels" "$pkg" || {
      echo "could not install $pkg from $carry/wheels"
      [[ "$pkg" == hippynn || "$pkg" == vesin-torch ]] || rc=1  # anchors are optional
    }
  done
  return $rc
}

step_build() {
  local arch
  arch="$("$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())' 2>/dev/null)"
  export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-${arch:-8.0;9.0}}"
  echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST CUDA_HOME=$CUDA_HOME"
  [[ -f README.md ]] || echo "# fastdipole" >README.md  # the package metadata needs one
  local start end
  start=$(date +%s)
  "$PYTHON" -m pip install --no-build-isolation --no-deps --no-index -v . || return 1
  end=$(date +%s)
  echo "build + install: $((end - start)) s"
  echo "g++ -print-file-name=libstdc++.so: $(${CXX:-g++} -print-file-name=libstdc++.so 2>/dev/null)"
  local so
  so="$(cd /tmp && "$PYTHON" -c 'import fastdipole._C as c; print(c.__file__)' 2>/dev/null)"
  [[ -n "$so" ]] && command -v nm >/dev/null &&
    echo "libstdc++ symbols defined in _C (0 expected): $(nm -DC --defined-only "$so" | grep -c 'std::locale')"
  (cd /tmp && "$PYTHON" -c "import torch, fastdipole._C as c; print('fastdipole._C', c.__file__, 'with_cuda', c.with_cuda); assert c.with_cuda") || return 1
  # An error message with a number in it must come back as an exception (a static libstdc++ segfaulted here).
  (cd /tmp && "$PYTHON" -c "
import torch, fastdipole._C
try:
    torch.ops.fastdipole.neighbor_pairs(torch.zeros(4, 3), torch.tensor([0, 3, 2, 4]), 6.5)
except RuntimeError as err:
    print('error messages work:', str(err).splitlines()[0])
")
}

step_compile() {
  bash tools/check_cuda_compile.sh
}

step_tests() {
  # The CUDA tests, plus the CPU op, error-message and hippynn-parity tests: they catch build problems
  # of this machine's toolchain that CI's cannot show (a statically linked libstdc++ crashed every error
  # message here once). pytest-xdist spreads them over the cores where it is installed.
  local parallel=()
  "$PYTHON" -c "import xdist" 2>/dev/null && parallel=(-n 8)
  # (tests/test_cuda_compile.py is CPU-only, minutes of emulation on one core, and runs in CI: not here.)
  local files=(tests/test_cuda_ops.py tests/test_cuda_model.py tests/test_ops_neighbors.py tests/test_ops_envsum.py
    tests/test_ops_dipole.py tests/test_data_errors.py tests/test_nn_hippynn_parity.py tests/test_train_graphed.py)
  # shellcheck disable=SC2206  # TEST_FILES: another list of test files, space-separated
  [[ -n "${TEST_FILES:-}" ]] && files=(${TEST_FILES})
  "$PYTHON" -m pytest -v -ra --durations=10 --junitxml="$LOGS/pytest_cuda.xml" -p no:cacheprovider "${parallel[@]}" \
    "${files[@]}"
}

step_sanitize() {
  local cs rc=0 tool
  cs="$(sanitizer_bin)" || { echo "compute-sanitizer not found"; return 77; }
  "$cs" --version | head -n 3
  for tool in ${SANITIZE_TOOLS:-memcheck racecheck synccheck initcheck}; do
    echo "--- $tool"
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout "${SANITIZE_TIMEOUT:-120}" "$cs" --tool "$tool" --error-exitcode 66 \
      --print-limit 40 "$PYTHON" tools/cuda_smoke.py >"$LOGS/sanitize_$tool.log" 2>&1
    local r=$?
    tail -n 8 "$LOGS/sanitize_$tool.log"
    echo "$tool exit code: $r"
    if [[ $r -ne 0 && $tool != initcheck ]]; then rc=1; fi
  done
  return $rc
}

step_bench() {
  # shellcheck disable=SC2086  # BENCH_ARGS: extra gpu.py arguments, e.g. "--sections copy,bandwidth"
  "$PYTHON" benchmarks/gpu.py --json "$LOGS/gpu_bench.json" ${BENCH_ARGS:-} || return 1
  # the other envsum kernels, forced, against the defaults (candidates for a new default)
  "$PYTHON" benchmarks/gpu_variants.py "$LOGS/gpu_bench.json" >"$LOGS/gpu_variants.md" 2>&1 &&
    sed -n '/^Candidates/,$p' "$LOGS/gpu_variants.md"
  # Whole epochs of `fastdipole train` (QM9 file of the session, defaults: nf 60, batch 128), eager vs graphs.
  local flag
  for flag in --no-cuda-graphs --cuda-graphs; do
    rm -rf "/tmp/fd_epochs$flag"
    "$PYTHON" -m fastdipole.cli train --data "$FASTDIPOLE_QM9_H5" --out "/tmp/fd_epochs$flag" --epochs 4 \
      --device cuda --no-progress "$flag" >"$LOGS/train$flag.log" 2>&1 || { echo "train $flag failed"; continue; }
    "$PYTHON" -c "import csv,sys; rows=list(csv.DictReader(open(sys.argv[1]))); print(sys.argv[2], 'epoch seconds:', [round(float(r['epoch_seconds']), 3) for r in rows])" \
      "/tmp/fd_epochs$flag/metrics.csv" "$flag"
  done
  "$PYTHON" benchmarks/gpu_profile.py >"$LOGS/gpu_profile.log" 2>&1 || echo "gpu_profile.py failed (see gpu_profile.log)"
  # issue 16: `fastdipole predict --device cuda` end to end on the session's QM9 file (target: all of QM9, 130,831
  # molecules, in under 1 s; the carried slice holds 6,000, so scale by molecules/s)
  "$PYTHON" benchmarks/screening.py --device cuda --data "$FASTDIPOLE_QM9_H5" --threads 1 \
    >"$LOGS/screening_cuda.log" 2>&1 && tail -n 8 "$LOGS/screening_cuda.log" || echo "screening.py failed (see screening_cuda.log)"
}

step_profile() {
  local ncu
  if ! ncu="$(ncu_bin)"; then
    echo "ncu (Nsight Compute) not found: profile step skipped"
    return 0
  fi
  "$ncu" --version | tail -n 1
  # every envsum / featsum launch of the target (each kernel choice once; at most 2 such kernels per backward),
  # the sections that say whether a kernel waits on memory, on latency (occupancy, stalls) or on issue slots
  "$ncu" --target-processes all --kernel-name 'regex:envsum|featsum' --launch-count 40 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section SchedulerStats --section MemoryWorkloadAnalysis \
    "$PYTHON" benchmarks/gpu_profile.py --ncu-target >"$LOGS/ncu.log" 2>&1
  local r=$?
  grep -E "envsum|featsum|Duration|Throughput|Achieved Occupancy|Registers Per|Theoretical Occupancy|Issued Ipc|No Eligible|Stall|ERR_" \
    "$LOGS/ncu.log" | head -n 120
  return $r
}

echo "# gpu_session $(date '+%F %T') steps: ${steps[*]}" >>"$summary"
for s in "${steps[@]}"; do
  case "$s" in
    env | deps | build | compile | tests | sanitize | bench | profile) run_step "$s" ;;
    *) echo "unknown step '$s' (env deps build compile tests sanitize bench profile)" | tee -a "$summary"; overall=1 ;;
  esac
done
bundle
echo "summary: $summary"
exit $overall
