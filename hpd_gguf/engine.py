"""The extraction engine: hyper-parallel decoding and the reference modes over the same prompts.

    hpd         every attribute a branch, all documents' branches stacked, continuous admission,
                the run-wide preamble decoded once, and the head of documents that ask the same
                of the same category (category and attribute names) once while they are resident
    hpd-static  the same in fixed groups, each document decoding its own preamble
    sequential  each attribute's prompt alone, reusing the cached prefix (the reference answer)
    naive       each attribute's prompt alone, from scratch
    json        one autoregressive JSON object per document, reusing the cached prefix
"""
from __future__ import annotations

import json
import math
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from . import models
from .kv import PREAMBLE_SEQ, KVCache
from .llama import Batch, Context, Model, physical_cores, supports_gpu_offload
from .prompt import DocumentPrompt, PromptLayout, common_prefix
from .constraints import accepts, constrained_choice, make_constraint
from .sampling import Greedy
from .scheduler import Limits, Scheduler
from .schema import NULL_TEXT, Document, Result, Schema, Task, clean_value, make_task
from .sequence import Branch, DocumentState, Stops

MODES = ("hpd", "hpd-static", "sequential", "naive", "json")
DEFAULT_POSITIONS = 16384  # per sequence, unless --n-ctx says otherwise


@dataclass
class Settings:
    mode: str = "hpd"
    max_value_tokens: int = 24
    threads: int | None = None
    n_gpu_layers: int = 0
    batch_tokens: int = 512  # tokens per decode (n_batch)
    ubatch_tokens: int = 512  # tokens per compute graph (n_ubatch)
    n_seq_max: int = 256
    max_resident: int = 64  # documents in flight (hpd)
    n_ctx: int = 0  # 0: sized from the work
    truncate: bool = False  # cut documents longer than the context instead of failing them
    json_tokens_per_attribute: int = 0  # 0: max_value_tokens + 8
    constraint: str | None = None  # for attributes whose schema names none: "span" or "number"
    min_confidence: float = 0.0  # values less confident than this become null (branch modes)
    flash_attention: bool = True
    kv_f32: bool = False


@dataclass
class Stats:
    documents: int = 0
    decode_calls: int = 0
    tokens: int = 0
    outputs: int = 0  # tokens with logits
    shared_heads: int = 0  # heads decoded once for several documents (hpd)
    seconds: float = 0.0


class Extractor:
    """Extracts attribute values from documents with one model.

        extractor = Extractor("qwen2.5-coder-0.5b")
        for result in extractor.extract([{"id": "1", "text": "...", "attributes": ["Brand"]}]):
            print(result.id, result.values)
    """

    def __init__(self, model: str | Path | Model = "qwen2.5-coder-0.5b", schema: Schema | None = None,
                 log=lambda message: None, **settings):
        self.settings = Settings(**settings)
        if self.settings.mode not in MODES:
            raise ValueError(f"unknown mode {self.settings.mode!r}; choose from {', '.join(MODES)}")
        if self.settings.n_gpu_layers and not supports_gpu_offload():
            warnings.warn("--n-gpu-layers given, but this llama-cpp-python has no GPU support; using the CPU")
            self.settings.n_gpu_layers = 0
        self.schema = schema
        self.log = log
        self.model = model if isinstance(model, Model) else Model(models.resolve(model, log),
                                                                  self.settings.n_gpu_layers)
        described = schema.all_attributes() if schema else None
        answer_format = "json" if self.settings.mode == "json" else "lines"
        self.layout = PromptLayout(self.model, answer_format, attributes=described)
        pieces = self.model.pieces
        has_newline = np.fromiter((b"\n" in p for p in pieces), bool, len(pieces))
        eog = self.model.end_of_generation_mask()
        null = NULL_TEXT.lower().encode()
        null_answer = np.fromiter((p.strip().lower() == null for p in pieces), bool, len(pieces))
        self.stops = Stops(eog, has_newline, self.settings.max_value_tokens, null_answer=null_answer)
        self.pieces = [b"" if end else p for p, end in zip(pieces, eog)]  # what values are made of
        self.greedy = Greedy(self.model.n_vocab, self.settings.threads or physical_cores())
        self.stats = Stats()
        self.on_logits = None  # optional observer: on_logits(branches, logits) after each decode

    # inputs
    def task(self, document: Document | dict | Task) -> Task:
        if isinstance(document, dict):
            document = Document.model_validate(document)
        task = document if isinstance(document, Task) else make_task(document, self.schema)
        if self.settings.constraint and any(a.constraint is None for a in task.attributes):
            task = task.model_copy(update={"attributes": [
                a if a.constraint else a.model_copy(update={"constraint": self.settings.constraint})
                for a in task.attributes]})
        return task

    def extract(self, documents: Iterable[Document | dict | Task]) -> Iterator[Result]:
        """Results in input order, each as soon as it and all before it are done."""
        tasks = (self.task(d) for d in documents)
        start = time.perf_counter()
        runner = {"hpd": self._hpd, "hpd-static": self._hpd, "sequential": self._one_by_one,
                  "naive": self._one_by_one, "json": self._json}[self.settings.mode]
        for result in runner(tasks):
            self.stats.documents += 1
            self.stats.seconds = time.perf_counter() - start
            yield result

    # shared pieces
    def _context(self, n_ctx: int, n_seq_max: int) -> Context:
        n_ctx = max(256, math.ceil(n_ctx / 256) * 256)
        return Context(self.model, n_ctx, self.settings.batch_tokens, n_seq_max,
                       self.settings.threads or physical_cores(), self.settings.flash_attention,
                       self.settings.kv_f32, self.settings.ubatch_tokens)

    def _prompt(self, task: Task, suffixes: bool = True) -> DocumentPrompt | Result:
        """The document's prompt, truncated or turned into an error record when too long."""
        prompt = self.layout.document(task, suffixes)
        limit = self._positions_limit()
        longest = len(prompt.tokens) + max((len(s) for s in prompt.suffixes), default=0)
        over = longest + self._value_budget(task) - limit
        if over <= 0:
            return prompt
        if not self.settings.truncate:
            return Result(id=task.id, values={n: None for n in task.names},
                          error=f"document too long: {longest} prompt tokens, the limit is "
                                f"{limit - self._value_budget(task)} (use --truncate)")
        warnings.warn(f"document {task.id!r}: truncated by {over} tokens to fit the context")
        text = task.document.text
        cut = task.model_copy(update={"document": task.document.model_copy(
            update={"text": text[: max(1, len(text) - over * 8)]})})  # ~8 bytes a token at most
        return self._prompt(cut, suffixes)

    def _positions_limit(self) -> int:
        """The longest prompt plus value one sequence may hold."""
        return min(self.model.n_ctx_train, self.settings.n_ctx or DEFAULT_POSITIONS)

    def _value_budget(self, task: Task) -> int:
        if self.settings.mode == "json":
            return len(task.names) * self._json_tokens_per_attribute() + 8
        return self.settings.max_value_tokens

    def _json_tokens_per_attribute(self) -> int:
        return self.settings.json_tokens_per_attribute or self.settings.max_value_tokens + 8

    def _count(self, context: Context) -> None:
        self.stats.decode_calls += context.decode_calls
        self.stats.tokens += context.tokens_decoded
        self.stats.outputs += context.outputs_decoded
        context.decode_calls = context.tokens_decoded = context.outputs_decoded = 0

    # hpd
    def _hpd(self, tasks: Iterator[Task]) -> Iterator[Result]:
        s = self.settings
        continuous = s.mode == "hpd"
        context = self._context(s.n_ctx or self._hpd_cells(), s.n_seq_max)
        preamble = self.layout.preamble if continuous else []
        kv = KVCache(context, reserved_cells=len(preamble))
        self.log(f"{s.mode}: up to {s.max_resident} documents in flight, {s.batch_tokens} tokens per decode "
                 f"({context.n_ubatch} per graph), {s.n_seq_max} sequence ids, {context.n_ctx} KV cells, "
                 f"{context.n_threads} threads; preamble {len(self.layout.preamble)} tokens"
                 + (", decoded once" if continuous else ", per document") + " (BENCHMARKS.md: why these)")
        batch = Batch(context.n_batch)
        if preamble:
            self._decode_alone(context, batch, Branch(seq=PREAMBLE_SEQ, pending=list(preamble)))
        scheduler = Scheduler(kv, Limits(s.batch_tokens, s.max_resident, continuous), continuous)
        done: dict[int, Result] = {}
        next_out, order, exhausted = 0, 0, False
        try:
            while True:
                while not exhausted and len(scheduler.waiting) < 2 * s.max_resident:
                    task = next(tasks, None)
                    if task is None:
                        exhausted = True
                        break
                    prompt = self._prompt(task)
                    if isinstance(prompt, Result):
                        done[order] = prompt
                    else:
                        doc = DocumentState.create(task, prompt, self.stops, order, continuous)
                        if scheduler.fits(doc):
                            scheduler.add(doc)
                        else:
                            done[order] = Result(id=task.id, values={n: None for n in task.names},
                                                 error="document does not fit in the KV cache")
                    order += 1
                while next_out in done:
                    yield done.pop(next_out)
                    scheduler.mark_emitted(next_out)
                    next_out += 1
                if scheduler.idle:
                    if exhausted:
                        return
                    continue
                branches = scheduler.plan(batch)
                if batch.size == 0:  # cannot happen while fits() holds; never spin
                    raise RuntimeError("the scheduler found nothing to decode")
                logits = context.decode(batch)
                if self.on_logits:
                    self.on_logits(branches, logits)
                for branch, token, logprob in zip(branches, *self._choose(branches, logits)):
                    if branch.accept(int(token), float(logprob)):
                        doc = scheduler.finish_branch(branch)
                        if doc is not None:
                            done[doc.order] = doc.result(self.pieces, s.min_confidence)
        finally:
            self.stats.shared_heads += scheduler.heads_made
            if scheduler.heads_made:
                self.log(f"{s.mode}: {scheduler.heads_made} document heads (category and attribute "
                         f"names) decoded once for the documents sharing them")
            self._count(context)
            context.close()

    def _hpd_cells(self) -> int:
        """KV cells for the resident documents (estimated from the preamble and budgets)."""
        per_branch = 8 + self.settings.max_value_tokens
        per_document = 96 + (0 if self.settings.mode == "hpd" else len(self.layout.preamble))
        return len(self.layout.preamble) + self.settings.max_resident * per_document + \
            (self.settings.n_seq_max - 1) * per_branch + 2 * self.settings.batch_tokens

    def _choose(self, branches: list[Branch], logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Greedy tokens (within each branch's constraint; -1 ends a value) and their
        log-probabilities, vectorised over the batch's outputs."""
        if len(logits) == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        tokens, best, log_total = self.greedy(logits)
        constrained = [i for i, b in enumerate(branches) if b.constraint is not None]
        if constrained:
            picks = constrained_choice(logits, tokens, constrained, [branches[i] for i in constrained],
                                       self.pieces, self.stops.stop_mask)
            for row, token in picks.items():
                tokens[row] = token
        chosen = logits[np.arange(len(logits)), np.maximum(tokens, 0)]
        logprobs = np.where(tokens >= 0, chosen - best, 0.0) - log_total  # a veto keeps the greedy one's
        return tokens, np.where(tokens == -1, 0.0, logprobs)

    # one prompt at a time
    def _decode_alone(self, context: Context, batch: Batch, branch: Branch) -> None:
        """Decode a sequence's pending tokens; a branch then generates its value greedily."""
        while branch.pending:
            batch.clear()
            chunk, start = branch.take(batch.capacity)
            wants = branch.doc is not None and not branch.pending
            batch.add(chunk, start, (branch.seq,), wants)
            logits = context.decode(batch)
            if wants:
                if self.on_logits:
                    self.on_logits([branch], logits)
                tokens, logprobs = self._choose([branch], logits)
                branch.accept(int(tokens[0]), float(logprobs[0]))

    def _one_by_one(self, tasks: Iterator[Task]) -> Iterator[Result]:
        """sequential (reuse=True) and naive: every attribute's whole prompt on its own."""
        reuse = self.settings.mode == "sequential"
        context = self._context(self._positions_limit(), 1)
        batch = Batch(context.n_batch)
        cached: list[int] = []
        try:
            for task in tasks:
                prompt = self._prompt(task)
                if isinstance(prompt, Result):
                    yield prompt
                    continue
                doc = DocumentState.create(task, prompt, self.stops, 0, share_preamble=False)
                for branch in doc.branches:
                    tokens = prompt.full(branch.index)
                    cached = self._reuse(context, cached if reuse else [], tokens, branch)
                    branch.seq = 0
                    self._decode_alone(context, batch, branch)
                    cached = self._cached(context, tokens + branch.generated)
                yield doc.result(self.pieces, self.settings.min_confidence)
        finally:
            self._count(context)
            context.close()

    @staticmethod
    def _reuse(context: Context, cached: list[int], tokens: list[int], sequence) -> list[int]:
        """Keep the cached prefix the prompt shares (as llama-cpp-python's Llama does); the
        sequence is left with the rest pending.  Returns the tokens now cached."""
        keep = min(common_prefix(cached, tokens), len(tokens) - 1)
        context.seq_rm(0, keep, -1)
        sequence.pos, sequence.pending = keep, list(tokens[keep:])
        return list(tokens)

    @staticmethod
    def _cached(context: Context, tokens: list[int]) -> list[int]:
        """The tokens sequence 0 now holds (the last sampled one is never decoded)."""
        return tokens[: context.seq_pos_max(0) + 1]

    # json
    def _json(self, tasks: Iterator[Task]) -> Iterator[Result]:
        context = self._context(self._positions_limit(), 1)
        batch = Batch(context.n_batch)
        cached: list[int] = []
        try:
            for task in tasks:
                prompt = self._prompt(task, suffixes=False)
                if isinstance(prompt, Result):
                    yield prompt
                    continue
                stops = Stops(self.stops.end_of_generation, self.stops.has_newline,
                              self._value_budget(task), multiline=True)
                doc = DocumentState(task=task, prompt=prompt, stops=stops)
                answer = Branch(doc=doc, seq=0)
                cached = self._reuse(context, cached, prompt.tokens, answer)
                self._decode_alone(context, batch, answer)
                cached = self._cached(context, prompt.tokens + answer.generated)
                yield parse_json_answer(task, answer.text(self.pieces), answer.confidence)
        finally:
            self._count(context)
            context.close()


def parse_json_answer(task: Task, text: str, confidence: float = 1.0) -> Result:
    """Values from the first JSON object in a generated answer; missing keys are null."""
    values: dict[str, str | None] = {name: None for name in task.names}
    match = re.search(r"\{.*\}", text, re.DOTALL)
    parsed = None
    if match:
        try:
            parsed = json.loads(match.group(0))
        except json.JSONDecodeError:
            parsed = None
    if isinstance(parsed, dict):
        lowered = {str(k).strip().lower(): v for k, v in parsed.items()}
        for attribute in task.attributes:
            value = lowered.get(attribute.name.lower())
            if isinstance(value, list):
                value = value[0] if value else None
            value = None if value is None else clean_value(str(value))
            rule = make_constraint(attribute.constraint, task.document.text, attribute.values)
            if value is not None and rule is not None and not accepts(rule, value.encode("utf-8")):
                value = None  # json keeps the same rules, checked on the finished answer
            values[attribute.name] = value
    return Result(id=task.id, values=values, confidence={n: round(confidence, 4) for n in task.names})
