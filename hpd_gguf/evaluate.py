"""Scoring predictions against gold values with the standard AVE scheme.

NN: gold null, predicted null      NV: gold null, predicted a value
VN: gold a value, predicted null   VC: the right value   VW: a wrong value
precision = VC / (NV + VC + VW), recall = VC / (VN + VC + VW), F1 their harmonic mean.
A value is right when it equals an accepted value after trimming (and, in the case-insensitive
variant, lower-casing).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .csv_files import is_csv, read_results
from .jsonl import load_jsonl, load_labeled_lines
from .schema import InputError, as_id

OUTCOMES = ("NN", "NV", "VN", "VC", "VW")


@dataclass
class Counts:
    counts: Counter = field(default_factory=Counter)

    def add(self, outcome: str) -> None:
        self.counts[outcome] += 1

    @property
    def precision(self) -> float:
        c = self.counts
        return c["VC"] / max(1, c["NV"] + c["VC"] + c["VW"])

    @property
    def recall(self) -> float:
        c = self.counts
        return c["VC"] / max(1, c["VN"] + c["VC"] + c["VW"])

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict:
        return {**{k: self.counts[k] for k in OUTCOMES}, "precision": round(self.precision, 4),
                "recall": round(self.recall, 4), "f1": round(self.f1, 4)}


def outcome(gold: str | None, accepted: list[str], predicted: str | None, fold_case: bool) -> str:
    norm = (lambda s: s.strip().lower()) if fold_case else (lambda s: s.strip())
    if gold is None:
        return "NN" if predicted is None else "NV"
    if predicted is None:
        return "VN"
    return "VC" if norm(predicted) in {norm(a) for a in accepted or [gold]} else "VW"


@dataclass
class Scores:
    """Exact and case-insensitive counts, overall, per category and per attribute."""

    exact: Counts = field(default_factory=Counts)
    folded: Counts = field(default_factory=Counts)
    by_category: dict[str, Counts] = field(default_factory=lambda: defaultdict(Counts))
    by_attribute: dict[str, Counts] = field(default_factory=lambda: defaultdict(Counts))
    missing: int = 0  # gold documents without a prediction
    unmatched: int = 0  # predictions of no gold document

    def add(self, category: str, attribute: str, gold, accepted, predicted) -> None:
        exact = outcome(gold, accepted, predicted, False)
        self.exact.add(exact)
        self.folded.add(outcome(gold, accepted, predicted, True))
        self.by_category[category].add(exact)
        self.by_attribute[attribute].add(exact)

    def as_dict(self) -> dict:
        return {"overall": self.exact.as_dict(), "case_insensitive": self.folded.as_dict(),
                "missing_predictions": self.missing, "predictions_without_gold": self.unmatched,
                "by_category": {k: v.as_dict() for k, v in sorted(self.by_category.items())},
                "by_attribute": {k: v.as_dict() for k, v in sorted(self.by_attribute.items())}}

    def table(self) -> str:
        def row(name: str, c: Counts) -> str:
            n = c.counts
            return (f"{name[:28]:<28} " + " ".join(f"{n[k]:>5}" for k in OUTCOMES)
                    + f" {c.precision:>6.3f} {c.recall:>6.3f} {c.f1:>6.3f}")

        header = f"{'':<28} " + " ".join(f"{k:>5}" for k in OUTCOMES) + "      P      R     F1"
        lines = [header, row("overall", self.exact), row("overall (case-insensitive)", self.folded)]
        if self.missing:
            lines.append(f"({self.missing} gold documents had no prediction; counted as null)")
        if self.unmatched:
            lines.append(f"({self.unmatched} predictions have an id no gold document has; not scored)")
        lines += ["", "by category", header] + [row(k, v) for k, v in sorted(self.by_category.items())]
        lines += ["", "by attribute", header] + [row(k, v) for k, v in sorted(self.by_attribute.items())]
        return "\n".join(lines)


def score(gold_records: list[dict], predictions: dict[str, dict]) -> Scores:
    """Score predictions ({id: {attribute: value}}) against gold records."""
    scores = Scores()
    for record in gold_records:
        values = predictions.get(record["id"])
        if values is None:
            scores.missing += 1
            values = {}
        gold_all = record.get("gold_all") or {}
        for attribute in record.get("attributes") or list(record["gold"]):
            scores.add(record.get("category") or "-", attribute, record["gold"].get(attribute),
                       gold_all.get(attribute) or [], values.get(attribute))
    scores.unmatched = len(predictions.keys() - {record["id"] for record in gold_records})
    return scores


def evaluate_files(gold_path: str | Path, pred_path: str | Path, min_confidence: float = 0.0) -> Scores:
    gold = []
    for where, record in load_labeled_lines(gold_path):
        identity = as_id(record.get("id"))
        if identity is None or not isinstance(record.get("gold"), dict):
            raise InputError(where, "a gold record needs an 'id' and a 'gold' object")
        gold.append({**record, "id": identity})
    predictions = {}
    for record in read_results(pred_path) if is_csv(pred_path) else load_jsonl(pred_path):
        if "id" in record and isinstance(record.get("values"), dict):
            predictions[str(record["id"])] = _confident(record, min_confidence)
    return score(gold, predictions)


def _confident(record: dict, min_confidence: float) -> dict:
    """The record's values, those less confident than min_confidence null (what --min-confidence
    does to a run: a run with 0 re-scored at any threshold)."""
    confidence = record.get("confidence") or {}
    return {name: None if value is not None and confidence.get(name, 1.0) < min_confidence else value
            for name, value in record["values"].items()}
