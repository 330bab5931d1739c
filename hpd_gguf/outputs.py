"""Where a run's results go: the output checked before the model loads (where it would lose
results, or cannot take them a line at a time), held for the run, and its writer by suffix: a
CSV (TSV) table, one JSON array, else JSON lines; standard output without a name."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO

from .csv_files import CsvResultWriter, is_csv, results_delimiter
from .files import compressed, format_suffix
from .json_arrays import ArrayResultWriter, is_json_array
from .jsonl import WORKBOOKS, ResultWriter, is_stdin, read_tasks
from .schema import Schema, Task

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so a second run on one output is not told
    fcntl = None


class OutputError(ValueError):
    """An output that would lose results, or cannot be written as results are."""


def check_output(output: str | None, resume: bool, overwrite: bool, columns_named: bool) -> IO | None:
    """Refuse an output that cannot be written, or would lose results, before the model loads
    (columns_named: the attributes of a table made now are known before the input is read);
    hold it for this run (a second run started on it is refused)."""
    if resume and not output:
        raise OutputError("--resume needs -o OUTPUT")
    if resume and overwrite:
        raise OutputError("--resume keeps the output's results, --overwrite replaces them: give one")
    if not output and sys.stdout is None:  # `>&-`
        raise OutputError("standard output is closed: give -o OUTPUT")
    if not output:
        return None
    if compressed(output):
        raise OutputError(f"{output}: results are written plain, a line at a time (compress them afterwards): "
                          "name it without .gz")
    if format_suffix(output) == ".parquet":
        raise OutputError(f"{output}: results are written a line at a time, so that a stopped run keeps them, "
                          "which Parquet cannot be: name it .jsonl, .json or .csv "
                          "(pandas.read_csv(\"values.csv\").to_parquet(...) converts a table afterwards)")
    if format_suffix(output) in WORKBOOKS:
        raise OutputError(f"{output}: results are not written as a workbook: name it .csv, which a spreadsheet opens")
    if not os.access(Path(output).absolute().parent, os.W_OK):
        raise OutputError(f"{output}: cannot write there (no such folder, or not writable)")
    holds_results = Path(output).is_file() and Path(output).stat().st_size > 0
    if not (resume or overwrite) and holds_results:
        raise OutputError(f"{output} holds results already: --resume continues it, --overwrite replaces it")
    if is_csv(output) and not columns_named and not (resume and holds_results):
        raise OutputError(f"{output}: its columns are the attributes, which standard input cannot name before it "
                          "is read: give --schema or --attributes")
    return hold(output)


def hold(path: str | Path) -> IO | None:
    """Hold the output `path` for this run (an advisory lock, which ends with the process however
    it ends): the handle to keep open while writing (None for a device such as /dev/null, which
    is not held); OutputError where another run holds it."""
    path = Path(path)
    if fcntl is None or (path.exists() and not path.is_file()):
        return None
    try:
        handle = open(path, "ab")  # made if absent; nothing written or cut
    except OSError as error:  # a read-only file
        raise OutputError(f"{path}: cannot write it ({error.strerror})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise OutputError(f"{path}: another run is writing it (the same command started twice?): wait for it "
                          "to end, or name another output") from None
    except OSError:  # a file system without locks (some network ones): written as before, unheld
        pass
    return handle


def open_results(path: str | Path | None, resume: bool, files: list[Path], schema: Schema | None):
    """The writer for `path` by its suffix: CSV (a column per attribute of these files), one
    JSON array (.json; JSON lines where resuming such a file), else JSON lines; standard output
    without a path."""
    if path and is_csv(path):
        return CsvResultWriter(path, lambda: attribute_names(files, schema), resume=resume,
                               delimiter=results_delimiter(path, files))
    if path and Path(path).suffix.lower() == ".json" and not (resume and _holds_json_lines(Path(path))):
        return ArrayResultWriter(path, resume=resume)
    return ResultWriter(path, resume=resume)


def attribute_names(paths: list[Path], schema: Schema | None) -> list[str]:
    """The attributes the documents of these files ask for, in the order first asked (from the
    schema alone for standard input, which can be read only once)."""
    if any(map(is_stdin, paths)):
        return [attribute.name for attribute in schema.all_attributes()] if schema else []
    names: dict[str, None] = {}
    for item in read_tasks(paths, schema):
        if isinstance(item, Task):
            names.update(dict.fromkeys(item.names))
    return list(names)


def _holds_json_lines(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0 and not is_json_array(path)
