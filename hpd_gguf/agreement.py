"""How closely two decodings agree, token by token: the engine's equivalence tolerance.

llama.cpp's kernels round differently with a batch's shape (flash attention takes another path
past a few dozen tokens, and cell order changes sums) and from one CPU or GPU to another, so a
near-tie between the two best tokens may flip, and the value then goes on differently. `hpd`'s
values are `sequential`'s except where the two decodings part at a near-tie; a parting where
both had a clear winner is a defect. The tests and the GPU check hold the engine to this.

    trace = extractor.on_logits = TokenTrace()
    results = list(extractor.extract(documents))
    agreement(results, trace.steps, reference_results, reference_trace.steps).unexplained  # []
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NEAR_TIE = 0.75  # logits move by up to ~0.5 between batch shapes on smollm2-135m


class TokenTrace:
    """on_logits observer: steps[(document id, attribute)] = [(token, margin between the two
    best logits), ...], the unconstrained best token of each decode of that value."""

    def __init__(self):
        self.steps: dict[tuple[str, str], list[tuple[int, float]]] = {}

    def __call__(self, branches, logits) -> None:
        if len(logits) == 0:
            return
        top2 = np.partition(logits, -2, axis=1)[:, -2:]
        best = logits.argmax(axis=1)
        for row, branch in enumerate(branches):
            key = (branch.doc.task.id, branch.doc.task.names[branch.index])
            self.steps.setdefault(key, []).append((int(best[row]), float(top2[row, 1] - top2[row, 0])))


def parts_at_near_tie(a: list, b: list, near_tie: float = NEAR_TIE) -> bool:
    """Whether two token traces agree, or part first where either had a near-tie."""
    for (token_a, margin_a), (token_b, margin_b) in zip(a, b):
        if token_a != token_b:
            return min(margin_a, margin_b) < near_tie
    return len(a) == len(b) or min(m for _, m in a + b) < near_tie


@dataclass
class Agreement:
    values: int
    equal: int
    unexplained: list[tuple[str, str]] = field(default_factory=list)  # parted where both had a clear winner

    @property
    def share(self) -> float:
        return self.equal / max(1, self.values)


def agreement(results, steps: dict, reference, reference_steps: dict, near_tie: float = NEAR_TIE) -> Agreement:
    """`results` against `reference` (Results of the same documents, in any order), each value
    equal or parted at a near-tie."""
    expected = {(r.id, name): value for r in reference for name, value in r.values.items()}
    differing = [(r.id, name) for r in results for name, value in r.values.items()
                 if value != expected[r.id, name]]
    unexplained = [key for key in differing  # a value with no trace on either side is not excused
                   if not (key in steps and key in reference_steps
                           and parts_at_near_tie(steps[key], reference_steps[key], near_tie))]
    values = sum(len(r.values) for r in results)
    return Agreement(values, values - len(differing), unexplained)
