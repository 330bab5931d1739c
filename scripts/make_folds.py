#!/usr/bin/env python3
"""Split a gold JSONL file into k dev folds by a hash of each id (stable across runs).

    python scripts/make_folds.py ../shared/data/oamine_train.jsonl out/folds --folds 5
writes out/folds/fold0.jsonl ... fold4.jsonl. Tune on some folds, report on another.
"""
import argparse
import hashlib
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    target = Path(args.target)
    target.mkdir(parents=True, exist_ok=True)
    outputs = [open(target / f"fold{k}.jsonl", "w", encoding="utf-8") for k in range(args.folds)]
    for line in Path(args.source).read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            fold = int(hashlib.sha1(record["id"].encode()).hexdigest(), 16) % args.folds
            outputs[fold].write(json.dumps(record, ensure_ascii=False) + "\n")
    for out in outputs:
        out.close()


if __name__ == "__main__":
    main()
