"""KV bookkeeping: sequence ids and cells of the unified cache, apart from the model runner."""
from __future__ import annotations

from .llama import Context

PREAMBLE_SEQ = 0


class KVCache:
    """Hands out sequence ids (0 holds the run-wide preamble) and accounts for cells so that
    llama.cpp never runs out of either."""

    def __init__(self, context: Context, reserved_cells: int = 0):
        self.context = context
        self._free_seqs = list(range(context.n_seq_max - 1, PREAMBLE_SEQ, -1))
        self.capacity = self.free_cells = context.n_ctx - reserved_cells

    @property
    def free_seqs(self) -> int:
        return len(self._free_seqs)

    def open(self, cells: int, source: int | None = None, upto: int = -1) -> int:
        """A new sequence holding `cells` cells, sharing `source`'s cells below position `upto`."""
        if not self._free_seqs:
            raise RuntimeError("no free sequence id")
        if cells > self.free_cells:
            raise RuntimeError(f"{cells} KV cells asked for, {self.free_cells} free")
        seq = self._free_seqs.pop()
        self.free_cells -= cells
        if source is not None:
            self.copy(source, seq, upto)
        return seq

    def copy(self, source: int, seq: int, upto: int = -1) -> None:
        """Let `seq` share `source`'s cells below position `upto` (-1: all of them)."""
        if upto != 0:
            self.context.seq_cp(source, seq, -1, upto)

    def close(self, seq: int, cells: int) -> None:
        """Drop a sequence; cells no other sequence shares become free."""
        self.context.seq_rm(seq)
        self._free_seqs.append(seq)
        self.free_cells += cells

    def release_cells(self, cells: int) -> None:
        self.free_cells += cells
