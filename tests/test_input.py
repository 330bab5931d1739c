"""Reading input: every bad-line class gets a message naming the file and line; nothing crashes."""
import json
import sys

import pytest
from hypothesis import given, settings, strategies as st

from hpd_gguf.jsonl import MAX_LINE_BYTES, Rejected, ResultWriter, read_tasks
from hpd_gguf.schema import InputError, Result, Schema

GOOD = b'{"id": "ok", "text": "Crocs Classic Clog, Navy", "attributes": ["Brand"]}\n'

BAD_LINES = {
    "invalid JSON": (b'{"id": "a", "text": \n', "invalid JSON"),
    "not an object": (b'["id", "text"]\n', "expected a JSON object, got list"),
    "missing id": (b'{"text": "x", "attributes": ["Brand"]}\n', "missing 'id'"),
    "non-string id": (b'{"id": 7, "text": "x", "attributes": ["Brand"]}\n', "'id': input should be a valid string"),
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


def test_blank_lines_are_skipped_silently(tmp_path):
    _, items = _read(tmp_path, b"\n   \n" + GOOD + b"\r\n\n")
    assert [i.id for i in items] == ["ok"]


def test_a_line_over_10_mb_is_rejected_without_stopping(tmp_path):
    huge = b'{"id": "big", "text": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n'
    path, items = _read(tmp_path, huge + GOOD)
    assert isinstance(items[0], Rejected) and items[0].where == f"{path}:1"
    assert "longer than 10 MB" in items[0].message
    assert items[1].id == "ok"


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
    from hpd_gguf.jsonl import input_files

    (tmp_path / "a.jsonl").write_bytes(GOOD)
    (tmp_path / "b.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as where the ray extra is not installed
    with pytest.raises(InputError, match=r"b\.parquet: reading Parquet needs pyarrow"):
        input_files(tmp_path)
    assert input_files(tmp_path / "a.jsonl") == [tmp_path / "a.jsonl"]
