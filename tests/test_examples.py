"""Labeled examples per category (examples.py) on the real tiny model: where they go in the
prompt, that hpd decodes them once per category, the leakage rule, and the same examples in
every mode."""
import csv
import json
import subprocess
import sys

import pytest

from hpd_gguf.examples import ExamplePicker, read_examples
from hpd_gguf.schema import Document, InputError, Schema, make_task
from tests.conftest import (DATA, MAX_VALUE_TOKENS, assert_matches_sequential, expected_prompt_tokens,
                            prompt_tokens_decoded, raw_extractor, trace)

EXAMPLES = DATA / "examples.jsonl"
ASKS = {"Shoes": ["Brand", "Gender", "Color", "Size"], "Vitamins": ["Brand", "Flavor", "Count"]}


def _documents(products, categories):
    return [{"id": f"d{i}", "text": p["text"], "category": c, "attributes": ASKS[c]}
            for i, (p, c) in enumerate(zip(products, categories))]


def _with_examples(**settings) -> dict:
    return {"schema": Schema(categories={}).with_examples(read_examples(EXAMPLES)), **settings}


def _text(model, tokens) -> str:
    return b"".join(model.pieces[t] for t in tokens).decode("utf-8", "replace")


def _task(document):
    return make_task(Document(**document), None)


def test_fixed_examples_cover_the_attributes_asked_and_similar_ones_come_last():
    examples = read_examples(EXAMPLES)
    shoe = _task({"id": "x", "text": "Vans Authentic Sneaker, Navy, 9", "category": "Shoes",
                  "attributes": ["Brand", "Color", "Size", "Gender"]})
    fixed = ExamplePicker(examples, 2)(shoe)
    assert [text for text, _, _ in fixed] == [examples[0].text, examples[5].text]  # state all four; first wins
    assert fixed[0][2] == {"Brand": "Clarks", "Color": "Black Synthetic", "Size": "7.5 M US", "Gender": "Women's"}
    similar = ExamplePicker(examples, 2, "similar")(shoe)
    assert similar[-1][0] == examples[2].text  # the Vans one, nearest the document
    assert ExamplePicker(examples, 0)(shoe) is None  # k=0: the built-in generic examples
    assert ExamplePicker(examples, 2)(_task({"id": "y", "text": "a toy", "category": "Toys",
                                             "attributes": ["Brand"]})) is None
    spelled_otherwise = _task({**shoe.document.model_dump(), "category": " shoes ", "attributes": shoe.names})
    assert ExamplePicker(examples, 2)(spelled_otherwise) == fixed  # case and spacing aside, as the schema


@pytest.mark.parametrize("choice, k", [("fixed", 4), ("similar", 4), ("fixed", 1)])  # k=1: 2 groups
def test_an_example_equal_to_the_document_is_never_shown_with_it(choice, k):
    examples = read_examples(EXAMPLES)
    pegasus, vans = examples[5], examples[2]  # with k=1, Vans alone makes a group
    for document, left_out in (({"id": pegasus.id, "text": "another text"}, pegasus),  # the same id
                               ({"id": "new", "text": "  nike WOMEN'S Air Zoom Pegasus 39 Running Shoes, White/Pink, 8 M US"},
                                pegasus),
                               ({"id": "new", "text": vans.text}, vans)):
        task = _task({**document, "category": "Shoes", "attributes": ASKS["Shoes"]})
        shown = ExamplePicker(examples, k, choice)(task)
        assert len(shown) == min(k, 3) and left_out.text not in [text for text, _, _ in shown]


def test_a_category_falls_in_groups_of_similar_examples_and_documents_get_the_nearest():
    examples = read_examples(EXAMPLES)
    picker = ExamplePicker(examples, 1)  # 4 labeled shoes, k=1: 2 groups (each of at least 2k on average)
    texts = {"Timberland Men's 6-Inch Premium Waterproof Boot, Wheat Nubuck, 11 W": examples[0],  # Clarks
             "Vans Authentic Sneaker, Black, 10": examples[2],  # its group: Vans alone
             "Skechers Kids' Light-Up Sneakers, Blue/Lime, Size 2 Little Kid": examples[2]}
    for text, shown in texts.items():
        task = _task({"id": text, "text": text, "category": "Shoes", "attributes": ASKS["Shoes"]})
        assert [t for t, _, _ in picker(task)] == [shown.text]
    assert [g.members for g in picker._groups["shoes"]] == [[0, 1, 3], [2]]  # places in the Shoes pool
    one_group = ExamplePicker(examples, 1, groups=1)
    for text in texts:
        task = _task({"id": text, "text": text, "category": "Shoes", "attributes": ASKS["Shoes"]})
        assert [t for t, _, _ in one_group(task)] == [examples[0].text]  # Clarks states all four


def test_documents_nearest_one_group_share_its_head(model, products):
    """Each group's head is decoded once and shared by the documents nearest it: the preamble,
    then each head once, then only each document's own tokens."""
    texts = [products[1]["text"], "Vans Authentic Sneaker, Black, 10", products[3]["text"], products[2]["text"]]
    documents = [{"id": f"g{i}", "text": t, "category": "Shoes", "attributes": ASKS["Shoes"]} for i, t in enumerate(texts)]
    settings = _with_examples(max_value_tokens=MAX_VALUE_TOKENS, examples_per_category=1)
    extractor = raw_extractor(model, mode="hpd", **settings)
    results, steps = trace(extractor, documents)
    prompts = [extractor.runner.prompt(extractor.task(d)) for d in documents]
    heads = list(dict.fromkeys(p.head for p in prompts))
    assert [p.head for p in prompts] == [heads[0], heads[1], heads[0], heads[1]]
    assert "Clarks" in _text(model, heads[0]) and "Vans Old Skool" in _text(model, heads[1])
    assert prompt_tokens_decoded(extractor, documents) == expected_prompt_tokens(extractor.layout, prompts, heads)
    assert extractor.stats.shared_heads == 2
    sequential = trace(raw_extractor(model, mode="sequential", **settings), documents)
    assert_matches_sequential(results, steps, ({r.id: r.values for r in sequential[0]}, sequential[1]))


def test_examples_go_in_the_shared_head_and_hpd_decodes_them_once(model, products):
    documents = _documents(products[1:9], ["Shoes", "Vitamins"] * 4)  # interleaved
    settings = _with_examples(max_value_tokens=MAX_VALUE_TOKENS, examples_per_category=2)
    sequential = trace(raw_extractor(model, mode="sequential", **settings), documents)
    extractor = raw_extractor(model, mode="hpd", **settings)
    results, steps = trace(extractor, documents)
    assert_matches_sequential(results, steps, ({r.id: r.values for r in sequential[0]}, sequential[1]))
    layout = extractor.layout
    prompts = [extractor.runner.prompt(extractor.task(d)) for d in documents]
    heads = {p.head for p in prompts}
    assert len(heads) == 2
    for head in heads:
        text = _text(model, head)
        own = [e.text for e in read_examples(EXAMPLES) if e.text in text]
        assert len(own) == 2 and "Levi's" not in text  # its category's two, not the generic ones
    # the preamble once, each head once, then only each document's own tokens
    assert prompt_tokens_decoded(extractor, documents) == expected_prompt_tokens(layout, prompts, list(heads))
    assert extractor.stats.shared_heads == 2
    without = raw_extractor(model, mode="hpd", max_value_tokens=MAX_VALUE_TOKENS)
    list(without.extract(documents))
    generic_heads = {without.layout.document(_task(d)).head for d in documents}
    cost = prompt_tokens_decoded(extractor, documents) - prompt_tokens_decoded(without, documents)
    assert cost == sum(map(len, heads)) - sum(map(len, generic_heads))  # per category, not per document


def test_every_mode_gets_the_same_examples(model, products):
    document = _documents(products[1:2], ["Shoes"])[0]
    settings = _with_examples(examples_per_category=2)
    hpd = raw_extractor(model, mode="hpd", **settings)
    sequential = raw_extractor(model, mode="sequential", **settings)
    json_mode = raw_extractor(model, mode="json", **settings)
    prompt = hpd.runner.prompt(hpd.task(document))
    assert sequential.runner.prompt(sequential.task(document)).full(0) == prompt.full(0)
    json_text = _text(model, json_mode.runner.prompt(json_mode.task(document), suffixes=False).tokens)
    hpd_text = _text(model, prompt.tokens)
    for example in read_examples(EXAMPLES)[:1] + read_examples(EXAMPLES)[5:]:  # the two picked
        assert example.text in json_text and example.text in hpd_text
    assert '{"Brand": "Clarks", "Gender": "Women\'s"' in json_text and "Brand: Clarks\nGender: Women's" in hpd_text


def test_schema_file_sets_instructions_generic_and_per_category_examples(model, tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({
        "instructions": "Pull out the values, one per line, as Attribute: value.",
        "examples": [{"text": "Acme Widget, Red", "category": "Gadgets", "values": {"Brand": "Acme", "Color": "Red"}}],
        "categories": {"Shoes": {"attributes": ["Brand", "Color"],
                                 "examples": [{"text": "Keds Champion Sneaker, White", "values": {"Brand": "Keds"}}]},
                       "*": ["Brand"]}}))
    extractor = raw_extractor(model, schema=Schema.load(path))
    preamble = _text(model, extractor.layout.preamble)
    assert "Pull out the values" in preamble and "Acme Widget" in preamble and "Levi's" not in preamble
    shoe = extractor.runner.prompt(extractor.task({"id": "1", "text": "Nike Air, Blue", "category": "Shoes"}))
    assert "Keds Champion Sneaker, White" in _text(model, shoe.head)
    assert "Brand: Keds\nColor: None" in _text(model, shoe.head)
    toy = extractor.runner.prompt(extractor.task({"id": "2", "text": "Lego set", "category": "Toys"}))
    assert "Keds" not in _text(model, toy.tokens) and "Acme Widget" in _text(model, toy.tokens)


def test_bad_examples_are_named_by_file_and_line(model_path, tmp_path):
    bad = tmp_path / "examples.jsonl"
    good = EXAMPLES.read_text().splitlines()[0]
    for line, message in [('{"id": "a", "text": "x", "category": "C", "gold": {"Brand": 3}}', "'values.Brand'"),
                          ('{"id": "a", "text": "x", "gold": {"Brand": "x"}}', "needs its 'category'"),
                          ('{"id": "a", "text": "x", "category": "C"}', "'values'"),
                          ("not json", "invalid JSON")]:
        bad.write_text(good + "\n" + line + "\n")
        with pytest.raises(InputError, match=rf"examples.jsonl:2: .*{message}"):
            read_examples(bad)
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "1", "text": "Nike Air", "category": "Shoes", "attributes": ["Brand"]}) + "\n")
    run = subprocess.run([sys.executable, "-m", "hpd_gguf", "run", str(model_path), str(docs), "--examples", str(bad)],
                         capture_output=True, text=True)
    assert run.returncode == 1 and f"{bad}:2: invalid JSON" in run.stderr and "Traceback" not in run.stderr
    with pytest.raises(InputError, match=r"category 'Shoes': examples\.0\.values\.Brand"):
        Schema.load_dict({"Shoes": {"attributes": ["Brand"], "examples": [{"text": "x", "values": {"Brand": 1}}]}})


def test_labeled_examples_from_a_spreadsheet_give_the_prompts_of_json_lines(model, products, tmp_path):
    """A table with a column per attribute (an empty cell: null), as Excel saves it."""
    labeled = read_examples(EXAMPLES)
    names = list(dict.fromkeys(name for example in labeled for name in example.values))
    table = tmp_path / "labeled.csv"
    with open(table, "w", newline="", encoding="utf-8-sig") as f:
        rows = csv.writer(f, delimiter=";")
        rows.writerow(["ID", "Text", "Category", *names])
        rows.writerows([e.id, e.text, e.category, *(e.values.get(n) or "" for n in names)] for e in labeled)
    documents = _documents(products, ["Shoes", "Vitamins", "Shoes", "Vitamins"])
    prompts = []
    for source in (EXAMPLES, table):
        extractor = raw_extractor(model, schema=Schema(categories={}).with_examples(read_examples(source)))
        prompts.append([extractor.runner.prompt(extractor.task(d)).tokens for d in documents])
    assert prompts[0] == prompts[1]
    table.write_text(table.read_text(encoding="utf-8-sig") + "e7;Nike Air;Shoes;Nike;;;;;;extra\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"labeled.csv:8: 10 cells where the header has 9 columns"):
        read_examples(table)


def test_run_with_examples_leaves_out_the_document_itself(model, model_path, tmp_path):
    """The examples file may hold the very documents being extracted (a labeled set checked
    against itself): each is extracted without its own answer in view."""
    extractor = raw_extractor(model, **_with_examples(examples_per_category=8))
    for example in read_examples(EXAMPLES):
        prompt = extractor.runner.prompt(extractor.task({"id": example.id, "text": example.text,
                                                         "category": example.category, "attributes": ["Brand"]}))
        before_its_text = _text(model, prompt.tokens[:prompt.head_end])
        assert example.text not in before_its_text and "Product:" in before_its_text
    out, docs = tmp_path / "out.jsonl", tmp_path / "docs.jsonl"
    docs.write_text(EXAMPLES.read_text() + json.dumps({"id": "b1", "text": "Bic Sport Kayak", "category": "Boats"}) + "\n")
    run = subprocess.run([sys.executable, "-m", "hpd_gguf", "run", str(model_path), str(docs), "-o", str(out),
                          "--examples", str(EXAMPLES), "--max-value-tokens", str(MAX_VALUE_TOKENS),
                          "--attributes", "Brand,Color"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [f"e{i}" for i in range(1, 7)] + ["b1"]
    have = ", ".join(map(repr, sorted({e.category for e in read_examples(EXAMPLES)})))
    assert f"note: no labeled examples for category 'Boats', whose documents were shown the generic ones " \
           f"(the labeled documents' categories: {have})" in run.stderr  # a typo, or another name


def test_documents_listing_the_same_attributes_in_another_order_share_their_head(model, products):
    """The prompt lists a category's names, and its examples' answers, in the first order seen;
    each result keeps its own document's order."""
    orders = [ASKS["Shoes"], ["Size", "Color", "Brand", "Gender"], ["Gender", "Brand", "Size", "Color"]]
    documents = [{"id": f"o{i}", "text": p["text"], "category": "Shoes", "attributes": orders[i % 3]}
                 for i, p in enumerate(products[1:7])]
    settings = _with_examples(max_value_tokens=MAX_VALUE_TOKENS, examples_per_category=2)
    extractor = raw_extractor(model, mode="hpd", **settings)
    results, steps = trace(extractor, documents)
    assert [list(r.values) for r in results] == [d["attributes"] for d in documents]
    prompts = [extractor.runner.prompt(extractor.task(d)) for d in documents]
    assert len({p.head for p in prompts}) == 1 and extractor.stats.shared_heads == 1
    head = _text(model, prompts[0].head)
    assert "Attributes: Brand; Gender; Color; Size\n" in head and "Size; Color" not in head
    assert "Brand: Clarks\nGender: Women's\nColor: Black Synthetic\nSize: 7.5 M US" in head
    sequential = trace(raw_extractor(model, mode="sequential", **settings), documents)
    assert_matches_sequential(results, steps, ({r.id: r.values for r in sequential[0]}, sequential[1]))


def test_ids_reused_by_documents_with_and_without_examples_of_their_own(model, products):
    """A category's own examples replace the generic ones, so its documents share less of the
    preamble: an id keeps its last sequence's part of the preamble, and the next gets or drops
    the difference (few ids, so that each is reused by both kinds)."""
    categories = ["Shoes", "Jackets"] * 4  # no labeled Jackets: the generic examples
    documents = [{"id": f"d{i}", "text": p["text"], "category": c, "attributes": ["Brand", "Color"]}
                 for i, (p, c) in enumerate(zip(products[:8], categories))]
    settings = _with_examples(max_value_tokens=MAX_VALUE_TOKENS, examples_per_category=2, n_seq_max=6,
                              max_resident=2)
    sequential = trace(raw_extractor(model, mode="sequential", **settings), documents)
    extractor = raw_extractor(model, mode="hpd", **settings)
    results, steps = trace(extractor, documents)
    assert_matches_sequential(results, steps, ({r.id: r.values for r in sequential[0]}, sequential[1]))
    shares = {extractor.runner.prompt(extractor.task(d)).shared for d in documents}
    assert len(shares) == 2
    context = extractor.engine.context
    held = {context.seq_pos_max(seq) + 1 for seq in range(1, context.n_seq_max)}
    assert held <= shares | {0}  # nothing past the preamble stays on a free id
