"""Reading input: every bad-line class gets a message naming the file and line; nothing crashes."""
import csv
import gzip
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hpd_gguf.csv_files import CsvResultWriter, read_results, results_delimiter
from hpd_gguf.json_arrays import ArrayResultWriter
from hpd_gguf.files import DAMAGED_MESSAGE
from hpd_gguf.jsonl import MAX_LINE_BYTES, Rejected, ResultWriter, count_documents, input_files, read_tasks
from hpd_gguf.outputs import open_results
from hpd_gguf.schema import Document, InputError, Result, Schema

GOOD = b'{"id": "ok", "text": "Crocs Classic Clog, Navy", "attributes": ["Brand"]}\n'

BAD_LINES = {
    "invalid JSON": (b'{"id": "a", "text": \n', "invalid JSON"),
    "not an object": (b'["id", "text"]\n', "expected a JSON object, got list"),
    "missing id": (b'{"text": "x", "attributes": ["Brand"]}\n', "missing 'id'"),
    "fractional id": (b'{"id": 7.5, "text": "x", "attributes": ["Brand"]}\n', "'id': value error, must be text or a whole number"),
    "boolean id": (b'{"id": true, "text": "x", "attributes": ["Brand"]}\n', "must be text or a whole number"),
    "missing text": (b'{"id": "a", "attributes": ["Brand"]}\n', "missing 'text'"),
    "non-string text": (b'{"id": "a", "text": 5, "attributes": ["Brand"]}\n', "'text': input should be a valid string"),
    "empty text": (b'{"id": "a", "text": "", "attributes": ["Brand"]}\n', "'text'"),
    "blank text": (b'{"id": "a", "text": "  ", "attributes": ["Brand"]}\n', "'text'"),
    "attributes not a list": (b'{"id": "a", "text": "x", "attributes": "Brand"}\n', "'attributes'"),
    "attributes with a non-string": (b'{"id": "a", "text": "x", "attributes": ["Brand", 3]}\n', "'attributes.1'"),
    "attributes with an empty name": (b'{"id": "a", "text": "x", "attributes": ["Brand", " "]}\n', "non-empty"),
    "empty attributes": (b'{"id": "a", "text": "x", "attributes": []}\n', "at least one attribute"),
    "unknown category": (b'{"id": "a", "text": "x", "category": "Boats"}\n', "no schema entry for category 'Boats'"),
    "invalid UTF-8": (b'{"id": "a", "text": "caf\xe9"}\n', "invalid UTF-8"),
}


def _read(tmp_path, content: bytes, schema=None):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(content)
    return path, list(read_tasks(path, schema))


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_each_bad_line_is_rejected_with_file_and_line(tmp_path, case):
    line, message = BAD_LINES[case]
    schema = Schema.load_dict({"Shoes": ["Brand"]}) if case == "unknown category" else None
    path, items = _read(tmp_path, GOOD + line + GOOD.replace(b'"ok"', b'"ok2"'), schema)
    assert [type(i).__name__ for i in items] == ["Task", "Rejected", "Task"]
    assert items[1].where == f"{path}:2"
    assert message.lower() in items[1].message.lower(), items[1].message


def test_duplicate_id_is_rejected(tmp_path):
    path, items = _read(tmp_path, GOOD + GOOD)
    assert isinstance(items[1], Rejected) and items[1].where == f"{path}:2"
    assert "duplicate id 'ok'" in items[1].message


def test_an_integer_id_is_read_as_its_digits_and_resumed_as_such(tmp_path):
    path, items = _read(tmp_path, GOOD.replace(b'"ok"', b'7') + GOOD.replace(b'"ok"', b'"7"')
                        + GOOD.replace(b'"ok"', b'12345678901234567890'))
    assert items[0].id == "7" and items[2].id == "12345678901234567890"
    pandas_row = Document.model_validate({"id": np.int64(42), "text": "x", "category": float("nan")})
    assert (pandas_row.id, pandas_row.category) == ("42", None)  # a number, and a missing cell
    assert isinstance(items[1], Rejected) and "duplicate id '7'" in items[1].message
    out = tmp_path / "out.jsonl"
    writer = ResultWriter(out)
    writer.write(Result(id=items[0].id, values={"Brand": "Crocs"}))
    writer.close()
    assert json.loads(out.read_text())["id"] == "7"
    assert ResultWriter(out, resume=True).done == {"7"}
    assert [i.id for i in read_tasks(path, skip_ids={"7"}) if not isinstance(i, Rejected)] == ["12345678901234567890"]


def test_a_json_array_is_read_item_by_item_and_named_by_line(tmp_path):
    path = tmp_path / "export.json"
    good = json.loads(GOOD)
    path.write_text("\ufeff[\n" + json.dumps(good, indent=2) + ",\n[1],\n"
                    + json.dumps({**good, "id": "ok2"}) + ",\n" + json.dumps({**good, "id": "ok3"})[:-1] + "\n]\n")
    items = list(read_tasks(path))
    assert [type(i).__name__ for i in items] == ["Task", "Rejected", "Task", "Rejected"]
    assert items[1].where == f"{path}:9 (item 2)" and "expected a JSON object, got list" in items[1].message
    assert items[2].id == "ok2" and items[3].where == f"{path}:12"
    assert "the array cannot be read past it" in items[3].message
    path.write_text("[]")
    assert list(read_tasks(path)) == []


def test_gzip_compressed_inputs_read_as_plain_ones_and_a_cut_one_names_its_line(tmp_path):
    lines = [json.loads(GOOD.replace(b'"ok"', f'"d{i}"'.encode())) for i in range(4)]
    table = "id,text,attributes\n" + "".join(f'{d["id"]},"{d["text"]}",Brand\n' for d in lines)
    files = {"a.jsonl.gz": "".join(json.dumps(d) + "\n" for d in lines), "b.json.gz": json.dumps(lines, indent=1),
             "c.csv.gz": table, "d.ndjson": "".join(json.dumps(d) + "\n" for d in lines)}
    folder = tmp_path / "dump"
    folder.mkdir()
    for name, text in files.items():
        data = text.encode()
        (folder / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    found = input_files(folder)
    assert [p.name for p in found] == list(files)
    for path in found:
        assert [i.id for i in read_tasks(path)] == ["d0", "d1", "d2", "d3"] and count_documents(path) == 4
    cut = tmp_path / "cut.jsonl.gz"  # a download broken off: what came whole stands
    many = "".join(json.dumps({**lines[0], "id": f"n{i}", "text": f"Crocs Clog {i * 7919 % 10007}"}) + "\n"
                   for i in range(3000))
    cut.write_bytes(gzip.compress(many.encode())[:-30])
    items = list(read_tasks(cut))
    kept = [i.id for i in items[:-1]]
    assert 100 < len(kept) < 3000 and kept == [f"n{i}" for i in range(len(kept))]
    assert str(items[-1]) == f"{cut}:{len(kept) + 1}: {DAMAGED_MESSAGE}"
    plain = tmp_path / "plain.jsonl.gz"
    plain.write_bytes(files["a.jsonl.gz"].encode())
    assert [str(i) for i in read_tasks(plain)] == [f"{plain}:1: {DAMAGED_MESSAGE}"]


def test_files_from_windows_tools_utf16_or_with_a_byte_order_mark_are_read(tmp_path):
    documents = [{"id": "é1", "text": "Café Crème, 500 g", "attributes": ["Brand"]}, json.loads(GOOD)]
    lines = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in documents)
    files = {"notepad.jsonl": b"\xef\xbb\xbf" + lines.encode(),  # UTF-8 with a byte-order mark
             "powershell.jsonl": lines.encode("utf-16"),  # what Windows PowerShell's > writes
             "big_endian.ndjson": b"\xfe\xff" + lines.encode("utf-16-be"),
             "array.json": json.dumps(documents, indent=1, ensure_ascii=False).encode("utf-16"),
             "dump.jsonl.gz": gzip.compress(lines.encode("utf-16"))}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        [path] = input_files(tmp_path / name)
        assert [(t.id, t.document.text) for t in read_tasks(path)] == [("é1", "Café Crème, 500 g"), ("ok", "Crocs Classic Clog, Navy")]
        assert count_documents(path) == 2
    (tmp_path / "schema.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"Shoes": ["Brand"]}).encode())
    assert [a.name for a in Schema.load(tmp_path / "schema.json").attributes_for("Shoes")] == ["Brand"]
    (tmp_path / "catalog.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(InputError, match=r'catalog\.xlsx: a workbook is not read directly: save the sheet as "CSV UTF-8"'):
        input_files(tmp_path / "catalog.xlsx")


def test_blank_lines_are_skipped_silently(tmp_path):
    _, items = _read(tmp_path, b"\n   \n" + GOOD + b"\r\n\n")
    assert [i.id for i in items] == ["ok"]


def test_a_line_over_10_mb_is_rejected_without_stopping(tmp_path):
    huge = b'{"id": "big", "text": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n'
    path, items = _read(tmp_path, huge + GOOD)
    assert isinstance(items[0], Rejected) and items[0].where == f"{path}:1"
    assert "longer than 10 MB" in items[0].message
    assert items[1].id == "ok"


def test_a_category_written_with_other_case_or_spacing_finds_its_schema_entry():
    schema = Schema.load_dict({"Running Shoes": ["Brand", "Size"], "running shoes": ["Color"], "*": ["Brand"]})
    assert [a.name for a in schema.attributes_for("running shoes")] == ["Color"]  # its own entry first
    assert [a.name for a in schema.attributes_for(" RUNNING  shoes")] == ["Brand", "Size"]
    assert [a.name for a in schema.attributes_for("Boots")] == ["Brand"]


def test_invalid_schema_and_attribute_lists(tmp_path):
    bad = tmp_path / "schema.json"
    bad.write_text('{"Shoes": ["Brand", ')
    with pytest.raises(InputError, match="schema.json:1: invalid schema JSON"):
        Schema.load(bad)
    bad.write_text('{"Shoes": ["Brand", "Brand"]}')
    with pytest.raises(InputError, match="unique"):
        Schema.load(bad)
    bad.write_text('{"Shoes": [{"name": "Color", "constraint": "choice"}]}')
    with pytest.raises(InputError, match="needs 'values'"):
        Schema.load(bad)
    with pytest.raises(InputError, match="--attributes"):
        Schema.from_attribute_list("Brand,,Color")
    with pytest.raises(InputError, match="not found"):
        Schema.load(tmp_path / "nope.json")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_random_bytes_never_crash_the_reader(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("fuzz") / "docs.jsonl"
    path.write_bytes(b"\n".join(lines))
    for item in read_tasks(path, Schema.load_dict({"*": ["Brand"]})):
        assert isinstance(item, Rejected) or item.document.text.strip()


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=10)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["id", "text", "category", "attributes", "x"]), json_values), max_size=6))
def test_random_json_never_crashes_the_reader(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("fuzz") / "docs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    items = list(read_tasks(path, None))
    assert all(isinstance(i, Rejected) and i.where.startswith(str(path)) or i.names for i in items)


def test_writer_resume_drops_a_truncated_last_line(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "a", "values": {}}\n{"id": "b", "values": {}}\n{"id": "c", "val')
    writer = ResultWriter(out, resume=True)
    assert writer.done == {"a", "b"}
    writer.write(Result(id="c", values={"Brand": None}))
    writer.close()
    assert [json.loads(l)["id"] for l in out.read_text().splitlines()] == ["a", "b", "c"]


def test_parquet_without_pyarrow_is_refused_before_anything_runs(tmp_path, monkeypatch):
    (tmp_path / "a.jsonl").write_bytes(GOOD)
    (tmp_path / "b.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as where the ray extra is not installed
    with pytest.raises(InputError, match=r"b\.parquet: reading Parquet needs pyarrow"):
        input_files(tmp_path)
    assert input_files(tmp_path / "a.jsonl") == [tmp_path / "a.jsonl"]


CSV = (b"\xef\xbb\xbfid,Text,category,attributes,price\n"  # a byte-order mark, as Excel writes
       b'1,"Adidas Ultraboost 22, Core Black",Shoes,"Brand, Color",12\n'
       b"\n"
       b'2,"Logitech MX Master 3S\nGraphite",,Brand,\n'  # a quoted cell over two lines
       b"3,,Shoes,Brand\n"
       b"4,Caf\xe9 Bustelo,,Brand\n"
       b"5,Crocs Clog, Navy,,Brand,7\n"
       b"6,Crocs Clog Navy\n")


def test_csv_rows_are_documents_and_bad_rows_name_their_line(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_bytes(CSV)
    items = list(read_tasks(input_files(path), Schema.load_dict({"Shoes": ["Size"]})))
    assert [(i.id, i.document.text, i.document.category, i.names) for i in items[:2]] == [
        ("1", "Adidas Ultraboost 22, Core Black", "Shoes", ["Brand", "Color"]),
        ("2", "Logitech MX Master 3S\nGraphite", None, ["Brand"])]
    assert items[0].document.price == "12"  # other columns are kept aside
    assert [str(i) for i in items[2:]] == [
        f"{path}:6: missing 'text'",
        f"{path}:7: invalid UTF-8 in column 'text' (from Excel, save as \"CSV UTF-8\")",
        f"{path}:8: 6 cells where the header has 5 columns (a separator in an unquoted cell?)",
        f"{path}:9: no attributes given and no category (the schema has 'Shoes'; "
        '"*" would take any other)']


def _piped(monkeypatch, data: bytes):
    piped = tempfile.TemporaryFile()  # standard input is read by its file descriptor
    piped.write(data), piped.seek(0)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(piped))
    return [str(item) if isinstance(item, Rejected) else item.id for item in read_tasks("-", Schema.load_dict({"*": ["Brand"]}))]


def test_standard_input_is_told_a_table_an_array_or_json_lines_by_its_first_line(tmp_path, monkeypatch):
    path = tmp_path / "docs.csv"
    path.write_bytes(CSV)
    from_file = [str(i) if isinstance(i, Rejected) else i.id for i in read_tasks(path, Schema.load_dict({"*": ["Brand"]}))]
    assert _piped(monkeypatch, CSV) == [line.replace(str(path), "<stdin>") for line in from_file]
    assert _piped(monkeypatch, b"id;text;ID\n1;x;2\n") == ["<stdin>:1: a column is named twice in the header: ['id', 'text', 'id']"]
    lines = GOOD + b"id,text\n" + GOOD.replace(b'"ok"', b'"ok2"')
    assert _piped(monkeypatch, lines) == ["ok", "<stdin>:2: invalid JSON: Expecting value at column 1", "ok2"]
    array = b"\n\n" + json.dumps([json.loads(GOOD)], indent=1).encode()  # blank lines, then an array
    assert _piped(monkeypatch, array) == ["ok"]
    assert _piped(monkeypatch, b"\nid,text\n7,x\n")[0] == "<stdin>:2: invalid JSON: Expecting value at column 1"


def test_a_utf16_table_is_read_as_excel_saves_unicode_text(tmp_path):
    path = tmp_path / "docs.tsv"
    path.write_bytes("id\ttext\tattributes\r\nä1\tCafé Crème, 500 g\tBrand\r\n".encode("utf-16"))
    [task] = read_tasks(input_files(path))
    assert (task.id, task.document.text, task.names) == ("ä1", "Café Crème, 500 g", ["Brand"])


@pytest.mark.parametrize("delimiter", [b";", b"\t", b"|"])
def test_csv_separators_are_found_from_the_header(tmp_path, delimiter):
    path = tmp_path / "docs.tsv"
    path.write_bytes(delimiter.join([b"text", b"ID", b"Attributes"]) + b"\n"
                     + delimiter.join([b"Crocs Clog, Navy", b"7", b"Brand,Color"]) + b"\n")
    [task] = read_tasks(input_files(path))
    assert (task.id, task.document.text, task.names) == ("7", "Crocs Clog, Navy", ["Brand", "Color"])


def test_a_csv_file_without_id_and_text_columns_is_refused_before_anything_runs(tmp_path):
    (tmp_path / "a.csv").write_text("name,description\nx,y\n")
    with pytest.raises(InputError, match=r"a\.csv:1: the first row must name the columns id and text"):
        input_files(tmp_path)
    (tmp_path / "a.csv").write_text("id,text,ID\n")
    with pytest.raises(InputError, match="a column is named twice"):
        input_files(tmp_path / "a.csv")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=8))
def test_random_bytes_never_crash_the_csv_reader(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("fuzz") / "docs.csv"
    path.write_bytes(b"id,text\n" + b"\n".join(lines))
    for item in read_tasks(path, Schema.load_dict({"*": ["Brand"]})):
        assert isinstance(item, Rejected) and item.where.startswith(f"{path}:") or item.document.text.strip()


def test_a_results_table_takes_semicolons_from_its_input_and_otherwise_its_suffixs_separator(tmp_path):
    for name, header in (("semi.csv", "id;text\n"), ("tabs.tsv", "id\ttext\n"), ("commas.csv", "id,text\n")):
        (tmp_path / name).write_text(header)
    found = {name: [tmp_path / name] for name in ("semi.csv", "tabs.tsv", "commas.csv")}
    assert results_delimiter("values.csv", found["semi.csv"]) == ";"  # Excel's, where ; is the list separator
    assert results_delimiter("values.csv", found["tabs.tsv"]) == ","  # a tab-separated .csv opens in one column
    assert results_delimiter("values.tsv", found["semi.csv"]) == "\t"
    assert results_delimiter("values.csv", [Path("-")] + found["commas.csv"]) == ","


def _csv_writer(out, resume=False, names=("Brand", "Color"), delimiter=None):
    return CsvResultWriter(out, lambda: list(names), resume=resume, delimiter=delimiter)


@pytest.mark.parametrize("delimiter", [",", ";"])  # ;: the input table's, as Excel in much of Europe writes
def test_csv_results_resume_after_the_last_complete_row(tmp_path, delimiter):
    out = tmp_path / "values.csv"
    writer = _csv_writer(out, delimiter=delimiter)
    writer.write(Result(id="a", values={"Brand": "Crocs", "Color": None}, confidence={"Brand": 0.9123, "Color": 0.6}))
    writer.write(Result(id='b "2",;\nx', values={"Brand": None, "Color": None}, error="document too long"))
    writer.close()
    whole = out.read_bytes()
    assert whole.decode("utf-8-sig").splitlines()[:2] == [
        delimiter.join(["id", "Brand", "Color", "Brand confidence", "Color confidence", "error"]),
        delimiter.join(["a", "Crocs", "", "0.9123", "0.6", ""])]
    ids = ["a", 'b "2",;\nx']
    for cut in range(len(whole) + 1):  # a run killed at any byte
        out.write_bytes(whole[:cut])
        writer = _csv_writer(out, resume=True, delimiter=delimiter)
        kept = ids[:len(writer.done)]
        assert writer.done == set(kept)
        writer.write(Result(id="c", values={"Brand": "Keds", "Color": "White"}))
        writer.close()
        with open(out, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f, delimiter=delimiter))
        assert rows[0] == ["id", "Brand", "Color", "Brand confidence", "Color confidence", "error"]
        assert [row[0] for row in rows[1:]] == kept + ["c"] and rows[-1] == ["c", "Keds", "White", "", "", ""]
    assert [r["id"] for r in read_results(out)] == ids + ["c"]
    writer = _csv_writer(out, resume=True, delimiter="\t")
    writer.close()
    assert writer.delimiter == delimiter  # the file's own, once its header is written
    assert writer.refuses(read_tasks_one("Size")) == "values.csv has no column for 'Size' (its columns were set when it was made)"


def test_a_json_array_of_results_is_whole_after_every_result_and_resumes_after_a_cut(tmp_path):
    out = tmp_path / "values.json"
    writer = ArrayResultWriter(out)
    assert json.loads(out.read_text()) == []
    writer.write(Result(id="a", values={"Brand": "Crème", "Color": None}, confidence={"Brand": 0.9}))
    assert [r["id"] for r in json.loads(out.read_text())] == ["a"]
    writer.write(Result(id="b", values={}, error="document too long"))
    writer.close()
    whole = out.read_bytes()
    for cut in range(len(whole) + 1):  # a run killed at any byte
        out.write_bytes(whole[:cut])
        writer = ArrayResultWriter(out, resume=True)
        kept = ["a", "b"][:len(writer.done)]
        assert writer.done == set(kept)
        writer.write(Result(id="c", values={"Brand": "Keds"}))
        writer.close()
        assert [r["id"] for r in json.loads(out.read_text())] == kept + ["c"]
    out.write_text('{"id": "a", "values": {}}\n')  # JSON lines, as versions before wrote to .json
    with pytest.raises(InputError, match="values.json: not a JSON array of results to resume"):
        ArrayResultWriter(out, resume=True)
    writer = open_results(out, True, [], None)
    assert type(writer) is ResultWriter and writer.done == {"a"}  # resumed as JSON lines
    writer.close()


def read_tasks_one(*names):
    from hpd_gguf.schema import Document, make_task

    return make_task(Document(id="z", text="t", attributes=list(names)), None)


def test_csv_results_refuse_to_resume_another_file(tmp_path):
    out = tmp_path / "values.csv"
    out.write_text("sku,title\n1,x\n")
    with pytest.raises(InputError, match="not a results file of hpd-gguf"):
        _csv_writer(out, resume=True)
    with pytest.raises(InputError, match="two columns of one name"):
        _csv_writer(tmp_path / "new.csv", names=("id", "Brand"))
