"""Documents from CSV (or TSV) files and results to one, as spreadsheets and shop systems give
and take them.

Input: a header row naming `id` and `text`, optionally `category` and `attributes` (names
separated by commas), any other columns kept aside; comma, semicolon or tab separated.  In a
table of labeled documents (examples, gold) every other column is an attribute, its cells the
values.
Output: `id`, a column per attribute, then `<attribute> confidence` for each, then `error`;
one complete row a result, flushed, so a killed run resumes as with JSON lines.
"""
from __future__ import annotations

import csv
import io
import itertools
from contextlib import nullcontext
from pathlib import Path
from typing import IO, Callable, Iterator

from .files import DAMAGED, DAMAGED_MESSAGE, format_suffix, open_input
from .schema import DOCUMENT_FIELDS, InputError, Result

SUFFIXES = (".csv", ".tsv")
COLUMNS = DOCUMENT_FIELDS  # the columns a document reads; case and spaces ignored
DELIMITERS = ",;\t|"
ENCODING = "utf-8-sig"  # Excel's "CSV UTF-8" starts with a byte-order mark; written too, so Excel reads UTF-8

csv.field_size_limit(max(csv.field_size_limit(), 10 * 1024 * 1024))  # a cell may hold a long description


def is_csv(path: str | Path) -> bool:
    return format_suffix(path) in SUFFIXES


def _delimiter(path: str | Path, first_line: str = "") -> str:
    """What a results file is written with: tabs in a .tsv file, else commas, unless its first
    line (`id` and the separator) says otherwise."""
    if first_line[:2] == "id" and len(first_line) > 2 and first_line[2] in DELIMITERS:
        return first_line[2]
    return "\t" if format_suffix(path) == ".tsv" else ","


def results_delimiter(path: str | Path, inputs: list[Path]) -> str:
    """The separator of a results table: a .csv one is separated by `;` where the first CSV input
    is, so that a spreadsheet whose list separator that is (Excel in much of Europe) opens it in
    columns as it opened the input; else as _delimiter says."""
    first = next((p for p in inputs if is_csv(p)), None)
    semicolons = first is not None and format_suffix(path) == ".csv" and read_header(first)[1] == ";"
    return ";" if semicolons else _delimiter(path)


def _open(path: Path):
    """The file as text: UTF-8, or UTF-16 where it starts with that byte-order mark (Excel's
    "Unicode Text"); undecodable bytes kept as surrogates, so that only their row is refused."""
    return open_input(path, text=True, encoding=ENCODING, errors="surrogateescape", newline="")


def read_header(path: Path) -> tuple[list[str], str]:
    """The file's column names (lower-cased where they are a document's) and its delimiter;
    InputError unless the first row names `id` and `text`."""
    with _open(path) as f:
        return _header_row(path, f)


def _header_row(name: str | Path, f: IO[str]) -> tuple[list[str], str]:
    """read_header of the stream f, its first line read."""
    try:
        first = f.readline()
    except DAMAGED:
        raise InputError(f"{name}:1", DAMAGED_MESSAGE) from None
    found = header_of(first)
    if found is None:
        raise InputError(f"{name}:1", f"the first row must name the columns id and text (it reads {first.strip()[:200]!r})")
    if len(set(found[0])) != len(found[0]):
        raise InputError(f"{name}:1", f"a column is named twice in the header: {found[0]}")
    return found


def header_of(first: str) -> tuple[list[str], str] | None:
    """A first row's column names and delimiter, if it names `id` and `text`."""
    for delimiter in DELIMITERS:
        header = [_column(name) for name in next(csv.reader([first], delimiter=delimiter), [])]
        if {"id", "text"} <= set(header):
            return header, delimiter
    return None


def _column(name: str) -> str:
    return name.strip().lower() if name.strip().lower() in COLUMNS else name.strip()


def csv_records(path: Path, stream: IO[str] | None = None) -> Iterator[tuple[str, dict | ValueError]]:
    """("file:line", record) for each row after the header (of `stream` where given: standard
    input); a row that is not one comes as ValueError.  Empty cells are absent; `attributes`
    becomes a list."""
    with _open(path) if stream is None else nullcontext(stream) as f:
        try:
            header, delimiter = _header_row(path, f)
        except InputError as error:  # a file's was checked before the run; standard input's, only here
            yield error.where, ValueError(error.message)
            return
        reader = csv.reader(f, delimiter=delimiter)
        ended = 1  # the line the previous row ended on
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except DAMAGED:
                yield f"{path}:{ended + 1}", ValueError(DAMAGED_MESSAGE)
                return
            except csv.Error as error:
                yield f"{path}:{ended + 1}", ValueError(f"invalid CSV: {error}")
                ended = reader.line_num + 1
                continue
            where, ended = f"{path}:{ended + 1}", reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue  # a blank row
            try:
                yield where, _record(header, row)
            except ValueError as error:
                yield where, error


def _record(header: list[str], row: list[str]) -> dict:
    if len(row) > len(header):
        raise ValueError(f"{len(row)} cells where the header has {len(header)} columns (a separator in an unquoted cell?)")
    record = {}
    for name, cell in zip(header, row):
        try:
            cell.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"invalid UTF-8 in column {name!r} (from Excel, save as \"CSV UTF-8\")") from None
        if cell.strip():
            record[name] = cell
    if "attributes" in record:
        record["attributes"] = record["attributes"].split(",")
    return record


def labeled_records(path: Path) -> Iterator[tuple[str, dict]]:
    """("file:line", {"id", "text", "category"?, "attributes"?, "gold"}) for each row of a table
    of labeled documents: a column other than a document's is an attribute, its cell the value
    (empty: null).  A bad row raises InputError."""
    names = [name for name in read_header(path)[0] if name not in COLUMNS]
    for where, record in csv_records(path):
        if isinstance(record, ValueError):
            raise InputError(where, str(record))
        yield where, {**{k: record[k] for k in COLUMNS if k in record}, "gold": {n: record.get(n) for n in names}}


class CsvResultWriter:
    """Results as rows of a CSV (TSV for .tsv) file, like ResultWriter: each row complete and
    flushed; with resume, keeps the rows a previous run wrote (dropping a truncated last one)."""

    def __init__(self, path: str | Path, attribute_names: Callable[[], list[str]], resume: bool = False,
                 delimiter: str | None = None):
        self.path = Path(path)
        self.delimiter = delimiter or _delimiter(self.path)
        self.done: set[str] = set()
        header = self._recover() if resume and self.path.exists() else None
        if header is None:
            header = _header(attribute_names())
            if len(set(header)) != len(header):
                raise InputError(str(self.path), f"the attributes would make two columns of one name: {header}")
            self._out = open(self.path, "w", encoding=ENCODING, newline="")
            self._write_row(header)
        else:
            self._out = open(self.path, "a", encoding="utf-8", newline="")
        self.attributes = _attributes_in(header)

    def refuses(self, task) -> str | None:
        """Why the task's values cannot be written here, if they cannot."""
        missing = [name for name in task.names if name not in self.attributes]
        if missing:
            return f"{self.path.name} has no column for {', '.join(map(repr, missing))} (its columns were set when it was made)"
        return None

    def write(self, result: Result) -> None:
        confidence = result.confidence or {}
        self._write_row([result.id] + [result.values.get(name) or "" for name in self.attributes]
                        + [_number(confidence.get(name)) for name in self.attributes] + [result.error or ""])
        self.done.add(result.id)

    def _write_row(self, cells: list[str]) -> None:
        line = io.StringIO()
        csv.writer(line, delimiter=self.delimiter).writerow(cells)
        self._out.write(line.getvalue())
        self._out.flush()

    def _recover(self) -> list[str] | None:
        """The header of the file a previous run wrote (None if it has none), the ids of its rows,
        and the file cut after its last complete row."""
        read = good_end = 0

        def complete_lines():
            nonlocal read
            with open(self.path, "rb") as f:
                for raw in f:
                    if not raw.endswith(b"\n"):
                        return
                    read += len(raw)
                    yield raw.decode(ENCODING if read == len(raw) else "utf-8", errors="replace")

        lines = complete_lines()
        first = next(lines, None)
        if first is None:  # not even the header was written whole
            return None
        self.delimiter = _delimiter(self.path, first)  # the header's, whatever the input's now
        reader = csv.reader(itertools.chain([first], lines), delimiter=self.delimiter, strict=True)
        try:
            header = next(reader)
        except (StopIteration, csv.Error):
            return None
        if _attributes_in(header) is None:
            raise InputError(str(self.path), f"not a results file of hpd-gguf to resume (its header: {header[:6]})")
        good_end = read
        try:
            for row in reader:
                if len(row) != len(header):
                    break
                self.done.add(row[0])
                good_end = read
        except csv.Error:  # a quoted cell cut short
            pass
        with open(self.path, "r+b") as f:
            f.truncate(good_end)
        return header

    def close(self) -> None:
        if not self._out.closed:
            self._out.close()


def read_results(path: str | Path) -> Iterator[dict]:
    """The results of a CSV file CsvResultWriter wrote, as JSON lines give them (an empty cell null)."""
    with open_input(path, text=True, encoding=ENCODING, newline="") as f:
        first = f.readline()
        reader = csv.reader(itertools.chain([first], f), delimiter=_delimiter(path, first))
        header = next(reader, [])
        names = _attributes_in(header)
        if names is None:
            raise InputError(f"{path}:1", f"not a results file of hpd-gguf (its header: {header[:6]})")
        for row in reader:
            try:
                if len(row) != len(header):
                    raise ValueError(f"{len(row)} cells where the header has {len(header)} columns")
                values, confidence = row[1:len(names) + 1], row[len(names) + 1:-1]
                yield {"id": row[0], "values": {n: v or None for n, v in zip(names, values)},
                       "confidence": {n: float(c) for n, c in zip(names, confidence) if c}}
            except ValueError as error:
                raise InputError(f"{path}:{reader.line_num}", str(error)) from None


def _header(names: list[str]) -> list[str]:
    return ["id", *names, *(f"{name} confidence" for name in names), "error"]


def _attributes_in(header: list[str]) -> list[str] | None:
    """The attributes of a results file's header; None if it is not one."""
    names = header[1:len(header) // 2]
    return names if _header(names) == header else None


def _number(value: float | None) -> str:
    return "" if value is None else str(value)  # as JSON writes it
