"""State of one document, of its branches (one branch per attribute), and of the heads that
documents of one category share."""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np

from .constraints import VETO, Constraint, accepts, make_constraint
from .prompt import DocumentPrompt
from .schema import Result, Task, clean_value


@dataclass
class Stops:
    """When a value ends: an end-of-generation token, a newline (unless multiline), the token
    budget, or a first token that is the whole null answer (the prompt's "None": nothing the
    model adds to it can make it a value, so it is not fed back)."""

    end_of_generation: np.ndarray  # bool per token
    has_newline: np.ndarray  # bool per token
    max_tokens: int
    multiline: bool = False
    null_answer: np.ndarray | None = None  # bool per token

    def __post_init__(self):
        self.stop_mask = self.end_of_generation | (False if self.multiline else self.has_newline)


@dataclass
class Sequence:
    """Tokens waiting to be decoded into one KV sequence, from position `pos` on."""

    seq: int = -1
    pos: int = 0
    pending: list[int] = field(default_factory=list)

    def take(self, budget: int) -> tuple[list[int], int]:
        """Up to `budget` pending tokens and the position of the first."""
        chunk, self.pending = self.pending[:budget], self.pending[budget:]
        start, self.pos = self.pos, self.pos + len(chunk)
        return chunk, start


@dataclass
class Branch(Sequence):
    """One attribute's suffix and value, continuing right after its document segment."""

    doc: "DocumentState" = None
    index: int = 0
    generated: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finished: bool = False
    vetoed: bool = False  # a constraint made the value null
    constraint: Constraint | None = None

    @property
    def cells(self) -> int:
        """KV cells this branch may occupy: suffix plus value."""
        return len(self.doc.prompt.suffixes[self.index]) + self.doc.stops.max_tokens

    def accept(self, token: int, logprob: float = 0.0) -> bool:
        """Record a sampled token (-1: the value ends here, VETO: it is null); returns True
        when it is complete."""
        stops = self.doc.stops
        if token == VETO:
            self.vetoed = self.finished = True
            self.logprobs.append(logprob)  # of the token the model wanted
        elif token < 0 or stops.end_of_generation[token]:
            self.finished = True
        else:
            self.generated.append(token)
            self.logprobs.append(logprob)
            self.finished = bool(stops.stop_mask[token]) or len(self.generated) >= stops.max_tokens or (
                len(self.generated) == 1 and stops.null_answer is not None and bool(stops.null_answer[token]))
        if not self.finished:
            self.pending = [token]
        return self.finished

    def text(self, pieces: list[bytes]) -> str:
        return b"".join(pieces[t] for t in self.generated).decode("utf-8", "replace")

    def value(self, pieces: list[bytes]) -> str | None:
        """The value: the text up to a newline, cleaned; null when a constraint rejects it."""
        raw = b"".join(pieces[t] for t in self.generated).split(b"\n", 1)[0]
        if self.vetoed or (self.constraint is not None and not accepts(self.constraint, raw)):
            return None
        return clean_value(raw.decode("utf-8", "replace"))

    @property
    def confidence(self) -> float:
        """Probability of the tokens decoded greedily; for a vetoed value, that it was not
        the value the model wanted."""
        p = math.exp(sum(self.logprobs))  # a few floats: numpy would take 15 µs a value
        return 1.0 - p if self.vetoed else p


@dataclass
class SharedHead(Sequence):
    """The head of a document segment (category and attribute names), decoded once for all
    resident documents that share it; each copies its cells and goes on from there."""

    key: tuple[int, ...] = ()
    users: int = 0  # documents admitted with it and not yet done
    decoded: bool = False  # all its tokens went through an earlier decode: its cells exist

    @property
    def cells(self) -> int:
        return len(self.key)


class Status(enum.Enum):
    """A document's lifecycle, in order (CANCELLED may follow any state before FINISHED)."""

    WAITING = "waiting"  # queued, not admitted yet
    AWAITING_HEAD = "awaiting head"  # admitted; the shared head it needs is not decoded yet
    PREFILLING = "prefilling"  # its own segment goes through the decodes
    DECODING = "decoding"  # its segment is in: its branches start and generate values
    FINISHED = "finished"
    CANCELLED = "cancelled"


@dataclass
class DocumentState(Sequence):
    """A document in flight: its prompt, its branches, and the order it came in."""

    task: Task = None
    prompt: DocumentPrompt = None
    stops: Stops = None
    order: int = 0  # admission order over all jobs
    branches: list[Branch] = field(default_factory=list)
    cells: int = 0  # KV cells of its own segment
    preamble: int = 0  # positions of the run-wide preamble its sequences begin with (decoded once)
    started: int = 0  # branches given a sequence so far
    finished: int = 0
    head: SharedHead | None = None  # shared with other documents, when it is
    status: Status = Status.WAITING
    job: object = None  # the job it belongs to, and its place there
    index: int = 0

    @classmethod
    def create(cls, task: Task, prompt: DocumentPrompt, stops: Stops, order: int,
               share_preamble: bool = True, **where) -> "DocumentState":
        start = prompt.shared if share_preamble else 0
        doc = cls(pos=start, pending=list(prompt.tokens[start:]), task=task, prompt=prompt,
                  stops=stops, order=order, preamble=start, **where)
        end = len(prompt.tokens)
        doc.branches = [Branch(pos=end, pending=list(suffix), doc=doc, index=i,
                               constraint=make_constraint(a.constraint, task.document.text, a.values))
                        for i, (suffix, a) in enumerate(zip(prompt.suffixes, task.attributes))]
        return doc

    def share(self, head: SharedHead) -> None:
        """Take the shared head instead of decoding those tokens itself."""
        self.head = head
        del self.pending[: head.cells]
        self.pos += head.cells
        head.users += 1

    def start_prefill(self) -> None:
        """Admitted, with its head's cells in place: its own tokens are next."""
        self.status = Status.PREFILLING if self.pending else Status.DECODING

    def take(self, budget: int) -> tuple[list[int], int]:
        chunk, start = super().take(budget)
        if not self.pending:
            self.status = Status.DECODING  # its branches start once this chunk is decoded
        return chunk, start

    @property
    def done(self) -> bool:
        return self.finished == len(self.branches)

    def unstarted(self) -> list[Branch]:
        return self.branches[self.started:]

    def started_branches(self) -> list[Branch]:
        return self.branches[: self.started]

    def result(self, pieces: list[bytes], min_confidence: float = 0.0) -> Result:
        """Values and confidences; a value below min_confidence becomes null, with the
        confidence that it is not that value."""
        values, confidence = {}, {}
        for branch in self.branches:
            name = self.task.attributes[branch.index].name
            values[name], confidence[name] = branch.value(pieces), branch.confidence
            if values[name] is not None and confidence[name] < min_confidence:
                values[name], confidence[name] = None, 1.0 - confidence[name]
            confidence[name] = round(confidence[name], 4)
        return Result(id=self.task.id, values=values, confidence=confidence)
