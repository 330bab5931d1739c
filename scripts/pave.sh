#!/usr/bin/env bash
# Titles with descriptions (WDC-PAVE): speed and F1 (BENCHMARKS.md and QUALITY.md, "WDC-PAVE").
#   git clone https://github.com/wbsg-uni-mannheim/wdc-pave ../wdc-pave
#   scripts/pave.sh ../wdc-pave
set -euo pipefail
cd "$(dirname "$0")/.."
data=$1/data/processed_datasets/wdc_with_all_attributes
py=.venv/bin/python bench=".venv/bin/hpd-gguf bench"
mkdir -p out/pave
$py scripts/make_pave.py "$data/test.jsonl" out/pave/test.jsonl
$py scripts/make_pave.py "$data/train_large.jsonl" out/pave/train_large.jsonl
$py scripts/make_pave.py "$data/test.jsonl" out/pave/joined.jsonl --join 2500
$py scripts/make_pave.py "$data/test.jsonl" out/pave/padded.jsonl --pad 2500
$bench qwen2.5-coder-0.5b out/pave/test.jsonl --interleave --limit 128 --modes sequential,json,hpd --gold
$bench qwen2.5-coder-0.5b out/pave/joined.jsonl --modes sequential,hpd
for docs in padded test; do  # the same 48 offers with ~2,700 characters and as they are
  $bench qwen2.5-coder-0.5b out/pave/$docs.jsonl --interleave --limit 48 --modes sequential,hpd --gold
done
for k in 0 4; do
  $bench qwen2.5-coder-1.5b out/pave/test.jsonl --interleave --limit 100 --modes hpd --gold \
    --examples out/pave/train_large.jsonl --examples-per-category $k
done
