"""The generic tasks: any local file (jsonl) or hub split (hf) with configurable columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grpolab.config.schema import DataConfig
from grpolab.data import DataError, build_splits, hub, validate_data


def rows(n: int) -> list[dict[str, Any]]:
    return [
        {"prompt": f"Q{i}?", "target": i * 2, "topic": "even" if i % 2 == 0 else "odd", "unit": "cm"} for i in range(n)
    ]


def write_jsonl(path: Path, items: list[Any]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return str(path)


def custom(path: str, **sizes: int) -> DataConfig:
    return DataConfig(
        task="jsonl",
        path=path,
        question_column="prompt",
        answer_column="target",
        category_column="topic",
        **{"train_size": 20, "val_size": 5, "test_size": 5, **sizes},
    )


def check_custom(data: DataConfig) -> None:
    splits = build_splits(data, 0)
    examples = splits.train + splits.val + splits.test
    assert len(examples) == 30
    for example in examples:
        i = int(example.question[1:-1])
        assert example.answer == str(i * 2)
        assert example.category == ("even" if i % 2 == 0 else "odd")
        # every column reaches the rewards under its own name, the configured ones too; "prompt" is
        # TRL's `prompts` (the question)
        assert set(example.fields) == {"target", "topic", "unit"} and example.fields["unit"] == "cm"
        assert str(example.fields["target"]) == example.answer and example.fields["topic"] == example.category
        assert example.row()["question"] == example.question


def test_jsonl_custom_columns_and_categories(tmp_path: Path) -> None:
    check_custom(custom(write_jsonl(tmp_path / "d.jsonl", rows(30))))


def test_json_list_parquet_and_csv(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text(json.dumps(rows(30)))
    pq.write_table(pa.Table.from_pylist(rows(30)), tmp_path / "d.parquet")
    with (tmp_path / "d.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["prompt", "target", "topic", "unit"])
        writer.writeheader()
        writer.writerows(rows(30))
    for name in ("d.json", "d.parquet", "d.csv"):
        check_custom(custom(str(tmp_path / name)))


def test_json_file_holding_json_lines(tmp_path: Path) -> None:
    check_custom(custom(write_jsonl(tmp_path / "d.json", rows(30))))


def test_category_defaults_to_task_name(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": f"q{i}", "answer": "a"} for i in range(10)])
    splits = build_splits(DataConfig(task="jsonl", path=path, train_size=5, val_size=2, test_size=3), 0)
    assert {e.category for e in splits.train + splits.val + splits.test} == {"jsonl"}


def test_missing_column_names_the_row(tmp_path: Path) -> None:
    items = [{"question": f"q{i}", "answer": "a"} for i in range(30)]
    del items[16]["answer"]  # line 17 of the file
    data = DataConfig(task="jsonl", path=write_jsonl(tmp_path / "d.jsonl", items), val_size=5, test_size=5)
    for check in (validate_data, lambda d: build_splits(d, 0)):
        with pytest.raises(DataError, match=r"row 17: missing column 'answer' \(row has: question\)"):
            check(data)


def test_null_value_and_bad_json_name_the_row(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"question": "q1", "answer": "1"}\n{"question": "q2", "answer": null}\n')
    with pytest.raises(DataError, match=r"row 2: column 'answer' is empty"):
        validate_data(DataConfig(task="jsonl", path=str(path)))
    path.write_text('{"question": "q1", "answer": "1"}\n{"question": "q2",\n')
    with pytest.raises(DataError, match=r"row 2: not valid JSON"):
        validate_data(DataConfig(task="jsonl", path=str(path)))


def test_missing_category_column_is_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}])
    data = DataConfig(task="jsonl", path=path, category_column="topic")
    with pytest.raises(DataError, match=r"row 1: missing column 'topic'"):
        validate_data(data)


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.json", "empty.csv"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("question,answer\n" if name.endswith(".csv") else "\n")
    with pytest.raises(DataError, match=r"has no rows"):
        validate_data(DataConfig(task="jsonl", path=str(tmp_path / name)))


def test_unsupported_suffix(tmp_path: Path) -> None:
    (tmp_path / "d.txt").write_text("hello")
    with pytest.raises(DataError, match=r"unsupported file type '\.txt'"):
        validate_data(DataConfig(task="jsonl", path=str(tmp_path / "d.txt")))


def test_duplicates_dropped_and_test_stable_as_train_grows(tmp_path: Path) -> None:
    items = rows(40) + rows(10)  # the last ten repeat the first ten
    path = write_jsonl(tmp_path / "d.jsonl", items)
    small = build_splits(custom(path, train_size=10), 4)
    large = build_splits(custom(path, train_size=30), 4)
    assert small.test == large.test and small.val == large.val
    questions = [e.question for e in large.train + large.val + large.test]
    assert len(questions) == len(set(questions)) == 40
    assert build_splits(custom(path), 4) != build_splits(custom(path), 5)
    assert build_splits(custom(path), 4) == build_splits(custom(path), 4)


def test_train_takes_what_is_left(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", rows(30))
    splits = build_splits(custom(path, train_size=1000), 0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (20, 5, 5)


def test_held_out_larger_than_file_names_the_fields(tmp_path: Path) -> None:
    data = custom(write_jsonl(tmp_path / "d.jsonl", rows(30)), test_size=20, val_size=10)
    with pytest.raises(DataError, match=r"data\.test_size \(20\) \+ data\.val_size \(10\).*only 30"):
        validate_data(data)


def test_hf_task_loads_configured_split(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load_split(
        name: str, config: str | None, split: str, hint: str, data_files: Any = None
    ) -> list[dict[str, Any]]:
        calls.append((name, config, split))
        return rows(30)

    monkeypatch.setattr(hub, "load_split", load_split)
    data = DataConfig(
        task="hf",
        hf_name="me/data",
        hf_config="v2",
        hf_split="validation",
        question_column="prompt",
        answer_column="target",
        train_size=20,
        val_size=5,
        test_size=5,
    )
    splits = build_splits(data, 0)
    assert calls == [("me/data", "v2", "validation")]
    assert len(splits.train) == 20 and splits.train[0].category == "hf"
    assert set(splits.train[0].fields) == {"target", "topic", "unit"}
