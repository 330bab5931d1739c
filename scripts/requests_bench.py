#!/usr/bin/env python3
"""Requests one after another to one engine, as a server gets them: each PER documents of one
category, the categories in turn; prints the time, the tokens decoded and the heads made.
With --at-once, the requests come together (callers that send at once), and it prints when
each finished.

    .venv/bin/python scripts/requests_bench.py qwen2.5-coder-0.5b out/examples/three192.jsonl \\
        --examples out/examples/fold0_pool.jsonl --per 8 --requests 24
"""
import argparse
import statistics
import threading
import time

from hpd_gguf import Extractor
from hpd_gguf.examples import read_examples
from hpd_gguf.jsonl import load_jsonl
from hpd_gguf.schema import Schema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("docs")
    parser.add_argument("--examples", help="labeled products (JSONL)")
    parser.add_argument("--per", type=int, default=8, help="documents a request")
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--at-once", action="store_true", help="submit every request at once")
    args = parser.parse_args()
    schema = Schema(categories={}, examples=read_examples(args.examples)) if args.examples else None
    extractor = Extractor(args.model, schema=schema)
    by_category: dict[str, list[dict]] = {}
    for r in load_jsonl(args.docs):
        by_category.setdefault(r.get("category"), []).append({k: r[k] for k in ("id", "text", "category", "attributes")
                                                               if k in r})
    queues = list(by_category.values())
    requests = [queues[i % len(queues)][(i // len(queues)) * args.per:][:args.per] for i in range(args.requests)]
    start = time.perf_counter()
    if args.at_once:
        documents = at_once(extractor, requests, start)
    else:
        documents = sum(len(list(extractor.submit(request))) for request in requests)
    seconds = time.perf_counter() - start
    print(f"{args.requests} requests of {args.per} ({documents} documents): {seconds:.1f} s, "
          f"{extractor.stats.tokens} tokens decoded, {extractor.stats.shared_heads} heads made")
    extractor.close()


def at_once(extractor: Extractor, requests: list[list[dict]], start: float) -> int:
    """Every request submitted together; prints when each finished, from the start."""
    jobs = [extractor.submit(request) for request in requests]
    ended = [0.0] * len(jobs)

    def collect(i: int) -> None:
        for _ in jobs[i]:
            pass
        ended[i] = time.perf_counter() - start

    threads = [threading.Thread(target=collect, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"requests ended after (s, in the order they came): {' '.join(f'{t:.0f}' for t in ended)}")
    print(f"mean {statistics.mean(ended):.1f} s, median {statistics.median(ended):.1f} s, last {max(ended):.1f} s")
    return sum(len(r) for r in requests)


if __name__ == "__main__":
    main()
