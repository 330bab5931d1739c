"""What reading a document in costs the engine's thread (validation, prompt, document state),
for documents not seen before, caches warmed on the others; with --against, the same for an
earlier commit, both in one process by turns (this machine's run-to-run noise is wider than
the changes measured).

    .venv/bin/python scripts/reading_in.py DOCS.jsonl [--examples FILE] [--against REV] [--repeat 9]

The first third of DOCS (categories in turn) is timed, the rest warms the caches. BENCHMARKS.md,
"What the host does outside the decodes".
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hpd_gguf.bench import interleave
from hpd_gguf.jsonl import load_jsonl


def read_in_ms(package, runner, records: list[dict], others: list[dict]) -> float:
    """Milliseconds a document of `records`, with a fresh copy of `runner` warmed on `others`."""
    runner = package.runner.ModelRunner(runner.model, runner.settings, runner.schema)
    for record in others:  # a long run's caches: the instructions, the heads, the suffixes
        runner.prompt(runner.task(record))
    start = time.perf_counter()
    for index, record in enumerate(records):
        task = runner.task(record, index)
        package.sequence.DocumentState.create(task, runner.prompt(task), runner.stops, index)
    return 1000 * (time.perf_counter() - start) / len(records)


def load(name: str, model: str, examples: str | None):
    """The package `name` and a runner of it (hpd mode, the examples in its schema)."""
    package = importlib.import_module(name)
    for module in ("runner", "sequence", "schema", "examples"):
        importlib.import_module(f"{name}.{module}")
    schema = package.schema.Schema(categories={}).with_examples(package.examples.read_examples(examples)) \
        if examples else None
    return package, package.Extractor(model, schema, mode="hpd").runner


def checkout(rev: str, into: Path) -> str:
    """REV's package, importable as hpd_gguf_<rev> (its imports are relative)."""
    name = "hpd_gguf_" + "".join(c if c.isalnum() else "_" for c in rev)
    archive = subprocess.run(["git", "archive", rev, "hpd_gguf"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "hpd_gguf").rename(into / name)
    sys.path.insert(0, str(into))
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("docs")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--examples", metavar="FILE", help="labeled examples, in the schema")
    parser.add_argument("--against", metavar="REV", help="an earlier commit, timed by turns with this tree")
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    every = interleave(load_jsonl(args.docs))
    records, others = every[: len(every) // 3], every[len(every) // 3:]
    with tempfile.TemporaryDirectory() as folder:
        names = ["hpd_gguf"] + ([checkout(args.against, Path(folder))] if args.against else [])
        sides = {name: load(name, args.model, args.examples) for name in names}
        times: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(args.repeat):
            for name, (package, runner) in sides.items():
                times[name].append(read_in_ms(package, runner, records, others))
    for name, ms in times.items():
        label = "this tree" if name == "hpd_gguf" else args.against
        print(f"{label}: reading in {statistics.median(ms):.2f} ms a document not seen before (median of "
              f"{len(ms)}; {min(ms):.2f}-{max(ms):.2f}; {len(records)} documents, caches warmed on {len(others)}; "
              f"{'with' if args.examples else 'without'} labeled examples)")


if __name__ == "__main__":
    main()
