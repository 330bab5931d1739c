"""Typed records: input documents, the attribute schema, and extraction results."""
from __future__ import annotations

import json
import math
import numbers
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class InputError(ValueError):
    """Bad input, with the place it came from."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where, self.message = where, message


def folded(text: str) -> str:
    """Text as names and texts are compared: spacing and case ignored."""
    return " ".join(text.split()).casefold()


def as_id(value):
    """An id as the engine keeps it: text, or an integer (a JSON number, a Parquet column of
    numbers) as its digits, which the results then carry; None if it is neither."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):  # numpy's integers too
        return str(int(value))
    return value if isinstance(value, str) else None


def _valid_id(value):
    kept = as_id(value)
    if value is not None and kept is None:
        raise ValueError("must be text or a whole number")
    return kept


def _names(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("must list at least one attribute")
    names = [name.strip() for name in value]
    if any(not name for name in names):
        raise ValueError("attribute names must be non-empty strings")
    if len(set(names)) != len(names):
        raise ValueError("attribute names must be unique")
    return names


class Document(BaseModel):
    """One input line: a product text and, optionally, its category and attributes."""

    model_config = ConfigDict(extra="allow", strict=True)
    id: str
    text: str = Field(min_length=1)
    category: str | None = None
    attributes: list[str] | None = None

    _id = field_validator("id", mode="before")(_valid_id)

    @field_validator("category", "attributes", mode="before")
    @classmethod
    def _nan_is_absent(cls, value):  # a pandas row's missing cell
        return None if isinstance(value, float) and math.isnan(value) else value

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("attributes")
    @classmethod
    def _attribute_names(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _names(value)


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], record: dict) -> M:
    """The model (Document, Example) of one input record, or ValueError naming its first bad field."""
    try:
        return model.model_validate(record)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "line"
        raise ValueError(f"missing {field!r}" if first["type"] == "missing"
                         else f"{field!r}: {first['msg'].lower()}") from None


DOCUMENT_FIELDS = tuple(Document.model_fields)  # id, text, category, attributes: what a document reads


Constraint = Literal["span", "choice", "number"]


class Attribute(BaseModel):
    """An attribute to extract, with an optional description and decoding constraint.

    constraint "span": the value is a substring of the text (case-insensitive) or null;
    "choice": one of `values` or null; "number": a number, optionally with a unit.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)  # tasks share them
    name: str = Field(min_length=1)
    description: str | None = None
    constraint: Constraint | None = None
    values: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _values_mean_choice(cls, data):
        if isinstance(data, dict) and data.get("values") and data.get("constraint") is None:
            data = {**data, "constraint": "choice"}
        return data

    @model_validator(mode="after")
    def _choice_needs_values(self) -> "Attribute":
        if self.values is not None and not self.values:
            raise ValueError(f"attribute {self.name!r}: 'values' must not be empty")
        if self.constraint == "choice" and not self.values:
            raise ValueError(f"attribute {self.name!r}: constraint 'choice' needs 'values'")
        return self


@lru_cache(maxsize=100_000)
def named(name: str) -> Attribute:
    """The attribute of that name with nothing more, made once (nothing changes an Attribute)."""
    return Attribute(name=name)


class Example(BaseModel):
    """A labeled document: its text and its values (`values`, or `gold` as in eval files)."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)
    id: str | None = None
    text: str = Field(min_length=1)
    category: str | None = None
    values: dict[str, str | None]

    _id = field_validator("id", mode="before")(_valid_id)

    @model_validator(mode="before")
    @classmethod
    def _gold_is_values(cls, data):
        if isinstance(data, dict) and "values" not in data and "gold" in data:
            data = {**data, "values": data["gold"]}
        return data


class Schema(BaseModel):
    """Attributes per category; `"*"` applies to documents with no category entry.  Optionally
    labeled examples per category, the instructions, and generic examples that replace the
    built-in ones (prompt.py)."""

    model_config = ConfigDict(extra="forbid")
    categories: dict[str, list[Attribute]]
    examples: list[Example] = []  # labeled documents, each of its category
    instructions: str | None = Field(default=None, min_length=1)
    generic_examples: list[Example] | None = None

    @field_validator("categories")
    @classmethod
    def _unique(cls, value: dict[str, list[Attribute]]) -> dict[str, list[Attribute]]:
        for category, attributes in value.items():
            try:
                _names([a.name for a in attributes])
            except ValueError as error:
                raise ValueError(f"category {category!r}: {error}") from None
        return value

    @classmethod
    def from_attribute_list(cls, text: str) -> "Schema":
        """`--attributes "Brand,Color"`: the same attributes for every document."""
        try:
            names = _names([name for name in text.split(",")])
        except ValueError as error:
            raise InputError("--attributes", str(error)) from None
        return cls(categories={"*": [Attribute(name=name) for name in names]})

    @classmethod
    def load(cls, path: str | Path) -> "Schema":
        """Read a schema file (README: the schema file)."""
        from .files import open_input  # which imports InputError from here

        path = Path(path)
        if not path.is_file():
            raise InputError(str(path), "schema file not found")
        try:
            with open_input(path, text=True, encoding="utf-8-sig") as f:  # Notepad's byte-order mark, UTF-16
                raw = json.loads(f.read())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            line = getattr(error, "lineno", None)
            raise InputError(f"{path}:{line}" if line else str(path), f"invalid schema JSON: {error}") from None
        return cls.load_dict(raw, str(path))

    @classmethod
    def load_dict(cls, raw, where: str = "schema") -> "Schema":
        """`{category: [name or {name, description, constraint, values}] or {"attributes": [...],
        "examples": [{text, values}]}}`, or that as `"categories"` beside `"instructions"` and
        generic `"examples"`."""
        if not isinstance(raw, dict) or not raw:
            raise InputError(where, "a schema is a non-empty object mapping category to attributes")
        wrapped = isinstance(raw.get("categories"), dict) and set(raw) <= {"categories", "instructions", "examples"}
        categories = raw["categories"] if wrapped else raw
        if not categories:
            raise InputError(where, "'categories' must map at least one category to attributes")
        fields = {"categories": {}, "examples": []}
        if wrapped:
            fields.update(instructions=raw.get("instructions"), generic_examples=raw.get("examples"))
        for category, entry in categories.items():
            if isinstance(entry, dict):
                unknown = set(entry) - {"attributes", "examples"}
                if unknown or "attributes" not in entry:
                    raise InputError(where, f"category {category!r}: an object here has 'attributes' and "
                                            f"optionally 'examples'" + (f", not {sorted(unknown)}" if unknown else ""))
                examples = entry.get("examples") or []
                if not isinstance(examples, list):
                    raise InputError(where, f"category {category!r}: 'examples' must be a list")
                for i, example in enumerate(examples):
                    try:
                        fields["examples"].append(Example.model_validate({**example, "category": category}
                                                                         if isinstance(example, dict) else example))
                    except ValidationError as error:
                        raise InputError(where, f"category {category!r}: {_first_error(error, 'examples', i)}") from None
                entry = entry["attributes"]
            fields["categories"][category] = [Attribute(name=a) if isinstance(a, str) else a for a in entry] \
                if isinstance(entry, list) else entry
        try:
            return cls(**fields)
        except ValidationError as error:
            raise InputError(where, _first_error(error)) from None

    def with_examples(self, examples: list[Example]) -> "Schema":
        """This schema with more labeled examples."""
        return self.model_copy(update={"examples": self.examples + examples})

    def attributes_for(self, category: str | None) -> list[Attribute] | None:
        """The category's entry (else one written with other case or spacing), else `"*"`'s."""
        if category is not None:
            if category in self.categories:
                return self.categories[category]
            for name, attributes in self.categories.items():
                if name != "*" and folded(name) == folded(category):
                    return attributes
        return self.categories.get("*")

    def lookup(self, category: str | None, name: str) -> Attribute:
        for attribute in self.attributes_for(category) or []:
            if attribute.name == name:
                return attribute
        return named(name)

    def all_attributes(self) -> list[Attribute]:
        seen: dict[str, Attribute] = {}
        for attributes in self.categories.values():
            for attribute in attributes:
                seen.setdefault(attribute.name, attribute)
        return list(seen.values())


def _first_error(error: ValidationError, *within) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in within + first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


class Task(BaseModel):
    """A document and the attributes to extract from it."""

    document: Document
    attributes: list[Attribute]

    @property
    def id(self) -> str:
        return self.document.id

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.attributes]


class Result(BaseModel):
    """One output line. `values` has every attribute asked for; null means not stated."""

    id: str
    values: dict[str, str | None]
    confidence: dict[str, float] | None = None
    error: str | None = None


NULL_TEXT = "None"  # what the prompts ask for when the text does not state an attribute (one token in Qwen)
NULL_PATTERN = re.compile(rf"^({re.escape(NULL_TEXT)}|n/?a|null|not (stated|specified|mentioned|given|available)"
                          r"|unknown|-+)?$", re.IGNORECASE)  # answers that mean null


def clean_value(raw: str) -> str | None:
    """A generated answer as a value: trimmed; empty and "n/a"-like answers are null."""
    value = raw.strip().strip('"').strip()
    return None if NULL_PATTERN.match(value) else value


def make_task(document: Document, schema: Schema | None) -> Task:
    """The document's attributes: from its own line, else its category in the schema."""
    if document.attributes:
        attributes = [schema.lookup(document.category, name) if schema else named(name) for name in document.attributes]
    else:
        if schema is None:
            raise ValueError('no attributes: list them in its "attributes", or give --attributes or --schema')
        attributes = schema.attributes_for(document.category)
        if not attributes:
            missing = f"no schema entry for category {document.category!r}" if document.category else "no category"
            raise ValueError(f"no attributes given and {missing}" + _categories_hint(schema))
    return Task(document=document, attributes=attributes)


def as_task(document: Document | dict | Task, schema: Schema | None) -> Task:
    """The task of what an API caller passes: a dict, a Document or a Task; ValueError saying
    what is wrong with it."""
    if isinstance(document, Task):
        return document
    if isinstance(document, dict):
        document = validated(Document, document)
    elif not isinstance(document, Document):
        raise ValueError(f"a document is a dict or an hpd_gguf.Document, not {type(document).__name__}")
    return make_task(document, schema)


def document_name(index: int, document) -> str:
    """How messages name an API caller's document: its place in the input, and its id."""
    identity = document.get("id") if isinstance(document, dict) else getattr(document, "id", None)
    return f"document {index}" + (f" (id {identity!r})" if isinstance(identity, (str, int)) else "")


def _categories_hint(schema: Schema) -> str:
    """What the schema has instead, as a typo or a renamed category needs it."""
    names = [name for name in schema.categories if name != "*"]
    return f" (the schema has {listed(names)}; \"*\" would take any other)" if names else ""


def listed(names: list[str], shown: int = 8) -> str:
    """Names for a message: the first `shown`, then how many more."""
    return ", ".join(map(repr, names[:shown])) + (f" and {len(names) - shown} more" if len(names) > shown else "")
