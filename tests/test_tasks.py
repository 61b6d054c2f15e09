"""Task schema, JSONL loading, aliases, `datasets` loading from local files and saved datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maxk.rewards import Task, load_tasks, task_from_dict

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "tasks.jsonl"


def test_example_file_loads_in_both_styles():
    tasks = load_tasks(str(EXAMPLES))
    by_id = {t.id: t for t in tasks}
    assert by_id["add"].entry_point == "add" and by_id["add"].n_tests == 4
    assert by_id["sum_stdin"].io_cases[0] == {"input": "1 2\n", "output": "3\n"}
    assert by_id["sum_stdin"].entry_point is None and by_id["sum_stdin"].n_tests == 3
    assert by_id["six_times_seven"].answer == "42" and by_id["six_times_seven"].n_tests == 0


def test_unknown_keys_go_to_meta_and_aliases_map():
    t = task_from_dict({"task_id": "x/1", "prompt": "p", "test": ["assert 1"], "canonical_solution": "s",
                        "difficulty": "easy", "meta": {"source": "me"}})
    assert (t.id, t.tests, t.reference) == ("x/1", ["assert 1"], "s")
    assert t.meta == {"source": "me", "difficulty": "easy"}
    apps = task_from_dict({"id": "a", "prompt": "p",
                           "input_output": json.dumps({"inputs": ["1\n"], "outputs": ["2\n"]})})
    assert apps.io_cases == [{"input": "1\n", "output": "2\n"}]
    assert task_from_dict({"prompt": "p", "answer": 7}, index=3).id == "task-3"
    assert task_from_dict({"prompt": "p", "answer": 7}).answer == "7"


@pytest.mark.parametrize("bad, match", [
    (dict(id="", prompt="p"), "non-empty"),
    (dict(id="a", prompt=3), "prompt must be a string"),
    (dict(id="a", prompt="p", tests="assert x"), "list of strings"),
    (dict(id="a", prompt="p", io_cases=[{"input": "1"}]), "'input' and 'output'"),
    (dict(id="a", prompt="p", io_cases=[{"input": "1", "output": 2}]), "must be strings"),
])
def test_schema_errors_say_what_is_wrong(bad, match):
    with pytest.raises(ValueError, match=match):
        Task(**bad)


def test_bad_json_line_and_duplicate_ids(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"id": "a", "prompt": "p"}\n{not json}\n')
    with pytest.raises(ValueError, match=r"t.jsonl:2"):
        load_tasks(str(p))
    p.write_text('{"id": "a", "prompt": "p"}\n\n{"id": "a", "prompt": "q"}\n')
    with pytest.raises(ValueError, match="duplicate task id 'a'"):
        load_tasks(str(p))


def test_datasets_from_local_parquet_and_saved_dir(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [json.loads(line) for line in EXAMPLES.read_text().splitlines()]
    ds = datasets.Dataset.from_list([{"id": r["id"], "prompt": r["prompt"],
                                      "tests": r.get("tests", []), "entry_point": r.get("entry_point")}
                                     for r in rows])
    ds.to_parquet(str(tmp_path / "t.parquet"))
    tasks = load_tasks(str(tmp_path / "t.parquet"))
    assert [t.id for t in tasks] == [r["id"] for r in rows]
    assert tasks[0].tests == rows[0]["tests"] and tasks[0].entry_point == "add"
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "saved"))
    assert [t.id for t in load_tasks(str(tmp_path / "saved"), split="test")] == [r["id"] for r in rows]
    with pytest.raises(KeyError, match="known: test"):
        load_tasks(str(tmp_path / "saved"), split="train")
