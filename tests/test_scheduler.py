"""Continuous scheduling on the real tiny model: admission order, rounds, chunked prefill,
the shared preamble and the shared heads of one category's documents."""
import random
from collections import Counter

from hpd_gguf.prompt import PromptLayout
from hpd_gguf.scheduler import _own_cells
from hpd_gguf.schema import make_task, Document
from hpd_gguf.sequence import DocumentState
from tests.conftest import (MAX_VALUE_TOKENS, Tracer, assert_matches_sequential, expected_prompt_tokens,
                            prompt_tokens_decoded, raw_extractor, trace)


def _hpd(model, documents, **settings):
    return trace(raw_extractor(model, mode="hpd", max_value_tokens=MAX_VALUE_TOKENS, **settings), documents)


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
    sequential = trace(raw_extractor(model, mode="sequential", max_value_tokens=MAX_VALUE_TOKENS), [document])
    assert_matches_sequential(results, steps, ({"wide": sequential[0][0].values}, sequential[1]))


def test_budget_smaller_than_one_prefill_is_chunked(model, extract, products, sequential_reference):
    layout = PromptLayout(model)
    longest = max(len(layout.document(make_task(Document(**p), None)).tokens) for p in products)
    budget = 24
    assert longest - len(layout.preamble) > budget
    extractor = raw_extractor(model, mode="hpd", max_value_tokens=MAX_VALUE_TOKENS, batch_tokens=budget)
    results, steps = trace(extractor, products[:8])
    # 24-token steps change batch shapes the most, so more near-ties part; none may be more
    assert_matches_sequential(results, steps, sequential_reference, floor=0.75)
    assert extractor.stats.tokens / extractor.stats.decode_calls <= budget


def test_preamble_is_decoded_once(model, products):
    extractor = raw_extractor(model, mode="hpd", max_value_tokens=MAX_VALUE_TOKENS)
    list(extractor.extract(products))
    layout = extractor.layout
    prompts = [layout.document(make_task(Document(**p), None)) for p in products]
    repeated = {head for head, n in Counter(p.head for p in prompts).items() if n > 1}
    assert len(repeated) == 1  # t08 and t09 ask the same of Coffee
    assert prompt_tokens_decoded(extractor, products) == expected_prompt_tokens(layout, prompts, list(repeated))
    assert all(p.shared >= len(layout.preamble) - 1 for p in prompts)

    static = raw_extractor(model, mode="hpd-static", max_value_tokens=MAX_VALUE_TOKENS)
    list(static.extract(products[:4]))  # each document its own preamble: 4 show it (20 took 43 s)
    assert prompt_tokens_decoded(static, products[:4]) == sum(len(p.tokens) + sum(map(len, p.suffixes))
                                                              for p in prompts[:4])


def _same_asks(products, categories):
    """The products' texts, each asked one fixed list per category, categories in turn."""
    asks = {"Shoes": ["Brand", "Gender", "Color", "Size"], "Vitamins": ["Brand", "Flavor", "Count"]}
    return [{"id": f"s{i}", "text": p["text"], "category": c, "attributes": asks[c]}
            for i, (p, c) in enumerate(zip(products, categories))]


def test_documents_of_one_category_decode_their_head_once(model, products):
    documents = _same_asks(products[:8], ["Shoes", "Vitamins"] * 4)  # interleaved
    sequential = trace(raw_extractor(model, mode="sequential", max_value_tokens=MAX_VALUE_TOKENS), documents)
    reference = ({r.id: r.values for r in sequential[0]}, sequential[1])
    extractor = raw_extractor(model, mode="hpd", max_value_tokens=MAX_VALUE_TOKENS)
    results, steps = trace(extractor, documents)
    assert_matches_sequential(results, steps, reference)
    layout = extractor.layout
    prompts = [layout.document(make_task(Document(**d), None)) for d in documents]
    heads = {p.head for p in prompts}
    assert len(heads) == 2 and all(len(h) >= 10 for h in heads)
    assert prompt_tokens_decoded(extractor, documents) == expected_prompt_tokens(layout, prompts, list(heads))

    # heads chunked across steps, released when their category moves on and made again,
    # with few sequence ids: the same answers, nothing left behind to block later documents
    # (runs of 5 outlast the 4 waiting and 1 resident that admission may take ahead)
    runs = _same_asks(products[:10] * 2, (["Shoes"] * 5 + ["Vitamins"] * 5) * 2)
    extractor = raw_extractor(model, mode="hpd", max_value_tokens=MAX_VALUE_TOKENS, max_resident=2,
                          batch_tokens=8, n_seq_max=6)
    results, steps = trace(extractor, runs)
    assert [r.id for r in results] == [d["id"] for d in runs]
    prompts = [layout.document(make_task(Document(**d), None)) for d in runs]
    assert prompt_tokens_decoded(extractor, runs) == expected_prompt_tokens(layout, prompts, list(heads) * 2)
    assert extractor.stats.shared_heads == 4
    sequential = trace(raw_extractor(model, mode="sequential", max_value_tokens=MAX_VALUE_TOKENS), runs)
    assert_matches_sequential(results, steps, ({r.id: r.values for r in sequential[0]}, sequential[1]), floor=0.75)


def test_admission_takes_a_category_at_a_time_and_keeps_the_input_order(model, products):
    documents = _same_asks(products[:12], ["Shoes", "Vitamins"] * 6)  # interleaved
    extractor = raw_extractor(model, mode="hpd", max_value_tokens=MAX_VALUE_TOKENS, max_resident=3)
    tracer = extractor.on_logits = Tracer()
    results = list(extractor.extract(documents))
    assert [r.id for r in results] == [d["id"] for d in documents]
    first_decode = {}  # the step each document first had logits in: its admission, in effect
    for step, ids in enumerate(tracer.decodes):
        for id in ids:
            first_decode.setdefault(id, step)
    admitted = sorted(documents, key=lambda d: (first_decode[d["id"]], documents.index(d)))
    switches = sum(a["category"] != b["category"] for a, b in zip(admitted, admitted[1:]))
    assert switches <= 4  # in arrival order every document would switch: 11
    assert extractor.stats.shared_heads == 2


def test_a_document_of_another_head_is_passed_over_by_no_more_than_wait_at_once(model, products):
    documents = _same_asks(products[:12], ["Shoes"] * 12)
    documents[1]["attributes"] = ["Brand"]  # a head of its own, in a stream of one head
    extractor = raw_extractor(model, mode="hpd", max_value_tokens=MAX_VALUE_TOKENS, max_resident=2)
    tracer = extractor.on_logits = Tracer()
    results = list(extractor.extract(documents))
    assert [r.id for r in results] == [d["id"] for d in documents]
    first_decode = {}
    for step, ids in enumerate(tracer.decodes):
        for id in ids:
            first_decode.setdefault(id, step)
    admitted = sorted(documents, key=lambda d: (first_decode[d["id"]], documents.index(d)))
    assert 1 < admitted.index(documents[1]) <= 1 + 2 * 2  # passed, by fewer than 2 × resident (was: last)


def test_resident_documents_hold_no_more_cells_than_their_budget(model, products, sequential_reference):
    def run(budget, documents=products):
        extractor = raw_extractor(model, mode="hpd", max_value_tokens=MAX_VALUE_TOKENS, max_resident_cells=budget)
        tracer, held = Tracer(), []  # per decode: (documents in flight, their own cells)

        def observe(branches, logits):
            tracer(branches, logits)
            running = extractor.engine.scheduler.running
            held.append((len(running), sum(map(_own_cells, running))))
        extractor.on_logits = observe
        return list(extractor.extract(documents)), tracer.steps, held

    one = min(map(_own_cells, _waiting(model, products)))
    results, steps, held = run(3 * one)
    assert all(cells <= 3 * one for _, cells in held)
    assert max(n for n, _ in held) in (2, 3)  # the budget, not the seats, bounds them
    assert [r.id for r in results] == [p["id"] for p in products]
    assert_matches_sequential(results, steps, sequential_reference)

    results, _, held = run(one // 2, products[:6])  # a document larger than the budget still runs, alone
    assert {n for n, _ in held} == {1} and len(results) == 6


def _waiting(model, products):
    """The products as the scheduler sees them before admission."""
    runner = raw_extractor(model, mode="hpd", max_value_tokens=MAX_VALUE_TOKENS).runner
    tasks = [runner.task(p) for p in products]
    return [DocumentState.create(t, runner.prompt(t), runner.stops, i) for i, t in enumerate(tasks)]
