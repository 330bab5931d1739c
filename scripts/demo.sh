#!/usr/bin/env bash
# Sets everything up, then extracts the example products with the default model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/hpd-gguf run qwen2.5-coder-0.5b examples/products.jsonl --schema examples/schema.json "$@"
