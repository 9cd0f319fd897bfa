#!/usr/bin/env bash
# GPU check for a person with ten minutes on a one-GPU machine, from the repository root:
#   bash benchmarks/gpu_check.sh [OUT]        (default OUT: runs/gpu-check)
# Installs minivae with its test and gpu extras in a fresh venv, then writes into OUT:
# the card (nvidia-smi), the PTX compile test and the kernel tests with the CUDA simulator
# off, each model on "gpu" against "cpu" and RBF / GP timings against the copy-bandwidth
# floor (benchmarks/gpu_check.py), and `minivae bench --device gpu --quick`. Every step
# runs even when an earlier one fails; OUT/status.txt lists each step's exit status.
set -uo pipefail
OUT="${1:-runs/gpu-check}"
mkdir -p "$OUT"
python3 -m venv "$OUT/venv" && . "$OUT/venv/bin/activate"
pip install --quiet -e ".[test,gpu]" > "$OUT/install.log" 2>&1
: > "$OUT/status.txt"
step() {  # step NAME COMMAND...: run, log to OUT/NAME.log, record the exit status
    local name="$1"; shift
    "$@" > "$OUT/$name.log" 2>&1
    echo "$name: exit $?" >> "$OUT/status.txt"
}
step nvidia-smi nvidia-smi
step ptx-compile pytest -q -p no:cacheprovider tests/test_ptx_compile.py
export NUMBA_ENABLE_CUDASIM=0
step kernel-tests pytest -q -p no:cacheprovider tests/test_rbf.py tests/test_reparam.py \
    tests/test_adam.py tests/test_bernoulli.py tests/test_dense_kernels.py
step models python benchmarks/gpu_check.py --out "$OUT" --device gpu
step bench minivae bench --device gpu --quick --out "$OUT/bench.json"
cat "$OUT/status.txt"
