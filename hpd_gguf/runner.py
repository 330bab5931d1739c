"""What every mode decodes with: the model, its prompts, stop rules, contexts, and greedy choice
under each branch's constraint.  The modes themselves are the engine (hpd) and reference.py."""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .constraints import constrained_choice
from .examples import ExamplePicker
from .llama import Batch, Context, Model, physical_cores
from .prompt import DocumentPrompt, PromptLayout
from .sampling import Greedy
from .schema import NULL_TEXT, Attribute, Document, InputError, Result, Schema, Task, as_task, document_name
from .sequence import Branch, Stops
from .settings import DEFAULT_POSITIONS, Settings


@dataclass
class Stats:
    documents: int = 0
    decode_calls: int = 0
    tokens: int = 0
    outputs: int = 0  # tokens with logits
    shared_heads: int = 0  # heads decoded once for several documents (hpd)
    seconds: float = 0.0
    setup_seconds: float = 0.0  # making contexts (KV cache, compute buffers): once a run
    decode_seconds: float = 0.0  # inside Context.decode: the rest of the wall time is the host's
    choice_seconds: float = 0.0  # choosing tokens from the logits, on the CPU (on a GPU: a cap on hpd)


def null_values(task: Task) -> dict[str, None]:
    return {name: None for name in task.names}


def context_cells(requested: int) -> int:
    """The KV cells a context gets: whole 256-cell pages, one at least."""
    return max(256, math.ceil(requested / 256) * 256)


class ModelRunner:
    def __init__(self, model: Model, settings: Settings, schema: Schema | None = None):
        self.model, self.settings, self.schema = model, settings, schema
        answer_format = "json" if settings.mode == "json" else "lines"
        self.examples = ExamplePicker(schema.examples if schema else [], settings.examples_per_category,
                                      settings.example_choice, settings.example_groups)
        generic = schema.generic_examples if schema else None
        self.layout = PromptLayout(model, answer_format, instructions=schema and schema.instructions,
                                   attributes=schema.all_attributes() if schema else None,
                                   examples=None if generic is None else [(e.text, e.category, e.values) for e in generic],
                                   picker=self.examples)
        pieces = model.pieces
        has_newline = np.fromiter((b"\n" in p for p in pieces), bool, len(pieces))
        eog = model.end_of_generation_mask()
        null = NULL_TEXT.lower().encode()
        null_answer = np.fromiter((p.strip().lower() == null for p in pieces), bool, len(pieces))
        self.stops = Stops(eog, has_newline, settings.max_value_tokens, null_answer=null_answer)
        self.pieces = [b"" if end else p for p, end in zip(pieces, eog)]  # what values are made of
        preamble = len(self.layout.preamble)
        if settings.n_ctx and context_cells(settings.n_ctx) <= preamble:
            raise ValueError(f"n_ctx {settings.n_ctx} gives {context_cells(settings.n_ctx)} KV cells, not even room for "
                             f"the instructions every prompt starts with ({preamble} tokens): give more, or 0 to size "
                             "the context from the work")
        self.greedy = Greedy(model.n_vocab, settings.threads or physical_cores())
        self.stats = Stats()
        self.on_logits = None  # optional observer: on_logits(branches, logits) after each decode
        # each attribute under the run's default constraint, made once per name and description
        # (a copy for every document took a tenth of the time to read one in)
        self._constrained = lru_cache(maxsize=100_000)(
            lambda name, description: Attribute(name=name, description=description, constraint=settings.constraint))

    # documents
    def task(self, document: Document | dict | Task, index: int | None = None) -> Task:
        """The task of what a caller passed (a dict, a Document or a Task); ValueError saying what
        is wrong with it, an InputError naming it where its place in the input is given."""
        try:
            task = as_task(document, self.schema)
        except ValueError as error:
            if index is None:
                raise
            raise InputError(document_name(index, document), str(error)) from None
        if self.settings.constraint and any(a.constraint is None for a in task.attributes):
            task = Task.model_construct(document=task.document, attributes=[
                a if a.constraint else self._constrained(a.name, a.description) for a in task.attributes])
        return task

    def prompt(self, task: Task, suffixes: bool = True) -> DocumentPrompt | Result:
        """The document's prompt, truncated or turned into an error record when too long."""
        prompt = self.layout.document(task, suffixes)
        limit = self.positions_limit()
        longest = len(prompt.tokens) + max((len(s) for s in prompt.suffixes), default=0)
        over = longest + self.value_budget(task) - limit
        if over <= 0:
            return prompt
        if not self.settings.truncate:
            return Result(id=task.id, values=null_values(task),
                          error=f"document too long: {longest} prompt tokens, the limit is "
                                f"{limit - self.value_budget(task)} (use --truncate)")
        warnings.warn(f"document {task.id!r}: truncated by {over} tokens to fit the context")
        text = task.document.text
        cut = task.model_copy(update={"document": task.document.model_copy(
            update={"text": text[: max(1, len(text) - over * 8)]})})  # ~8 bytes a token at most
        return self.prompt(cut, suffixes)

    def positions_limit(self) -> int:
        """The longest prompt plus value one sequence may hold."""
        return min(self.model.n_ctx_train, self.settings.n_ctx or DEFAULT_POSITIONS)

    def value_budget(self, task: Task) -> int:
        if self.settings.mode == "json":
            return len(task.names) * self.json_tokens_per_attribute() + 8
        return self.settings.max_value_tokens

    def json_tokens_per_attribute(self) -> int:
        return self.settings.json_tokens_per_attribute or self.settings.max_value_tokens + 8

    # decoding
    def context(self, n_ctx: int, n_seq_max: int) -> Context:
        s = self.settings
        start = time.perf_counter()
        context = Context(self.model, context_cells(n_ctx), s.batch_tokens, n_seq_max, s.threads or physical_cores(),
                          s.flash_attention, s.kv_f32, s.ubatch_tokens)
        self.stats.setup_seconds += time.perf_counter() - start
        return context

    def count(self, context: Context) -> None:
        """Move the context's decode counters into the stats."""
        self.stats.decode_calls += context.decode_calls
        self.stats.tokens += context.tokens_decoded
        self.stats.outputs += context.outputs_decoded
        self.stats.decode_seconds += context.decode_seconds
        context.decode_calls = context.tokens_decoded = context.outputs_decoded = 0
        context.decode_seconds = 0.0

    def choose(self, branches: list[Branch], logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Greedy tokens (within each branch's constraint; -1 ends a value) and their
        log-probabilities, vectorised over the batch's outputs."""
        if self.on_logits:
            self.on_logits(branches, logits)
        if len(logits) == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        start = time.perf_counter()
        tokens, best, log_total = self.greedy(logits)
        constrained = [i for i, b in enumerate(branches) if b.constraint is not None]
        if constrained:
            picks = constrained_choice(logits, tokens, constrained, [branches[i] for i in constrained],
                                       self.pieces, self.stops.stop_mask)
            for row, token in picks.items():
                tokens[row] = token
        chosen = logits[np.arange(len(logits)), np.maximum(tokens, 0)]
        logprobs = np.where(tokens >= 0, chosen - best, 0.0) - log_total  # a veto keeps the greedy one's
        self.stats.choice_seconds += time.perf_counter() - start
        return tokens, np.where(tokens == -1, 0.0, logprobs)

    def decode_alone(self, context: Context, batch: Batch, branch: Branch) -> None:
        """Decode a branch's pending tokens; one of a document then generates its value greedily
        (the preamble is a branch of no document)."""
        while branch.pending:
            batch.clear()
            chunk, start = branch.take(batch.capacity)
            wants = branch.doc is not None and not branch.pending
            batch.add(chunk, start, (branch.seq,), wants)
            logits = context.decode(batch)
            if wants:
                tokens, logprobs = self.choose([branch], logits)
                branch.accept(int(tokens[0]), float(logprobs[0]))
