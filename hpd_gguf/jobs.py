"""A job: the documents one caller submitted, and their results in the caller's order.

The engine's thread fills it; the caller reads it from any thread (`for r in job`) or event
loop (`async for r in job`), watches `job.progress`, or calls `job.stop()` (finish what has
begun) or `job.cancel()` (drop everything).
"""
from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from .feed import Feed
from .schema import Result


class QueueFull(RuntimeError):
    """More documents are waiting than the engine takes (`Settings.max_queued`)."""


class JobCancelled(RuntimeError):
    """The job was cancelled before this result."""


@dataclass
class Progress:
    done: int
    total: int | None  # None while the input is an iterator not read to its end
    seconds: float

    @property
    def documents_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


class Job:
    _ids = itertools.count(1)

    def __init__(self, documents: Iterable, read_ahead: int = 1, on_document: Callable[[], None] = lambda: None):
        self.id = next(Job._ids)
        self.total = len(documents) if hasattr(documents, "__len__") else None
        self.input = Feed(documents, read_ahead, on_document)  # taken by the engine's thread only
        self.read = 0  # documents taken from the input so far
        self.exhausted = False
        self.stopping = False  # set by stop() until the engine ends the job's input
        self._lock = threading.Condition()
        self._results: dict[int, Result] = {}
        self._next = 0  # index of the next result to hand out
        self._done = 0
        self._error: BaseException | None = None
        self._error_at: int | None = None  # results before this index still come
        self.cancelled = False
        self._started = time.perf_counter()
        self._ended: float | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []

    # the caller's side
    def __iter__(self) -> Iterator[Result]:
        while True:
            with self._lock:
                while not self._ready():
                    self._lock.wait()
                result = self._take()
            if result is None:
                return
            yield result

    def __aiter__(self):
        return self._async_results()

    async def _async_results(self):
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._ready():
                    result, future = self._take(), None
                else:
                    future = loop.create_future()
                    self._waiters.append((loop, future))
            if future is not None:
                await future
                continue
            if result is None:
                return
            yield result

    def stop(self) -> None:
        """Start no more of the job's documents: those begun, and those before them in the job's
        order, still finish, so the results are a prefix of the input; the job then ends.  Safe
        in a signal handler (a flag the engine reads before its next step)."""
        self.stopping = True

    def cancel(self) -> None:
        """Stop the job: its documents leave the engine (sequence ids, KV cells) within one step."""
        with self._lock:
            if self._finished():
                return
            self.cancelled = True
            self._fail(JobCancelled(f"job {self.id} was cancelled"), self._next)

    @property
    def progress(self) -> Progress:
        with self._lock:
            end = self._ended or time.perf_counter()
            total = self.total if self.total is not None else (self.read if self.exhausted else None)
            return Progress(self._done, total, end - self._started)

    @property
    def finished(self) -> bool:
        with self._lock:
            return self._finished()

    def wants(self, index: int) -> bool:
        """Whether the caller still waits for the result of document `index` (not after the job
        failed or was cancelled before it)."""
        with self._lock:
            return self._error is None or index < self._error_at

    # the engine's side
    def deliver(self, index: int, result: Result) -> None:
        with self._lock:
            if self._error is not None and index >= self._error_at:
                return  # the caller no longer waits for it
            self._results[index] = result
            self._done += 1
            self._changed()

    def fail(self, error: BaseException, at: int | None = None) -> None:
        """The job ends with `error`, raised to the caller after the results before `at`."""
        with self._lock:
            self._fail(error, self._next if at is None else at)

    def input_ended(self, at: int | None = None) -> None:
        """No documents after the first `at` (default: all read) will come."""
        with self._lock:
            self.exhausted = True
            if at is not None:
                self.read = self.total = at
            self._changed()

    def last_delivered(self) -> int:
        """The index of the last result delivered (handed out or not); -1 before any."""
        with self._lock:
            return max(self._results, default=self._next - 1)

    # under the lock
    def _fail(self, error: BaseException, at: int) -> None:
        if self._error is None:
            self._error, self._error_at = error, at
            self._results = {i: r for i, r in self._results.items() if i < at}
            self._changed()

    def _finished(self) -> bool:
        if self._error is not None:
            return self._next >= self._error_at
        return self.exhausted and self._next >= self.read

    def _ready(self) -> bool:
        return self._next in self._results or self._finished()

    def _take(self) -> Result | None:
        """The next result, None at the end; raises the job's error in its place."""
        if self._next in self._results:
            self._next += 1
            return self._results.pop(self._next - 1)
        if self._error is not None:
            raise self._error
        return None

    def _changed(self) -> None:
        if self._finished() and self._ended is None:
            self._ended = time.perf_counter()
        self._lock.notify_all()
        for loop, future in self._waiters:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # that event loop has closed: nobody waits there
                pass
        self._waiters.clear()


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
