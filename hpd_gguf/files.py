"""Opening input files, plain or compressed with gzip (a name ending in .gz, as large catalog
dumps come), in UTF-8 or UTF-16, and the suffix that says their format (`.jsonl` for
`docs.jsonl.gz`)."""
from __future__ import annotations

import codecs
import gzip
import io
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
    there is no such file.  A file in UTF-16 (what Windows PowerShell's `>` and Excel's "Unicode
    Text" write, with a byte-order mark) is read as UTF-8 bytes, or as text."""
    try:
        raw = gzip.open(path, "rb") if compressed(path) else open(path, "rb")
    except (FileNotFoundError, IsADirectoryError):  # as Path.is_file() saw it
        raise InputError(str(path), "file not found") from None
    utf16 = _starts_utf16(raw)
    if text:
        return io.TextIOWrapper(raw, **{**options, **({"encoding": "utf-16"} if utf16 else {})})
    return codecs.EncodedFile(raw, "utf-8", "utf-16", errors="replace") if utf16 else raw


def _starts_utf16(raw) -> bool:
    try:
        return raw.peek(2)[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    except DAMAGED:  # the reading says what is wrong
        return False
