#!/usr/bin/env bash
# The held-out quality table in QUALITY.md: hpd and json on dev fold 0 of OA-Mine, per model.
#   scripts/quality.sh [MODEL...]   (default: qwen2.5-coder-0.5b qwen2.5-coder-1.5b)
# Settings were chosen on folds 1 and 2; fold 0 was not looked at before this run.
set -euo pipefail
cd "$(dirname "$0")/.."
MIN_CONFIDENCE=${MIN_CONFIDENCE:-0.5}
gold=out/folds/fold0.jsonl
[ -f "$gold" ] || .venv/bin/python scripts/make_folds.py ../shared/data/oamine_train.jsonl out/folds
mkdir -p out/quality
models=("$@")
[ $# -gt 0 ] || models=(qwen2.5-coder-0.5b qwen2.5-coder-1.5b)
for model in "${models[@]}"; do
  hpd=out/quality/$model.hpd.jsonl json=out/quality/$model.json.jsonl
  /usr/bin/time -f "$model hpd: %e s" .venv/bin/hpd-gguf run "$model" "$gold" -o "$hpd" --resume \
    --constraint span --min-confidence "$MIN_CONFIDENCE"
  /usr/bin/time -f "$model json: %e s" .venv/bin/hpd-gguf run "$model" "$gold" -o "$json" --resume \
    --mode json --constraint span
  for run in "$hpd" "$json"; do
    echo "== $run"
    .venv/bin/hpd-gguf eval "$gold" "$run" --json "${run%.jsonl}.scores.json" | head -3
  done
done
