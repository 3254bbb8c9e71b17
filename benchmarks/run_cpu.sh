#!/usr/bin/env bash
# Runs every CPU benchmark one after the other (1 thread each) and keeps the logs in benchmarks/logs/.
# Usage: bash benchmarks/run_cpu.sh [python]      (default: the repo's .venv python)
set -euo pipefail
cd "$(dirname "$0")"
py="${1:-../.venv/bin/python}"
mkdir -p logs
export OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
for script in train_step neighbors interaction epoch; do
  echo "== $script"
  "$py" "$script.py" 2>&1 | tee "logs/$script.log"
done
