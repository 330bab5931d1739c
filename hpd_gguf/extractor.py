"""`Extractor`: the Python API.  It loads the model once and runs every mode over the same prompts:
hpd and hpd-static on the long-lived engine (engine.py), the others one prompt at a time
(reference.py)."""
from __future__ import annotations

import itertools
import threading
import time
import warnings
from pathlib import Path
from typing import Iterable, Iterator

from . import models, reference
from .engine import Engine
from .jobs import Job
from .llama import Model, offloaded_layers, supports_gpu_offload, why_no_offload
from .runner import ModelRunner
from .schema import Document, Result, Schema, Task
from .settings import Settings, resident_cells, shows_labeled_examples


class Extractor:
    """Extracts attribute values from documents with one model.

        extractor = Extractor("qwen2.5-coder-0.5b")
        for result in extractor.extract([{"id": "1", "text": "...", "attributes": ["Brand"]}]):
            print(result.id, result.values)

    In hpd modes `submit` gives a Job that many callers may hold at once; their documents
    share the same decode steps.
    """

    def __init__(self, model: str | Path | Model = "qwen2.5-coder-0.5b", schema: Schema | None = None,
                 log=lambda message: None, **settings):
        self.settings = Settings(**settings)
        if self.settings.n_gpu_layers > 0 and not supports_gpu_offload():
            warnings.warn(f"--n-gpu-layers given, but {why_no_offload()}; using the CPU")
        self.settings.n_gpu_layers = offloaded_layers(self.settings.n_gpu_layers)
        self.settings.max_resident_cells = resident_cells(self.settings.max_resident_cells, self.settings.n_gpu_layers)
        self.schema = schema
        self.log = log
        labeled = shows_labeled_examples(schema, self.settings.examples_per_category)
        self.model = model if isinstance(model, Model) else Model(models.resolve(model, log, labeled),
                                                                  self.settings.n_gpu_layers)
        self.runner = ModelRunner(self.model, self.settings, schema)
        self._engine: Engine | None = None
        self._stops: set = set()  # how to stop each extract() under way

    @property
    def layout(self):
        return self.runner.layout

    @property
    def stops(self):
        return self.runner.stops

    @property
    def stats(self):
        return self.runner.stats

    @property
    def on_logits(self):
        return self.runner.on_logits

    @on_logits.setter
    def on_logits(self, observer) -> None:
        """observer(branches, logits) after each decode with outputs (on the engine's thread)."""
        self.runner.on_logits = observer

    def task(self, document: Document | dict | Task) -> Task:
        return self.runner.task(document)

    @property
    def engine(self) -> Engine:
        if self.settings.mode not in ("hpd", "hpd-static"):
            raise ValueError(f"mode {self.settings.mode!r} runs one prompt at a time: use extract()")
        if self._engine is None:
            self._engine = Engine(self.runner, self.log)
        return self._engine

    def submit(self, documents: Iterable[Document | dict | Task]) -> Job:
        """Hand documents to the engine; returns a Job at once (hpd modes)."""
        return self.engine.submit(_rows(documents))

    def extract(self, documents: Iterable[Document | dict | Task]) -> Iterator[Result]:
        """Results in input order, each as soon as it and all before it are done.  `documents`:
        dicts, Documents or Tasks, or a pandas DataFrame (a row each)."""
        start = time.perf_counter()
        for result in self._results(_rows(documents)):
            self.stats.documents += 1
            self.stats.seconds = time.perf_counter() - start
            yield result

    def stop(self) -> None:
        """Start no more documents of any extract() under way: those begun (and any before them)
        finish, then each ends, its results a prefix of its input.  Safe in a signal handler."""
        for stop in list(self._stops):
            stop()

    def _results(self, documents) -> Iterator[Result]:
        if self.settings.mode in ("hpd", "hpd-static"):
            results = self.submit(iter(documents))  # read as it goes: a list of any length, no QueueFull
            stop = results.stop
        else:  # one prompt at a time, on this thread
            stopped = threading.Event()
            tasks = map(self.runner.task, itertools.takewhile(lambda _: not stopped.is_set(), documents),
                        itertools.count())
            reuse = self.settings.mode == "sequential"
            results = reference.json_objects(self.runner, tasks) if self.settings.mode == "json" else \
                reference.one_by_one(self.runner, tasks, reuse=reuse)
            stop = stopped.set
        self._stops.add(stop)
        try:
            yield from results
        finally:
            self._stops.discard(stop)
            if isinstance(results, Job):
                results.cancel()  # a caller that stops early frees the engine at once

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def __enter__(self) -> "Extractor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _rows(documents):
    """The documents a caller passed, a DataFrame's rows as dicts; one document alone refused."""
    if isinstance(documents, (dict, Document, Task, str)):
        raise TypeError("pass documents as a list (or any iterable), e.g. extract([document])")
    if hasattr(documents, "columns") and hasattr(documents, "to_dict"):  # pandas
        return documents.to_dict("records")
    return documents
