"""A job's input, as the engine takes it: a document at a time, never waiting long.

A list is read in place.  Any other iterable (a file being read, a pipe, a caller's generator)
is read ahead on a thread of its own into a bounded queue, so a source slower than the decode
never holds up the documents in flight: before, the first line piped in waited for the second
to come before it was decoded.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable

DOCUMENT, EMPTY, END, BROKEN = "document", "empty", "end", "broken"  # what take() finds
PUT_RETRY_S = 0.1  # how often a reader held up by a full queue checks whether it still should


class Feed:
    def __init__(self, documents: Iterable, read_ahead: int, on_document: Callable[[], None]):
        self._list = documents if isinstance(documents, (list, tuple)) else None
        self._next = 0
        self._documents = documents
        self._queue: queue.Queue = queue.Queue(max(read_ahead, 1))
        self._on_document = on_document  # wakes the engine when it waits for input
        self._closed = threading.Event()
        self._reader: threading.Thread | None = None
        self._lull = False  # the last take found nothing in time

    def take(self, wait: float | None = None) -> tuple[str, object]:
        """The next (DOCUMENT, document), (END, None) after the last, (BROKEN, error) where the
        source raised, or (EMPTY, None) where nothing came within `wait` seconds.  A source that
        kept the last take waiting is not waited for again until it has given something, so a
        lull costs the engine one wait, not one a step."""
        if self._list is not None:
            if self._next == len(self._list):
                return END, None
            self._next += 1
            return DOCUMENT, self._list[self._next - 1]
        self._start_reader()
        try:
            found = self._queue.get(timeout=wait) if wait and not self._lull else self._queue.get_nowait()
        except queue.Empty:
            self._lull = True
            return EMPTY, None
        self._lull = False
        return found

    @property
    def ready(self) -> bool:
        """Something to take now (a document, the end or an error)."""
        if self._list is not None:
            return True
        self._start_reader()
        return not self._queue.empty()

    def close(self) -> None:
        """Read no further (the job ended): the reader stops at its next document."""
        self._closed.set()

    def _start_reader(self) -> None:
        if self._reader is None:  # on first use: a job refused on submit leaves no thread
            self._reader = threading.Thread(target=self._read, name="hpd-input", daemon=True)
            self._reader.start()

    def _read(self) -> None:
        try:
            for document in self._documents:
                if not self._put((DOCUMENT, document)):
                    return
            self._put((END, None))
        except BaseException as error:  # the caller's iterator broke (even by sys.exit): what came before stands
            self._put((BROKEN, error))

    def _put(self, item: tuple[str, object]) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=PUT_RETRY_S)
            except queue.Full:
                continue
            self._on_document()
            return True
        return False
