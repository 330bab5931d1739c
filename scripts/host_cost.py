"""What hpd's host does outside llama_decode, per document and per step: the work a GPU
does not take off the CPU, and that bounds hpd there once the decodes are fast.

    .venv/bin/python scripts/host_cost.py DOCS.jsonl [--model NAME] [--limit 64] [--examples FILE]

It reads the first --limit of DOCS (categories in turn) in alone, after the others (the caches
of a long run), then runs hpd on them with each part of a step timed: planning the batch, the
decode, choosing tokens, finishing branches and documents; and reading documents in (their
prompts included). BENCHMARKS.md, "On a GPU".
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict

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
         "choose": (ModelRunner, "choose"), "finish": (Engine, "_finished_documents"), "read in": (Engine, "_read_one")}


def timing(seconds: dict[str, float], calls: dict[str, int]):
    """Wrap each TIMED method so that it adds its time to `seconds`."""
    def wrap(name, method):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - start
                calls[name] += 1
        return timed
    for name, (owner, attribute) in TIMED.items():
        setattr(owner, attribute, wrap(name, getattr(owner, attribute)))


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

    seconds, calls = defaultdict(float), defaultdict(int)
    timing(seconds, calls)
    extractor = Extractor(args.model, schema, mode="hpd")
    start = time.perf_counter()
    for _ in extractor.extract(records):
        pass
    wall = time.perf_counter() - start
    steps, documents = calls["plan"], len(records)
    print(f"hpd on {documents} documents: {wall:.1f} s, {steps} steps; setup {extractor.stats.setup_seconds:.2f} s")
    for name in TIMED:
        per = f"{1000 * seconds[name] / documents:.2f} ms a document" if name == "read in" else \
            f"{1000 * seconds[name] / steps:.2f} ms a step"
        print(f"  {name:<8}{seconds[name]:>8.2f} s  {per}")
    rest = wall - sum(seconds.values()) - extractor.stats.setup_seconds
    print(f"  {'other':<8}{rest:>8.2f} s  (results, bookkeeping; the preamble is in decode)")


if __name__ == "__main__":
    main()
