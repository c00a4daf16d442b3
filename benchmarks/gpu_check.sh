#!/usr/bin/env bash
# The GPU check of issue 13 on the GPU machine (docs/benchmarks.md, "GPU check"): the CUDA
# tests, training throughput and one real training, in one command. Needs .gpucheck/ from
# `python benchmarks/gpu_check.py --prepare`. Output: $OUT (else benchmarks/out/).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/out}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python=$(command -v python || command -v python3)
nvidia-smi >"$out/gpu_check_nvidia_smi.txt" 2>&1 || true
"$python" benchmarks/gpu_check.py "$@" 2>&1 | tee "$out/gpu_check.log"
