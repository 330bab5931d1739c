"""Prompt layout: run-wide preamble -> document segment -> branch suffix -> value.

The prompt for one attribute is the model's own chat template with a system message (the
instructions), a user message (the category, the names of all attributes asked for, then the
document) and the start of the assistant's answer, `Attribute:`.  Written out for one
attribute alone it is

    [preamble][document segment][branch suffix]

and the three token lists concatenate to exactly the tokenization of that whole prompt: the
split points are longest common token prefixes, so a tokenizer merge across a boundary moves
the boundary instead of changing a token.  The document segment starts with its head (the
category's own worked examples, when it has some, then the category and the attribute names),
the same for every document shown the same examples that asks the same of the same category.
The names are listed in the first order the layout saw for that category and set of names, so
that documents listing them in another order share the head too; results keep each
document's own order.
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Callable

from jinja2.sandbox import ImmutableSandboxedEnvironment

from .examples import Shown
from .llama import Model
from .schema import NULL_TEXT, Attribute, Document, Task

INSTRUCTIONS = (
    "You extract attribute values from product titles. Answer one attribute per line, as "
    "\"Attribute: value\". Copy each value exactly as it is written in the title, as short as "
    f"possible. If the title does not state the attribute, answer {NULL_TEXT}."
)
JSON_INSTRUCTIONS = (
    "You extract attribute values from product titles. Answer with one JSON object that has "
    "every attribute asked for as a key. Copy each value exactly as it is written in the title, "
    "as short as possible. If the title does not state the attribute, the value is null."
)

# Worked examples, shown as earlier turns of the conversation (part of the shared preamble) to
# documents of categories without examples of their own (examples.py).
EXAMPLES: list[Shown] = [
    ("Levi's Men's 501 Original Fit Jeans, Dark Stonewash, 32W x 30L", "Clothing",
     {"Brand": "Levi's", "Gender": "Men's", "Model": "501 Original Fit", "Color": "Dark Stonewash",
      "Size": "32W x 30L", "Material": None}),
    ("Bigelow Green Tea with Peppermint, Caffeinated, 20 Count (Pack of 6)", "Tea",
     {"Brand": "Bigelow", "Tea variety": "Green Tea", "Flavor": "Peppermint", "Organic": None,
      "Caffeine content": "Caffeinated", "Count": "20 Count", "Pack size": "Pack of 6"}),
]

# For models without a chat template (base models): a plain completion layout.
PLAIN_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Answer:\n{% endif %}"
)

LISTING_ORDERS_KEPT = 10_000  # (category, set of names) whose first order is kept: ~25 MB at most

_SENTINEL = re.compile("\ue000(\\d+)\ue001")


class Untrusted(str):
    """Text from the user (documents, attribute names): never parsed as special tokens."""


TEXT_STARTS = ("a", "A", "4", " ", "(", "[", '"', "-", "\u00e1", "\n")  # how documents' texts may begin


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass
class DocumentPrompt:
    """One document's tokens: shared preamble prefix, own segment, a suffix per attribute."""

    tokens: list[int]  # preamble prefix + document segment, from position 0
    shared: int  # how many leading tokens equal the run-wide preamble
    suffixes: list[list[int]]  # per attribute, in the task's order
    head_end: int = 0  # leading tokens that depend on no more than the category and attribute names

    @cached_property
    def head(self) -> tuple[int, ...]:
        """The head of the document segment: equal for documents of one category and list."""
        return tuple(self.tokens[self.shared: self.head_end])

    def full(self, index: int) -> list[int]:
        """The whole prompt for one attribute alone."""
        return self.tokens + self.suffixes[index]


class PromptLayout:
    """Builds token-exact prompts for one model and one answer format ("lines" or "json")."""

    def __init__(self, model: Model, answer_format: str = "lines",
                 instructions: str | None = None, attributes: list[Attribute] | None = None,
                 examples: list[Shown] | None = None, picker: Callable[[Task], list[Shown] | None] | None = None):
        self.model = model
        self.answer_format = answer_format
        template = model.chat_template
        if not template:
            warnings.warn(f"{model.path.name} has no chat template; using a plain prompt layout")
            template = PLAIN_TEMPLATE
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_template_error
        self._template = env.from_string(template)
        self._bos_text = model.piece(model.bos).decode("utf-8", "replace") if model.add_bos else ""
        self._eos_text = model.metadata_token("tokenizer.ggml.eos_token_id")
        default = JSON_INSTRUCTIONS if answer_format == "json" else INSTRUCTIONS
        self._system = [instructions or default] + _described(attributes or [])
        self.examples = EXAMPLES if examples is None else examples  # for categories without their own
        self.picker = picker  # a task's examples of its category (examples.py), or None
        self._orders: dict[tuple, tuple[str, ...]] = {}  # (category, set of names) -> names as listed
        # Caches of this layout's own (freed with it): template text split at its special tokens,
        # and each fragment's tokens. The instructions and a category's examples and head recur in
        # every document's prompt; tokenizing them again took ~2 ms of a document's ~3.
        self._split_specials = lru_cache(maxsize=256)(self._specials_in)
        self._text_tokens = lru_cache(maxsize=1024)(lambda text: tuple(model.tokenize(text)))
        self._head_length = lru_cache(maxsize=256)(self._tokens_any_text_keeps)
        self._ending_tokens = lru_cache(maxsize=4096)(self._tokens_of_ending)  # 0.3-0.4 of ~1.2 ms a document
        self._rendered = lru_cache(maxsize=1024)(self._render)
        placeholder = Task(document=Document(id="", text="x", category="x"), attributes=[Attribute(name="x")])
        pieces, first_document_piece, _ = self._pieces(placeholder, own_examples=False)
        self.preamble = self._tokens(pieces[:first_document_piece])

    def listed_names(self, task: Task) -> tuple[str, ...]:
        """The task's attribute names in the order its prompt lists them: the first order seen
        for its category and set of names."""
        key, names = (task.document.category, frozenset(task.names)), tuple(task.names)
        if len(self._orders) < LISTING_ORDERS_KEPT:
            return self._orders.setdefault(key, names)
        return self._orders.get(key, names)  # a long-running server: past the bound, its own

    # rendering
    def _pieces(self, task: Task, own_examples: bool = True) -> tuple[list[str], int, int]:
        """The rendered prompt as pieces (Untrusted where the user wrote them), the index of
        the first piece that depends on the document, and that of the document's text."""
        parts: list[str] = []

        def put(text: str) -> str:
            parts.append(Untrusted(text))
            return f"\ue000{len(parts) - 1}\ue001"

        system = "\n\n".join(put(s) if isinstance(s, Untrusted) else s for s in self._system)
        messages = [{"role": "system", "content": system}]
        listed = self.listed_names(task)
        examples = (own_examples and self.picker and self.picker(task)) or self.examples
        for text, category, values in examples:
            if values.keys() == set(listed):  # the category's own: the same names in the same order
                values = {name: values[name] for name in listed}
            messages += [{"role": "user", "content": _user_message(put(text), category and put(category),
                                                                   [put(name) for name in values])},
                         {"role": "assistant", "content": put(_answer(values, self.answer_format))}]
        first_document_part = len(parts)
        document = task.document
        names = [put(n) for n in listed]
        text_part = len(parts)
        messages.append({"role": "user", "content": _user_message(
            put(document.text), document.category and put(document.category), names)})
        pieces, first, text = [], None, None
        for i, chunk in enumerate(self._rendered(tuple((m["role"], m["content"]) for m in messages))):
            if i % 2:
                index = int(chunk)
                if first is None and index >= first_document_part:
                    first = len(pieces)
                if index == text_part:
                    text = len(pieces)
                pieces.append(parts[index])
            else:
                pieces.append(chunk)
        return pieces, first, text

    def _render(self, messages: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
        """The template rendered, split at the sentinels that stand for the user's text: the
        same for every document whose messages have the same shape."""
        rendered = self._template.render(
            messages=[{"role": role, "content": content} for role, content in messages],
            add_generation_prompt=True, bos_token=self._bos_text,
            eos_token=self._eos_text,
        )
        return tuple(_SENTINEL.split(rendered))

    def _fragments(self, pieces: list[str], before: tuple[str | int, ...] = ()) -> list[str | int]:
        """Text runs and special-token ids; specials are recognised in trusted text only.
        `before`: the fragments of the pieces before these, which they continue."""
        fragments: list[str | int] = list(before)
        for piece in pieces:
            parts = [piece] if isinstance(piece, Untrusted) else self._split_specials(piece)
            for part in parts:
                if isinstance(part, str) and fragments and isinstance(fragments[-1], str):
                    fragments[-1] += part
                elif part != "":
                    fragments.append(part)
        if self.model.add_bos and fragments[:1] != [self.model.bos]:
            fragments.insert(0, self.model.bos)
        return fragments

    def _specials_in(self, text: str) -> tuple[str | int, ...]:
        out: list[str | int] = []
        rest = text
        for token in self.model.tokenize(text, parse_special=True):
            if not self.model.is_control(token):
                continue
            special = self.model.piece(token).decode("utf-8", "replace")
            before, found, rest = rest.partition(special)
            if not found:
                raise ValueError(f"special token {special!r} not found in template text")
            out += [before, token]
        return tuple(out + [rest])

    def _fragment_tokens(self, fragments: list[str | int]) -> list[int]:
        return [t for f in fragments for t in ([f] if isinstance(f, int) else self._text_tokens(f))]

    def _tokens_any_text_keeps(self, before_text: tuple[str | int, ...]) -> int:
        """How many tokens of what comes before a document's text stay whatever the text: the
        last may merge with its first character (": " + "4" against ": Crocs"), and documents
        whose heads differ by it would share none (3% of OA-Mine's titles start with a digit)."""
        tokens = self._fragment_tokens(before_text)
        *earlier, last = before_text
        if not isinstance(last, str):  # a special token: nothing merges across it
            return len(tokens)
        earlier_tokens = self._fragment_tokens(earlier)
        return min(common_prefix(tokens, earlier_tokens + self.model.tokenize(last + start)) for start in TEXT_STARTS)

    def _tokens_of_ending(self, tail: str, name: str | None) -> tuple[int, ...]:
        """Tokens of what follows the last special token (the generation prompt's end, alike in
        every document under a chat template), with an attribute's suffix or none."""
        return tuple(self.model.tokenize(tail + (self.suffix_text(name) if name is not None else "")))

    def _tokens(self, pieces: list[str]) -> list[int]:
        return self._fragment_tokens(self._fragments(pieces))

    # public
    def document(self, task: Task, suffixes: bool = True) -> DocumentPrompt:
        """The document's prompt tokens and, unless suffixes=False, one suffix per attribute."""
        pieces, _, text = self._pieces(task)
        text = len(pieces) if text is None else text
        before_text = tuple(self._fragments(pieces[:text]))
        fragments = self._fragments(pieces[text:], before_text)
        tail = fragments.pop() if isinstance(fragments[-1], str) else ""
        head = self._fragment_tokens(fragments)
        ending = self._ending_tokens(tail, None)
        tokens = head + list(ending)
        shared = common_prefix(self.preamble, tokens)
        head_end = min(common_prefix(self._fragment_tokens(before_text), tokens), self._head_length(before_text))
        names = task.names if suffixes else []
        # each attribute's whole prompt is head + the tokens of tail + its suffix text
        endings = [self._ending_tokens(tail, name) for name in names]
        split = max(shared, len(head) + min((common_prefix(ending, e) for e in endings), default=len(ending)))
        head_end = max(shared, min(head_end, split - 1))  # the document keeps a token of its own
        return DocumentPrompt(tokens[:split], shared, [list(e[split - len(head):]) for e in endings], head_end)

    def suffix_text(self, name: str) -> str:
        return f"{name}:"

    def whole_prompt_tokens(self, task: Task, index: int) -> list[int]:
        """Tokens of the prompt for one attribute written out in full and tokenized at once
        (special tokens parsed), for checking the layout.  Only meaningful when the user text
        holds no special-token text."""
        pieces, _, _ = self._pieces(task)
        text = "".join(pieces) + self.suffix_text(task.names[index])
        tokens = self.model.tokenize(text, parse_special=True)
        if self.model.add_bos and tokens[:1] != [self.model.bos]:
            tokens.insert(0, self.model.bos)
        return tokens


def _raise_template_error(message: str):
    raise ValueError(f"chat template error: {message}")


def _described(attributes: list[Attribute]) -> list[str]:
    lines = [f"- {a.name}: {a.description}" for a in attributes if a.description]
    return [Untrusted("Attribute descriptions:\n" + "\n".join(lines))] if lines else []


def _user_message(text: str, category: str | None, names: list[str]) -> str:
    head = f"Category: {category}\n" if category else ""
    return f"{head}Attributes: {'; '.join(names)}\nProduct: {text}"


def _answer(values: dict[str, str | None], answer_format: str) -> str:
    if answer_format == "json":
        return json.dumps(values, ensure_ascii=False)
    return "\n".join(f"{name}: {NULL_TEXT if value is None else value}" for name, value in values.items())
