"""Local data through `datasets`: data.data_files patterns and lists, save_to_disk directories, and
row-numbered errors per file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from grpolab.config.schema import DataConfig
from grpolab.data import DataError, build_splits, hub, validate_data


def qa(start: int, n: int) -> list[dict[str, Any]]:
    return [{"question": f"{i}+{i}", "answer": str(2 * i), "unit": "none"} for i in range(start, start + n)]


def write_jsonl(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return path


def sized(**kw: Any) -> DataConfig:
    return DataConfig(**{"task": "jsonl", "train_size": 20, "val_size": 5, "test_size": 5, **kw})


def all_examples(data: DataConfig) -> list[Any]:
    splits = build_splits(data, 0)
    return splits.train + splits.val + splits.test


def test_a_glob_pattern_reads_every_matching_file(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train-0.jsonl", qa(0, 15))
    write_jsonl(tmp_path / "train-1.jsonl", qa(15, 15))
    write_jsonl(tmp_path / "other.jsonl", qa(100, 50))  # not matched
    examples = all_examples(sized(data_files=str(tmp_path / "train-*.jsonl")))
    assert sorted(int(e.question.split("+")[0]) for e in examples) == list(range(30))
    assert all(
        e.answer == str(2 * int(e.question.split("+")[0]))
        and e.fields == {"question": e.question, "answer": e.answer, "unit": "none"}
        for e in examples
    )


def test_a_list_of_files_of_different_types(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_jsonl(tmp_path / "a.jsonl", qa(0, 10))
    pq.write_table(pa.Table.from_pylist(qa(10, 10)), tmp_path / "b.parquet")
    (tmp_path / "c.csv").write_text(
        "question,answer,unit\n" + "".join(f"{i}+{i},{2 * i},none\n" for i in range(20, 30))
    )
    files = [str(tmp_path / name) for name in ("a.jsonl", "b.parquet", "c.csv")]
    assert len(all_examples(sized(data_files=files))) == 30


def test_a_bad_row_is_named_by_its_file_and_its_row_in_that_file(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "part-0.jsonl", qa(0, 15))
    bad = qa(15, 15)
    bad[1]["answer"] = None  # row 2 of the second file (row 17 of the data as a whole)
    write_jsonl(tmp_path / "part-1.jsonl", bad)
    data = sized(data_files=str(tmp_path / "part-*.jsonl"))
    for check in (validate_data, lambda d: build_splits(d, 0)):
        with pytest.raises(DataError, match=r"part-1\.jsonl: row 2: column 'answer' is empty"):
            check(data)


def test_a_pattern_that_matches_nothing_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no file matches '.*nothing-\*\.jsonl'"):
        validate_data(sized(data_files=str(tmp_path / "nothing-*.jsonl")))


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.jsonl").write_text('{"question": "1+1", "answer": "2"}\n{"question": \n')
    with pytest.raises(DataError, match=r"broken\.jsonl: cannot read it with datasets"):
        validate_data(sized(data_files=str(tmp_path / "broken.jsonl")))


def test_a_save_to_disk_dataset_and_a_dataset_dicts_split(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_list(qa(0, 30)).save_to_disk(str(tmp_path / "one"))
    assert len(all_examples(sized(path=str(tmp_path / "one")))) == 30
    both = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(qa(0, 30)), "test": datasets.Dataset.from_list(qa(50, 2))}
    )
    both.save_to_disk(str(tmp_path / "dict"))
    assert len(all_examples(sized(path=str(tmp_path / "dict"), hf_split="train"))) == 30
    with pytest.raises(DataError, match=r"no split 'validation' \(data.hf_split\); it has train, test"):
        validate_data(sized(path=str(tmp_path / "dict"), hf_split="validation"))


def test_a_saved_datasets_bad_row_is_numbered(tmp_path: Path) -> None:
    import datasets

    rows = qa(0, 30)
    rows[4]["question"] = "  "
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(DataError, match=r"data.path .*saved: row 5: column 'question' is empty"):
        validate_data(sized(path=str(tmp_path / "saved")))


def test_a_plain_directory_is_not_a_dataset(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", qa(0, 30))
    with pytest.raises(DataError, match=r"save_to_disk .* data.data_files='dir/\*\.jsonl'"):
        validate_data(sized(path=str(tmp_path)))


def test_gsm8k_from_a_saved_dataset(tmp_path: Path) -> None:
    import datasets

    rows = [{"question": f"q{i}", "answer": f"work\n#### {i},000"} for i in range(30)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "gsm"))
    examples = all_examples(
        DataConfig(task="gsm8k", path=str(tmp_path / "gsm"), train_size=20, val_size=5, test_size=5)
    )
    assert sorted(e.answer for e in examples) == sorted(f"{i}000" for i in range(30))


def test_path_and_data_files_together_are_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", qa(0, 3))
    with pytest.raises(ValueError, match=r"data\.path or data\.data_files, not both"):
        DataConfig(task="jsonl", path=str(path), data_files=str(path))


def test_hf_task_passes_data_files_to_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    seen: dict[str, Any] = {}

    def fake_load(name: str, config: Any, **kwargs: Any) -> Any:
        seen.update(name=name, config=config, **kwargs)
        return datasets.Dataset.from_list(qa(0, 30))

    monkeypatch.setattr(hub, "check_hub", lambda *a: None)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    data = DataConfig(
        task="hf", hf_name="org/set", data_files=["data/train-*.parquet"], train_size=20, val_size=5, test_size=5
    )
    assert len(all_examples(data)) == 30
    assert seen == {"name": "org/set", "config": None, "split": "train", "data_files": ["data/train-*.parquet"]}
