"""Nothing lost, nothing silent, on disk: a full disk keeps the previous checkpoint and says so; a
truncated model or checkpoint fails with one line naming the file wherever it is read; final/ is
written atomically; bad dataset files name the file and the row (issue 14 items 5 and 6)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch

from grpolab.config.schema import DataConfig
from grpolab.data.base import DataError
from grpolab.data.files import read_rows
from grpolab.data.generic import row_maker
from grpolab.models.verify import ModelFilesError, check_model_dir
from grpolab.parallel.sharding import Unsharded
from grpolab.train import atomic
from grpolab.train.checkpoint import DiskFullError, load_checkpoint, resolve_resume_path, save_checkpoint
from grpolab.train.export import export_model, write_model


class FakeModel(torch.nn.Module):
    """save_pretrained like a PreTrainedModel's; `fail` raises it after the weights are half written."""

    def __init__(self, fail: BaseException | None = None) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2, 2))
        self.fail = fail

    def save_pretrained(self, path: str, state_dict: dict | None = None) -> None:
        from safetensors.torch import save_file

        (Path(path) / "config.json").write_text("{}")
        save_file({"w": self.w.detach()}, os.path.join(path, "model.safetensors"))
        if self.fail is not None:
            raise self.fail

    @classmethod
    def from_pretrained(cls, path: str, dtype: torch.dtype) -> FakeModel:
        from safetensors.torch import load_file

        fresh = cls()
        fresh.load_state_dict(load_file(os.path.join(path, "model.safetensors")))
        return fresh


class FakeTokenizer:
    def save_pretrained(self, path: str) -> None:
        (Path(path) / "tokenizer.json").write_text("{}")


def save(ckpt: Path, step: int, model: FakeModel | None = None) -> Path:
    model = model or FakeModel()
    return save_checkpoint(
        ckpt,
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        scheduler=None,
        trainer_state={"step": step},
        config_yaml="",
        is_peft=False,
    )


def test_disk_full_during_a_checkpoint_says_so_and_keeps_the_previous(tmp_path: Path):
    save(tmp_path / "step-2", 2)
    before = {p.name: p.read_bytes() for p in (tmp_path / "step-2").iterdir()}
    with pytest.raises(DiskFullError, match=rf"no space left on device in {tmp_path} while writing step-2 "):
        save(tmp_path / "step-2", 4, FakeModel(fail=OSError(errno.ENOSPC, "No space left on device")))
    assert {p.name: p.read_bytes() for p in (tmp_path / "step-2").iterdir()} == before  # previous kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-2"]  # no half-written temp dir left


def test_torch_saves_short_write_on_a_full_disk_is_recognised(tmp_path: Path, monkeypatch):
    # torch.save reports ENOSPC as RuntimeError('... unexpected pos N vs M'), without an errno
    class Usage:
        free = 4096

    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda _path: Usage())
    with pytest.raises(DiskFullError, match="nothing was written"):
        save(tmp_path / "step-1", 1, FakeModel(fail=RuntimeError("[enforce fail] unexpected pos 3331008 vs 3330896")))


def test_other_errors_are_not_called_disk_full(tmp_path: Path):
    with pytest.raises(ValueError, match="boom"):
        save(tmp_path / "step-1", 1, FakeModel(fail=ValueError("boom")))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_checkpoint_fails_to_resume_and_to_export(tmp_path: Path):
    ckpt = save(tmp_path / "step-1", 1)
    truncate(ckpt / "model.safetensors")
    fake = FakeModel()
    with pytest.raises(ModelFilesError, match=r"model\.safetensors: truncated or not a safetensors file"):
        load_checkpoint(ckpt, model=fake, optimizer=None, scheduler=None, shards=Unsharded(fake))
    with pytest.raises(ModelFilesError, match=r"model\.safetensors: truncated"):
        export_model(ckpt, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing that looks like a model was written


def test_a_truncated_optimizer_state_names_the_file(tmp_path: Path):
    ckpt = save(tmp_path / "step-1", 1)
    truncate(ckpt / "optimizer.pt")
    model = FakeModel()
    with pytest.raises(ModelFilesError, match=r"optimizer\.pt: truncated or not a torch file"):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=None, shards=Unsharded(model))


def test_model_directories_are_checked_before_transformers_guesses(tmp_path: Path):
    with pytest.raises(ModelFilesError, match=r"has no config\.json"):
        check_model_dir(tmp_path, adapter=False, what="model.name")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(ModelFilesError, match=r"model\.safetensors: truncated or not a safetensors file"):
        check_model_dir(tmp_path, adapter=False)
    with pytest.raises(ModelFilesError, match="holds full model weights, not a LoRA adapter"):
        check_model_dir(tmp_path, adapter=True, what="eval --adapter")


def test_resume_paths_that_are_no_checkpoint_are_one_line(tmp_path: Path):
    with pytest.raises(ModelFilesError, match=r"'grpo\.beta=0\.1' is not a checkpoint path"):
        resolve_resume_path(Path("grpo.beta=0.1"))
    with pytest.raises(ModelFilesError, match="checkpoint not found"):
        resolve_resume_path(tmp_path / "missing")
    half = tmp_path / "checkpoints" / ".tmp-step-3-12345"
    half.mkdir(parents=True)
    with pytest.raises(ModelFilesError, match="unfinished save"):
        resolve_resume_path(half)
    with pytest.raises(ModelFilesError, match="a run directory without checkpoints"):
        resolve_resume_path(tmp_path)
    ckpt = save(tmp_path / "checkpoints" / "step-2", 2)
    assert resolve_resume_path(tmp_path) == ckpt  # a run directory means its latest checkpoint


def test_final_is_written_atomically(tmp_path: Path):
    final = write_model(FakeModel(), FakeTokenizer(), tmp_path / "final")
    before = sorted(p.name for p in final.iterdir())
    with pytest.raises(KeyboardInterrupt):  # killed after config.json and part of the weights
        write_model(FakeModel(fail=KeyboardInterrupt()), FakeTokenizer(), tmp_path / "final")
    assert sorted(p.name for p in final.iterdir()) == before
    with pytest.raises(KeyboardInterrupt):
        write_model(FakeModel(fail=KeyboardInterrupt()), FakeTokenizer(), tmp_path / "other")
    assert not (tmp_path / "other").exists()  # never a directory holding only config.json


@pytest.mark.parametrize("value", [[12, 0], {"a": 1}, True])
def test_an_answer_column_of_lists_dicts_or_bools_is_an_error_naming_it(tmp_path: Path, value):
    data = tmp_path / "qa.jsonl"
    data.write_text(
        json.dumps({"question": "q1", "answer": "3"}) + "\n" + json.dumps({"question": "q2", "answer": value})
    )
    make = row_maker(DataConfig(task="jsonl", path=str(data)), str(data))
    rows = read_rows(data)
    assert make(*rows[0]).answer == "3"
    with pytest.raises(DataError, match=rf"row 2: column 'answer' holds a {type(value).__name__}"):
        make(*rows[1])


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_non_utf8_dataset_names_file_and_line(tmp_path: Path, suffix):
    data = tmp_path / f"qa{suffix}"
    body = b'{"question": "q", "answer": "1"}\n{"question": "caf\xe9", "answer": "2"}\n'
    data.write_bytes(body if suffix == ".jsonl" else b"question,answer\nq,1\ncaf\xe9,2\n")
    line = 2 if suffix == ".jsonl" else 3
    with pytest.raises(DataError, match=rf"qa{suffix}: line {line} is not valid UTF-8"):
        read_rows(data)
