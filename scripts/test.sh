#!/usr/bin/env bash
# Sets everything up (the test model and the server extra included), then runs the test suite.
#   HPD_GGUF_CPU=avx2 scripts/test.sh   the same on llama.cpp's AVX2 kernels (in .venv-avx2), as an
#                                       AVX2-only CPU runs them, whatever this CPU has
set -euo pipefail
cd "$(dirname "$0")/.."
cpu=${HPD_GGUF_CPU:-native}
venv=.venv
[ "$cpu" = native ] || venv=.venv-$cpu
HPD_GGUF_VENV=$venv HPD_GGUF_EXTRAS=test,server scripts/setup.sh
[ -f models/SmolLM2-135M-Instruct.Q4_1.gguf ] || "$venv/bin/hpd-gguf" models pull smollm2-135m
"$venv/bin/python" -m pytest "$@"
