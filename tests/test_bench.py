"""The bench's scaling table and settings sweep, small, on the test model."""
from pathlib import Path

import pytest

from hpd_gguf import bench
from hpd_gguf.bench import Report, read_documents, run_bench, run_scaling, run_sweep, scaling_names
from hpd_gguf.schema import Document, make_task

DATA = Path(__file__).parent / "data"


def test_scaling_table_and_sweep_cover_their_grids(model):
    _, tasks = read_documents(DATA / "products20.jsonl", None, limit=3)
    rows = run_scaling(model, tasks, prefill=100.0, log=lambda m: None, sizes=(2, 3), widths=(1, 7),
                       max_value_tokens=3)
    assert [(r["documents"], r["attributes"]) for r in rows] == [(2, 1), (3, 1), (2, 7), (3, 7)]
    assert all(r["seconds"] > 0 and r["peak_rss_mb"] > 0 and 0 < r["choice_share"] < 1 for r in rows)
    assert all(0.5 < r["decode_share"] < 1 - r["choice_share"] for r in rows)  # on a CPU the decodes are most of it
    sweep = run_sweep(model, tasks, prefill=100.0, log=lambda m: None, budgets=(64,), cells=(50, 0),
                      residents=(None, 2), max_value_tokens=3, batch_tokens=512, max_resident_cells=3072,
                      max_resident=64)  # as the CLI passes them
    assert [(r["batch_tokens"], r["max_resident_cells"], r["max_resident"]) for r in sweep] == [
        (64, 50, 64), (64, 50, 2), (64, 0, 64), (64, 0, 2)]
    table = Report("m", 3, 2, 100.0, scaling=rows, sweep=sweep).table()
    assert "hpd scaling" in table and "<- fastest" in table


def test_scaling_names_reach_the_widest_width_from_any_one_category():
    one = [make_task(Document(id="1", text="x", attributes=["Brand"]), None)]
    assert len(scaling_names(one, 60)) >= 60
    with pytest.raises(ValueError, match="attribute names for a width of 100"):
        scaling_names(one, 100)


def test_a_failing_later_part_keeps_the_modes_figures(model_path, monkeypatch, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join((DATA / "products20.jsonl").read_text().splitlines(keepends=True)[:2]))

    def broken(*args, **kwargs):
        raise RuntimeError("out of cells")

    monkeypatch.setattr(bench, "run_sweep", broken)
    report = run_bench(model_path, str(docs), ["hpd"], sweep=True, log=lambda m: None, max_value_tokens=3,
                       batch_tokens=128)  # prefill measured on 128 tokens: 5 s, not 18
    run = report.runs[0]
    assert [r.mode for r in report.runs] == ["hpd"] and run.seconds > 0
    assert 0 < run.choice_seconds < run.seconds and f"{run.choice_share:.0%}" in report.table()
    assert 0 < run.decode_seconds < run.seconds - run.choice_seconds and "in decode" in report.table()
    assert 0 < run.setup_seconds < run.seconds - run.decode_seconds - run.choice_seconds
    assert report.failed == "settings sweep: RuntimeError('out of cells')"


def test_prefill_is_measured_before_and_after_the_runs(model_path):
    report = run_bench(model_path, str(DATA / "products20.jsonl"), [], limit=2, log=lambda m: None, batch_tokens=128)
    assert report.prefill_tokens_per_second > 0 and report.prefill_after > 0 and not report.failed
    assert f"{report.prefill_after:.0f} after them" in report.table()
    given = run_bench(model_path, str(DATA / "products20.jsonl"), ["hpd"], limit=1, log=lambda m: None,
                      known_prefill=(100.0, 0.5), max_value_tokens=3)  # measured before: not again
    assert (given.prefill_tokens_per_second, given.output_cost, given.prefill_after) == (100.0, 0.5, None)


def test_prefill_measures_the_cost_of_logits_only_when_asked(model):
    tokens = list(range(100, 140))
    rate, cost = bench.measure_prefill(model, tokens, 64, 2)
    rate_again, no_cost = bench.measure_prefill(model, tokens, 64, 2, output_cost=False)
    assert rate > 0 and rate_again > 0 and cost >= 0 and no_cost == 0  # timings: no test asserts one is faster
