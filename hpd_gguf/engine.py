"""The hpd engine: one long-lived decode loop that documents from any number of callers share.

    engine = Engine(runner)
    job = engine.submit(documents)       # returns at once
    for result in job: ...               # or `async for`; job.cancel(); job.progress

While there is work, a thread repeats: cancelled documents out, then `step()`: plan one batch,
start its decode, read documents in from the jobs' inputs while it runs (each job its share
first, into the scheduler's waiting queue), choose each branch's next token, hand finished
documents to their jobs.
The run-wide preamble is decoded once, when the engine first runs, and stays for its life
(hpd); each job then orders its own results.
"""
from __future__ import annotations

import itertools
import math
import threading
import time
from collections import Counter
from typing import Iterable

from .feed import BROKEN, DOCUMENT, END
from .jobs import Job, QueueFull
from .kv import PREAMBLE_SEQ, KVCache
from .llama import Batch, Context
from .runner import ModelRunner, null_values
from .scheduler import WAITING_PER_RESIDENT, Limits, Scheduler
from .schema import Result
from .sequence import Branch, DocumentState

INPUT_WAIT_S = 0.02  # with documents in flight, the longest a step's reading waits for input
IDLE_POLL_S = 0.1  # with none, how often stop() and cancel() are looked for while input is awaited


class Engine:
    def __init__(self, runner: ModelRunner, log=lambda message: None):
        self.runner = runner
        self.log = log
        self.continuous = runner.settings.mode == "hpd"  # hpd-static: fixed groups, no shared preamble
        self.context: Context | None = None  # these four are made when the engine first runs
        self.kv: KVCache | None = None
        self.batch: Batch | None = None
        self.scheduler: Scheduler | None = None
        self._jobs: list[Job] = []  # jobs with input still to read
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._order = itertools.count()
        self._input_came = threading.Event()
        self.busy_seconds = 0.0  # time spent in steps
        self.documents_done = 0
        self.values_done = 0

    # the callers' side
    def submit(self, documents: Iterable) -> Job:
        """Start extracting `documents` (dicts, Documents or Tasks); returns at once.  A list
        larger than the free room in the queue raises QueueFull; an iterator is read ahead on a
        thread of its own, as the engine makes room."""
        job = Job(documents, self._wanted_waiting(), on_document=self._input_came.set)
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine is closed")
            room = self.runner.settings.max_queued - self.queued
            if job.total is not None and job.total > room:
                raise QueueFull(f"{job.total} documents submitted, room for {max(room, 0)} now")
            self._jobs.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hpd-engine", daemon=True)
                self._thread.start()
        return job

    def start(self) -> None:
        """Make the context and decode the preamble now rather than for the first documents (a
        server finds out as it starts whether they fit in memory)."""
        with self._lock:
            if self.context is None and self._thread is None:
                self._start()

    @property
    def queued(self) -> int:
        """Documents submitted and not admitted yet (those of iterators only once read)."""
        waiting = len(self.scheduler.waiting) if self.scheduler else 0
        return waiting + sum(j.total - j.read for j in list(self._jobs) if j.total is not None)

    @property
    def resident(self) -> int:
        return len(self.scheduler.running) if self.scheduler else 0

    def close(self) -> None:
        """Cancel every job (within a step), stop the thread and free the context."""
        with self._lock:
            self._closed = True
            jobs, thread = list(self._jobs), self._thread
        for job in jobs:
            job.cancel()
        if thread is not None:
            thread.join()
        if self.context is not None:
            self.context.close()
            self.context = None

    # the loop
    def _run(self) -> None:
        try:
            if self.context is None:
                self._start()
            while True:
                self._drop_unwanted()
                if not self.scheduler.idle:
                    self.step()
                    continue
                self._read_in()  # nothing in flight: waits for documents
                with self._lock:
                    if self.scheduler.idle and not self._jobs:
                        self._thread = None
                        return
        except Exception as error:  # llama.cpp refused a decode: the jobs in flight end with it
            self._fail_everything(error)

    def step(self) -> None:
        """One decode for every resident document: plan a batch, start its decode, read documents
        in while it runs (on a GPU; a CPU is done by then), choose each branch's next token, and
        hand finished documents to their jobs."""
        start = time.perf_counter()
        branches = self.scheduler.plan(self.batch)
        if self.batch.size == 0:  # cannot happen while can_ever_run() holds; never spin
            raise RuntimeError("the scheduler found nothing to decode")
        self.context.submit(self.batch)
        self._read_in()
        tokens, logprobs = self.runner.choose(branches, self.context.logits())
        for doc in self._finished_documents(branches, tokens, logprobs):
            self._deliver(doc.job, doc.index, doc.result(self.runner.pieces, self.runner.settings.min_confidence))
        self._count(time.perf_counter() - start)

    def _start(self) -> None:
        """The context, the KV bookkeeping and the preamble, decoded once for the engine's life."""
        s = self.runner.settings
        self.context = self.runner.context(s.n_ctx or self._cells(), s.n_seq_max)
        preamble = self.runner.layout.preamble if self.continuous else []
        self.kv = KVCache(self.context, reserved_cells=len(preamble))
        self.batch = Batch(self.context.n_batch)
        limits = Limits(s.batch_tokens, s.max_resident, s.max_resident_cells, self.continuous)
        self.scheduler = Scheduler(self.kv, limits, self.continuous)
        cells = f" holding {s.max_resident_cells} cells at most" if s.max_resident_cells > 0 else ""
        self.log(f"{s.mode}: up to {s.max_resident} documents in flight{cells}, {s.batch_tokens} tokens per decode "
                 f"({self.context.n_ubatch} per graph), {s.n_seq_max} sequence ids, {self.context.n_ctx} KV "
                 f"cells, {self.context.n_threads} threads; preamble {len(self.runner.layout.preamble)} tokens"
                 + (", decoded once" if self.continuous else ", per document") + " (BENCHMARKS.md: why these)")
        if preamble:
            self.runner.decode_alone(self.context, self.batch, Branch(seq=PREAMBLE_SEQ, pending=list(preamble)))
        self.runner.count(self.context)

    def _cells(self) -> int:
        """KV cells for the resident documents (estimated from the preamble, the categories'
        examples and the budgets)."""
        s = self.runner.settings
        preamble = len(self.runner.layout.preamble)
        examples = self.runner.examples.head_characters() // 3  # ~3 characters a token
        shared = self.continuous and s.example_choice == "fixed"  # else each document holds its own
        heads = min(s.max_resident, len(self.runner.examples.by_category) * s.example_groups)
        heads = heads * examples if shared else 0
        per_document = 96 + (0 if shared else examples) + (0 if self.continuous else preamble)
        return preamble + heads + s.max_resident * per_document + (s.n_seq_max - 1) * (8 + s.max_value_tokens) + \
            2 * s.batch_tokens

    def _read_in(self) -> None:
        """Take documents from the jobs' inputs until twice the resident documents wait (into
        the waiting queue only: the cache is not touched while a decode runs).  With documents
        in flight, the inputs are waited for INPUT_WAIT_S at most in all (a file's next line comes
        in well under a millisecond, so only a slow source waits that long); with none, until a
        document comes."""
        jobs = self._jobs_reading()
        self._input_came.clear()
        if jobs and self.scheduler.idle and not any(job.input.ready for job in jobs):
            self._input_came.wait(IDLE_POLL_S)
            return
        deadline = time.perf_counter() + INPUT_WAIT_S
        held = Counter(doc.job for doc in self.scheduler.documents())
        for share in (self.runner.settings.max_resident, math.inf):  # each job its share, then the room left
            self._read_in_order(jobs, held, share, deadline)

    def _read_in_order(self, jobs: list[Job], held: Counter, share: float, deadline: float) -> None:
        """Documents from each job in the order the jobs came, until `share` of its own wait or
        run; a job with nothing now leaves `jobs`.  Requests that come together then finish in
        the order they came, each one's documents decoded together (taken in turn, one from each,
        60 requests of 5 documents all ended with the last), and a large job holds back none
        that comes after it beyond its share."""
        for job in list(jobs):
            while held[job] < share and len(self.scheduler.waiting) < self._wanted_waiting():
                if not self._read_one(job, deadline):
                    jobs.remove(job)
                    break
                held[job] += 1

    def _drop_unwanted(self) -> None:
        """Cancelled documents, those after a job's error, and those of stopped jobs not begun
        (before a step is planned: their branches must not be in it)."""
        if self._closed:
            for doc in self.scheduler.documents():
                doc.job.cancel()
        for doc in [d for d in self.scheduler.documents() if not d.job.wants(d.index)]:
            self.scheduler.cancel(doc)
        for job in {d.job for d in self.scheduler.documents()} | set(self._jobs):
            if job.stopping:  # once: no document the cut keeps comes after it
                job.stopping = False
                self._end_input(job)

    def _jobs_reading(self) -> list[Job]:
        """The jobs whose input may still give documents wanted (the others stop reading)."""
        with self._lock:
            for job in [j for j in self._jobs if j.exhausted or not j.wants(j.read)]:
                job.input.close()
                self._jobs.remove(job)
            return list(self._jobs)

    def _wanted_waiting(self) -> int:
        return WAITING_PER_RESIDENT * self.runner.settings.max_resident

    def _end_input(self, job: Job) -> None:
        """A stopped job ends after its last document begun (or delivered): the documents after
        it that wait leave; those before it still run, so its results stay a prefix."""
        last = max([d.index for d in self.scheduler.running if d.job is job] + [job.last_delivered()])
        for doc in [d for d in self.scheduler.waiting if d.job is job and d.index > last]:
            self.scheduler.cancel(doc)
        job.input_ended(at=last + 1)

    def _read_one(self, job: Job, deadline: float) -> bool:
        """Take the job's next document into the waiting queue, waiting for it until `deadline`
        at most; False when it has none now."""
        found, document = job.input.take(max(0.0, deadline - time.perf_counter()))
        if found == END:
            job.input_ended()
        elif found == BROKEN:  # the caller's iterator broke: what came before stands
            job.fail(document, at=job.read)
        if found != DOCUMENT:
            return False
        index, job.read = job.read, job.read + 1
        try:
            task = self.runner.task(document, index)
        except Exception as error:  # not a document: the caller hears of it in its place
            job.fail(error, at=index)
            return False
        prompt = self.runner.prompt(task)
        if isinstance(prompt, Result):
            self._deliver(job, index, prompt)
            return True
        doc = DocumentState.create(task, prompt, self.runner.stops, next(self._order), self.continuous,
                                   job=job, index=index)
        if self.scheduler.can_ever_run(doc):
            self.scheduler.add(doc)
        else:
            self._deliver(job, index, Result(id=task.id, values=null_values(task),
                                             error="document does not fit in the KV cache"))
        return True

    def _finished_documents(self, branches: list[Branch], tokens, logprobs) -> list[DocumentState]:
        """Give each branch its token; free finished branches; return the documents now done."""
        done = []
        for branch, token, logprob in zip(branches, tokens, logprobs):
            if branch.accept(int(token), float(logprob)):
                doc = self.scheduler.finish_branch(branch)
                if doc is not None:
                    done.append(doc)
        return done

    def _deliver(self, job: Job, index: int, result: Result) -> None:
        job.deliver(index, result)
        self.documents_done += 1
        self.values_done += len(result.values)

    def _count(self, seconds: float) -> None:
        self.busy_seconds += seconds
        self.runner.count(self.context)
        self.runner.stats.shared_heads += self.scheduler.heads_made
        self.scheduler.heads_made = 0

    def _fail_everything(self, error: BaseException) -> None:
        """End every job in flight with `error` (results before its first lost document stand)
        and start the next work on a fresh context."""
        lost: dict[Job, int] = {}
        for doc in self.scheduler.documents() if self.scheduler else []:
            lost[doc.job] = min(lost.get(doc.job, doc.index), doc.index)
        with self._lock:
            for job in self._jobs:
                lost.setdefault(job, job.read)
                job.input.close()
            self._jobs, self._thread = [], None
        for job, index in lost.items():
            job.fail(error, at=index)
        if self.context is not None:
            self.context.close()
            self.context = None
        self.log(f"engine stopped: {error}")
