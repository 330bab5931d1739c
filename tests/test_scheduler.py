"""Continuous scheduling on the real tiny model: admission order, rounds, chunked prefill,
the shared preamble."""
import random

from hpd_gguf.engine import Extractor
from hpd_gguf.prompt import PromptLayout
from hpd_gguf.schema import make_task, Document
from tests.conftest import MAX_VALUE_TOKENS, assert_matches_sequential, trace


def _hpd(model, documents, **settings):
    return trace(Extractor(model, mode="hpd", max_value_tokens=MAX_VALUE_TOKENS, **settings), documents)


def test_any_arrival_order_gives_the_sequential_answers(model, products, sequential_reference):
    shuffled = products[:]
    random.Random(7).shuffle(shuffled)
    results, steps = _hpd(model, shuffled, max_resident=5, batch_tokens=96)
    assert [r.id for r in results] == [p["id"] for p in shuffled]
    assert_matches_sequential(results, steps, sequential_reference)


def test_more_attributes_than_sequence_ids_runs_in_rounds(model, products):
    names = sorted({a for p in products for a in p["attributes"]})
    assert len(names) > 20
    document = {"id": "wide", "text": products[0]["text"], "category": "Shoes", "attributes": names}
    results, steps = _hpd(model, [document], n_seq_max=8)  # 7 free ids for 20+ branches
    assert list(results[0].values) == names
    sequential = trace(Extractor(model, mode="sequential", max_value_tokens=MAX_VALUE_TOKENS), [document])
    assert_matches_sequential(results, steps, ({"wide": sequential[0][0].values}, sequential[1]))


def test_budget_smaller_than_one_prefill_is_chunked(model, extract, products, sequential_reference):
    layout = PromptLayout(model)
    longest = max(len(layout.document(make_task(Document(**p), None)).tokens) for p in products)
    budget = 24
    assert longest - len(layout.preamble) > budget
    extractor = Extractor(model, mode="hpd", max_value_tokens=MAX_VALUE_TOKENS, batch_tokens=budget)
    results, steps = trace(extractor, products[:8])
    # 24-token steps change batch shapes the most, so more near-ties part; none may be more
    assert_matches_sequential(results, steps, sequential_reference, floor=0.75)
    assert extractor.stats.tokens / extractor.stats.decode_calls <= budget


def test_preamble_is_decoded_once(model, products):
    """With one-token values nothing generated is fed back, so every decoded token is counted:
    the preamble once, then each document's own segment and each branch's suffix."""
    extractor = Extractor(model, mode="hpd", max_value_tokens=1)
    list(extractor.extract(products))
    layout = extractor.layout
    prompts = [layout.document(make_task(Document(**p), None)) for p in products]
    expected = len(layout.preamble) + sum(len(p.tokens) - p.shared + sum(map(len, p.suffixes)) for p in prompts)
    assert extractor.stats.tokens == expected
    assert all(p.shared >= len(layout.preamble) - 1 for p in prompts)

    static = Extractor(model, mode="hpd-static", max_value_tokens=1)
    list(static.extract(products))
    assert static.stats.tokens - extractor.stats.tokens == sum(p.shared for p in prompts) - len(layout.preamble)
