"""Per-branch decoding constraints, applied inside the batched step.

Each constrained branch keeps its greedy token when that keeps the value valid.  When it does
not, a steering constraint takes the most likely of the top-k tokens that does (and when none
does, the value ends there); a vetoing constraint makes the value null at once: the model's
own answer, or nothing.  A step costs one string check per constrained branch, and k more for
the few steered ones: never a pass over the vocabulary in Python.

    span     (vetoes) the value is a substring of the document text (case-insensitive), or null
    choice   (steers) the value is one of the allowed values (case-insensitive), or null
    number   (steers) a number, optionally with a unit ("16 oz", "2.2 lb", "10.5"), or null

Span vetoes because a title that does not hold the model's value rarely holds a better one:
on dev fold 1 (QUALITY.md) steering to another span scored F1 0.301, vetoing 0.324.
"""
from __future__ import annotations

import re

import numpy as np

from .schema import NULL_TEXT

NULL_ANSWERS = (NULL_TEXT.lower().encode(), b"n/a")  # the null answers a constrained value may take (bytes)
TOP_K = 16
VETO = -2  # token code: the value is null (-1 ends it as it is)
_NUMBER = re.compile(rb"\d[\d.,/]*(?:-\d[\d.,/]*)?(?: ?[a-z]+\.?(?: [a-z]+\.?)?)?")


class Constraint:
    """Decides which continuations of a value are allowed (values as lower-cased bytes)."""

    vetoes = False  # True: a broken rule makes the value null instead of steering it

    def may_continue(self, value: bytes) -> bool:
        raise NotImplementedError

    def may_end(self, value: bytes) -> bool:
        raise NotImplementedError


class Span(Constraint):
    vetoes = True

    def __init__(self, text: str):
        self.text = text.encode("utf-8").lower()

    def may_continue(self, value: bytes) -> bool:
        return value in self.text

    def may_end(self, value: bytes) -> bool:
        return value.strip() in self.text and value == value.rstrip()


class Choice(Constraint):
    def __init__(self, values: list[str]):
        self.values = {v.strip().encode("utf-8").lower() for v in values}

    def may_continue(self, value: bytes) -> bool:
        return any(v.startswith(value) for v in self.values)

    def may_end(self, value: bytes) -> bool:
        return value in self.values


class Number(Constraint):
    def may_continue(self, value: bytes) -> bool:
        return _NUMBER.fullmatch(value) is not None or _NUMBER.fullmatch(value.rstrip()) is not None

    def may_end(self, value: bytes) -> bool:
        return _NUMBER.fullmatch(value) is not None


def make_constraint(kind: str | None, text: str, values: list[str] | None) -> Constraint | None:
    if kind == "span":
        return Span(text)
    if kind == "choice":
        return Choice(values or [])
    if kind == "number":
        return Number()
    return None


def allowed(constraint: Constraint, generated: bytes, piece: bytes, ends: bool) -> bool:
    """Whether `piece` may follow the value generated so far (`ends`: it would end the value)."""
    if ends:
        piece = piece.split(b"\n", 1)[0]
    value = (generated + piece).lstrip().lower()
    if ends:
        value = value.rstrip()
        return value in NULL_ANSWERS or (value != b"" and constraint.may_end(value))
    return any(null.startswith(value) for null in NULL_ANSWERS) or constraint.may_continue(value)


def accepts(constraint: Constraint, value: bytes) -> bool:
    """Whether a finished value meets the constraint (a null answer always does)."""
    return allowed(constraint, value, b"", True)


def constrained_choice(logits: np.ndarray, greedy: np.ndarray, rows: list[int], branches,
                       pieces: list[bytes], ends: np.ndarray) -> dict[int, int]:
    """For each constrained row whose greedy token breaks its constraint: VETO, or the best
    allowed token among the top-k, or -1 to end the value now."""
    texts = {row: b"".join(pieces[t] for t in branch.generated) for row, branch in zip(rows, branches)}
    broken = [(row, branch) for row, branch in zip(rows, branches)
              if not allowed(branch.constraint, texts[row], pieces[greedy[row]], bool(ends[greedy[row]]))]
    picks = {row: VETO for row, branch in broken if branch.constraint.vetoes}
    broken = [(row, branch) for row, branch in broken if row not in picks]
    if not broken:
        return picks
    block = logits[[row for row, _ in broken]]
    k = min(TOP_K, block.shape[1])
    top = np.argpartition(-block, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(block, top, axis=1).argsort(axis=1)[:, ::-1]
    candidates = np.take_along_axis(top, order, axis=1)
    return picks | {row: next((int(t) for t in tokens
                               if allowed(branch.constraint, texts[row], pieces[t], bool(ends[t]))), -1)
                    for (row, branch), tokens in zip(broken, candidates)}
