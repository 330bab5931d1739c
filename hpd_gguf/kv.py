"""KV bookkeeping: sequence ids and cells of the unified cache, apart from the model runner."""
from __future__ import annotations

from .llama import Context

PREAMBLE_SEQ = 0


class KVCache:
    """Hands out sequence ids (0 holds the run-wide preamble) and accounts for cells so that
    llama.cpp never runs out of either.

    A closed id keeps the part of the preamble its sequence began with, and the next sequence
    on it gets or drops only the difference: llama.cpp's copies and removals cost
    ~75 ns a cell (on top of a scan of the whole cache), so sharing the preamble's ~270 cells
    anew took ~20 µs of each of a document's ~26 copies and removals."""

    def __init__(self, context: Context, reserved_cells: int = 0):
        self.context = context
        self._free_seqs = list(range(context.n_seq_max - 1, PREAMBLE_SEQ, -1))
        self.capacity = self.free_cells = context.n_ctx - reserved_cells
        self._preamble_held = [0] * context.n_seq_max  # by id: it holds the preamble below this position

    @property
    def free_seqs(self) -> int:
        return len(self._free_seqs)

    def open(self, cells: int, preamble: int = 0, source: int | None = None) -> int:
        """A new sequence holding `cells` cells: the preamble's below position `preamble`, then
        all of `source`'s from there."""
        if not self._free_seqs:
            raise RuntimeError("no free sequence id")
        if cells > self.free_cells:
            raise RuntimeError(f"{cells} KV cells asked for, {self.free_cells} free")
        seq = self._free_seqs.pop()
        self.free_cells -= cells
        held = self._preamble_held[seq]
        if held > preamble:
            self.context.seq_rm(seq, preamble, held)
        elif held < preamble:
            self.context.seq_cp(PREAMBLE_SEQ, seq, held, preamble)
        self._preamble_held[seq] = preamble
        if source is not None:
            self.copy(source, seq)
        return seq

    def copy(self, source: int, seq: int, upto: int = -1) -> None:
        """Let `seq` share `source`'s cells from the end of its preamble below position `upto`
        (-1: all of them)."""
        start = self._preamble_held[seq]
        if upto < 0 or upto > start:
            self.context.seq_cp(source, seq, start, upto)

    def close(self, seq: int, cells: int) -> None:
        """Drop a sequence but its preamble; cells no other sequence shares become free."""
        self.context.seq_rm(seq, self._preamble_held[seq], -1)
        self._free_seqs.append(seq)
        self.free_cells += cells

    def release_cells(self, cells: int) -> None:
        self.free_cells += cells
