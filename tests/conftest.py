import json
from pathlib import Path

import pytest

from hpd_gguf import models
from hpd_gguf import Extractor
from hpd_gguf.agreement import Agreement, TokenTrace, agreement
from hpd_gguf.llama import Model
from hpd_gguf.schema import Result

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
OAMINE = ROOT.parent / "shared" / "data" / "oamine_train.jsonl"
TEST_MODEL = "smollm2-135m"
MAX_VALUE_TOKENS = 6  # short values keep the suite fast; the logic is the same
# The model's own answers: the tests compare decodings, not the filters the defaults put after
# them (a confidence near the 0.5 threshold falls either side with the batch's rounding).
RAW = {"constraint": None, "min_confidence": 0.0}


def raw_extractor(model, **settings) -> Extractor:
    return Extractor(model, **{**RAW, **settings})


class Tracer(TokenTrace):
    """TokenTrace that also keeps the documents of each decode."""

    def __init__(self):
        super().__init__()
        self.decodes: list[set] = []

    def __call__(self, branches, logits):
        self.decodes.append({b.doc.task.id for b in branches})
        super().__call__(branches, logits)


def trace(extractor, documents):
    """The results and the token traces of a run."""
    tracer = extractor.on_logits = Tracer()
    results = list(extractor.extract(documents))
    return results, tracer.steps


@pytest.fixture(scope="session")
def model_path() -> Path:
    return models.resolve(TEST_MODEL, log=print)  # pulled when missing


@pytest.fixture(scope="session")
def model(model_path) -> Model:
    return Model(model_path)


@pytest.fixture(scope="session")
def products() -> list[dict]:
    return [json.loads(line) for line in (DATA / "products20.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def oamine() -> list[dict]:
    if not OAMINE.is_file():
        pytest.skip("../shared/data/oamine_train.jsonl is absent")
    return [json.loads(line) for line in OAMINE.read_text().splitlines()]


@pytest.fixture
def extract(model):
    """extract(documents, mode=..., **settings) -> list of Results."""

    def run(documents, mode="hpd", **settings):
        settings.setdefault("max_value_tokens", MAX_VALUE_TOKENS)
        return list(raw_extractor(model, mode=mode, **settings).extract(documents))

    return run


@pytest.fixture(scope="session")
def sequential_reference(model, products):
    """The reference answers for products20, computed once."""
    results, steps = trace(raw_extractor(model, mode="sequential", max_value_tokens=MAX_VALUE_TOKENS), products)
    return {r.id: r.values for r in results}, steps


def agreement_with_sequential(results, steps, reference) -> Agreement:
    """`results` against the sequential_reference fixture's values and traces."""
    values, reference_steps = reference
    return agreement(results, steps, [Result(id=i, values=v) for i, v in values.items()], reference_steps)


def assert_matches_sequential(results, steps, reference, floor=0.85):
    """Every value equals the sequential one, except where the decodings part at a near-tie;
    and at least `floor` of them are identical outright."""
    found = agreement_with_sequential(results, steps, reference)
    assert not found.unexplained, f"values part from sequential without a near-tie: {found.unexplained}"
    assert found.share >= floor, f"{found.values - found.equal} of {found.values} values differ"


def prompt_tokens_decoded(extractor, documents) -> int:
    """Prompt tokens the run decoded: every decoded token but the values fed back (each of
    which, like the last suffix token of each branch, has logits)."""
    branches = sum(len(d["attributes"]) for d in documents)
    return extractor.stats.tokens - (extractor.stats.outputs - branches)


def expected_prompt_tokens(layout, prompts, decoded_heads) -> int:
    """The preamble once, the shared heads as often as they are made, then each document's own
    segment and suffixes."""
    return len(layout.preamble) + sum(map(len, decoded_heads)) + sum(
        len(p.tokens) - (p.head_end if p.head in decoded_heads else p.shared) + sum(map(len, p.suffixes))
        for p in prompts)


def free_but_kept_heads(engine) -> tuple[int, int]:
    """Free KV cells and sequence ids, counting the idle heads kept for later documents (a
    cache) as free."""
    kept = engine.scheduler.heads.values()
    assert all(head.users == 0 for head in kept)
    return engine.kv.free_cells + sum(h.cells for h in kept), engine.kv.free_seqs + len(kept)


def kept_head_seqs(engine) -> list[int]:
    return sorted(head.seq for head in engine.scheduler.heads.values())
