"""Limits: many attributes, long documents, a full KV cache; nothing may abort the process."""
import pytest

from tests.conftest import raw_extractor
from hpd_gguf.llama import Batch, Context, LlamaError


def test_300_attributes_on_one_document(extract):
    names = [f"Attribute {i}" for i in range(1, 301)]
    document = {"id": "wide", "text": "Crocs Unisex Classic Clog, Navy, Size 9", "attributes": names}
    result = extract([document], max_value_tokens=2)[0]
    assert list(result.values) == names and result.error is None


@pytest.mark.parametrize("count", [1, 2, 17])
def test_small_attribute_counts(extract, count):
    names = [f"A{i}" for i in range(count)]
    result = extract([{"id": "x", "text": "Lodge Cast Iron Skillet", "attributes": names}], max_value_tokens=2)[0]
    assert list(result.values) == names


def test_a_document_longer_than_the_context(model):
    long_text = "Stainless steel water bottle, 32 oz, leak proof. " * 200
    documents = [{"id": "short", "text": "Crocs Classic Clog, Navy", "attributes": ["Color"]},
                 {"id": "long", "text": long_text, "attributes": ["Brand", "Size"]},
                 {"id": "after", "text": "Nike Air Max, Red", "attributes": ["Color"]}]
    for mode in ("hpd", "sequential", "json"):
        results = list(raw_extractor(model, mode=mode, n_ctx=1024, max_value_tokens=4).extract(documents))
        assert [r.id for r in results] == ["short", "long", "after"]
        assert "too long" in results[1].error and results[1].values == {"Brand": None, "Size": None}
        assert results[0].error is None and results[2].error is None
    with pytest.warns(UserWarning, match="truncated"):
        results = list(raw_extractor(model, n_ctx=1024, truncate=True, max_value_tokens=4).extract(documents))
    assert results[1].error is None and list(results[1].values) == ["Brand", "Size"]


@pytest.mark.parametrize("mode", ["sequential", "json"])
def test_a_bad_document_in_a_reference_mode_is_named_after_the_results_before_it(model, mode):
    documents = [{"id": "a", "text": "Crocs Classic Clog, Navy", "attributes": ["Color"]}, {"id": "b", "text": "x"}]
    results = raw_extractor(model, mode=mode, max_value_tokens=2).extract(documents)
    assert next(results).id == "a"
    with pytest.raises(ValueError, match=r"^document 1 \(id 'b'\): no attributes: list them in its \"attributes\", or give "
                       r"--attributes or --schema$"):
        next(results)


def test_a_full_kv_cache_is_an_error_not_an_abort(model):
    context = Context(model, n_ctx=256, n_batch=256, n_seq_max=2)
    batch = Batch(256)
    tokens = model.tokenize("hello world " * 200)
    batch.add(tokens[:200], 0, (0,), False)
    context.decode(batch)
    batch.clear()
    batch.add(tokens[:100], 0, (1,), True)
    with pytest.raises(LlamaError, match="KV cache full"):
        context.decode(batch)
    assert context.seq_pos_max(1) == -1  # the failed decode left nothing behind
    batch.clear()
    batch.add(tokens[:40], 0, (1,), True)
    assert context.decode(batch).shape == (1, model.n_vocab)  # the cache still works


def test_oversized_batches_and_sequence_ids_are_refused(model):
    context = Context(model, n_ctx=512, n_batch=64, n_seq_max=4)
    big = Batch(128)
    big.add(list(range(100, 200)), 0, (0,), True)
    with pytest.raises(LlamaError, match="exceeds n_batch"):
        context.decode(big)
    with pytest.raises(LlamaError, match="n_seq_max must be 1..256"):
        Context(model, n_ctx=512, n_batch=64, n_seq_max=300)
