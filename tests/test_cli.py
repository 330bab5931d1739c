"""The command line end to end, on the real tiny model."""
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpd_gguf.jsonl import count_documents
from hpd_gguf.settings import Settings
from tests.conftest import DATA, ROOT


def hpd(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "hpd_gguf", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300, **kwargs)


def lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_run_on_the_example_file(model_path, tmp_path):
    out = tmp_path / "values.jsonl"
    done = hpd("run", model_path, "examples/products.jsonl", "--schema", "examples/schema.json",
               "-o", out, "--max-value-tokens", "6")
    assert done.returncode == 0, done.stderr
    results = lines(out)
    inputs = lines(ROOT / "examples/products.jsonl")
    schema = json.loads((ROOT / "examples/schema.json").read_text())
    assert [r["id"] for r in results] == [d["id"] for d in inputs]
    for result, doc in zip(results, inputs):
        wanted = doc.get("attributes") or [a if isinstance(a, str) else a["name"] for a in schema[doc["category"]]]
        assert list(result["values"]) == wanted
        assert all(v is None or (isinstance(v, str) and v.strip() == v and v) for v in result["values"].values())
    assert "12 documents in" in done.stderr and "documents/s" in done.stderr


def test_input_is_a_directory_or_a_glob_of_json_lines_arrays_and_parquet(model_path, tmp_path):
    source = (DATA / "products20.jsonl").read_text().splitlines()[:6]
    folder = tmp_path / "catalog"
    folder.mkdir()
    (folder / "a.jsonl").write_text("\n".join(source[:2]) + "\n")
    (folder / "c.json").write_text(json.dumps([json.loads(l) for l in source[4:]], indent=2))  # an export of records
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    numbered = [{**json.loads(l), "id": 1000 + i} for i, l in enumerate(source[2:4])]  # ids as numbers
    pq.write_table(pa.Table.from_pylist(numbered), folder / "b.parquet")
    assert count_documents(folder / "b.parquet") == 2  # for the progress bar, from the file's footer
    expected = [json.loads(l)["id"] for l in source[:2]] + ["1000", "1001"] + [json.loads(l)["id"] for l in source[4:]]
    for spec in (folder, f"{folder}/*"):
        out = tmp_path / "out.jsonl"
        done = hpd("run", model_path, spec, "-o", out, "--overwrite", "--max-value-tokens", "2")
        assert done.returncode == 0, done.stderr
        assert [r["id"] for r in lines(out)] == expected
    missing = hpd("run", model_path, f"{folder}/*.csv", "--max-value-tokens", "2")
    assert missing.returncode == 1 and "no input files found" in missing.stderr


def test_csv_and_json_array_out_give_the_values_of_json_lines(model_path, tmp_path):
    import csv

    source = [json.loads(line) for line in (DATA / "products20.jsonl").read_text().splitlines()[:5]]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in source))
    with open(tmp_path / "docs.csv", "w", newline="", encoding="utf-8-sig") as f:  # as Excel saves it
        rows = csv.writer(f, delimiter=";")
        rows.writerow(["ID", "Text", "Category", "Attributes", "Price"])
        rows.writerows([d["id"], d["text"], d["category"], ",".join(d["attributes"]), "9.99"] for d in source)
    for docs, out in (("docs.jsonl", "values.jsonl"), ("docs.csv", "values.csv"), ("docs.jsonl", "values.json")):
        done = hpd("run", model_path, tmp_path / docs, "-o", tmp_path / out, "--max-value-tokens", "4")
        assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "values.json").read_text()) == lines(tmp_path / "values.jsonl")  # one array
    with open(tmp_path / "values.csv", newline="", encoding="utf-8-sig") as f:
        table = list(csv.DictReader(f, delimiter=";"))  # the input table's separator
    names = list(dict.fromkeys(name for d in source for name in d["attributes"]))
    assert list(table[0]) == ["id", *names, *(f"{n} confidence" for n in names), "error"]
    for row, result, doc in zip(table, lines(tmp_path / "values.jsonl"), source, strict=True):
        assert row["id"] == result["id"] == doc["id"]
        assert {n: row[n] or None for n in doc["attributes"]} == result["values"]
        assert all(row[n] == "" for n in names if n not in doc["attributes"])
        assert {n: float(row[f"{n} confidence"]) for n in doc["attributes"]} == result["confidence"]
    gold = tmp_path / "gold.jsonl"  # the JSON lines' values as gold: eval reads the table as it reads them
    gold.write_text("".join(json.dumps({"id": r["id"], "attributes": d["attributes"], "gold": r["values"]}) + "\n"
                            for r, d in zip(lines(tmp_path / "values.jsonl"), source)))
    scores = []
    for pred in ("values.jsonl", "values.csv", "values.json"):
        done = hpd("eval", gold, tmp_path / pred, "--min-confidence", "0.6", "--json", tmp_path / "scores.json")
        assert done.returncode == 0, done.stderr
        scores.append(json.loads((tmp_path / "scores.json").read_text()))
    assert scores[0] == scores[1] == scores[2] and scores[0]["missing_predictions"] == 0


def test_stdout_when_no_output_file_and_attributes_option(model_path):
    done = hpd("run", model_path, DATA / "products20.jsonl", "--attributes", "Brand,Color",
               "--max-value-tokens", "4")
    assert done.returncode == 0, done.stderr
    results = [json.loads(l) for l in done.stdout.splitlines()]
    assert len(results) == 20  # the lines' own attributes win over --attributes
    assert list(results[0]["values"]) == ["Brand", "Gender", "Color", "Size"]


def test_bad_lines_are_reported_and_the_rest_processed(model_path, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "a", "text": "Crocs Clog, Navy", "attributes": ["Color"]}\n'
                    'not json\n'
                    '{"id": "a", "text": "again", "attributes": ["Color"]}\n'
                    '{"id": "b", "text": "Nike Air, Red", "attributes": ["Color"]}\n'
                    + '{"id": 5.5, "text": "x"}\n' * 12)  # one reason, many lines: ten shown, all counted
    out = tmp_path / "out.jsonl"
    done = hpd("run", model_path, docs, "-o", out, "--max-value-tokens", "4")
    assert done.returncode == 2
    assert f"{docs}:2: invalid JSON" in done.stderr and f"{docs}:3: duplicate id 'a'" in done.stderr
    fraction = "'id': value error, must be text or a whole number"
    assert done.stderr.count(fraction) == 10 + 2 and f"{docs}:14: {fraction}" in done.stderr
    assert f"rejected: more lines for the same reason, not shown ({fraction})" in done.stderr
    assert f"14 lines rejected (12 of them: {fraction})" in done.stderr
    assert [r["id"] for r in lines(out)] == ["a", "b"]
    again = hpd("run", model_path, docs, "-o", out, "--strict", "--max-value-tokens", "4")
    assert again.returncode == 1 and f"{out} holds results already: --resume continues it, --overwrite " \
                                     "replaces it" in again.stderr  # before the model loads
    assert [r["id"] for r in lines(out)] == ["a", "b"]  # nothing computed is lost
    strict = hpd("run", model_path, docs, "-o", out, "--strict", "--overwrite", "--max-value-tokens", "4")
    assert strict.returncode == 2 and "stopped at the first bad line" in strict.stderr
    assert [r["id"] for r in lines(out)] == ["a"]


def test_documents_from_standard_input_as_lines_an_array_or_a_table_and_a_missing_examples_file(model_path, tmp_path):
    piped = ('{"id": "a", "text": "Crocs Clog, Navy", "attributes": ["Color"]}\n'
             'not json\n'
             '{"id": "b", "text": "Nike Air, Red", "attributes": ["Color"]}\n')
    done = hpd("run", model_path, "-", "--max-value-tokens", "4", input=piped)
    assert done.returncode == 2
    assert "<stdin>:2: invalid JSON" in done.stderr
    assert [r["id"] for r in map(json.loads, done.stdout.splitlines())] == ["a", "b"]
    answer = json.dumps([json.loads(line) for line in piped.splitlines() if line != "not json"], indent=2)
    array = hpd("run", model_path, "-", "--max-value-tokens", "4", input=answer)  # an API's answer piped in
    assert array.returncode == 0, array.stderr
    assert array.stdout == done.stdout
    table = "ID;Text;Attributes\na;Crocs Clog, Navy;Color\nb;Nike Air, Red;Color\n"  # a spreadsheet piped in
    csv_in = hpd("run", model_path, "-", "--max-value-tokens", "4", input=table)
    assert csv_in.returncode == 0, csv_in.stderr
    assert csv_in.stdout == done.stdout
    closed = subprocess.run([sys.executable, "-m", "hpd_gguf", "run", str(model_path), "-"], cwd=ROOT,
                            capture_output=True, text=True, preexec_fn=lambda: os.close(0))  # `<&-`
    assert closed.returncode == 1 and closed.stderr.startswith("error: <stdin>: standard input is closed: pipe")
    closed = subprocess.run([sys.executable, "-m", "hpd_gguf", "run", str(model_path), DATA / "products20.jsonl"],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(1))  # `>&-`
    assert closed.returncode == 1 and closed.stderr == "error: standard output is closed: give -o OUTPUT\n"
    missing = hpd("run", model_path, "-", "--examples", tmp_path / "labeled.jsonl", input=piped)
    assert missing.returncode == 1 and missing.stderr == f"error: {tmp_path / 'labeled.jsonl'}: file not found\n"


def test_standard_input_at_a_terminal_says_what_it_waits_for_and_answers_each_line(model_path):
    """Each line typed is answered before the next comes; Ctrl-D ends the documents and Ctrl-C,
    while a line is awaited, stops the run cleanly (the reader still waits on the terminal)."""
    for end in (b"\x04", signal.SIGINT):
        terminal, typed_into = os.openpty()
        process = subprocess.Popen([sys.executable, "-m", "hpd_gguf", "run", str(model_path), "-", "--attributes",
                                    "Color", "--max-value-tokens", "3"], stdin=typed_into, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, cwd=ROOT)
        os.write(terminal, b'{"id": "a", "text": "Nike Air, Red"}\n')
        assert select.select([process.stdout], [], [], 120)[0], "the line typed was not answered"
        assert json.loads(process.stdout.readline())["id"] == "a"
        if end == signal.SIGINT:
            process.send_signal(end)
        else:
            os.write(terminal, b'{"id": "b", "text": "Nike Air, Blue"}\n' + end)
        out, err = process.communicate(timeout=120)
        os.close(terminal), os.close(typed_into)
        assert "reading documents typed here, a JSON object a line; Ctrl-D ends them" in err
        if end == signal.SIGINT:
            assert process.returncode == 128 + signal.SIGINT and "stopped; 1 documents written" in err, err
            assert out == "" and "Fatal" not in err
        else:
            assert process.returncode == 0, err
            assert [json.loads(line)["id"] for line in out.splitlines()] == ["b"]


def test_zero_documents(model_path, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    done = hpd("run", model_path, empty, "--attributes", "Brand")
    assert done.returncode == 0 and done.stdout == ""


@pytest.mark.parametrize("case", ["missing", "not gguf", "truncated", "unknown name"])
def test_model_errors_are_one_clear_line(model_path, tmp_path, case):
    target = {"missing": tmp_path / "nope.gguf", "not gguf": ROOT / "README.md",
              "truncated": tmp_path / "cut.gguf", "unknown name": "gpt-17"}[case]
    if case == "truncated":
        target.write_bytes(model_path.read_bytes()[:5_000_000])
    done = hpd("run", target, DATA / "products20.jsonl")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr


def test_settings_and_an_output_folder_that_is_not_there_are_refused_before_any_work(model_path, tmp_path):
    with pytest.raises(ValueError, match="max_resident must be 1 or more, not 0"):
        Settings(max_resident=0)  # an engine that admits nothing would wait for ever
    refused = hpd("run", model_path, DATA / "products20.jsonl", "--max-resident", "0")
    assert refused.returncode == 2 and "'--max-resident': 0 is not in the range x>=1" in refused.stderr
    small = hpd("run", model_path, DATA / "products20.jsonl", "--n-ctx", "10")
    assert small.returncode == 1 and small.stdout == ""
    assert small.stderr.startswith("error: n_ctx 10 gives 256 KV cells, not even room for the instructions")
    assert small.stderr.count("\n") == 1, small.stderr
    nowhere = hpd("run", model_path, DATA / "products20.jsonl", "-o", tmp_path / "missing" / "values.jsonl")
    assert nowhere.returncode == 1 and "cannot write there (no such folder" in nowhere.stderr
    packed = hpd("run", model_path, DATA / "products20.jsonl", "-o", tmp_path / "values.jsonl.gz")
    assert packed.returncode == 1 and "values.jsonl.gz: results are written plain" in packed.stderr
    assert packed.stderr.count("\n") == 1, packed.stderr  # before the model loads
    for binary, said in [("values.parquet", "which Parquet cannot be"), ("values.xlsx", "name it .csv")]:
        refused = hpd("run", model_path, DATA / "products20.jsonl", "-o", tmp_path / binary)
        assert refused.returncode == 1 and said in refused.stderr and refused.stderr.count("\n") == 1, refused.stderr
        assert not (tmp_path / binary).exists()
    unnamed = hpd("run", model_path, "-", "-o", tmp_path / "values.csv", input="id,text,attributes\n1,x,Color\n")
    assert unnamed.returncode == 1 and unnamed.stderr.count("\n") == 1
    assert "values.csv: its columns are the attributes, which standard input cannot name" in unnamed.stderr


def test_an_output_among_the_inputs_is_refused_or_left_out(model_path, tmp_path):
    """-o naming the input would replace the documents; a folder of inputs that holds the output
    (results beside the documents) reads the documents only, run after run."""
    docs = tmp_path / "docs.jsonl"
    docs.write_text((DATA / "products20.jsonl").read_text())
    for keep in ("--overwrite", "--resume"):
        refused = hpd("run", model_path, docs, "-o", docs, keep)
        assert refused.returncode == 1 and refused.stderr == f"error: {docs}: is the output too (-o {docs}): the " \
            "results would replace the documents; name another output\n"
        assert docs.read_text() == (DATA / "products20.jsonl").read_text()
    folder = tmp_path / "catalog"
    folder.mkdir()
    (folder / "shoes.jsonl").write_text("".join((DATA / "products20.jsonl").read_text().splitlines(True)[:2]))
    values = folder / "values.jsonl"
    first = hpd("run", model_path, folder, "-o", values, "--max-value-tokens", "2")
    again = hpd("run", model_path, folder, "-o", values, "--max-value-tokens", "2", "--resume")
    assert first.returncode == 0 and again.returncode == 0, again.stderr
    assert "0 documents in" in again.stderr and "0 lines rejected" in again.stderr
    assert [json.loads(line)["id"] for line in values.read_text().splitlines()] == ["t00", "t01"]


def test_gpu_layers_without_gpu_warns_and_runs(model_path):
    done = hpd("run", model_path, "examples/products.jsonl", "--attributes", "Brand",
               "--n-gpu-layers", "99", "--max-value-tokens", "3")
    assert done.returncode == 0, done.stderr
    if "no GPU support" not in done.stderr:
        pytest.skip("this llama-cpp-python was built with GPU support")


def _wait_for_lines(path, count, process, limit=120):
    start = time.time()
    while time.time() - start < limit:
        if path.exists() and path.read_text().count("\n") >= count:
            return
        assert process.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)
    raise AssertionError("no output in time")


def _many_docs(tmp_path, copies=4):
    source = (DATA / "products20.jsonl").read_text().splitlines()
    docs = tmp_path / "many.jsonl"
    docs.write_text("".join(json.dumps({**json.loads(l), "id": f"{c}-{json.loads(l)['id']}"}) + "\n"
                            for c in range(copies) for l in source))
    return docs


def test_killed_run_resumes_with_nothing_lost_or_duplicated(model_path, tmp_path):
    """One document in flight at a time gives every document the same batches in any run, so
    the resumed values must equal the uninterrupted run's exactly (with neighbours, llama.cpp's
    rounding follows the batch; see conftest)."""
    docs = _many_docs(tmp_path, copies=1)
    args = ["run", model_path, docs, "--max-value-tokens", "6", "--max-resident", "1"]
    reference = tmp_path / "reference.jsonl"
    assert hpd(*args, "-o", reference).returncode == 0
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "hpd_gguf", *map(str, args), "-o", str(out)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_lines(out, 5, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    with open(out, "a") as f:
        f.write('{"id": "half a li')  # as if killed mid-write
    written = out.read_text().count("\n")
    assert 5 <= written < 20
    resumed = hpd(*args, "-o", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{out}: {written} results kept from before; their documents are skipped" in resumed.stderr
    ids = [r["id"] for r in lines(out)]
    assert sorted(ids) == sorted(r["id"] for r in lines(reference)) and len(set(ids)) == 20
    expected = {r["id"]: r["values"] for r in lines(reference)}
    assert {r["id"]: r["values"] for r in lines(out)} == expected


@pytest.mark.parametrize("signal_number, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_cleanly_and_says_how_to_resume(model_path, tmp_path, signal_number, code):
    docs = _many_docs(tmp_path, copies=10)
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "hpd_gguf", "run", str(model_path), str(docs), "-o", str(out),
                                "--max-value-tokens", "6", "--max-resident", "8"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_lines(out, 5, process)
    twice = hpd("run", model_path, docs, "-o", out, "--resume")  # the same command in another terminal
    assert twice.returncode == 1 and twice.stderr == f"error: {out}: another run is writing it (the same command " \
        "started twice?): wait for it to end, or name another output\n"
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert "--resume" in stderr
    text = out.read_text()
    assert text.endswith("\n") and 5 <= text.count("\n") < 200
    ids = [r["id"] for r in lines(out)]
    assert ids == [r["id"] for r in lines(docs)][:len(ids)]  # a prefix, so --resume continues it in order


@pytest.mark.skipif(not os.access("/dev", os.W_OK) or not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_is_one_line_of_error_with_the_resume_command(model_path, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text((DATA / "products20.jsonl").read_text().splitlines()[0] + "\n")
    done = hpd("run", model_path, docs, "-o", "/dev/full", "--max-value-tokens", "2")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "error: /dev/full: cannot write (No space left on device); 0 documents written. " \
           "To resume once it can be written: hpd-gguf run" in done.stderr and "--resume" in done.stderr


def test_a_context_too_large_for_memory_is_one_line_of_error_in_run_and_serve(model_path, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text((DATA / "products20.jsonl").read_text().splitlines()[0] + "\n")
    done = hpd("run", model_path, docs, "-o", tmp_path / "out.jsonl", "--n-ctx", "50000000")  # ~1 TB of KV cache
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "error: llama.cpp could not create a context of 50000128 KV cells" in done.stderr
    assert "not enough memory? A smaller --n-ctx or --max-resident needs less; 0 documents written" in done.stderr
    served = hpd("serve", model_path, "--port", "8099", "--n-ctx", "50000000")  # found out as it starts
    assert served.returncode == 1 and "Traceback" not in served.stderr and "Uvicorn running" not in served.stderr
    assert "error: llama.cpp could not create a context of 50000128 KV cells" in served.stderr


def test_models_list_shows_every_known_model():
    done = hpd("models", "list")
    assert done.returncode == 0
    for name in ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "gemma-3-270m"):
        assert name in done.stdout
    assert "runs as" in done.stdout and done.stdout.count("q4_0") == 1


def test_a_known_model_is_found_from_any_working_directory(model_path, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "p1", "text": "Nike Air Max 90, White, Size 10"}\n')
    elsewhere = {"cwd": tmp_path, "env": {k: v for k, v in os.environ.items() if k != "HPD_GGUF_MODELS"},
                 "capture_output": True, "text": True, "timeout": 300}
    done = subprocess.run([sys.executable, "-m", "hpd_gguf", "run", "smollm2-135m", docs.name, "--attributes",
                           "Brand", "--max-value-tokens", "4"], **elsewhere)
    assert done.returncode == 0, done.stderr
    assert "pulling" not in done.stderr and not (tmp_path / "models").exists()
    assert [r["id"] for r in map(json.loads, done.stdout.splitlines())] == ["p1"]
    listed = subprocess.run([sys.executable, "-m", "hpd_gguf", "models", "list"], **elsewhere)
    assert f"in {ROOT / 'models'}:" in listed.stdout


def test_without_ray_nothing_imports_it():
    done = subprocess.run([sys.executable, "-c", "import sys, hpd_gguf.cli, hpd_gguf.server; print('ray' in sys.modules)"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip() == "False", done.stderr


def test_info_names_the_backend_its_devices_and_the_settings():
    from hpd_gguf.llama import devices, supports_gpu_offload
    from hpd_gguf.settings import CPU_RESIDENT_CELLS

    done = hpd("info")
    assert done.returncode == 0, done.stderr
    assert "llama.cpp: " in done.stdout and "CPU : " in done.stdout and "max_resident=64" in done.stdout
    assert ("GPU offload: yes" if supports_gpu_offload() else "GPU offload: no: this llama-cpp-python") in done.stdout
    assert any(d.kind == "cpu" and d.total_bytes > 0 for d in devices())
    for device in devices():
        assert f"device {device.name} ({device.kind})" in done.stdout
    assert f"n_gpu_layers={999 if supports_gpu_offload() else 0}" in done.stdout
    assert f"max_resident_cells={0 if supports_gpu_offload() else CPU_RESIDENT_CELLS}" in done.stdout
    assert f"models: {ROOT / 'models'}" in done.stdout


def test_bench_prints_the_comparison_table(model_path, tmp_path):
    import csv

    table = tmp_path / "labeled.csv"  # a spreadsheet of products and their values, as run and eval read it
    with open(table, "w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["id", "text", "Brand", "Color"])
        rows.writerows([d["id"], d["text"], "", ""] for d in map(json.loads, (DATA / "products20.jsonl").read_text().splitlines()[:4]))
    report = tmp_path / "bench.json"
    done = hpd("bench", model_path, table, "--attributes", "Brand,Color", "--modes", "sequential,hpd", "--gold",
               "--json", report, "--max-value-tokens", "4", "--batch-tokens", "128")  # prefill measured on 128 tokens
    assert done.returncode == 0, done.stderr
    assert "hpd speedup" in done.stdout and "= sequential" in done.stdout
    figures = json.loads(report.read_text())
    assert [r["mode"] for r in figures["runs"]] == ["sequential", "hpd"] and figures["documents"] == 4
    assert figures["prefill_tokens_per_second"] > 0 and all(r["f1"] is not None for r in figures["runs"])
    no_gold = hpd("bench", model_path, DATA / "products20.jsonl", "--gold")
    assert no_gold.returncode == 1 and no_gold.stderr.count("\n") == 1  # before the model loads
    assert f"{DATA / 'products20.jsonl'}:1: --gold needs each document's values" in no_gold.stderr


def test_eval_scores_a_prediction_file(tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"id": "1", "category": "Shoes", "attributes": ["Brand", "Color"],
                                "gold": {"Brand": "Nike", "Color": None}}) + "\n")
    pred = tmp_path / "pred.jsonl"
    pred.write_text(json.dumps({"id": "1", "values": {"Brand": "Nike", "Color": None}}) + "\n")
    done = hpd("eval", gold, pred, "--json", tmp_path / "scores.json")
    assert done.returncode == 0 and "overall" in done.stdout
    assert json.loads((tmp_path / "scores.json").read_text())["overall"]["f1"] == 1.0
    pred.write_text(pred.read_text() + json.dumps({"id": "p-2", "values": {"Brand": "Nike"}}) + "\n")
    other_ids = hpd("eval", gold, pred)  # ids that differ (a prefix, numbers) are the usual mistake
    assert other_ids.returncode == 0 and "(1 predictions have an id no gold document has; not scored)" in other_ids.stdout
    pred.write_text("{broken\n")
    bad = hpd("eval", gold, pred)
    assert bad.returncode == 1 and f"{pred}:1: invalid JSON" in bad.stderr
    gold.write_text(gold.read_text() + "\n" + json.dumps({"id": "2", "text": "no gold"}) + "\n")
    bad_gold = hpd("eval", gold, pred)
    assert bad_gold.returncode == 1 and f"{gold}:3: a gold record needs an 'id' and a 'gold' object" in bad_gold.stderr
