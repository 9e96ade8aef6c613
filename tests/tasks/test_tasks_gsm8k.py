"""GSM8K: gold extraction from local JSONL and Parquet, and the hub path with a stand-in loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grpolab.config.schema import DataConfig
from grpolab.data import DataError, build_splits, gsm8k, hub, validate_data

ROWS = [
    {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = 7\n#### 7"},
    {"question": "A farm sells 1234 eggs.", "answer": "Count them.\n#### 1,234"},
    {"question": "Debt of 5 dollars?", "answer": "It is owed.\n####  -5 "},
    {"question": "Two markers?", "answer": "First #### 3 is a typo, then\n#### 12"},
    {"question": "Bare answer?", "answer": "42"},
    {"question": "Half of 5?", "answer": "5 / 2 = 2.5\n#### 2.5"},
]
GOLD = {"Tom": "7", "A farm": "1234", "Debt": "-5", "Two": "12", "Bare": "42", "Half": "2.5"}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> str:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def check_gold(data: DataConfig) -> None:
    splits = build_splits(data, 0)
    examples = splits.train + splits.val + splits.test
    assert len(examples) == len(ROWS)
    for example in examples:
        prefix = next(p for p in GOLD if example.question.startswith(p))
        assert example.answer == GOLD[prefix], example
        assert example.category == "gsm8k"
        original = next(r for r in ROWS if r["question"] == example.question)
        assert example.fields["solution"] == original["answer"].strip()  # full solution kept


def test_gold_from_local_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "gsm8k.jsonl", ROWS)
    check_gold(DataConfig(task="gsm8k", path=path, train_size=4, val_size=1, test_size=1))


def test_gold_from_local_parquet(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "gsm8k.parquet", ROWS)
    check_gold(DataConfig(task="gsm8k", path=path, train_size=4, val_size=1, test_size=1))


def test_solution_without_marker_names_the_row(tmp_path: Path) -> None:
    rows = [*ROWS, {"question": "Lost marker?", "answer": "He pays 3 + 4 = 7 dollars."}]
    data = DataConfig(task="gsm8k", path=write_jsonl(tmp_path / "g.jsonl", rows), test_size=1, val_size=1)
    with pytest.raises(DataError, match=r"row 7: column 'answer' has no '####"):
        validate_data(data)


def test_local_row_missing_answer(tmp_path: Path) -> None:
    rows = [*ROWS[:2], {"question": "No answer here"}, *ROWS[2:]]
    data = DataConfig(task="gsm8k", path=write_jsonl(tmp_path / "g.jsonl", rows), test_size=1, val_size=1)
    with pytest.raises(DataError, match=r"row 3: missing column 'answer'"):
        build_splits(data, 0)


class FakeSplit(list):
    """Stands in for a datasets.Dataset: a sized, iterable sequence of row dicts."""


def fake_hub(monkeypatch: pytest.MonkeyPatch, splits: dict[str, list[dict[str, Any]]]) -> list[tuple]:
    calls: list[tuple] = []

    def load_split(name: str, config: str | None, split: str, hint: str) -> FakeSplit:
        calls.append((name, config, split))
        return FakeSplit(splits[split])

    monkeypatch.setattr(hub, "load_split", load_split)
    return calls


def row(i: int) -> dict[str, str]:
    return {"question": f"Problem {i}?", "answer": f"Work.\n#### {i}"}


def test_hub_train_val_from_train_split_test_from_test_split(monkeypatch: pytest.MonkeyPatch) -> None:
    test_rows = [row(i) for i in range(100, 130)]
    # Problem 100 is also in the train split: it must stay out of train and val.
    train_rows = [row(i) for i in range(60)] + [row(100)]
    calls = fake_hub(monkeypatch, {"train": train_rows, "test": test_rows})
    splits = build_splits(DataConfig(task="gsm8k", train_size=50, val_size=10, test_size=20), 0)
    assert {c[2] for c in calls} == {"train", "test"}
    assert all(c[:2] == ("openai/gsm8k", "main") for c in calls)
    test_q = {e.question for e in splits.test}
    assert test_q <= {r["question"] for r in test_rows} and len(test_q) == 20
    train_val = {e.question for e in splits.train + splits.val}
    assert train_val <= {r["question"] for r in train_rows[:60]}
    assert len(train_val) == 60 and not train_val & test_q
    assert splits.test[0].answer == splits.test[0].question.split()[1].rstrip("?")


def test_hub_name_and_config_from_data(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_hub(monkeypatch, {"train": [row(i) for i in range(10)], "test": [row(i) for i in range(20, 25)]})
    data = DataConfig(task="gsm8k", hf_name="me/gsm8k-copy", hf_config="socratic", train_size=5, val_size=2)
    build_splits(data.model_copy(update={"test_size": 3}), 0)
    assert {c[:2] for c in calls} == {("me/gsm8k-copy", "socratic")}


def test_hub_test_size_larger_than_test_split(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_hub(monkeypatch, {"train": [row(i) for i in range(10)], "test": [row(i) for i in range(20, 25)]})
    with pytest.raises(DataError, match=r"data\.test_size \(200\).*only 5"):
        build_splits(DataConfig(task="gsm8k", train_size=5, val_size=2), 0)


def test_gold_answer_doc_example() -> None:
    assert gsm8k.gold_answer("16 - 3 - 4 = 9 eggs.\n#### 1,234") == "1234"
