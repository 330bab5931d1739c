"""Reading documents (JSON lines and Parquet here; CSV and JSON arrays through their modules),
and writing results as JSON lines, a line at a time, never losing work (outputs.py picks the
writer)."""
from __future__ import annotations

import importlib.util
import io
import json
import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator

from .csv_files import ENCODING as CSV_ENCODING, SUFFIXES as CSV_SUFFIXES, csv_records, header_of, is_csv, \
    labeled_records, read_header
from .files import DAMAGED, DAMAGED_MESSAGE, format_suffix, open_input
from .json_arrays import array_items, is_json_array, starts_an_array
from .schema import Document, InputError, Result, Schema, Task, make_task, validated

MAX_LINE_BYTES = 10 * 1024 * 1024
INPUT_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", *CSV_SUFFIXES)  # what a folder's files are read by
WORKBOOKS = (".xlsx", ".xlsm", ".xls", ".ods", ".numbers")  # refused with what to do instead
STDIN = "-"  # documents from standard input, as a desktop tool or a pipe gives them


def is_stdin(path: str | Path) -> bool:
    return str(path) == STDIN


def source_name(path: str | Path) -> str:
    """How messages name a file: its path, or <stdin>."""
    return "<stdin>" if is_stdin(path) else str(path)


@dataclass
class Rejected:
    """A line that could not be used, and why."""

    where: str  # "file:line"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def read_lines(path: str | Path, max_bytes: int = MAX_LINE_BYTES,
               stream: IO[bytes] | None = None) -> Iterator[tuple[int, bytes | ValueError | None]]:
    """(line number, bytes) for each line of the file (or of `stream`, standard input); None
    for a line longer than max_bytes, which is skipped without being held in memory; a
    ValueError where a compressed file breaks off."""
    with open_input(path) if stream is None else nullcontext(stream) as f:
        number = 0
        while True:
            try:
                line = f.readline(max_bytes + 1)
                if len(line) > max_bytes:
                    while line and not line.endswith(b"\n"):  # drain the rest of the long line
                        line = f.readline(1 << 20)
                    line = None
            except DAMAGED:
                yield number + 1, ValueError(DAMAGED_MESSAGE)
                return
            if line == b"":
                return
            number += 1
            yield number, line


def parse_line(raw: bytes | None) -> dict:
    """One JSON object from a line, or ValueError saying what is wrong."""
    if raw is None:
        raise ValueError(f"line longer than {MAX_LINE_BYTES // (1024 * 1024)} MB")
    if isinstance(raw, ValueError):
        raise raw
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (Windows Notepad's) is no part of the line
    except UnicodeDecodeError as error:
        raise ValueError(f"invalid UTF-8 at byte {error.start}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid JSON: {error.msg} at column {error.colno}") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def input_files(spec: str | Path, output: str | Path | None = None) -> list[Path]:
    """A file, a glob or a directory of .jsonl, .json, .csv, .tsv or .parquet files (any but Parquet
    may be gzip-compressed, .gz), in name order; - for standard input.  A CSV file without the
    columns id and text, or Parquet without pyarrow, is refused here, before any work; so is the
    output named as the input.  A directory or glob that holds the output leaves it out."""
    if is_stdin(spec):
        if sys.stdin is None:  # `<&-`, or a service started with none
            raise InputError(source_name(spec), "standard input is closed: pipe the documents in "
                                                "(cat docs.jsonl | hpd-gguf run MODEL -) or name a file")
        return [Path(STDIN)]
    path = Path(spec)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if format_suffix(p) in INPUT_SUFFIXES)
    elif path.is_file():
        found = [path]
    else:
        root = Path(path.anchor) if path.is_absolute() else Path()
        found = sorted(p for p in root.glob(str(path.relative_to(root))) if p.is_file())
    output_there = output is not None and Path(output).exists()
    if output_there:
        if path.is_file() and os.path.samefile(path, output):
            raise InputError(str(spec), f"is the output too (-o {output}): the results would replace the "
                                        "documents; name another output")
        found = [p for p in found if not os.path.samefile(p, output)]
    if not found:
        raise InputError(str(spec), "no input files found" + (" in this directory" if path.is_dir() else "")
                         + (f" but the output, {output}" if output_there else ""))
    workbook = next((p for p in found if format_suffix(p) in WORKBOOKS), None)
    if workbook:
        raise InputError(str(workbook), "a workbook is not read directly: save the sheet as \"CSV UTF-8\" and give that .csv")
    parquet = next((p for p in found if p.suffix == ".parquet"), None)
    if parquet and importlib.util.find_spec("pyarrow") is None:
        raise InputError(str(parquet), "reading Parquet needs pyarrow (pip install pyarrow, or "
                                       "HPD_GGUF_EXTRAS=ray scripts/setup.sh)")
    for path in filter(is_csv, found):
        read_header(path)
    return found


def _records(path: Path) -> Iterator[tuple[str, dict | ValueError]]:
    """(place, record) for each document of a file; a line that is not one comes as ValueError."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # installed with the ray extra (input_files checks)

        row = 0
        for batch in pq.ParquetFile(path).iter_batches():
            for record in batch.to_pylist():
                row += 1
                yield f"{path}:row {row}", record
        return
    if is_stdin(path):
        yield from _stdin_records()
        return
    yield from csv_records(path) if is_csv(path) else _parsed_lines(path)


def _stdin_records() -> Iterator[tuple[str, dict | ValueError]]:
    """What _records gives for standard input, which a pipe fills with JSON lines, one JSON array
    (an API's answer) or a CSV table (a first row naming `id` and `text`): told by its first
    line that is not blank (a table's is its first), read, then put back ahead of the rest.
    Read through a reader of its own, not sys.stdin: the engine reads on a thread that may
    still wait for a line as the program exits, where Python would abort on sys.stdin's lock."""
    stdin = io.BufferedReader(io.FileIO(sys.stdin.fileno(), "rb", closefd=False))
    head = b""
    while not head.strip() and (line := stdin.readline(MAX_LINE_BYTES)):
        head += line
    stream = io.BufferedReader(_Replayed(head, stdin))
    name = Path(source_name(STDIN))
    if starts_an_array(head):
        yield from array_items(name, stream.read())
    elif not head.startswith((b"{", b"\n", b"\r")) and header_of(head.decode("utf-8-sig", errors="replace")):
        yield from csv_records(name, io.TextIOWrapper(stream, CSV_ENCODING, "surrogateescape", newline=""))
    else:
        yield from _json_lines(name, read_lines(name, stream=stream))


class _Replayed(io.RawIOBase):
    """A stream whose first bytes were read already, then the rest of it, as it comes (a line
    piped in is read without waiting for more)."""

    def __init__(self, head: bytes, rest: io.BufferedReader):
        self._head, self._rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._head:
            return self._rest.readinto1(buffer)
        n = min(len(buffer), len(self._head))
        buffer[:n], self._head = self._head[:n], self._head[n:]
        return n


def count_documents(path: Path) -> int:
    """About how many documents a file holds, for a progress bar (its rows, items, or lines
    that are not blank)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows  # written in the file's footer
    if is_csv(path) or is_json_array(path):
        return sum(1 for _ in _records(path))
    return sum(1 for _, line in read_lines(path) if not isinstance(line, bytes) or line.strip())


def _parsed_lines(path: str | Path) -> Iterator[tuple[str, dict | ValueError]]:
    """("file:line", object) for each line that is not blank, or each item of a .json file that
    holds one array; one that is no object comes as ValueError."""
    if is_json_array(path):
        return array_items(Path(path))
    return _json_lines(path, read_lines(path))


def _json_lines(name: str | Path, lines) -> Iterator[tuple[str, dict | ValueError]]:
    for number, raw in lines:
        if isinstance(raw, bytes) and not raw.strip():
            continue
        where = f"{name}:{number}"
        try:
            yield where, parse_line(raw)
        except ValueError as error:
            yield where, error


def read_tasks(paths: str | Path | list[Path], schema: Schema | None = None, skip_ids: set[str] = frozenset(),
               refuse: Callable[[Task], str | None] = lambda task: None) -> Iterator[Task | Rejected]:
    """Tasks from JSONL (CSV, Parquet) files of documents; bad lines, and those `refuse` gives a
    reason for, come as Rejected; blank ones are skipped."""
    seen: set[str] = set()
    for path in [Path(paths)] if isinstance(paths, (str, Path)) else paths:
        for where, record in _records(path):
            try:
                if isinstance(record, ValueError):
                    raise record
                document = validated(Document, record)
                if document.id in seen:
                    raise ValueError(f"duplicate id {document.id!r}")
                seen.add(document.id)
                if document.id in skip_ids:
                    continue
                task = make_task(document, schema)
                reason = refuse(task)
                if reason:
                    raise ValueError(reason)
                yield task
            except ValueError as error:
                yield Rejected(where, str(error))


class ResultWriter:
    """Writes one complete, flushed line per result; with resume, keeps what a previous run
    wrote (dropping a truncated last line) and remembers which ids are done."""

    def __init__(self, path: str | Path | None, resume: bool = False):
        self.path = Path(path) if path else None
        self.done: set[str] = set()
        if self.path is None:
            self._out: IO[str] = sys.stdout
            return
        if resume and self.path.exists():
            self._recover()
        self._out = open(self.path, "a" if resume else "w", encoding="utf-8")

    def _recover(self) -> None:
        good_end = 0
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                try:
                    self.done.add(str(json.loads(line)["id"]))
                except (ValueError, KeyError, TypeError):
                    break
                good_end += len(line)
        if good_end != self.path.stat().st_size:
            os.truncate(self.path, good_end)

    def refuses(self, task: Task) -> str | None:
        return None  # a line holds any attributes

    def write(self, result: Result) -> None:
        self._out.write(result.model_dump_json(exclude_none=True) + "\n")
        self._out.flush()
        self.done.add(result.id)

    def close(self) -> None:
        if self.path is not None and not self._out.closed:
            self._out.close()


def load_jsonl_lines(path: str | Path) -> Iterator[tuple[str, dict]]:
    """("file:line", object) for each line of a trusted JSONL file; a bad line raises InputError."""
    for where, record in _parsed_lines(path):
        if isinstance(record, ValueError):
            raise InputError(where, str(record))
        yield where, record


def load_labeled_lines(path: str | Path) -> Iterator[tuple[str, dict]]:
    """("file:line", object) for each labeled document of a trusted file: JSON lines, or a CSV
    (TSV) table with a column per attribute; a bad line raises InputError."""
    return labeled_records(Path(path)) if is_csv(path) else load_jsonl_lines(path)


def load_jsonl(path: str | Path) -> list[dict]:
    """All objects of a trusted JSONL file (gold or predictions); bad lines raise InputError."""
    return [record for _, record in load_jsonl_lines(path)]
