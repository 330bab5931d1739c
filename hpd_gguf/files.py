"""Opening input files, plain or compressed with gzip (a name ending in .gz, as large catalog
dumps come), and the suffix that says their format (`.jsonl` for `docs.jsonl.gz`)."""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import IO

from .schema import InputError

DAMAGED = (EOFError, zlib.error, gzip.BadGzipFile)  # what reading a cut-short or corrupt .gz raises
DAMAGED_MESSAGE = "not gzip data, or cut short or damaged here; nothing after this can be read"


def compressed(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".gz"


def format_suffix(path: str | Path) -> str:
    """The suffix that says the format, lower-cased, a .gz after it set aside."""
    path = Path(path)
    return (path.with_suffix("") if compressed(path) else path).suffix.lower()


def open_input(path: str | Path, text: bool = False, **options) -> IO:
    """The file for reading, bytes or (text=True, with open()'s options) text; InputError if
    there is no such file."""
    try:
        if compressed(path):
            return gzip.open(path, "rt" if text else "rb", **options)
        return open(path, "r" if text else "rb", **options)
    except (FileNotFoundError, IsADirectoryError):  # as Path.is_file() saw it
        raise InputError(str(path), "file not found") from None
