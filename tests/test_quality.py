"""Evaluation scoring, constraints on real outputs, confidence."""
import gzip
import json

import pytest

from hpd_gguf.constraints import Choice, Number, Span, allowed
from hpd_gguf import Extractor
from tests.conftest import raw_extractor
from hpd_gguf.evaluate import evaluate_files, outcome, score
from hpd_gguf.schema import Attribute, Document, Task


def test_outcomes_follow_the_ave_scheme():
    assert outcome(None, [], None, False) == "NN"
    assert outcome(None, [], "Nike", False) == "NV"
    assert outcome("Nike", ["Nike"], None, False) == "VN"
    assert outcome("Nike", ["Nike", "NIKE Inc"], " NIKE Inc ", False) == "VC"
    assert outcome("Nike", ["Nike"], "nike", False) == "VW"
    assert outcome("Nike", ["Nike"], "nike", True) == "VC"


def test_scores_overall_per_category_and_attribute(tmp_path):
    gold = [{"id": "1", "category": "Shoes", "attributes": ["Brand", "Color"],
             "gold": {"Brand": "Nike", "Color": None}, "gold_all": {"Brand": ["Nike"], "Color": []}},
            {"id": 2, "category": "Tea", "attributes": ["Brand"], "gold": {"Brand": "Tazo"}}]  # a number, as hpd writes "2"
    pred = [{"id": "1", "values": {"Brand": "Nike", "Color": "Red"}}, {"id": "2", "values": {"Brand": "tazo"}}]
    (tmp_path / "gold.jsonl").write_text("\n".join(map(json.dumps, gold)))
    (tmp_path / "pred.jsonl").write_text("\n".join(map(json.dumps, pred)))
    scores = evaluate_files(tmp_path / "gold.jsonl", tmp_path / "pred.jsonl")
    overall = scores.as_dict()["overall"]
    assert (overall["VC"], overall["NV"], overall["VW"]) == (1, 1, 1)
    assert overall["precision"] == pytest.approx(1 / 3, abs=1e-4) and overall["recall"] == pytest.approx(1 / 2)
    assert scores.as_dict()["case_insensitive"]["VC"] == 2
    assert scores.by_category["Tea"].counts["VW"] == 1 and scores.by_attribute["Color"].counts["NV"] == 1
    assert "overall" in scores.table()
    assert score(gold, {}).missing == 2

    pred[0]["confidence"] = {"Brand": 0.9, "Color": 0.3}  # a run with --min-confidence 0, re-scored
    (tmp_path / "pred.jsonl").write_text("\n".join(map(json.dumps, pred)))
    rescored = evaluate_files(tmp_path / "gold.jsonl", tmp_path / "pred.jsonl", min_confidence=0.5).as_dict()["overall"]
    assert (rescored["VC"], rescored["NV"], rescored["NN"], rescored["VW"]) == (1, 0, 1, 1)


def test_gold_from_a_spreadsheet_scores_as_json_lines(tmp_path):
    """A table with a column per attribute: an empty cell is a null gold value."""
    (tmp_path / "gold.jsonl").write_text(
        json.dumps({"id": "1", "text": "Nike Air, Red", "category": "Shoes", "gold": {"Brand": "Nike", "Color": "Red"}})
        + "\n" + json.dumps({"id": "2", "text": "Tazo Chai", "category": "Tea", "gold": {"Brand": "Tazo", "Color": None}}))
    (tmp_path / "gold.csv").write_text("id,text,category,Brand,Color\n1,\"Nike Air, Red\",Shoes,Nike,Red\n2,Tazo Chai,Tea,Tazo,\n")
    (tmp_path / "pred.jsonl").write_text(json.dumps({"id": "1", "values": {"Brand": "Nike", "Color": None}}) + "\n"
                                         + json.dumps({"id": "2", "values": {"Brand": "tazo", "Color": "Black"}}))
    scores = [evaluate_files(tmp_path / gold, tmp_path / "pred.jsonl").as_dict() for gold in ("gold.jsonl", "gold.csv")]
    assert scores[0] == scores[1] and scores[0]["overall"]["NV"] == 1 and scores[0]["overall"]["VN"] == 1
    (tmp_path / "pred.csv.gz").write_bytes(gzip.compress(  # a results table, compressed to be kept
        "id,Brand,Color,Brand confidence,Color confidence,error\n1,Nike,,,,\n2,tazo,Black,,,\n".encode()))
    assert evaluate_files(tmp_path / "gold.csv", tmp_path / "pred.csv.gz").as_dict() == scores[0]


def test_constraint_rules():
    span = Span("Crocs Unisex Classic Clog, Navy")
    assert allowed(span, b" Cr", b"ocs", False) and not allowed(span, b" Crocs", b" Red", False)
    assert allowed(span, b" navy", b"\n", True) and allowed(span, b" n/", b"a", False)
    assert not allowed(span, b"", b"\n", True)  # an empty value cannot end; null is "None" or "n/a"
    choice = Choice(["Men", "Women", "Unisex"])
    assert allowed(choice, b" Wo", b"men", False) and not allowed(choice, b" Wo", b"ol", False)
    assert allowed(choice, b" women", b"\n", True) and not allowed(choice, b" Wo", b"\n", True)
    number = Number()
    assert allowed(number, b" 16", b" oz", False) and allowed(number, b" 2.2 lb", b"\n", True)
    assert not allowed(number, b" sixteen", b"\n", True)


def _constrained(products, kind, values=None):
    return [Task(document=Document(**{k: p[k] for k in ("id", "text", "category")}),
                 attributes=[Attribute(name=a, constraint=kind, values=values) for a in p["attributes"]])
            for p in products]


def test_span_constraint_is_exact_on_real_outputs(model, products):
    results = list(raw_extractor(model, max_value_tokens=6).extract(_constrained(products, "span")))
    checked = 0
    for result, product in zip(results, products):
        for value in result.values.values():
            if value is not None:
                checked += 1
                assert value.lower() in product["text"].lower(), (value, product["text"])
    assert checked > 10


def test_span_gives_the_models_own_value_or_null(model, products):
    """Span vetoes: where the free value is in the text it stays, otherwise the value is null."""
    tasks = _constrained(products[:8], None)
    free = list(raw_extractor(model, mode="sequential", max_value_tokens=6).extract(tasks))
    spans = list(raw_extractor(model, mode="sequential", max_value_tokens=6, constraint="span").extract(tasks))
    vetoed = 0
    for a, b, product in zip(free, spans, products):
        for name, value in a.values.items():
            in_text = value is not None and value.lower() in product["text"].lower()
            assert b.values[name] == (value if in_text else None), (name, value, b.values[name])
            vetoed += value is not None and not in_text
    assert vetoed > 0  # the test model invents values; the veto removed them


def test_min_confidence_nulls_only_the_unsure_values(model, products):
    tasks = _constrained(products[:6], None)
    free = list(raw_extractor(model, mode="sequential", max_value_tokens=6).extract(tasks))
    sure = list(raw_extractor(model, mode="sequential", max_value_tokens=6, min_confidence=0.5).extract(tasks))
    dropped = 0
    for a, b in zip(free, sure):
        for name, value in a.values.items():
            keep = value is None or a.confidence[name] >= 0.5
            assert b.values[name] == (value if keep else None)
            if not keep:
                dropped += 1
                assert b.confidence[name] == pytest.approx(1 - a.confidence[name], abs=1e-3)
    assert dropped > 0


def test_the_defaults_give_values_from_the_text_or_null(model, products):
    """By default (the best settings measured, QUALITY.md) a value is a span of the text that the
    model gave with confidence 0.5 at least, or null; --constraint none and --min-confidence 0
    give the model's own answers."""
    results = list(Extractor(model, max_value_tokens=6).extract(products))
    raw = {r.id: r for r in raw_extractor(model, max_value_tokens=6).extract(products)}
    kept = nulled = 0
    for result, product in zip(results, products):
        for name, value in result.values.items():
            if value is not None:
                kept += 1
                assert value.lower() in product["text"].lower() and result.confidence[name] >= 0.5
            nulled += value is None and raw[result.id].values[name] is not None
    assert kept > 10 and nulled > 0


def test_choice_and_number_constraints_are_exact_on_real_outputs(model, products):
    allowed_values = ["Men", "Women", "Kids", "Unisex"]
    results = list(raw_extractor(model, max_value_tokens=6).extract(_constrained(products[:8], "choice", allowed_values)))
    values = [v for r in results for v in r.values.values() if v is not None]
    assert values and all(v.lower() in {a.lower() for a in allowed_values} for v in values)
    import re
    results = list(raw_extractor(model, max_value_tokens=6).extract(_constrained(products[:8], "number")))
    numbers = [v for r in results for v in r.values.values() if v is not None]
    assert numbers and all(re.fullmatch(r"\d[\d.,/]*(-\d[\d.,/]*)?( ?[A-Za-z]+\.?( [A-Za-z]+\.?)?)?", v) for v in numbers)


def test_confidence_is_a_probability(extract, products):
    for result in extract(products[:4]):
        assert set(result.confidence) == set(result.values)
        assert all(0.0 < c <= 1.0 for c in result.confidence.values())


def test_json_answers_keep_the_same_constraints():
    from hpd_gguf.reference import parse_json_answer

    task = Task(document=Document(id="1", text="Crocs Unisex Classic Clog, Navy"),
                attributes=[Attribute(name="Brand", constraint="span"), Attribute(name="Color", constraint="span"),
                            Attribute(name="Gender")])
    result = parse_json_answer(task, '{"Brand": "crocs", "Color": "Red", "Gender": "Men"}', 0.25)
    assert result.values == {"Brand": "crocs", "Color": None, "Gender": "Men"}
    assert result.confidence == {"Brand": 0.25, "Color": 0.25, "Gender": 0.25}
