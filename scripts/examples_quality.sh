#!/usr/bin/env bash
# F1 by labeled examples per category (QUALITY.md, "Labeled examples"): hpd on 100 products of a
# dev fold, all categories in turn, with examples drawn from the other folds.
#   scripts/examples_quality.sh MODEL FOLD "K..." [CHOICE [MODE]]
#   e.g. scripts/examples_quality.sh qwen2.5-coder-0.5b 1 "0 1 2 4 8"
# FOLD=0 with N=all runs the whole held-out fold instead of 100 of its products.
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 fold=$2 ks=$3 choice=${4:-fixed} mode=${5:-hpd} n=${N:-100}
[ -f out/folds/fold0.jsonl ] || .venv/bin/python scripts/make_folds.py ../shared/data/oamine_train.jsonl out/folds
mkdir -p out/examples
dev=out/examples/dev$fold.$n.jsonl pool=out/examples/not$fold.jsonl
.venv/bin/python - "$fold" "$n" "$dev" "$pool" <<'PY'
import json, sys
from hpd_gguf.bench import interleave
from hpd_gguf.jsonl import load_jsonl
fold, n, dev, pool = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
products = interleave(load_jsonl(f"out/folds/fold{fold}.jsonl"))
others = [r for k in range(5) if k != fold for r in load_jsonl(f"out/folds/fold{k}.jsonl")]
for path, records in ((dev, products if n == "all" else products[: int(n)]), (pool, others)):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
PY
for k in $ks; do
  out=out/examples/$model.fold$fold.$n.$mode.$choice.k$k.jsonl
  /usr/bin/time -f "$model fold $fold $mode $choice k=$k: %e s" .venv/bin/hpd-gguf run "$model" "$dev" -o "$out" --overwrite \
    --mode "$mode" --examples "$pool" --examples-per-category "$k" --example-choice "$choice" 2>&1 | grep -v '^hpd:'
  .venv/bin/hpd-gguf eval "$dev" "$out" --json "${out%.jsonl}.scores.json" | sed -n 2p
done
