"""JSON arrays of records in and out: what jq, pandas (`to_json(orient="records")`) and most
APIs export, and what `pandas.read_json` and a browser read back.

In: a .json file whose first character is `[`, read item by item, each named by the line it
starts on.  Out: `-o values.json` is one array that is whole after every result (each result
goes where the closing bracket was, and the bracket follows it again), so a killed run leaves
valid JSON, and `--resume` keeps every complete item.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

from .files import DAMAGED, format_suffix, open_input
from .schema import InputError, Result

SPACE = re.compile(r"[ \t\r\n]*")  # what JSON allows between tokens
CLOSE = b"\n]\n"


def starts_an_array(head: bytes) -> bool:
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[")


def is_json_array(path: str | Path) -> bool:
    """A .json file whose first character is `[`, not JSON lines."""
    if format_suffix(path) != ".json":
        return False
    try:
        with open_input(path) as f:
            return starts_an_array(f.read(1 << 16))
    except (OSError, InputError, *DAMAGED):  # the reader that follows says what is wrong
        return False


def array_items(path: Path, data: bytes | None = None) -> Iterator[tuple[str, dict | ValueError]]:
    """("file:line (item n)", object) for each item of the file's array (or of `data`, read
    from it already); one that is no object comes as ValueError.  Past something that is not
    JSON the items cannot be told apart, so the file ends there, with that error (the items
    before it stand)."""
    try:
        if data is None:
            with open_input(path) as f:
                data = f.read()
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        yield f"{path}:1", ValueError(f"invalid UTF-8 at byte {error.start}; nothing of this file is read")
        return
    except DAMAGED:
        yield f"{path}:1", ValueError("not gzip data, or cut short or damaged; nothing of this file is read")
        return
    line, counted = 1, 0
    try:
        for number, (start, _, item) in enumerate(_spans(text), 1):
            line, counted = line + text.count("\n", counted, start), start
            yield f"{path}:{line} (item {number})", item if isinstance(item, dict) else \
                ValueError(f"expected a JSON object, got {type(item).__name__}")
    except json.JSONDecodeError as error:
        yield f"{path}:{error.lineno}", ValueError(f"invalid JSON: {error.msg} at column {error.colno}; "
                                                   "the array cannot be read past it")


def _spans(text: str) -> Iterator[tuple[int, int, object]]:
    """(start, end, item) for each item of the array `text` holds; JSONDecodeError where it
    stops being one."""
    decoder, pos = json.JSONDecoder(), text.index("[") + 1
    while True:
        pos = SPACE.match(text, pos).end()
        if text.startswith("]", pos) and not text[pos + 1:].strip():
            return
        item, end = decoder.raw_decode(text, pos)
        after = SPACE.match(text, end).end()
        if not text.startswith((",", "]"), after):
            raise json.JSONDecodeError("Expecting ',' or ']' after an item", text, after)
        yield pos, end, item
        pos = after + text.startswith(",", after)


class ArrayResultWriter:
    """Results as one JSON array, whole after every result; with resume, keeps the complete
    items a previous run wrote and remembers which ids are done."""

    def __init__(self, path: str | Path, resume: bool = False):
        self.path = Path(path)
        self.done: set[str] = set()
        self._items = 0
        kept = self._recover() if resume and self.path.exists() and self.path.stat().st_size else None
        self._out = open(self.path, "r+b" if kept is not None else "wb")
        self._end = kept if kept is not None else self._out.write(b"[")
        self._out.truncate(self._end)
        self._write(b"")

    def _recover(self) -> int:
        """The ids of the complete results a previous run wrote; where the last of them ends."""
        data = self.path.read_bytes()
        if not starts_an_array(data):
            raise InputError(str(self.path), "not a JSON array of results to resume")
        text = data.decode("utf-8", errors="surrogateescape")
        end = text.index("[") + 1
        try:
            for _, item_end, item in _spans(text):
                if not (isinstance(item, dict) and isinstance(item.get("id"), str)):
                    break
                self.done.add(item["id"])
                end, self._items = item_end, self._items + 1
        except json.JSONDecodeError:  # cut off by a killed run
            pass
        return len(text[:end].encode("utf-8", errors="surrogateescape"))

    def refuses(self, task) -> str | None:
        return None  # an item holds any attributes

    def write(self, result: Result) -> None:
        self._write((b",\n" if self._items else b"\n") + result.model_dump_json(exclude_none=True).encode())
        self._items += 1
        self.done.add(result.id)

    def _write(self, item: bytes) -> None:
        """The item in place of the closing bracket, which follows it again."""
        self._out.seek(self._end)
        self._out.write(item + CLOSE)
        self._out.flush()
        self._end += len(item)

    def close(self) -> None:
        self._out.close()
