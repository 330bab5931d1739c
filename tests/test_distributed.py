"""The same extraction on a local Ray instance (2 CPUs), with the real tiny model."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpd_gguf.schema import Document, make_task
from tests.conftest import DATA, MAX_VALUE_TOKENS, RAW, ROOT, raw_extractor

ray = pytest.importorskip("ray")
distributed = pytest.importorskip("hpd_gguf.distributed")


@pytest.fixture(scope="module")
def local_ray():
    distributed.connect("auto", 2)
    yield
    ray.shutdown()


def _tasks(documents):
    return [make_task(Document(**d), None) for d in documents]


def test_two_workers_give_the_values_of_one_process(local_ray, model, products):
    one = {r.id: r.values for r in raw_extractor(model, max_value_tokens=MAX_VALUE_TOKENS).extract(products)}
    spread = list(distributed.run(_tasks(products), "smollm2-135m", None, workers=2, threads_per_worker=1,
                                  documents_per_pass=12, max_value_tokens=MAX_VALUE_TOKENS, **RAW))  # 2 passes
    assert [r.id for r in spread] == [p["id"] for p in products]
    keys = [(r.id, k) for r in spread for k in r.values]
    assert len(keys) == sum(len(p["attributes"]) for p in products)
    same = sum(r.values[k] == one[r.id][k] for r in spread for k in r.values)
    assert same / len(keys) >= 0.85, f"{same} of {len(keys)} values as one process gives them"  # batch neighbours differ


def test_a_bad_row_becomes_an_error_row(local_ray, products):
    rows = [dict(products[0]), {**products[1], "id": "broken", "text": " "}, {**products[2], "id": None}]
    results = distributed.extract_dataset(ray.data.from_items(rows), "smollm2-135m", max_value_tokens=2).take_all()
    records = {json.loads(r["result"])["id"]: json.loads(r["result"]) for r in results}
    assert set(records) == {"t00", "broken", "row 2"}
    assert records["t00"].get("error") is None and set(records["t00"]["values"]) == set(products[0]["attributes"])
    assert "text" in records["broken"]["error"] and "id" in records["row 2"]["error"]


def test_a_missing_model_path_names_the_node(local_ray, products):
    with pytest.raises(Exception, match="not found on node"):
        distributed.extract_dataset(ray.data.from_items(products[:1]), "/nowhere/model.gguf").take_all()


def test_a_killed_worker_loses_and_duplicates_nothing(tmp_path):
    """`hpd-gguf run --ray`: a busy worker killed with SIGKILL is restarted by Ray and its batch
    runs again; the output still has each id once, in input order, without errors."""
    source = (DATA / "products20.jsonl").read_text().splitlines()
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({**json.loads(l), "id": f"{c}-{json.loads(l)['id']}"}) + "\n"
                            for c in range(3) for l in source))
    out = tmp_path / "out.jsonl"
    before = _extract_workers()
    process = subprocess.Popen([sys.executable, "-m", "hpd_gguf", "run", "smollm2-135m", str(docs), "-o", str(out),
                                "--ray", "auto", "--workers", "2", "--threads-per-worker", "1",
                                "--max-value-tokens", "4"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = _kill_a_busy_worker(process, before)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    assert killed, "no busy worker was found to kill"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [json.loads(l)["id"] for l in docs.read_text().splitlines()]
    assert all(r.get("error") is None for r in records)


def test_ctrl_c_at_a_terminal_stops_the_run_not_the_local_ray_under_it(tmp_path):
    """Ctrl-C reaches the whole process group, the local Ray's services with it: the run stops at
    once (the batches under way go), cleanly, and says how to resume."""
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({**json.loads(l), "id": f"{c}-{json.loads(l)['id']}"}) + "\n"
                            for c in range(2) for l in (DATA / "products20.jsonl").read_text().splitlines()))
    out = tmp_path / "out.jsonl"
    before = _extract_workers()
    process = subprocess.Popen([sys.executable, "-m", "hpd_gguf", "run", "smollm2-135m", str(docs), "-o", str(out),
                                "--ray", "auto", "--workers", "2", "--max-value-tokens", "4"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # its own process group, as a terminal gives
    assert _busy_worker(process, before) is not None, "no Ray worker got busy"
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-3000:]
    assert "--resume" in stderr and "Traceback" not in stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert len(ids) < 40 and len(set(ids)) == len(ids)


def _kill_a_busy_worker(process, before: set[int]) -> bool:
    pid = _busy_worker(process, before)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    return pid is not None


def _extract_workers() -> set[int]:
    """Ray actor processes that hold the model, this run's or not (earlier tests' may linger)."""
    lines = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
    return {int(line.split(None, 1)[0]) for line in lines if "ExtractWorker" in line}


def _busy_worker(process, before: set[int], limit=240) -> int | None:
    """The first Ray actor process holding the model that was not there `before` the run and is
    using a CPU now (ps's %CPU is a lifetime average: an idle actor of an earlier test has one too)."""
    ticks: dict[int, int] = {}
    start = time.time()
    while time.time() - start < limit and process.poll() is None:
        for pid in _extract_workers() - before:
            used = _cpu_ticks(pid)
            if used is None:  # it ended meanwhile
                continue
            if pid in ticks and used - ticks[pid] >= 10:  # 0.1 s of CPU in 0.5 s
                return pid
            ticks[pid] = used
        time.sleep(0.5)
    return None


def _cpu_ticks(pid: int) -> int | None:
    """CPU time a process has used, user and system, in clock ticks (1/100 s); None once it ended."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # from field 3, the state
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # fields 14 and 15: utime, stime
