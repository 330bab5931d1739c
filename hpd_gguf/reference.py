"""The reference modes: one prompt at a time, as a loop over llama-cpp-python would run them.

    sequential  each attribute's prompt alone, reusing the cached prefix (the reference answer)
    naive       each attribute's prompt alone, from scratch
    json        one autoregressive JSON object per document, reusing the cached prefix
"""
from __future__ import annotations

import json
import re
from typing import Iterator

from .constraints import accepts, make_constraint
from .llama import Batch, Context
from .prompt import common_prefix
from .runner import ModelRunner, null_values
from .schema import Result, Task, clean_value
from .sequence import Branch, DocumentState, Stops


def one_by_one(runner: ModelRunner, tasks: Iterator[Task], reuse: bool) -> Iterator[Result]:
    """sequential (reuse) and naive: every attribute's whole prompt on its own."""
    context = runner.context(runner.positions_limit(), 1)
    batch = Batch(context.n_batch)
    cached: list[int] = []
    try:
        for task in tasks:
            prompt = runner.prompt(task)
            if isinstance(prompt, Result):
                yield prompt
                continue
            doc = DocumentState.create(task, prompt, runner.stops, 0, share_preamble=False)
            for branch in doc.branches:
                tokens = prompt.full(branch.index)
                cached = reuse_prefix(context, cached if reuse else [], tokens, branch)
                branch.seq = 0
                runner.decode_alone(context, batch, branch)
                cached = cached_tokens(context, tokens + branch.generated)
            yield doc.result(runner.pieces, runner.settings.min_confidence)
    finally:
        runner.count(context)
        context.close()


def json_objects(runner: ModelRunner, tasks: Iterator[Task]) -> Iterator[Result]:
    """json: one object with every attribute per document."""
    context = runner.context(runner.positions_limit(), 1)
    batch = Batch(context.n_batch)
    cached: list[int] = []
    try:
        for task in tasks:
            prompt = runner.prompt(task, suffixes=False)
            if isinstance(prompt, Result):
                yield prompt
                continue
            stops = Stops(runner.stops.end_of_generation, runner.stops.has_newline,
                          runner.value_budget(task), multiline=True)
            answer = Branch(doc=DocumentState(task=task, prompt=prompt, stops=stops), seq=0)
            cached = reuse_prefix(context, cached, prompt.tokens, answer)
            runner.decode_alone(context, batch, answer)
            cached = cached_tokens(context, prompt.tokens + answer.generated)
            yield parse_json_answer(task, answer.text(runner.pieces), answer.confidence)
    finally:
        runner.count(context)
        context.close()


def reuse_prefix(context: Context, cached: list[int], tokens: list[int], sequence) -> list[int]:
    """Keep the cached prefix the prompt shares (as llama-cpp-python's Llama does); the
    sequence is left with the rest pending.  Returns the tokens now cached."""
    keep = min(common_prefix(cached, tokens), len(tokens) - 1)
    context.seq_rm(0, keep, -1)
    sequence.pos, sequence.pending = keep, list(tokens[keep:])
    return list(tokens)


def cached_tokens(context: Context, tokens: list[int]) -> list[int]:
    """The tokens sequence 0 now holds (the last sampled one is never decoded)."""
    return tokens[: context.seq_pos_max(0) + 1]


def parse_json_answer(task: Task, text: str, confidence: float = 1.0) -> Result:
    """Values from the first JSON object in a generated answer; missing keys are null."""
    values: dict[str, str | None] = null_values(task)
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
