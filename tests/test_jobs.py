"""The long-lived engine on the real tiny model: jobs from several callers share its steps, a
cancelled job leaves nothing behind, `async for` runs inside an event loop."""
import asyncio
import threading
import time

import pytest

from hpd_gguf import JobCancelled
from tests.conftest import (MAX_VALUE_TOKENS, Tracer, assert_matches_sequential, free_but_kept_heads,
                            kept_head_seqs, prompt_tokens_decoded, raw_extractor, trace)


def wait_until_idle(engine, limit=60.0):
    start = time.time()
    while engine._thread is not None:
        assert time.time() - start < limit, "the engine did not go idle"
        time.sleep(0.02)


def kv_in_use(engine) -> list[int]:
    """Sequence ids (the preamble's apart) that still hold cells past the preamble in llama.cpp's
    cache (a free id keeps the preamble's, for its next sequence)."""
    preamble = len(engine.runner.layout.preamble)
    return [s for s in range(1, engine.context.n_seq_max) if engine.context.seq_pos_max(s) >= preamble]


@pytest.fixture
def engine_extractor(model):
    extractor = raw_extractor(model, max_value_tokens=MAX_VALUE_TOKENS)
    yield extractor
    extractor.close()


def test_concurrent_jobs_share_steps_and_keep_their_order(engine_extractor, products, sequential_reference):
    tracer = engine_extractor.on_logits = Tracer()
    parts = [products[i::4] for i in range(4)]
    got: dict[int, list] = {}
    barrier = threading.Barrier(len(parts))

    def caller(i):
        barrier.wait()
        got[i] = list(engine_extractor.submit(parts[i]))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(len(parts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, part in enumerate(parts):
        assert [r.id for r in got[i]] == [p["id"] for p in part]
    owner = {p["id"]: i for i, part in enumerate(parts) for p in part}
    assert any(len({owner[d] for d in ids}) > 1 for ids in tracer.decodes), "no decode served two callers"
    assert_matches_sequential([r for i in got for r in got[i]], tracer.steps, sequential_reference)


def test_requests_that_come_together_are_decoded_in_the_order_they_came(model, products):
    """A server's callers that send at once: each request's documents go in together, in the
    order the requests came, so the first finish first (taken one from each in turn, they all
    finished with the last); a request that comes during a large one waits for its share only."""
    extractor = raw_extractor(model, max_value_tokens=MAX_VALUE_TOKENS, max_resident=4)
    tracer = extractor.on_logits = Tracer()
    came = threading.Event()

    def waiting_source():  # keeps the engine idle, polling, while the requests come
        came.wait(60)
        yield from ()

    same = {"category": "Shoes", "attributes": ["Brand", "Color"]}  # one head: admitted as they wait
    requests = [[dict(p, id=f"{name}{i}", **same) for i, p in enumerate(products[:3])] for name in "ABC"]
    idle = extractor.submit(waiting_source())
    jobs = [extractor.submit(documents) for documents in requests]
    assert [[r.id for r in job] for job in jobs] == [[d["id"] for d in documents] for documents in requests]
    came.set()
    assert list(idle) == []
    first_decode = first_decodes(tracer)
    assert max(first_decode[f"A{i}"] for i in range(3)) < min(first_decode[f"C{i}"] for i in range(3))
    tracer.decodes.clear()  # a large request holds back no later one beyond its share
    large = iter(extractor.submit([dict(p, id=f"L{i}", **same) for i, p in enumerate(products)]))
    next(large)
    assert [r.id for r in extractor.submit([dict(products[0], id=f"S{i}", **same) for i in range(2)])] == ["S0", "S1"]
    assert len(list(large)) == len(products) - 1
    first_decode = first_decodes(tracer)
    assert first_decode["S1"] < first_decode[f"L{len(products) - 1}"]
    extractor.close()


def first_decodes(tracer: Tracer) -> dict[str, int]:
    """Each document's first decode with logits, by its id."""
    first: dict[str, int] = {}
    for index, ids in enumerate(tracer.decodes):
        for id_ in ids:
            first.setdefault(id_, index)
    return first


def test_documents_are_read_in_while_a_decode_runs_and_the_cache_is_left_alone(model, products):
    """Each step reads documents in between starting its decode and taking its logits (on a GPU
    the reading overlaps the decode); nothing touches the KV cache in between, cancellations
    included, so no branch of a step in flight is freed."""
    from hpd_gguf.engine import Engine
    from hpd_gguf.llama import Context

    events = []  # (kind of call, whether a decode was in flight)
    decoding = threading.Event()  # set from submit to logits
    spied = {(Context, "submit"): "submit", (Context, "logits"): "logits", (Context, "seq_rm"): "cache",
             (Context, "seq_cp"): "cache", (Engine, "_read_one"): "read"}
    originals = {key: getattr(*key) for key in spied}

    def spy(key):
        def call(*args, **kwargs):
            kind = spied[key]
            events.append((kind, decoding.is_set()))
            if kind == "submit":
                decoding.set()
            elif kind == "logits":
                decoding.clear()
            return originals[key](*args, **kwargs)
        return call

    for key in spied:
        setattr(*key, spy(key))
    try:
        extractor = raw_extractor(model, max_value_tokens=MAX_VALUE_TOKENS, max_resident=2)
        cancelled = extractor.submit([dict(p, id=f"c{p['id']}") for p in products])
        kept = extractor.submit(dict(p) for p in products[:4])  # an iterator: read as it comes
        next(iter(cancelled))
        cancelled.cancel()
        assert [r.id for r in kept] == [p["id"] for p in products[:4]]
        extractor.close()
    finally:
        for key, method in originals.items():
            setattr(*key, method)
    assert ("read", True) in events, "no document was read in while a decode ran"
    assert ("cache", True) not in events, "the cache was changed while a decode ran"
    assert ("cache", False) in events  # branches were opened and freed, between the decodes


def test_a_cancelled_job_frees_its_ids_and_cells_within_a_step(engine_extractor, products):
    engine = engine_extractor.engine
    list(engine_extractor.submit(products[:2]))
    wait_until_idle(engine)
    idle = free_but_kept_heads(engine)
    many = [dict(p, id=f"{c}-{p['id']}") for c in range(4) for p in products]
    job = engine_extractor.submit(many)
    results = iter(job)
    first = next(results)
    calls = engine_extractor.stats.decode_calls
    job.cancel()
    wait_until_idle(engine)
    assert engine_extractor.stats.decode_calls - calls <= 1  # at most the step under way when it came
    assert first.id == many[0]["id"] and engine.documents_done < len(many) + 2
    assert free_but_kept_heads(engine) == idle and engine.resident == 0 and engine.queued == 0
    assert kv_in_use(engine) == kept_head_seqs(engine)
    with pytest.raises(JobCancelled):
        next(results)
    assert [r.id for r in engine_extractor.submit(products[:3])] == [p["id"] for p in products[:3]]  # it goes on


def test_a_stopped_job_finishes_what_it_began_and_ends_on_a_prefix(model, products):
    """Ctrl-C in `hpd-gguf run`: the documents waiting behind those begun never start."""
    extractor = raw_extractor(model, max_value_tokens=MAX_VALUE_TOKENS, max_resident=2)
    engine = extractor.engine
    many = [dict(p, id=f"{c}-{p['id']}") for c in range(2) for p in products]
    job = extractor.submit(many)
    results = iter(job)
    first = next(results)
    read = job.read  # 2 resident and up to 4 waiting behind them
    job.stop()
    ids = [first.id] + [r.id for r in results]
    assert ids == [d["id"] for d in many[:len(ids)]] and job.progress.total == len(ids)
    assert len(ids) <= read and engine.documents_done == len(ids)  # those cut never ran
    wait_until_idle(engine)
    assert engine.resident == 0 and engine.queued == 0 and kv_in_use(engine) == kept_head_seqs(engine)
    assert [r.id for r in extractor.submit(products[:3])] == [p["id"] for p in products[:3]]  # it goes on
    extractor.close()


def test_a_head_made_again_stays_for_the_next_request_of_its_category(engine_extractor, model, products):
    """A head whose category comes back after it went (a server's requests) stays when idle: the
    next documents copy it instead of decoding it again.  One made once goes at once."""
    asks = ["Brand", "Gender", "Color", "Size"]
    requests = [[{"id": f"{n}{i}", "text": p["text"], "category": "Shoes", "attributes": asks}
                 for i, p in enumerate(products[3 * n: 3 * n + 2 + (n == 2)])] for n in range(3)]
    engine, tracer = engine_extractor.engine, Tracer()
    engine_extractor.on_logits = tracer
    results, made, decoded = [], [], []
    for request in requests:
        results += list(engine_extractor.submit(request))
        wait_until_idle(engine)  # the last step counted
        made.append(engine_extractor.stats.shared_heads)
        decoded.append(prompt_tokens_decoded(engine_extractor, [d for r in requests[:len(made)] for d in r]))
    assert made == [1, 2, 2]  # gone after the first request; kept after the second, copied in the third
    prompts = [engine_extractor.layout.document(engine_extractor.task(d)) for d in requests[2]]
    assert decoded[2] - decoded[1] == sum(len(p.tokens) - p.head_end + sum(map(len, p.suffixes)) for p in prompts)
    every = [d for r in requests for d in r]
    sequential = trace(raw_extractor(model, mode="sequential", max_value_tokens=MAX_VALUE_TOKENS), every)
    assert_matches_sequential(results, tracer.steps, ({r.id: r.values for r in sequential[0]}, sequential[1]))


def test_progress_and_a_bad_document(engine_extractor, products):
    job = engine_extractor.submit(products[:4])
    assert job.progress.total == 4
    assert len(list(job)) == 4
    progress = job.progress
    assert (progress.done, progress.total) == (4, 4) and progress.documents_per_second > 0
    done = engine_extractor.engine.documents_done
    bad = engine_extractor.submit(products[:2] + [{"id": "x", "text": 7}] + products[2:12])
    results = iter(bad)
    assert [next(results).id, next(results).id] == ["t00", "t01"]  # what came before stands
    with pytest.raises(ValueError, match=r"^document 2 \(id 'x'\): 'text': input should be a valid string$"):
        next(results)
    wait_until_idle(engine_extractor.engine)
    assert engine_extractor.engine.documents_done - done == 2  # none after it was decoded for nothing
    with pytest.raises(ValueError, match=r"^document 0: a document is a dict or an hpd_gguf.Document, not str$"):
        list(engine_extractor.submit(["Nike Air, Red"]))


def test_a_dataframe_gives_a_document_per_row_and_one_document_alone_is_refused(engine_extractor, products):
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(products[:3]).assign(id=[11, 12, 13])  # a column of numbers, as SKUs come
    results = list(engine_extractor.extract(frame))
    assert [r.id for r in results] == ["11", "12", "13"] and [list(r.values) for r in results] == \
        [p["attributes"] for p in products[:3]]
    with pytest.raises(TypeError, match=r"pass documents as a list .*extract\(\[document\]\)"):
        next(engine_extractor.extract(products[0]))


def test_async_for_inside_a_running_event_loop(engine_extractor, products):
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        clock = asyncio.create_task(ticker())
        jobs = [engine_extractor.submit(products[:5]), engine_extractor.submit(products[5:9])]
        results = await asyncio.gather(*[_collect(job) for job in jobs])
        clock.cancel()
        return results, ticks

    async def _collect(job):
        return [r.id async for r in job]

    (first, second), ticks = asyncio.run(main())
    assert first == [p["id"] for p in products[:5]] and second == [p["id"] for p in products[5:9]]
    assert ticks > 10  # the loop kept running while the engine decoded


def test_a_stopped_extract_in_a_reference_mode_ends_after_the_document_under_way(model, products):
    extractor = raw_extractor(model, mode="sequential", max_value_tokens=MAX_VALUE_TOKENS)
    results = extractor.extract(products)
    first = next(results)
    extractor.stop()
    assert [first.id] + [r.id for r in results] == [products[0]["id"]]


def test_stop_ends_every_extract_under_way(model, products):
    """Two extract() calls on one Extractor (two windows of a desktop tool): stop() ends both,
    each with a prefix of its input."""
    extractor = raw_extractor(model, max_value_tokens=MAX_VALUE_TOKENS, max_resident=2)
    inputs = [products[:10], products[10:]]
    calls = [extractor.extract(documents) for documents in inputs]
    firsts = [next(call) for call in calls]
    extractor.stop()
    for documents, first, call in zip(inputs, firsts, calls):
        ids = [first.id] + [r.id for r in call]
        assert ids == [d["id"] for d in documents[:len(ids)]] and len(ids) < len(documents)
    extractor.close()


def test_a_slow_source_holds_up_no_document_and_a_broken_one_keeps_what_came_before(engine_extractor, products):
    """A generator (a pipe, a network) that waits between documents: each is decoded as it
    comes, not when the next one does; stop() and cancel() end a job whose source waits."""
    came = threading.Event()

    def source(then_raise: bool):
        yield products[0]
        came.wait(60)  # until the first result is out (it held up the first before)
        yield products[1]
        if then_raise:
            raise OSError("the connection was reset")
        came.wait(60)

    start = time.time()
    results = iter(engine_extractor.submit(source(then_raise=True)))
    assert next(results).id == products[0]["id"] and time.time() - start < 30
    came.set()
    assert next(results).id == products[1]["id"]
    with pytest.raises(OSError, match="the connection was reset"):
        next(results)
    came.clear()
    waiting = engine_extractor.submit(source(then_raise=False))
    assert next(iter(waiting)).id == products[0]["id"]
    waiting.stop()  # Ctrl-C in `hpd-gguf run -` while nothing more is typed
    assert list(waiting) == [] and waiting.progress.total == 1
    cancelled = engine_extractor.submit(source(then_raise=False))
    assert next(iter(cancelled)).id == products[0]["id"]
    cancelled.cancel()
    with pytest.raises(JobCancelled):
        next(iter(cancelled))
    wait_until_idle(engine_extractor.engine)
    came.set()  # the sources' readers end
