"""What one row of a decode batch costs on this machine, and what its attention adds.

    .venv/bin/python scripts/decode_cost.py [--model NAME] [--run DOCS.jsonl --limit 64 [--examples FILE]]

Each row is a one-token sequence of its own, as hpd's branches are. It prints, per row:
the row alone, the row with logits, each KV cell the row sees (in batches of 64 rows or more,
which llama.cpp's CPU flash attention computes in tiles of 64 rows x 64 cells, and in smaller
ones, computed row by row), and each occupied cell it does not see (masked, but scanned).
With --run it then runs hpd on DOCS (categories in turn) and sets its decode time beside what
those costs predict for the same rows: the rest is what the steps lose to their shape.
BENCHMARKS.md, "Where a step's time goes on a CPU", reads the figures.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from hpd_gguf import Extractor
from hpd_gguf.bench import interleave
from hpd_gguf.examples import read_examples
from hpd_gguf.jsonl import load_jsonl
from hpd_gguf.llama import Batch, Context, Model
from hpd_gguf.models import resolve
from hpd_gguf.schema import Schema

ROWS = 255  # sequence ids 1..255; 0 holds the cells the rows see or do not see
SHARED = 0


class Probe:
    def __init__(self, path: str):
        self.context = Context(Model(path), n_ctx=16384, n_batch=512, n_seq_max=256)
        self.batch = Batch(512)
        self.filled = 0  # cells of sequence SHARED, positions 0..filled-1

    def fill(self, cells: int) -> None:
        while self.filled < cells:
            n = min(512, cells - self.filled)
            self.batch.clear()
            self.batch.add([100] * n, self.filled, [SHARED], False)
            self.context.decode(self.batch)
            self.filled += n

    def ms_per_row(self, rows: int, see: bool, logits: bool = False, repeats: int = 3) -> float:
        """The fastest of `repeats` decodes of `rows` one-token rows, per row; each row sees the
        filled cells (see=True) or none of them."""
        best = float("inf")
        for _ in range(repeats):
            self.batch.clear()
            for i in range(1, rows + 1):
                if see:
                    self.context.seq_cp(SHARED, i)
                self.batch.add([200 + i], self.filled if see else 0, [i], logits)
            start = time.perf_counter()
            self.context.decode(self.batch)
            best = min(best, time.perf_counter() - start)
            for i in range(1, rows + 1):
                self.context.seq_rm(i)
        return 1000 * best / rows


@dataclass
class Costs:  # milliseconds a row
    row: float
    logits: float  # what logits add
    seen_cell: float  # a cell seen, in a wide batch
    masked_cell: float


def measure(probe: Probe) -> Costs:
    alone = probe.ms_per_row(ROWS, see=False)
    with_logits = probe.ms_per_row(ROWS, see=False, logits=True)
    few = probe.ms_per_row(48, see=False)
    probe.fill(256)
    seen256, few_seen256 = probe.ms_per_row(ROWS, see=True), probe.ms_per_row(48, see=True)
    probe.fill(2048)
    seen2048, few_seen2048 = probe.ms_per_row(ROWS, see=True), probe.ms_per_row(48, see=True)
    masked2048 = probe.ms_per_row(ROWS, see=False)
    probe.fill(8192)
    masked8192 = probe.ms_per_row(ROWS, see=False)
    costs = Costs(alone, with_logits - alone, (seen2048 - seen256) / (2048 - 256),
                  (masked8192 - masked2048) / (8192 - 2048))
    print(f"a row, {ROWS} in a batch:          {alone:6.2f} ms")
    print(f"a row with logits:                 {with_logits:6.2f} ms  ({with_logits / alone:.2f} rows)")
    print(f"a row, 48 in a batch:              {few:6.2f} ms")
    print(f"a cell seen, {ROWS} rows:            {1000 * costs.seen_cell:6.2f} us a row")
    print(f"a cell seen, 48 rows:              {1000 * (few_seen2048 - few_seen256) / (2048 - 256):6.2f} us a row")
    print(f"a cell not seen (masked):          {1000 * costs.masked_cell:6.2f} us a row")
    return costs


def account(model: str, docs: str, limit: int, examples: str | None, costs: Costs) -> None:
    """Runs hpd, timing its decodes and counting their rows, logits and the cells its rows see (a
    row at position p sees p + 1 cells: it is exactly its prompt alone)."""
    totals = dict(rows=0, outputs=0, seen=0)
    submit = Context.submit

    def counted(self, batch):
        totals["rows"] += batch.size
        totals["outputs"] += int(batch.logits[: batch.size].sum())
        totals["seen"] += int(batch.pos[: batch.size].sum()) + batch.size
        return submit(self, batch)

    Context.submit = counted
    records = interleave(load_jsonl(docs))[:limit]
    schema = Schema(categories={}).with_examples(read_examples(examples)) if examples else None
    extractor = Extractor(model, schema, mode="hpd")
    start = time.perf_counter()
    for _ in extractor.extract(records):
        pass
    wall = time.perf_counter() - start
    Context.submit = submit
    rows, outputs, seen = totals["rows"], totals["outputs"], totals["seen"]
    in_decodes = extractor.stats.decode_seconds  # in llama_decode and the logits' fetch
    parts = {"rows": rows * costs.row, "logits": outputs * costs.logits, "cells seen": seen * costs.seen_cell}
    predicted = sum(parts.values()) / 1000
    print(f"hpd on {len(records)} documents: {wall:.1f} s, {in_decodes:.1f} s of it in decodes;"
          f" {rows} rows, {outputs} with logits, {seen / rows:.0f} cells seen a row")
    print("predicted by the costs above: " + ", ".join(f"{k} {v / 1000:.1f} s" for k, v in parts.items())
          + f" = {predicted:.1f} s; the steps took {in_decodes / predicted:.2f}x that")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--run", metavar="DOCS", help="also run hpd on these documents, categories in turn")
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--examples", metavar="FILE", help="labeled examples for the run (4 per category)")
    args = parser.parse_args()
    probe = Probe(str(resolve(args.model)))
    costs = measure(probe)
    probe.context.close()
    if args.run:
        account(args.model, args.run, args.limit, args.examples, costs)


if __name__ == "__main__":
    main()
