"""Scale-out: the same extraction on a Ray cluster (`pip install 'hpd-gguf[ray]'`).

    import ray, hpd_gguf.distributed as hd
    results = hd.extract_dataset(ray.data.read_json("docs/"), "qwen2.5-coder-0.5b", workers=8, threads_per_worker=4)
    for row in results.iter_rows():
        record = json.loads(row["result"])          # {"id", "values", "confidence", "error"?}

Ray Data maps the rows with a pool of actors (`map_batches` with a callable class); each actor
loads its model once, on its node, and extracts a whole batch on its own hpd engine, so its
decode steps are as full as one process's.  A row that is not a document, or that llama.cpp
refuses, becomes a result with `error`: it never fails the dataset.  Ray restarts a worker
that dies and runs its batches again; a batch's results only leave the actor once it is done,
so each id comes out once.
"""
from __future__ import annotations

import itertools
import math
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Iterable, Iterator

from . import models
from .extractor import Extractor
from .schema import Result, Schema, Task, as_id

BATCH_DOCUMENTS = 64  # rows per actor call: the engine's resident documents at the defaults
DOCUMENTS_PER_PASS = 100_000  # documents `run` hands Ray at once
BATCHES_IN_FLIGHT = 1  # calls an actor runs at once (their jobs would share its engine): 2 gained
                       # nothing over batches of 64 (256 documents, 2 workers: 197.8 vs 195.3 s)


def _error(row: dict, order: int, message: str) -> Result:
    identity = as_id(row.get("id")) or f"row {order}"
    return Result(id=identity, values={}, error=message)


class ExtractWorker:
    """One actor: an Extractor with its model loaded once, on this node."""

    def __init__(self, model: str, models_dir: str, schema: dict | None, threads: int, settings: dict):
        os.environ.setdefault("HPD_GGUF_MODELS", models_dir)
        if model not in models.KNOWN_MODELS and not Path(model).is_file():
            raise FileNotFoundError(f"model file {model} not found on node {socket.gethostname()}: "
                                    "a path must exist on every node")
        self.extractor = Extractor(model, schema=Schema.model_validate(schema) if schema else None,
                                   threads=threads, **settings)

    def _task(self, row: dict) -> Task:
        if "task" in row:  # the CLI's rows, validated on the driver
            return self.extractor.task(Task.model_validate_json(row["task"]))
        return self.extractor.task({k: v for k, v in row.items() if k != "order"})

    def __call__(self, batch):
        import pyarrow as pa

        rows = batch.to_pylist()
        orders = [row.get("order", i) for i, row in enumerate(rows)]
        results: list[Result | None] = [None] * len(rows)
        tasks: list[tuple[int, Task]] = []
        for i, row in enumerate(rows):
            try:
                tasks.append((i, self._task(row)))
            except Exception as error:  # not a document: an error row in its place
                results[i] = _error(row, orders[i], f"bad document: {error}")
        try:
            for (i, _), result in zip(tasks, self.extractor.extract(task for _, task in tasks)):
                results[i] = result
        except Exception as error:  # llama.cpp refused: the rest of the batch are error rows
            for i, _ in tasks:
                if results[i] is None:
                    results[i] = _error(rows[i], orders[i], f"extraction failed: {error}")
        return pa.table({"order": orders, "id": [r.id for r in results],
                         "result": [r.model_dump_json(exclude_none=True) for r in results]})


def extract_dataset(dataset, model: str, schema: Schema | None = None, *, workers: int = 1,
                    threads_per_worker: int = 1, batch_documents: int = BATCH_DOCUMENTS,
                    batches_in_flight: int = BATCHES_IN_FLIGHT, **settings):
    """A Dataset of {"order", "id", "result"} rows, `result` being the output line (JSON), from a
    Dataset of documents (columns id, text, category?, attributes?; or the CLI's "task" rows)."""
    from ray.data import ActorPoolStrategy

    pool = ActorPoolStrategy(size=workers, max_concurrent_calls_per_actor=batches_in_flight,
                             max_tasks_in_flight_per_actor=batches_in_flight,  # no actor hoards batches
                             enable_true_multi_threading=batches_in_flight > 1)
    return dataset.map_batches(
        ExtractWorker, batch_format="pyarrow", batch_size=batch_documents, compute=pool, num_cpus=threads_per_worker,
        fn_constructor_kwargs={"model": model if model in models.KNOWN_MODELS else str(Path(model).resolve()),
                               "models_dir": str(models.models_dir().resolve()), "threads": threads_per_worker,
                               "settings": settings, "schema": schema.model_dump() if schema else None})


def connect(address: str, cpus: int) -> None:
    """`--ray auto`: the running cluster if there is one (RAY_ADDRESS, `ray start`), else a local
    one; any other value is a cluster's address."""
    import ray

    if ray.is_initialized():
        return
    if address == "auto":
        try:
            ray.init(address="auto", log_to_driver=False)
            return
        except ConnectionError:
            pass
        _start_local(cpus)
    else:
        ray.init(address=address, log_to_driver=False)


def _start_local(cpus: int) -> None:
    """A local instance whose services ignore SIGINT: Ctrl-C at a terminal reaches the whole
    process group, the local Ray's services with it, and should stop the run, not the cluster
    under it (they inherit the ignored signal)."""
    import ray

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        ray.init(num_cpus=cpus, log_to_driver=False, include_dashboard=False)
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def run(tasks: Iterable[Task], model: str, schema: Schema | None, workers: int, threads_per_worker: int,
        batches_in_flight: int = BATCHES_IN_FLIGHT, documents_per_pass: int = DOCUMENTS_PER_PASS,
        **settings) -> Iterator[Result]:
    """Results of `tasks` in their order, extracted on the connected Ray cluster, a pass of
    `documents_per_pass` at a time: the driver and Ray's object store hold no more of them
    (~1.6 KB a document), and each pass's actors load the model again (seconds, against the
    hours a pass of 100,000 documents takes on CPUs)."""
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    tasks = iter(tasks)
    while chunk := list(itertools.islice(tasks, documents_per_pass)):
        yield from _run_pass(chunk, model, schema, workers, threads_per_worker, batches_in_flight, **settings)


def _run_pass(tasks: list[Task], model: str, schema: Schema | None, workers: int, threads_per_worker: int,
              batches_in_flight: int, **settings) -> Iterator[Result]:
    import ray

    rows = [{"order": i, "task": task.model_dump_json()} for i, task in enumerate(tasks)]
    size = max(1, min(BATCH_DOCUMENTS, math.ceil(len(rows) / (workers * batches_in_flight))))  # all get work
    dataset = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / size))
    results = extract_dataset(dataset, model, schema, workers=workers, threads_per_worker=threads_per_worker,
                              batch_documents=size, batches_in_flight=batches_in_flight, **settings)
    ready: dict[int, str] = {}
    next_out = 0
    try:
        for batch in results.iter_batches(batch_format="pyarrow", batch_size=None):
            for order, line in zip(batch["order"].to_pylist(), batch["result"].to_pylist()):
                ready[order] = line
            while next_out in ready:
                yield Result.model_validate_json(ready.pop(next_out))
                next_out += 1
    except KeyboardInterrupt:  # the caller stops: what came back stands, the batches under way go
        for order in sorted(ready):
            yield Result.model_validate_json(ready.pop(order))
        raise
    if ready or next_out != len(rows):
        raise RuntimeError(f"Ray returned {next_out + len(ready)} results for {len(rows)} documents")
