#!/usr/bin/env python3
"""Every mode on the same documents with each stand-in model, on the GPU (or, with --cpu, on
the CPU backend); hpd checked against sequential and against the CPU backend, token by token
(a value may differ only where the two decodings part at a near-tie); one table.

Run by scripts/gpu_check.sh, which prepares what it needs.  The stand-ins have made-up weights
(scripts/make_standin.py), so values are not words: the figures are speed and agreement.  With
made-up weights no value ends early, so every mode decodes --max-value-tokens per value.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

from hpd_gguf import Extractor
from hpd_gguf.agreement import TokenTrace, agreement
from hpd_gguf.bench import run_bench
from hpd_gguf.examples import read_examples
from hpd_gguf.jsonl import load_jsonl
from hpd_gguf.llama import Model, devices, supports_gpu_offload, system_info
from hpd_gguf.schema import Schema
from hpd_gguf.settings import MODES, Settings
from host_cost import host_costs

RAW = {"constraint": None, "min_confidence": 0.0}  # the model's own values: nothing cut short
# Made-up weights amplify rounding: on 2 cores of a Zen 4 (2026-12-06), hpd against sequential
# on 16 documents, 8 tokens a value, parted on 34 and 36 of 183 values (0.5B, 1.5B stand-ins),
# at margins of 0.31 and 0.69 at most; their median margin is 4.3, so a corrupted decode parts
# mostly above this.
STANDIN_NEAR_TIE = 1.5


def traced(extractor: Extractor, records: list[dict]) -> tuple[list, dict]:
    """The results of a run and its token traces (untimed: the trace costs host time)."""
    trace = extractor.on_logits = TokenTrace()
    return list(extractor.extract(records)), trace.steps


def first_attributes(docs: Path, limit: int, most: int | None, target: Path) -> Path:
    """The first `limit` documents, each asking at most `most` attributes."""
    records = load_jsonl(docs)[:limit]
    target.write_text("".join(json.dumps({**r, "attributes": r["attributes"][:most]} if most else r) + "\n"
                              for r in records))
    return target


def raw_settings(args) -> dict:
    """The settings of every run: the model's own values, capped, on this backend."""
    batch = {"batch_tokens": args.batch_tokens} if args.batch_tokens else {}  # else the engine's default
    return {**RAW, "max_value_tokens": args.max_value_tokens, "n_gpu_layers": 0 if args.cpu else -1, **batch}


def check_model(path: Path, docs: Path, args) -> tuple[dict, list[str]]:
    settings = {**raw_settings(args), "json_tokens_per_attribute": args.max_value_tokens + 4}  # a key and quotes
    gpu_layers = settings["n_gpu_layers"]
    report = run_bench(path, str(docs), list(MODES), limit=args.limit, log=lambda m: print(m, file=sys.stderr),
                       **settings)
    print(report.table(), file=sys.stderr)
    runs = {r.mode: r for r in report.runs}
    problems = [f"{path.name}: {report.failed} failed"] if report.failed else []
    hpd, sequential = runs.get("hpd"), runs.get("sequential")
    if hpd is None or sequential is None:
        return {"model": path.name, "runs": report.as_dict()["runs"]}, problems + [f"{path.name}: no hpd/sequential run"]
    # token by token on the first documents: hpd against sequential here, and against the CPU backend
    records = load_jsonl(docs)[: args.cpu_documents]
    here = Model(path, gpu_layers)
    sequential_here = traced(Extractor(here, mode="sequential", **settings), records)
    hpd_here = traced(Extractor(here, mode="hpd", **settings), records)
    start = time.perf_counter()
    hpd_on_cpu = traced(Extractor(Model(path, 0), mode="hpd", **{**settings, "n_gpu_layers": 0}), records)
    cpu_seconds = time.perf_counter() - start
    compared = {"sequential": agreement(*hpd_here, *sequential_here, args.near_tie),
                "CPU backend": agreement(*hpd_here, *hpd_on_cpu, args.near_tie)}
    for against, found in compared.items():
        if found.unexplained:
            problems.append(f"{path.name}: hpd parts from {against} where both had a clear winner (margin >= "
                            f"{args.near_tie}) on {len(found.unexplained)} of {found.values} values: "
                            f"{found.unexplained[:5]}")
    rows = []
    for r in report.runs:
        rows.append({"mode": r.mode, "documents": r.documents, "seconds": round(r.seconds, 2),
                     "setup_seconds": round(r.setup_seconds, 2),
                     "documents_per_second": round(r.documents_per_second, 3),
                     "hpd_speedup": round(r.seconds / hpd.seconds, 2),
                     "share_of_prefill": round(r.tokens_per_second / report.prefill_tokens_per_second, 3),
                     "decode_share": round(r.decode_share, 3), "choice_share": round(r.choice_share, 3),
                     "same_as_sequential": round(r.same_as_sequential / r.values, 4)})
    return {"model": path.name, "prefill_tokens_per_second": round(report.prefill_tokens_per_second),
            "output_cost": round(report.output_cost, 3),
            "machine": report.machine, "rows": rows, "cpu_backend_seconds": round(cpu_seconds, 2), "near_tie": args.near_tie,
            "token_by_token": {"documents": len(records), "against": {
                against: {"values": found.values, "equal": found.equal, "unexplained": found.unexplained}
                for against, found in compared.items()}}}, problems


def examples_cost(path: Path, labeled: Schema, prefill: tuple, args) -> dict:
    """hpd's documents/s on documents of a few categories in turn, without and with labeled
    examples of those categories (issue 17: within 10%), value lengths capped as above."""
    runs = {name: run_bench(path, str(args.examples_docs), ["hpd"], limit=args.examples_limit, schema=schema,
                            log=lambda m: print(m, file=sys.stderr), known_prefill=prefill,
                            **raw_settings(args)).runs[0]
            for name, schema in (("without", None), ("with", labeled))}
    without, with_ = runs["without"].documents_per_second, runs["with"].documents_per_second
    return {"documents": runs["with"].documents, "without": round(without, 3), "with": round(with_, 3),
            "ratio": round(with_ / without, 3)}


FIGURES = ("seconds", "documents_per_second", "share_of_prefill", "decode_share", "choice_share")


def hpd_sweep(path: Path, docs: Path, limit: int, prefill: tuple, grid: dict, varied: str,
              **settings) -> tuple[int, list[dict]]:
    """hpd over `grid` (run_sweep's), no cell budget: the documents, and each run's `varied`
    setting and figures."""
    report = run_bench(path, str(docs), [], limit=limit, sweep=True, log=lambda m: print(m, file=sys.stderr),
                       sweep_grid={"cells": (0,), **grid}, known_prefill=prefill, **settings)
    if report.failed:
        raise RuntimeError(report.failed)
    return report.documents, [{k: round(row[k], 3) for k in (varied,) + FIGURES} for row in report.sweep]


def settings_sweep(path: Path, docs: Path, prefill: tuple, args) -> list[dict]:
    """hpd over token budgets per decode, each compute graph as large and no cell budget: the
    figures to pick the GPU's defaults by (issue 13)."""
    _, rows = hpd_sweep(path, docs, args.limit, prefill, {"budgets": args.sweep}, "batch_tokens",
                        **{**raw_settings(args), "ubatch_tokens": max(args.sweep)})
    return rows


def resident_sweep(path: Path, prefill: tuple, args, out: Path) -> dict:
    """hpd over how many documents are in flight, on more documents than the modes run (issue
    13: the resident documents that pay on a GPU differ from a CPU's)."""
    docs = first_attributes(args.docs, args.resident_limit, args.max_attributes, out / "resident_docs.jsonl")
    grid = {"budgets": (args.batch_tokens or Settings.batch_tokens,), "residents": args.sweep_resident}
    documents, rows = hpd_sweep(path, docs, args.resident_limit, prefill, grid, "max_resident", **raw_settings(args))
    return {"documents": documents, "rows": rows}


def host_part(path: Path, docs: Path, args) -> dict:
    """Where hpd's host time goes on this machine: per step, planning, queueing the decode,
    waiting for its logits, choosing tokens and finishing; per document, reading it in (during
    the decode).  On a GPU, the lever after the decodes (BENCHMARKS.md, "On a GPU")."""
    settings = raw_settings(args)
    costs = host_costs(Extractor(Model(path, settings["n_gpu_layers"]), mode="hpd", **settings), load_jsonl(docs))
    return {"documents": costs["documents"], "steps": costs["steps"],
            "ms": {name: round(ms, 3) for name, ms in costs["ms"].items()}}


def figures(row: dict) -> str:
    """One sweep run's figures, for the table."""
    return (f"{row['documents_per_second']:.3f} docs/s ({row['share_of_prefill']:.0%}, in decode "
            f"{row['decode_share']:.0%}, choice {row['choice_share']:.0%})")


def table(results: list[dict]) -> str:
    lines = [f"{'model':<34}{'mode':<11}{'docs':>5}{'wall s':>9}{'setup s':>8}{'docs/s':>9}{'hpd speedup':>12}"
             f"{'of prefill':>11}{'in decode':>10}{'choice':>8}{'= sequential':>13}{'= CPU backend':>14}"]
    for result in results:
        for row in result.get("rows", []):
            on_cpu = result["token_by_token"]["against"]["CPU backend"]
            cpu = f"{on_cpu['equal'] / max(1, on_cpu['values']):.1%}" if row["mode"] == "hpd" else ""
            lines.append(f"{result['model'][:33]:<34}{row['mode']:<11}{row['documents']:>5}{row['seconds']:>9.2f}"
                         f"{row['setup_seconds']:>8.2f}"
                         f"{row['documents_per_second']:>9.3f}{row['hpd_speedup']:>11.2f}x"
                         f"{row['share_of_prefill']:>11.0%}{row['decode_share']:>10.0%}{row['choice_share']:>8.0%}"
                         f"{row['same_as_sequential']:>13.1%}{cpu:>14}")
    for result in results:
        if "token_by_token" in result:
            compared = result["token_by_token"]
            lines.append(f"{result['model']}: hpd token by token on {compared['documents']} documents, against " + "; ".join(
                f"{against}: {found['equal']}/{found['values']} values equal, "
                f"{found['values'] - found['equal'] - len(found['unexplained'])} parted at a near-tie "
                f"(margin < {result['near_tie']}), {len(found['unexplained'])} where both had a clear winner"
                for against, found in compared["against"].items()))
    for result in results:
        if result.get("sweep"):
            lines.append(f"{result['model']}: hpd by tokens per decode (= per graph): " + ", ".join(
                f"{r['batch_tokens']}: {figures(r)}" for r in result["sweep"]))
    for result in results:
        if result.get("resident"):
            resident = result["resident"]
            lines.append(f"{result['model']}: hpd on {resident['documents']} documents by documents in flight: " +
                         ", ".join(f"{r['max_resident']}: {figures(r)}" for r in resident["rows"]))
    for result in results:
        if result.get("host"):
            ms, steps = result["host"]["ms"], result["host"]["steps"]
            lines.append(f"{result['model']}: hpd's host a step ({steps} steps): plan {ms['plan']:.2f} ms, "
                         f"starting the decode (on a CPU: all of it) {ms['decode']:.2f}, waiting for its logits "
                         f"{ms['logits']:.2f}, choosing {ms['choose']:.2f}, finishing {ms['finish']:.2f}; "
                         f"reading a document in {ms['read in']:.2f} ms, during the decode; a document's KV "
                         f"copies {ms['kv copies']:.2f} ms and removals {ms['kv removals']:.2f} (in plan and finish)")
    for result in results:
        if "examples" in result:
            e = result["examples"]
            lines.append(f"{result['model']}: hpd on {e['documents']} documents of 3 categories, "
                         f"{e['without']:.3f} docs/s without labeled examples, {e['with']:.3f} with them "
                         f"({e['ratio']:.0%}; issue 17 asks >= 90%)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--docs", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--max-value-tokens", type=int, default=8)
    parser.add_argument("--batch-tokens", type=int, help="tokens per decode (prefill measured on as many)")
    parser.add_argument("--max-attributes", type=int, default=None, help="attributes per document at most")
    parser.add_argument("--cpu-documents", type=int, default=16,
                        help="documents compared token by token with sequential and the CPU backend")
    parser.add_argument("--near-tie", type=float, default=STANDIN_NEAR_TIE,
                        help="a parting from sequential (or the CPU backend) at a smaller margin is no defect")
    parser.add_argument("--examples-docs", type=Path, help="documents of a few categories in turn")
    parser.add_argument("--examples", type=Path, help="labeled products of those categories")
    parser.add_argument("--examples-limit", type=int, default=192, help="documents of --examples-docs")
    parser.add_argument("--sweep", type=lambda v: tuple(int(x) for x in v.split(",")), default=(),
                        help="tokens per decode to run hpd with, comma-separated (each graph as large)")
    parser.add_argument("--sweep-resident", type=lambda v: tuple(int(x) for x in v.split(",")), default=(),
                        help="documents in flight to run hpd with, comma-separated")
    parser.add_argument("--resident-limit", type=int, default=128, help="documents of --docs for --sweep-resident")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU backend")
    args = parser.parse_args()
    print(f"llama.cpp: {system_info()}", file=sys.stderr)
    if not args.cpu:
        if not supports_gpu_offload():
            sys.exit("gpu_check: this llama-cpp-python cannot offload to a GPU (build it with HPD_GGUF_GPU=cuda)")
        for device in devices():
            print(f"device {device.name}: {device.description}, {device.total_bytes / 2**30:.0f} GiB", file=sys.stderr)
    out = Path(os.environ.get("OUT") or "out/gpu-work")
    out.mkdir(parents=True, exist_ok=True)
    docs = first_attributes(args.docs, args.limit, args.max_attributes, out / "check_docs.jsonl")
    labeled = Schema(categories={}, examples=read_examples(args.examples)) if args.examples else None
    results, problems = [], []
    for path in args.models:
        result, found = check_model(path, docs, args)
        results.append(result)
        problems += found
        prefill = (result["prefill_tokens_per_second"], result["output_cost"]) if "output_cost" in result else None
        parts = {"host": lambda: host_part(path, docs, args),
                 "examples": labeled and (lambda: examples_cost(path, labeled, prefill, args)),
                 "sweep": args.sweep and (lambda: settings_sweep(path, docs, prefill, args)),
                 "resident": args.sweep_resident and (lambda: resident_sweep(path, prefill, args, out))}
        for name, part in parts.items():
            try:  # a part that fails leaves the figures before it
                if part:
                    result[name] = part()
            except Exception as error:
                problems.append(f"{path.name}: {name}: {error!r}")
            (out / ("cpu_check.json" if args.cpu else "gpu_check.json")).write_text(json.dumps(results, indent=2))
    print(table(results))
    for problem in problems:
        print(f"FAILED: {problem}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
