"""What hpd's host does outside llama_decode, per document and per step: the work a GPU
does not take off the CPU, and that bounds hpd there once the decodes are fast.

    .venv/bin/python scripts/host_cost.py DOCS.jsonl [--model NAME] [--limit 64] [--examples FILE]

It reads the first --limit of DOCS (categories in turn) in alone, after the others (the caches
of a long run), then runs hpd on them with each part of a step timed: planning the batch,
starting the decode (on a CPU, all of it), waiting for its logits, choosing tokens, finishing
branches and documents; and reading documents in (their prompts included; during the decode).
Within planning and finishing: llama.cpp's copies and removals of sequences' cells, a document.
scripts/gpu_check.py prints the same on the GPU. BENCHMARKS.md, "On a GPU".
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict
from contextlib import contextmanager

import hpd_gguf
from hpd_gguf import Extractor
from hpd_gguf.bench import interleave
from hpd_gguf.engine import Engine
from hpd_gguf.examples import read_examples
from hpd_gguf.jsonl import load_jsonl
from hpd_gguf.llama import Context
from hpd_gguf.runner import ModelRunner
from hpd_gguf.scheduler import Scheduler
from hpd_gguf.schema import Schema
from reading_in import read_in_ms

TIMED = {"plan": (Scheduler, "plan"), "decode": (Context, "submit"), "logits": (Context, "logits"),
         "choose": (ModelRunner, "choose"), "finish": (Engine, "_finished_documents"), "read in": (Engine, "_read_one"),
         "kv copies": (Context, "seq_cp"), "kv removals": (Context, "seq_rm")}
NESTED = {"kv copies", "kv removals"}  # llama.cpp's cell bookkeeping, within plan and finish
PER_DOCUMENT = {"read in"} | NESTED


@contextmanager
def timing(seconds: dict[str, float], calls: dict[str, int]):
    """Within it, each TIMED method adds its time to `seconds` and its calls to `calls`."""
    def wrap(name, method):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - start
                calls[name] += 1
        return timed
    originals = {name: getattr(owner, attribute) for name, (owner, attribute) in TIMED.items()}
    for name, (owner, attribute) in TIMED.items():
        setattr(owner, attribute, wrap(name, originals[name]))
    try:
        yield
    finally:
        for name, (owner, attribute) in TIMED.items():
            setattr(owner, attribute, originals[name])


def host_costs(extractor: Extractor, records: list) -> dict:
    """hpd on `records` with each part timed: seconds in all, milliseconds a step (a document
    for reading in and the KV copies and removals), the steps, the wall and setup seconds."""
    seconds, calls = defaultdict(float), defaultdict(int)
    start = time.perf_counter()
    with timing(seconds, calls):
        for _ in extractor.extract(records):
            pass
    wall, steps = time.perf_counter() - start, max(calls["plan"], 1)
    per = {name: 1000 * seconds[name] / (len(records) if name in PER_DOCUMENT else steps) for name in TIMED}
    return {"documents": len(records), "steps": calls["plan"], "wall_seconds": wall,
            "setup_seconds": extractor.stats.setup_seconds, "seconds": {name: seconds[name] for name in TIMED}, "ms": per}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("docs")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--examples", metavar="FILE", help="labeled examples (4 per category)")
    args = parser.parse_args()
    every = interleave(load_jsonl(args.docs))
    records, others = every[: args.limit], every[args.limit:]
    schema = Schema(categories={}).with_examples(read_examples(args.examples)) if args.examples else None

    runner = Extractor(args.model, schema, mode="hpd").runner
    print(f"reading in: {read_in_ms(hpd_gguf, runner, records, others):.2f} ms a document not seen before "
          f"(validation, prompt, state; {len(records)}, caches warmed on {len(others)} others; "
          f"{'with' if schema else 'without'} labeled examples)")

    costs = host_costs(Extractor(args.model, schema, mode="hpd"), records)
    print(f"hpd on {costs['documents']} documents: {costs['wall_seconds']:.1f} s, {costs['steps']} steps; "
          f"setup {costs['setup_seconds']:.2f} s")
    for name, seconds in costs["seconds"].items():
        label = f"  of which {name}" if name in NESTED else name
        print(f"  {label:<22}{seconds:>8.2f} s  {costs['ms'][name]:.2f} ms a {'document' if name in PER_DOCUMENT else 'step'}")
    rest = costs["wall_seconds"] - sum(s for n, s in costs["seconds"].items() if n not in NESTED) - costs["setup_seconds"]
    print(f"  {'other':<22}{rest:>8.2f} s  (results, bookkeeping; the preamble is in decode)")


if __name__ == "__main__":
    main()
