"""Worked examples from the user's labeled documents, shown to the model as earlier turns.

A category's examples go in the head of its documents' segments (prompt.py), which documents
shown the same examples share: decoded once while they are resident (scheduler.py), never per
document or per branch.  A category's labeled documents fall in a few groups of similar ones,
and each document is shown examples of the group nearest it: measured on held-out products,
that lifts F1 over one set per category (QUALITY.md) while the heads stay shared.  Categories
without examples of their own keep the built-in generic ones.  An example whose id or text
equals the document's is never shown with it.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .jsonl import load_labeled_lines
from .schema import Example, InputError, Task, folded, listed, validated
from .settings import Settings


Shown = tuple[str, str | None, dict[str, str | None]]  # text, category, values as the prompt shows them
GROUPING_SAMPLE = 512  # labeled documents of a category the groups' seeds are chosen from, at most


def read_examples(path: str | Path) -> list[Example]:
    """Labeled documents from JSONL or a CSV table; a bad line stops here, named by file and line."""
    examples = []
    for where, record in load_labeled_lines(path):
        try:
            example = validated(Example, record)
        except ValueError as error:
            raise InputError(where, f"not a labeled example: {error}") from None
        if example.category is None:
            raise InputError(where, "a labeled example needs its 'category'")
        examples.append(example)
    if not examples:
        raise InputError(str(path), "no labeled examples in this file")
    return examples


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", text.casefold()))


@dataclass
class Group:
    """Labeled documents of one category that resemble one of them, its seed."""

    seed: frozenset[str]  # the seed's words
    seed_place: int
    members: list[int]  # places in the category's pool, in order


class ExamplePicker:
    """Picks up to k examples of the document's category for its prompt.

    fixed    examples shared by documents: a category's labeled documents fall in up to
             `groups` groups of similar ones (word overlap), and a document is shown those of
             the group nearest it that state the most attributes asked (greedily covering the
             list); the documents nearest one group share its head;
    similar  the k most similar by word overlap, most similar last; heads are rarely shared.
    """

    def __init__(self, examples: list[Example], k: int, choice: str = Settings.example_choice,
                 groups: int = Settings.example_groups):
        self.k, self.choice, self.groups = k, choice, groups
        self.by_category: dict[str, list[Example]] = defaultdict(list)  # by the category folded
        self._groups: dict[str, list[Group]] = {}  # category -> its groups
        self._picked: dict[tuple, list[int]] = {}  # (category, names, group) -> picked, in the pool
        self._texts: dict[str, list[str]] = defaultdict(list)  # the examples' texts, folded
        self.unmatched: dict[str, None] = {}  # categories asked for that have none, as written
        for example in examples:
            category = folded(example.category or "")
            self.by_category[category].append(example)
            self._texts[category].append(folded(example.text))

    def __call__(self, task: Task) -> list[Shown] | None:
        """The examples to show with this task; None: the category has none of its own."""
        document = task.document
        category = folded(document.category or "")  # as the schema matches it: case and spacing aside
        pool = self.by_category.get(category) if self.k > 0 else None
        if not pool:
            if self.by_category and self.k > 0:
                self.unmatched.setdefault(document.category or "(none)")
            return None
        text = folded(document.text)
        leaked = {i for i, e in enumerate(pool) if e.id == document.id or self._texts[category][i] == text}
        if self.choice == "similar":
            usable = [e for i, e in enumerate(pool) if i not in leaked]
            return _shown(_most_similar(usable, document.text, self.k), task.names)
        group = self._nearest_group(category, document.text)
        if leaked:  # this document's own choice, not kept
            picked = _covering_from(pool, group.members, task.names, self.k, leaked)
        else:
            key = (category, tuple(task.names), group.seed_place)
            if key not in self._picked:
                self._picked[key] = _covering_from(pool, group.members, task.names, self.k, leaked)
            picked = self._picked[key]
        return _shown([pool[i] for i in picked], task.names)

    def unmatched_note(self) -> str | None:
        """Which categories found no labeled examples (a typo, another name), and what the
        examples' categories are; None when every category found its own."""
        if not self.unmatched:
            return None
        have = sorted({e.category for pool in self.by_category.values() for e in pool})
        return (f"no labeled examples for category {listed(list(self.unmatched))}, whose documents were shown "
                f"the generic ones (the labeled documents' categories: {listed(have)})")

    def _nearest_group(self, category: str, text: str) -> Group:
        pool = self.by_category[category]
        if category not in self._groups:
            self._groups[category] = _grouped(pool, min(self.groups, len(pool) // (2 * self.k)))
        words = _words(text)
        return max(self._groups[category], key=lambda g: (_jaccard(words, g.seed), -g.seed_place))

    def head_characters(self) -> int:
        """About how long a head's examples are, in characters (for sizing the KV cache)."""
        lengths = [len(e.text) + sum(len(k) + len(v or "") + 4 for k, v in e.values.items())
                   for pool in self.by_category.values() for e in pool]
        return self.k * sum(lengths) // max(1, len(lengths))


def _shown(examples: list[Example], names: list[str]) -> list[Shown] | None:
    return [(e.text, e.category, _values_asked(e, names)) for e in examples] or None


def _covering_from(pool: list[Example], members: list[int], names: list[str], k: int,
                   leaked: set[int]) -> list[int]:
    """k examples covering the attributes asked: the group's members first, then, where it has
    fewer than k, the rest of the pool; never a leaked one.  Their places in the pool."""
    first = [i for i in members if i not in leaked]
    picked = [first[i] for i in _covering([pool[i] for i in first], names, k)]
    if len(picked) < k:
        outside = leaked | set(members)
        rest = [i for i in range(len(pool)) if i not in outside]
        picked += [rest[i] for i in _covering([pool[i] for i in rest], names, k - len(picked))]
    return picked


def _grouped(pool: list[Example], n: int) -> list[Group]:
    """Up to n groups (at least one): seeds picked greedily so that the labeled documents are as
    similar as can be to their nearest seed (seeds from an evenly spaced sample of at most
    GROUPING_SAMPLE of them), then each labeled document to its nearest seed."""
    if n <= 1:
        return [Group(frozenset(), 0, list(range(len(pool))))]
    words = [_words(e.text) for e in pool]
    sample = sorted({i * len(pool) // GROUPING_SAMPLE for i in range(GROUPING_SAMPLE)}) \
        if len(pool) > GROUPING_SAMPLE else list(range(len(pool)))
    similarity = {(a, b): _jaccard(words[a], words[b]) for a in sample for b in sample}
    nearest = [0.0] * len(sample)  # each sampled document's similarity to its nearest seed
    seeds: list[int] = []
    while len(seeds) < min(n, len(sample)):
        def gain(c):
            return sum(max(0.0, similarity[x, c] - best) for x, best in zip(sample, nearest))
        seed = max((c for c in sample if c not in seeds), key=lambda c: (gain(c), -c))
        seeds.append(seed)
        nearest = [max(best, similarity[x, seed]) for x, best in zip(sample, nearest)]
    members: dict[int, list[int]] = {seed: [] for seed in seeds}
    for i in range(len(pool)):
        members[max(seeds, key=lambda s: _jaccard(words[i], words[s]))].append(i)
    return [Group(words[seed], seed, members[seed]) for seed in seeds]


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


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / max(1, len(a | b))


def _most_similar(pool: list[Example], text: str, k: int) -> list[Example]:
    words = _words(text)

    def overlap(item):
        i, example = item
        return _jaccard(words, _words(example.text)), -i

    ranked = sorted(enumerate(pool), key=overlap, reverse=True)[:k]
    return [example for _, example in reversed(ranked)]


def _values_asked(example: Example, names: list[str]) -> dict[str, str | None]:
    """The example's value for each attribute asked (null where it has none), names matched
    case-insensitively."""
    folded = {k.casefold(): v for k, v in example.values.items()}
    return {n: example.values[n] if n in example.values else folded.get(n.casefold()) for n in names}
