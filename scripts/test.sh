#!/usr/bin/env bash
# Sets everything up (the test model included), then runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f models/SmolLM2-135M-Instruct.Q4_1.gguf ] || .venv/bin/hpd-gguf models pull smollm2-135m
.venv/bin/python -m pytest "$@"
