"""`hpd-gguf bench`: the modes on the same documents in one process, side by side."""
from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .extractor import Extractor
from .evaluate import score
from .jsonl import load_labeled_lines
from .llama import Batch, Context, Model, offloaded_layers, physical_cores, system_info
from .schema import DOCUMENT_FIELDS, Document, InputError, Result, Schema, Task, make_task, validated
from .settings import Settings


@dataclass
class ModeRun:
    mode: str
    seconds: float
    documents: int
    tokens: int
    decode_calls: int
    values: int
    outputs: int = 0  # tokens with logits
    same_as_sequential: int | None = None
    f1: float | None = None
    f1_case_insensitive: float | None = None
    accuracy_by_confidence: tuple[float, float] | None = None  # top and bottom quartile
    peak_rss_mb: float | None = None
    setup_seconds: float = 0.0  # making the context (in the wall time: a run's fixed cost)
    decode_seconds: float = 0.0  # inside llama_decode (the rest is the host's: planning, choice, results)
    choice_seconds: float = 0.0  # choosing tokens from the logits, on the CPU

    @property
    def decode_share(self) -> float:
        return self.decode_seconds / self.seconds

    @property
    def choice_share(self) -> float:
        return self.choice_seconds / self.seconds

    @property
    def documents_per_second(self) -> float:
        return self.documents / self.seconds

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def interleave(records: list, category=lambda record: record.get("category")) -> list:
    """Categories in turn (the first of each, then the second, ...), as a catalog in input order
    mixes them; a prefix of a file grouped by category is one category."""
    by_category: dict[str, list] = {}
    for record in records:
        by_category.setdefault(category(record) or "", []).append(record)
    queues = list(by_category.values())
    return [queue[i] for i in range(max(map(len, queues), default=0)) for queue in queues if i < len(queue)]


def machine() -> str:
    """The CPU's name and the SIMD kernels this llama.cpp build uses."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    name = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "unknown CPU")
    kernels = [part.split("=")[0].strip() for part in system_info().split("|")
               if part.strip().endswith("= 1") and any(k in part for k in ("AVX", "AMX", "NEON", "SVE"))]
    return f"{name} ({' '.join(kernels) or 'no SIMD kernels'})"


@dataclass
class Report:
    model: str
    documents: int
    threads: int
    prefill_tokens_per_second: float
    output_cost: float = 0.0  # what logits add to a token, in tokens
    prefill_after: float | None = None  # measured again after the runs: how much the machine drifted
    runs: list[ModeRun] = field(default_factory=list)
    scaling: list[dict] = field(default_factory=list)
    sweep: list[dict] = field(default_factory=list)
    failed: str | None = None  # a later part that failed; the figures before it stand
    machine: str = ""
    categories: int = 0

    def as_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "runs"},
                "runs": [{**asdict(r), "documents_per_second": r.documents_per_second,
                          "tokens_per_second": r.tokens_per_second} for r in self.runs]}

    def table(self) -> str:
        by_mode = {r.mode: r for r in self.runs}
        after = f", before the runs; {self.prefill_after:.0f} after them" if self.prefill_after else ""
        lines = [f"{self.machine}; model {self.model}, {self.documents} documents of {self.categories} "
                 f"categories, {self.threads} threads, "
                 f"prefill throughput {self.prefill_tokens_per_second:.0f} tokens/s (one full batch{after}); "
                 f"a token with logits costs {1 + self.output_cost:.2f} tokens",
                 f"{'mode':<11}{'wall s':>9}{'docs/s':>9}{'tok/s':>9}{'of prefill':>11}{'busy':>6}{'in decode':>10}{'choice':>8}{'decodes':>9}"
                 f"{'hpd speedup':>13}{'= sequential':>20}{'F1':>8}"
                 + ("  accuracy, top / bottom confidence quartile" if any(r.accuracy_by_confidence for r in self.runs) else "")]
        hpd = by_mode.get("hpd")
        for r in self.runs:
            speedup = f"{r.seconds / hpd.seconds:.2f}x" if hpd else "-"
            same = (f"{r.same_as_sequential}/{r.values} ({100 * r.same_as_sequential / r.values:.1f}%)"
                    if r.same_as_sequential is not None else "-")
            f1 = f"{r.f1:.3f}" if r.f1 is not None else "-"
            if r.accuracy_by_confidence:
                f1 += f"{r.accuracy_by_confidence[0]:>10.0%} / {r.accuracy_by_confidence[1]:.0%}"
            lines.append(f"{r.mode:<11}{r.seconds:>9.2f}{r.documents_per_second:>9.3f}"
                         f"{r.tokens_per_second:>9.0f}{r.tokens_per_second / self.prefill_tokens_per_second:>10.0%}"
                         f"{self._busy(r):>6.0%}{r.decode_share:>10.0%}{r.choice_share:>8.0%}{r.decode_calls:>9}{speedup:>13}{same:>20}{f1:>8}")
        if self.scaling:
            lines += ["", "hpd scaling", f"{'documents':>10}{'attributes':>11}{'wall s':>9}{'docs/s':>9}"
                      f"{'tok/s':>9}{'of prefill':>11}{'busy':>6}{'peak RSS MB':>13}"]
            for s in self.scaling:
                lines.append(f"{s['documents']:>10}{s['attributes']:>11}{s['seconds']:>9.2f}"
                             f"{s['documents_per_second']:>9.2f}{s['tokens_per_second']:>9.0f}"
                             f"{s['share_of_prefill']:>10.0%}{s['busy']:>6.0%}{s['peak_rss_mb']:>13.0f}")
        if self.sweep:
            best = max(self.sweep, key=lambda s: s["documents_per_second"])
            lines += ["", "hpd settings sweep", f"{'batch tokens':>13}{'cell budget':>13}{'documents':>10}"
                      f"{'wall s':>9}{'docs/s':>9}{'tok/s':>9}{'of prefill':>11}{'busy':>6}"]
            for s in self.sweep:
                lines.append(f"{s['batch_tokens']:>13}{s['max_resident_cells'] or 'none':>13}{s['max_resident']:>10}"
                             f"{s['seconds']:>9.2f}"
                             f"{s['documents_per_second']:>9.3f}{s['tokens_per_second']:>9.0f}"
                             f"{s['share_of_prefill']:>10.0%}{s['busy']:>6.0%}" + ("  <- fastest" if s is best else ""))
        return "\n".join(lines)

    def _busy(self, run: ModeRun) -> float:
        return _busy(run, self.prefill_tokens_per_second, self.output_cost)


def measure_prefill(model: Model, tokens: list[int], batch_tokens: int, threads: int,
                    output_cost: bool = True) -> tuple[float, float]:
    """Tokens per second of one full batch of prompt tokens, and what logits add to a token,
    in tokens (the same batch with logits for every token; 0 when not asked); best of three each."""
    context = Context(model, batch_tokens * 2, batch_tokens, 1, threads)
    batch = Batch(batch_tokens)
    chunk = (tokens * (batch_tokens // max(1, len(tokens)) + 1))[:batch_tokens]

    def fastest(every_token_logits: bool) -> float:
        best = float("inf")
        for _ in range(3):
            context.clear()
            batch.clear()
            if every_token_logits:
                for i, token in enumerate(chunk):
                    batch.add([token], i, (0,), True)
            else:
                batch.add(chunk, 0, (0,), True)
            start = time.perf_counter()
            context.decode(batch)
            best = min(best, time.perf_counter() - start)
        return best

    plain = fastest(False)
    with_logits = fastest(True) if output_cost else plain
    context.close()
    return batch_tokens / plain, max(0.0, with_logits - plain) / plain


def _rss_mb() -> float:
    """Resident memory now (Linux), else the process's peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_mode(model: Model, tasks: list[Task], mode: str, schema: Schema | None = None,
             **settings) -> tuple[ModeRun, list[Result]]:
    """One mode over the tasks; peak RSS is sampled after every decode of this run alone."""
    extractor = Extractor(model, mode=mode, schema=schema, **settings)
    peak = _rss_mb()

    def sample(branches, logits):
        nonlocal peak
        peak = max(peak, _rss_mb())

    extractor.on_logits = sample
    start = time.perf_counter()
    results = list(extractor.extract(tasks))
    seconds = time.perf_counter() - start
    run = ModeRun(mode, seconds, len(results), extractor.stats.tokens, extractor.stats.decode_calls,
                  sum(len(r.values) for r in results), extractor.stats.outputs, peak_rss_mb=peak,
                  setup_seconds=extractor.stats.setup_seconds, decode_seconds=extractor.stats.decode_seconds,
                  choice_seconds=extractor.stats.choice_seconds)
    return run, results


def run_bench(model_path: Path, docs_path: str, modes: list[str], limit: int | None = None,
              gold: bool = False, scaling: bool = False, sweep: bool = False, log=print,
              interleaved: bool = False, schema: Schema | None = None, sweep_grid: dict | None = None,
              known_prefill: tuple[float, float] | None = None,
              documents: tuple[list[dict], list[Task]] | None = None, **settings) -> Report:
    """The modes (then the scaling table and the sweep, when asked) on the same documents.
    `known_prefill`: (tokens/s, cost of logits) measured before on this model, not measured again;
    `documents`: read_documents' of docs_path, read before (as the CLI does, before the model loads)."""
    records, tasks = documents or read_documents(docs_path, schema, interleaved, limit, gold)
    if scaling:
        scaling_names(tasks, max(SCALING_WIDTHS))  # fail now, not after the modes have run
    chosen = Settings(**settings)
    model = Model(model_path, offloaded_layers(chosen.n_gpu_layers))
    threads = chosen.threads or physical_cores()
    if known_prefill is None:
        probe = Extractor(model, mode="hpd", schema=schema, **settings).layout.document(tasks[0]).tokens
        prefill, output_cost = measure_prefill(model, probe, chosen.batch_tokens, threads)
    else:
        prefill, output_cost = known_prefill
    report = Report(model_path.name, len(tasks), threads, prefill, output_cost, machine=machine(),
                    categories=len({r.get("category") for r in records}))
    outputs: dict[str, list[Result]] = {}
    for mode in modes:
        log(f"bench: {mode} on {len(tasks)} documents ...")
        run, outputs[mode] = run_mode(model, tasks, mode, schema, **settings)
        if gold:
            scores = score(records, {r.id: r.values for r in outputs[mode]})
            run.f1, run.f1_case_insensitive = scores.exact.f1, scores.folded.f1
            run.accuracy_by_confidence = accuracy_by_confidence(records, outputs[mode])
        report.runs.append(run)
        log(f"bench: {mode} {run.seconds:.1f} s")
    reference = outputs.get("sequential")
    if reference:
        for run in report.runs:
            run.same_as_sequential = sum(
                a.values.get(k) == v for a, b in zip(outputs[run.mode], reference) for k, v in b.values.items())
    stage = "scaling table"
    try:
        if scaling:
            report.scaling = run_scaling(model, tasks, prefill, log, output_cost=output_cost, **settings)
        stage = "settings sweep"
        if sweep:
            report.sweep = run_sweep(model, tasks, prefill, log, output_cost=output_cost, **(sweep_grid or {}),
                                     **settings)
        stage = "prefill measured again"
        if known_prefill is None:
            report.prefill_after, _ = measure_prefill(model, probe, chosen.batch_tokens, threads, output_cost=False)
    except Exception as error:  # the modes' figures, which took longest, stay in the report
        report.failed = f"{stage}: {error!r}"
    return report


def read_documents(path: str | Path, schema: Schema | None, interleaved: bool = False, limit: int | None = None,
                   gold: bool = False) -> tuple[list[dict], list[Task]]:
    """The records of a file of documents (JSON lines, an array or a table, as `run` reads them;
    with `gold`, each with its values: a `gold` object, or in a table a column per attribute)
    and their tasks, those asked for; a bad one raises InputError naming its line."""
    loaded = list(load_labeled_lines(path))
    loaded = (interleave(loaded, lambda item: item[1].get("category")) if interleaved else loaded)[:limit]
    records, tasks = [], []
    for where, record in loaded:
        try:
            task = make_task(validated(Document, {k: record[k] for k in DOCUMENT_FIELDS if k in record}), schema)
            if gold and not isinstance(record.get("gold"), dict):
                raise ValueError("--gold needs each document's values: a 'gold' object (attribute -> value)")
        except ValueError as error:
            raise InputError(where, str(error)) from None
        records.append({**record, "id": task.id, "attributes": task.names})
        tasks.append(task)
    return records, tasks


def accuracy_by_confidence(records: list[dict], results: list[Result]) -> tuple[float, float]:
    """Share of right answers (VC or NN) among the most and the least confident quarter of values."""
    from .evaluate import outcome

    judged = []
    for record, result in zip(records, results):
        for name, value in result.values.items():
            gold = record["gold"].get(name)
            right = outcome(gold, (record.get("gold_all") or {}).get(name) or [], value, False) in ("VC", "NN")
            judged.append(((result.confidence or {}).get(name, 1.0), right))
    judged.sort(key=lambda item: item[0])
    quarter = max(1, len(judged) // 4)
    share = lambda part: sum(right for _, right in part) / len(part)  # noqa: E731
    return share(judged[-quarter:]), share(judged[:quarter])


MORE_ATTRIBUTES = ("Weight", "Width", "Height", "Length", "Depth", "Warranty", "Style", "Pattern",
                   "Theme", "Occasion", "Season", "Finish", "Shape", "Capacity", "Power", "Voltage",
                   "Connectivity", "Compatible devices", "Origin", "Ingredients", "Allergens",
                   "Certification", "Model year", "Quantity", "Unit count", "Product type",
                   "Texture", "Fit", "Collection", "Series", "Edition", "Manufacturer", "Target audience",
                   "Use", "Room", "Surface", "Temperature", "Sweetener", "Fat content", "Sugar content",
                   "Protein", "Calories", "Shelf life", "Storage", "Packaging", "Assembly",
                   "Language", "Format", "Scent", "Diet type", "Skin type", "Hair type", "Battery",
                   "Display", "Resolution", "Storage capacity", "Operating system", "Wattage",
                   "Number of pieces", "Age range", "Care instructions")
SCALING_WIDTHS = (5, 20, 60)  # MORE_ATTRIBUTES alone has enough names for the widest


def scaling_names(tasks: list[Task], width: int) -> list[str]:
    """Attribute names to widen documents with: the categories' lists, then common product
    attributes."""
    names: list[str] = []
    for task in tasks:
        names += [a for a in task.names if a not in names]
    names += [a for a in MORE_ATTRIBUTES if a not in names]
    if len(names) < width:
        raise ValueError(f"only {len(names)} attribute names for a width of {width}")
    return names


def run_scaling(model: Model, tasks: list[Task], prefill: float, log=print,
                sizes=(16, 64, 256), widths=SCALING_WIDTHS, output_cost: float = 0.0, **settings) -> list[dict]:
    """hpd over documents x attributes per document; attributes beyond a document's own come
    from scaling_names."""
    names = scaling_names(tasks, max(widths))
    rows = []
    for width in widths:
        for size in sizes:
            chosen = (tasks * (size // max(1, len(tasks)) + 1))[:size]
            widened = [make_task(Document(id=f"{i}", text=t.document.text, category=t.document.category,
                                          attributes=(t.names + [n for n in names if n not in t.names])[:width]),
                                 None) for i, t in enumerate(chosen)]
            log(f"bench: scaling {size} documents x {width} attributes ...")
            run, _ = run_mode(model, widened, "hpd", **settings)
            rows.append({"documents": size, "attributes": width, **_figures(run, prefill, output_cost)})
            log(f"bench: scaling {size} x {width}: {run.seconds:.1f} s, {run.documents_per_second:.2f} docs/s, "
                f"{rows[-1]['share_of_prefill']:.0%} of prefill, peak RSS {run.peak_rss_mb:.0f} MB")
    return rows


def run_sweep(model: Model, tasks: list[Task], prefill: float, log=print,
              budgets=(256, 512, 1024), cells=(2048, 3072, 4096, 8192, 0), residents=(None,),
              output_cost: float = 0.0, **settings) -> list[dict]:
    """hpd over token budgets x cell budgets of the documents in flight (0: none) x documents
    in flight (None: as the settings say), whatever the settings say of the first two: the
    figures behind the defaults."""
    rows = []
    for budget in budgets:
        for cell_budget in cells:
            for resident in residents:
                chosen = {**settings, "batch_tokens": budget, "max_resident_cells": cell_budget}
                if resident is not None:
                    chosen["max_resident"] = resident
                grid = {"batch_tokens": budget, "max_resident_cells": cell_budget,
                        "max_resident": chosen.get("max_resident", Settings.max_resident)}
                log(f"bench: sweep {' '.join(f'{k}={v}' for k, v in grid.items())} ...")
                run, _ = run_mode(model, tasks, "hpd", **chosen)  # the context keeps ubatch <= batch
                rows.append({**grid, **_figures(run, prefill, output_cost)})
                log(f"bench: sweep {' x '.join(map(str, grid.values()))}: {run.seconds:.1f} s")
    return rows


def _figures(run: ModeRun, prefill: float, output_cost: float) -> dict:
    return {"seconds": run.seconds, "documents_per_second": run.documents_per_second,
            "tokens_per_second": run.tokens_per_second, "share_of_prefill": run.tokens_per_second / prefill,
            "busy": _busy(run, prefill, output_cost), "decode_share": run.decode_share,
            "choice_share": run.choice_share, "peak_rss_mb": run.peak_rss_mb}


def _busy(run: ModeRun, prefill: float, output_cost: float) -> float:
    """The share of prefill throughput with each token's logits counted as the work they are."""
    return (run.tokens + output_cost * run.outputs) / run.seconds / prefill
