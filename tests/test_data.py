import json

import pytest

from sgpo.data import ColumnMap, DataError, load_problems, read_rows, write_rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_canonical_columns_and_extra_columns_kept(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"problem": "p", "answer": 3, "strategy": "s", "level": 2}])
    ds = load_problems(f)
    row = ds[0]
    assert row["id"] == "0" and row["answer"] == "3" and row["strategy"] == "s" and row["level"] == 2


def test_missing_column_names_file_row_column_and_lists_found(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"question": "p", "answer": "1"}])
    with pytest.raises(DataError) as e:
        load_problems(f)
    msg = str(e.value)
    assert str(f) in msg and "row 0" in msg and "'problem'" in msg and "columns found: answer, question" in msg
    assert "problem_column" in msg


def test_column_mapping(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"question": "p", "solution": "1", "uid": "x"}])
    ds = load_problems(f, columns=ColumnMap(problem="question", answer="solution", id="uid"))
    assert ds[0]["problem"] == "p" and ds[0]["answer"] == "1" and ds[0]["id"] == "x"


def test_missing_field_in_a_later_row(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"problem": "a", "answer": "1"}, {"problem": "b", "answer": "2"}, {"problem": "c"}])
    with pytest.raises(DataError, match=r"row 2: missing column 'answer' \(columns found: problem\)"):
        load_problems(f)


def test_bad_values(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"problem": "", "answer": "1"}])
    with pytest.raises(DataError, match="row 0: column 'problem' must be a non-empty string, got empty"):
        load_problems(f)
    f = write_jsonl(tmp_path / "d.jsonl", [{"problem": ["x"], "answer": "1"}])
    with pytest.raises(DataError, match="got a list"):
        load_problems(f)


def test_invalid_json_line_and_empty_file(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"problem": "a", "answer": "1"}\n\n{"problem": oops}\n')
    with pytest.raises(DataError, match=r"d.jsonl: line 3: invalid JSON"):
        load_problems(f)
    f.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_problems(f)
    with pytest.raises(DataError, match="no such file"):
        load_problems(tmp_path / "missing.jsonl")


def test_duplicate_ids(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"id": 1, "problem": "a", "answer": "1"}, {"id": "1", "problem": "b", "answer": "2"}])
    with pytest.raises(DataError, match="row 1: duplicate id '1' \\(first seen in row 0\\)"):
        load_problems(f)


def test_unusable_strategies_become_none_or_raise_when_required(tmp_path):
    rows = [
        {"problem": "a", "answer": "1", "strategy": "use x"},
        {"problem": "b", "answer": "1", "strategy": ""},
        {"problem": "c", "answer": "1", "strategy": 7},
        {"problem": "d", "answer": "1"},
    ]
    f = write_jsonl(tmp_path / "d.jsonl", rows)
    assert load_problems(f)["strategy"] == ["use x", None, None, None]
    with pytest.raises(DataError, match="row 1: column 'strategy' is empty, and require_strategy is set"):
        load_problems(f, require_strategy=True)
    f2 = write_jsonl(tmp_path / "e.jsonl", [rows[0], rows[2]])
    with pytest.raises(DataError, match="row 1: column 'strategy' is a int"):
        load_problems(f2, require_strategy=True)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_write_read_round_trip(tmp_path, suffix):
    rows = [{"id": "a", "problem": "p", "answer": "1", "strategy": None}]
    path = write_rows(tmp_path / f"x{suffix}", rows)
    assert read_rows(path) == rows
    assert load_problems(path)[0]["problem"] == "p"


def test_datasets_and_lists_are_accepted():
    import datasets

    ds = datasets.Dataset.from_list([{"problem": "p", "answer": "1"}])
    assert load_problems(ds)[0]["id"] == "0"
    assert load_problems([{"problem": "p", "answer": "1"}])[0]["answer"] == "1"
    with pytest.raises(DataError, match="empty"):
        load_problems([])
