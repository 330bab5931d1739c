"""Opening input files, plain or compressed with gzip (a name ending in .gz, as large catalog
dumps come), in UTF-8 or UTF-16, and the suffix that says their format (`.jsonl` for
`docs.jsonl.gz`); holding an output file for one run."""
from __future__ import annotations

import codecs
import gzip
import io
import zlib
from pathlib import Path
from typing import IO

from .schema import InputError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so a second run on one output is not told
    fcntl = None

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


def hold(path: str | Path) -> IO | None:
    """Hold the output `path` for this run (an advisory lock, which ends with the process however
    it ends): the handle to keep open while writing (None for a device such as /dev/null, which
    is not held); InputError where another run holds it."""
    path = Path(path)
    if fcntl is None or (path.exists() and not path.is_file()):
        return None
    try:
        handle = open(path, "ab")  # made if absent; nothing written or cut
    except OSError as error:  # a read-only file
        raise InputError(str(path), f"cannot write it ({error.strerror})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise InputError(str(path), "another run is writing it (the same command started twice?): wait for it "
                                    "to end, or name another output") from None
    except OSError:  # a file system without locks (some network ones): written as before, unheld
        pass
    return handle
