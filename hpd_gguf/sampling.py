"""Greedy choice over one decode's logits: each row's best token and its log-probability.

Vectorised over the batch, in blocks of rows that stay in the CPU cache, on as many threads
as llama.cpp uses (its threads are idle between decodes); never a Python loop over the
vocabulary.  On 200 rows of a 151,936-token vocabulary this takes ~26 ms on 2 cores, against
~85 ms for one whole-array pass (which also allocates a copy of the logits).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

BLOCK_ROWS = 4


class Greedy:
    """Its worker threads end when it is garbage-collected (with its Extractor)."""

    def __init__(self, n_vocab: int, threads: int = 1):
        self.threads = max(1, threads)
        self._scratch = [np.empty((BLOCK_ROWS, n_vocab), np.float32) for _ in range(self.threads)]
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def __call__(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(best token, its logit, log of the softmax denominator relative to that logit) per row."""
        n = len(logits)
        tokens, best, log_total = np.empty(n, np.int64), np.empty(n, np.float32), np.empty(n, np.float32)

        def rows(worker: int, lo: int, hi: int) -> None:
            for start in range(lo, hi, BLOCK_ROWS):
                stop = min(start + BLOCK_ROWS, hi)
                block, scratch = logits[start:stop], self._scratch[worker][: stop - start]
                tokens[start:stop] = block.argmax(axis=1)
                best[start:stop] = block[np.arange(stop - start), tokens[start:stop]]
                np.subtract(block, best[start:stop, None], out=scratch)
                np.exp(scratch, out=scratch)
                log_total[start:stop] = np.log(scratch.sum(axis=1))

        if self._pool is None or n <= BLOCK_ROWS:
            rows(0, 0, n)
        else:
            bounds = np.linspace(0, n, self.threads + 1).astype(int)
            list(self._pool.map(rows, range(self.threads), bounds[:-1], bounds[1:]))
        return tokens, best, log_total
