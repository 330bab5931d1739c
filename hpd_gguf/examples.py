"""Worked examples from the user's labeled documents, shown to the model as earlier turns.

A category's examples go in the head of its documents' segments (prompt.py), which documents
that ask the same of the same category share: decoded once while they are resident
(scheduler.py), never per document or per branch.  Categories without examples of their own
keep the built-in generic ones.  An example whose id or text equals the document's is never
shown with it.
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from pydantic import ValidationError

from .jsonl import _document_error, load_jsonl_lines
from .schema import Example, InputError, Task


Shown = tuple[str, str | None, dict[str, str | None]]  # text, category, values as the prompt shows them


def read_examples(path: str | Path) -> list[Example]:
    """Labeled documents from JSONL; a bad line stops here, named by file and line."""
    examples = []
    for where, record in load_jsonl_lines(path):
        try:
            example = Example.model_validate(record)
        except ValidationError as error:
            raise InputError(where, f"not a labeled example: {_document_error(error)}") from None
        if example.category is None:
            raise InputError(where, "a labeled example needs its 'category'")
        examples.append(example)
    if not examples:
        raise InputError(str(path), "no labeled examples in this file")
    return examples


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", text.casefold()))


class ExamplePicker:
    """Picks up to k examples of the document's category for its prompt.

    fixed    the same examples for every document of a category and attribute list: those that
             state the most attributes asked (greedily covering the list), so the head is shared;
    similar  the k most similar by word overlap, most similar last; heads are rarely shared.
    """

    def __init__(self, examples: list[Example], k: int, choice: str = "fixed"):
        self.k, self.choice = k, choice
        self.by_category: dict[str, list[Example]] = defaultdict(list)
        self._fixed: dict[tuple, list[int]] = {}  # (category, names, usable) -> picked, in the pool
        for example in examples:
            self.by_category[example.category].append(example)

    def __call__(self, task: Task) -> list[Shown] | None:
        """The examples to show with this task; None: the category has none of its own."""
        document = task.document
        pool = self.by_category.get(document.category) if self.k > 0 else None
        if not pool:
            return None
        usable = tuple(i for i, e in enumerate(pool)
                       if e.id != document.id and not _same_text(e.text, document.text))
        if self.choice == "fixed":
            key = (document.category, tuple(task.names), usable)
            if key not in self._fixed:
                self._fixed[key] = _covering([pool[i] for i in usable], task.names, self.k)
            picked = [pool[usable[i]] for i in self._fixed[key]]
        else:
            picked = _most_similar([pool[i] for i in usable], document.text, self.k)
        return [(e.text, e.category, _values_asked(e, task.names)) for e in picked] or None

    def head_characters(self) -> int:
        """About how long a head's examples are, in characters (for sizing the KV cache)."""
        lengths = [len(e.text) + sum(len(k) + len(v or "") + 4 for k, v in e.values.items())
                   for pool in self.by_category.values() for e in pool]
        return self.k * sum(lengths) // max(1, len(lengths))


def _covering(pool: list[Example], names: list[str], k: int) -> list[int]:
    """Greedily, the example stating the most attributes not yet covered (then the most
    attributes, then the earliest), k times; their places in the pool."""
    stated = [frozenset(n for n, v in _values_asked(e, names).items() if v is not None) for e in pool]
    chosen: list[int] = []
    covered: frozenset[str] = frozenset()
    while len(chosen) < min(k, len(pool)):
        best = max((i for i in range(len(pool)) if i not in chosen),
                   key=lambda i: (len(stated[i] - covered), len(stated[i]), -i))
        chosen.append(best)
        covered |= stated[best]
    return chosen


def _most_similar(pool: list[Example], text: str, k: int) -> list[Example]:
    words = _words(text)

    def overlap(item):
        i, example = item
        other = _words(example.text)
        return len(words & other) / max(1, len(words | other)), -i

    ranked = sorted(enumerate(pool), key=overlap, reverse=True)[:k]
    return [example for _, example in reversed(ranked)]


def _values_asked(example: Example, names: list[str]) -> dict[str, str | None]:
    """The example's value for each attribute asked (null where it has none), names matched
    case-insensitively."""
    folded = {k.casefold(): v for k, v in example.values.items()}
    return {n: example.values[n] if n in example.values else folded.get(n.casefold()) for n in names}
