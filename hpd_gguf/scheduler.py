"""Continuous hyper-parallel scheduling: waiting and running documents, one mixed batch a step.

Each step packs, within the token budget: one new token for every decoding branch, the
suffixes of branches that start now, and chunks of document prefill.  Documents are admitted
as sequence ids and KV cells allow, in arrival order but those that share the head of the last
one first (within a reorder window); a document whose branches outnumber the free ids runs
them in rounds over its own document cells.  Documents that ask the same of the same category
share the head of their segment: it is decoded once, and each copies it; a head made again
after it went (its category came back) stays for later documents when idle.
Every `can_*` check has its action beside it, so the cache never runs out of ids or cells.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from .kv import KVCache
from .llama import Batch
from .sequence import Branch, DocumentState, SharedHead, Status


WAITING_PER_RESIDENT = 2  # documents read ahead into the waiting queue, per resident one
IDLE_HEADS_KEPT = 8  # heads no document uses, kept for later documents when made twice before
HEADS_REMEMBERED = 100_000  # heads whose making is remembered (by hash)


@dataclass
class Limits:
    token_budget: int  # tokens per decode (<= n_batch)
    max_resident: int = 64  # documents in flight
    max_resident_cells: int = 0  # KV cells of their own and their branches' (not heads'); <= 0: no limit
    continuous: bool = True  # False: fixed groups, the next group when the last is done
    reorder_window: int = 512  # how far admission may run ahead of the oldest running document


class Scheduler:
    def __init__(self, kv: KVCache, limits: Limits, share_preamble: bool = True):
        self.kv = kv
        self.limits = limits
        self.share_preamble = share_preamble
        self.waiting: deque[DocumentState] = deque()
        self.running: list[DocumentState] = []
        self.heads: dict[tuple[int, ...], SharedHead] = {}  # resident shared heads by tokens
        self._waiting_heads: Counter = Counter()
        self._awaiting_head: list[DocumentState] = []
        self._last_head: tuple[int, ...] | None = None  # of the document admitted last
        self._times_made: Counter = Counter()  # by the head's hash: those made twice stay when idle
        self.heads_made = 0

    def add(self, doc: DocumentState) -> None:
        doc.status = Status.WAITING
        self.waiting.append(doc)
        self._waiting_heads[doc.prompt.head] += 1

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    def documents(self) -> list[DocumentState]:
        """Every waiting and running document."""
        return list(self.waiting) + self.running

    def can_ever_run(self, doc: DocumentState) -> bool:
        """Whether a document could ever run: its segment plus one branch in an empty cache."""
        return len(doc.pending) + max((b.cells for b in doc.branches), default=0) <= self.kv.capacity

    # building a step
    def plan(self, batch: Batch) -> list[Branch]:
        """Fill `batch` for one decode; returns the branches to sample, in logits-row order."""
        batch.clear()
        budget = min(self.limits.token_budget, batch.capacity)
        outputs: list[Branch] = []
        for head in self.heads.values():  # what earlier steps planned is decoded by now
            head.decoded = not head.pending
        self._link_heads()
        if not self.limits.continuous and not self.running:  # a new fixed group
            while self._admit():
                pass
        decoding = [b for d in self.running for b in d.started_branches() if not b.finished]
        for branch in decoding:  # ongoing values first: they hold seats and cells
            if branch.pending and batch.size < budget:
                self._put(batch, branch, budget - batch.size, outputs)
        for doc in self.running:  # then new branches of prefilled documents
            while doc.status is Status.DECODING and doc.unstarted() and batch.size < budget:
                branch = doc.branches[doc.started]
                if self.kv.free_seqs == 0 or branch.cells > self.kv.free_cells:
                    break
                branch.seq = self.kv.open(branch.cells, doc.preamble, source=doc.seq)
                doc.started += 1
                if doc.started == len(doc.branches):  # the branches now hold its cells
                    self.kv.close(doc.seq, 0)
                self._put(batch, branch, budget - batch.size, outputs)
        for head in self.heads.values():  # then prefill, chunked to the budget: shared heads,
            if head.pending and batch.size < budget:
                self._put(batch, head, budget - batch.size)
        for doc in self.running:  # and documents that have theirs
            if doc.status is Status.PREFILLING and batch.size < budget:
                self._put(batch, doc, budget - batch.size)
        while self.limits.continuous and batch.size < budget and self._admit():
            doc = self.running[-1]
            self._put(batch, doc.head if doc.status is Status.AWAITING_HEAD else doc, budget - batch.size)
        return outputs

    @staticmethod
    def _put(batch: Batch, sequence, budget: int, outputs: list | None = None) -> None:
        """Add up to `budget` of a sequence's pending tokens; a branch whose pending tokens are
        all in gets the logits of its last one."""
        chunk, start = sequence.take(budget)
        row = batch.add(chunk, start, (sequence.seq,), outputs is not None and not sequence.pending)
        if row >= 0:
            outputs.append(sequence)

    @property
    def oldest(self) -> int:
        """Admission order of the oldest running document (results wait for it)."""
        return min((d.order for d in self.running), default=self.waiting[0].order if self.waiting else 0)

    def _admit(self) -> bool:
        if not self.waiting or len(self.running) >= self.limits.max_resident:
            return False
        doc = self._next_waiting()
        if doc.order - self.oldest >= self.limits.reorder_window or not self._fits_cell_budget(doc):
            return False
        key = doc.prompt.head if self.share_preamble else ()  # hpd-static shares nothing
        head = self.heads.get(key)
        new_head = head is None and len(key) > 0 and self._waiting_heads[key] > 1  # it counts itself
        if not self._can_allocate(doc, head, new_head) and not (self._drop_idle_heads(but=key)
                                                                and self._can_allocate(doc, head, new_head)):
            return False
        self.waiting.remove(doc)
        self._forget_waiting_head(doc)
        self._last_head = doc.prompt.head
        if new_head:  # another waiting document asks the same of the same category
            head = self.heads[key] = SharedHead(pos=doc.pos, pending=list(key), key=key)
            self.heads_made += 1
            self._remember(key)
            head.seq = self.kv.open(head.cells, doc.preamble)
        if head:
            self.heads[key] = self.heads.pop(key)  # the most recently used last
            doc.share(head)
            doc.status = Status.AWAITING_HEAD
            self._awaiting_head.append(doc)
        else:
            doc.start_prefill()
        doc.cells = len(doc.pending)
        doc.seq = self.kv.open(doc.cells, doc.preamble)  # with a head, its cells come once decoded
        self.running.append(doc)
        self._link_heads()
        return True

    def _next_waiting(self) -> DocumentState:
        """The oldest waiting document that shares the head of the last one admitted, else the
        oldest: a step's rows then see one category's head, and tiles of the others' cells are
        skipped (examples' heads: BENCHMARKS.md).  A document of another head waits while fewer
        than twice the resident documents pass it: in a stream of one head's documents it would
        otherwise wait for the reorder window (512), and every result after it with it."""
        first = self.waiting[0]
        if self.share_preamble:
            window_end = min(first.order, self.oldest) + self.limits.reorder_window  # what _admit allows
            end = min(window_end, first.order + WAITING_PER_RESIDENT * self.limits.max_resident)
            for doc in self.waiting:
                if doc.order >= end:
                    break
                if doc.prompt.head == self._last_head:
                    return doc
        return first

    def _fits_cell_budget(self, doc: DocumentState) -> bool:
        """The resident documents' own cells stay within the budget (one always runs): on a CPU
        every decoding token attends over every occupied cell (BENCHMARKS.md, "Titles with
        descriptions")."""
        budget = self.limits.max_resident_cells
        return budget <= 0 or not self.running or sum(map(_own_cells, self.running)) + _own_cells(doc) <= budget

    def _can_allocate(self, doc: DocumentState, head: SharedHead | None, new_head: bool) -> bool:
        """Sequence ids and cells for the document now, and for the branches promised to it
        and to the running documents later."""
        seqs = 1 + new_head  # needed now
        cells = len(doc.pending) - (head.cells if head else 0)  # its own segment (and a new head)
        promised = sum(len(d.branches) - d.started for d in self.running)
        if self.running and self.kv.free_seqs - promised < seqs + len(doc.branches):
            return False
        branch_cells = sum(b.cells for b in doc.branches)
        if self.running and cells + branch_cells > self.kv.free_cells - self._promised_cells():
            return False
        return self.kv.free_seqs >= seqs and cells <= self.kv.free_cells

    def _link_heads(self) -> None:
        """Copy each shared head, once decoded, into the documents waiting for it."""
        for doc in [d for d in self._awaiting_head if d.head.decoded]:
            self.kv.copy(doc.head.seq, doc.seq, doc.pos)
            doc.start_prefill()
            self._awaiting_head.remove(doc)

    def _promised_cells(self) -> int:
        return sum(b.cells for d in self.running for b in d.unstarted())

    # after a decode
    def finish_branch(self, branch: Branch) -> DocumentState | None:
        """Free a finished branch; returns its document when that was the last branch."""
        doc = branch.doc
        self.kv.close(branch.seq, branch.cells)
        doc.finished += 1
        if not doc.done:
            return None
        self.kv.release_cells(doc.cells)
        self.running.remove(doc)
        doc.status = Status.FINISHED
        self._leave_head(doc)
        return doc

    def cancel(self, doc: DocumentState) -> None:
        """Drop a waiting or running document with everything it holds: its branches' sequences
        and cells, its own segment, its share of a head."""
        if doc.status is Status.WAITING:
            self.waiting.remove(doc)
            self._forget_waiting_head(doc)
        elif doc in self.running:
            for branch in doc.started_branches():
                if not branch.finished:
                    self.kv.close(branch.seq, branch.cells)
            if doc.unstarted():
                self.kv.close(doc.seq, doc.cells)  # its segment's sequence is still open
            else:
                self.kv.release_cells(doc.cells)
            if doc.status is Status.AWAITING_HEAD:
                self._awaiting_head.remove(doc)
            self.running.remove(doc)
            self._leave_head(doc)
        doc.status = Status.CANCELLED
        self._drop_unused_heads()

    def _forget_waiting_head(self, doc: DocumentState) -> None:
        self._waiting_heads[doc.prompt.head] -= 1
        if not self._waiting_heads[doc.prompt.head]:
            del self._waiting_heads[doc.prompt.head]  # or a long input piles up keys

    def _leave_head(self, doc: DocumentState) -> None:
        if doc.head is not None:
            doc.head.users -= 1
            self._drop_unused_heads()

    def _remember(self, key: tuple) -> None:
        if len(self._times_made) >= HEADS_REMEMBERED:
            self._times_made.clear()
        self._times_made[hash(key)] += 1

    def _drop_unused_heads(self) -> None:
        """A head goes when no resident document uses it and no waiting document asks for it,
        unless it was made again after going before (its category comes back, as in a server's
        requests): the last IDLE_HEADS_KEPT such stay.  Others go at once: on a CPU every step's
        rows scan an idle head's cells (BENCHMARKS.md, "Heads kept between requests")."""
        unused = [h for h in self.heads.values() if h.users == 0 and not self._waiting_heads[h.key]]
        made_again = [h for h in unused if self._times_made[hash(h.key)] > 1]
        kept = {id(h) for h in made_again[-IDLE_HEADS_KEPT:]}
        for head in unused:
            if id(head) not in kept:
                self._close_head(head)

    def _drop_idle_heads(self, but: tuple) -> bool:
        """Make room for the next document: drop the heads no resident document uses (but its own)."""
        idle = [h for h in self.heads.values() if h.users == 0 and h.key != but]
        for head in idle:
            self._close_head(head)
        return bool(idle)

    def _close_head(self, head: SharedHead) -> None:
        self.kv.close(head.seq, head.cells)
        del self.heads[head.key]


def _own_cells(doc: DocumentState) -> int:
    """Cells a document holds beyond its head: its own segment and its branches at their longest."""
    return len(doc.prompt.tokens) - doc.prompt.head_end + sum(b.cells for b in doc.branches)
