#!/usr/bin/env bash
# The figures of BENCHMARKS.md "Ray": the same documents (categories interleaved, in input order)
# in one process with 2 threads, on Ray with 1 worker x 2 threads, and on Ray with 2 workers x
# 1 thread; wall time of each whole command, and how many values equal the one-process run's.
#   scripts/ray_bench.sh [MODEL] [DOCUMENTS]       (qwen2.5-coder-0.5b, 128)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-qwen2.5-coder-0.5b}
COUNT=${2:-128}
OUT=out/ray_bench
mkdir -p "$OUT"
.venv/bin/python - "$COUNT" "$OUT/docs.jsonl" <<'EOF'
import json, sys
from hpd_gguf.bench import interleave
from hpd_gguf.jsonl import load_jsonl
records = interleave(load_jsonl("../shared/data/oamine_train.jsonl"))[: int(sys.argv[1])]
with open(sys.argv[2], "w") as f:
    for r in records:
        f.write(json.dumps({k: r[k] for k in ("id", "text", "category", "attributes")}) + "\n")
EOF
run() {  # NAME ARGS...: the command's wall time in seconds
    local name=$1; shift
    local start=$(date +%s.%N)
    .venv/bin/hpd-gguf run "$MODEL" "$OUT/docs.jsonl" -o "$OUT/$name.jsonl" --overwrite "$@" 2>"$OUT/$name.log"
    echo "$name $(echo "$(date +%s.%N) - $start" | bc)"
}
{
    run one-process --threads 2
    run ray-1x2 --ray auto --workers 1 --threads-per-worker 2
    run ray-2x1 --ray auto --workers 2 --threads-per-worker 1
    run ray-2x1-two-batches-in-flight --ray auto --workers 2 --threads-per-worker 1 --batches-in-flight 2
} | tee "$OUT/times.txt"
.venv/bin/python - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
load = lambda name: [json.loads(l) for l in (out / f"{name}.jsonl").read_text().splitlines()]
base = load("one-process")
times = dict(line.split() for line in (out / "times.txt").read_text().splitlines())
print(f"{'run':<30}{'wall s':>8}{'x one process':>15}{'same values':>14}  order kept")
for name, seconds in times.items():
    rows = load(name)
    same = sum(r["values"].get(k) == v for r, b in zip(rows, base) for k, v in b["values"].items())
    total = sum(len(b["values"]) for b in base)
    print(f"{name:<30}{float(seconds):>8.1f}{float(seconds) / float(times['one-process']):>15.2f}"
          f"{100 * same / total:>13.1f}%  {[r['id'] for r in rows] == [b['id'] for b in base]}")
EOF
