"""`grpolab export`: a run's final/ (config from the run directory), checkpoints, the model card,
--merge, and --push-to-hub up to the upload call (huggingface_hub's HfApi faked)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from grpolab.api import GRPOTrainer
from grpolab.cli.main import main
from grpolab.compat.load import load_config
from grpolab.train.model_card import grpolab_version, model_card
from run_helpers import quick_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("run")
    return GRPOTrainer(args=quick_config(out, "model.finetune=lora", "model.lora_rank=4", "train.max_steps=2")).train()


def front_matter(card: str) -> dict[str, Any]:
    return yaml.safe_load(card.split("---")[1])


def test_export_of_final_reads_the_run_directory_and_writes_a_card(lora_run, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(lora_run.run_dir / "final"), "--out", str(out)]) == 0
    assert (out / "adapter_model.safetensors").is_file() and (out / "config.yaml").is_file()
    assert "model card" in capsys.readouterr().out
    card = (out / "README.md").read_text()
    assert front_matter(card)["library_name"] == "peft"  # not merged: still an adapter
    assert "embedded tiny model" in card and "a LoRA adapter" in card and grpolab_version() in card
    assert "`numeric` x 1" in card and "`answer_format` x 0.2" in card  # the rewards and weights
    assert (
        "LoRA r=4" in card and "| questions per step x generations | 2 x 4 |" in card and "| steps | 2 of 2 |" in card
    )
    status = json.loads((lora_run.run_dir / "status.json").read_text())
    acc = f"| test/accuracy | {status['before']['test/accuracy']:.4g} | {status['after']['test/accuracy']:.4g} |"
    assert acc in card  # before/after, the very numbers of the run
    assert "Data: synthetic `arithmetic` questions (+; numbers 0..99)." in card
    # the exported config reproduces the run
    saved = load_config(str(out / "config.yaml"), [], env_file=None, environ={})
    assert saved.model.finetune == "lora" and saved.train.max_steps == 2


def test_export_merge_of_final_gives_a_plain_model_and_says_so(lora_run, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged"
    assert main(["export", str(lora_run.run_dir / "final"), "--out", str(out), "--merge"]) == 0
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert not any("lora_" in name for name, _ in model.named_parameters())
    card = (out / "README.md").read_text()
    assert front_matter(card)["library_name"] == "transformers" and "merged into the base weights" in card


def test_export_of_a_checkpoint_reports_its_own_step(lora_run, tmp_path):
    out = tmp_path / "step1"
    assert main(["export", str(lora_run.run_dir / "checkpoints" / "step-2"), "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    state = json.loads((lora_run.run_dir / "checkpoints" / "step-2" / "trainer_state.json").read_text())
    assert "checkpoint at step 2" in card and "Validation at step 2" in card
    assert f"| eval/accuracy | {state['history'][-1]['eval/accuracy']:.4g} |" in card


def test_a_directory_without_a_run_is_one_line(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    assert main(["export", str(tmp_path / "model"), "--out", str(tmp_path / "x")]) == 1
    assert "holds no model" in capsys.readouterr().err


class FakeApi:
    """Stands in for huggingface_hub.HfApi: records the calls and what the folder held at upload."""

    calls: ClassVar[list[tuple[str, dict[str, Any]]]] = []
    fail = False

    def create_repo(self, **kwargs: Any) -> None:
        FakeApi.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs: Any) -> Any:
        if FakeApi.fail:
            raise ConnectionError("no route to host")
        files = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())
        FakeApi.calls.append(("upload_folder", {**kwargs, "files": files}))
        return type("Commit", (), {"commit_url": f"https://hub.example/{kwargs['repo_id']}/commit/1"})()


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> type[FakeApi]:
    import huggingface_hub

    FakeApi.calls, FakeApi.fail = [], False
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return FakeApi


def test_push_to_hub_uploads_the_export(lora_run, tmp_path, fake_hub, capsys):
    out = tmp_path / "pushed"
    args = ["export", str(lora_run.run_dir / "final"), "--out", str(out), "--push-to-hub", "me/tiny-grpo"]
    assert main([*args, "--private"]) == 0
    (create, created), (upload, uploaded) = fake_hub.calls
    assert create == "create_repo" and created == {
        "repo_id": "me/tiny-grpo",
        "repo_type": "model",
        "private": True,
        "exist_ok": True,
    }
    assert upload == "upload_folder" and uploaded["folder_path"] == str(out) and uploaded["repo_id"] == "me/tiny-grpo"
    assert {"README.md", "adapter_model.safetensors", "config.yaml"} <= set(uploaded["files"])
    assert "uploaded to https://hub.example/me/tiny-grpo/commit/1" in capsys.readouterr().out


def test_a_bad_repo_id_fails_before_exporting(lora_run, tmp_path, fake_hub, capsys):
    out = tmp_path / "never"
    args = ["export", str(lora_run.run_dir / "final"), "--out", str(out), "--push-to-hub", "no spaces/allowed here"]
    assert main(args) == 1
    assert "not a valid repo id" in capsys.readouterr().err and not out.exists() and not fake_hub.calls


def test_an_upload_failure_is_one_line(lora_run, tmp_path, fake_hub, capsys):
    fake_hub.fail = True
    args = ["export", str(lora_run.run_dir / "final"), "--out", str(tmp_path / "e"), "--push-to-hub", "me/m"]
    assert main(args) == 1
    assert "upload failed (ConnectionError: no route to host)" in capsys.readouterr().err


def test_card_of_a_hub_model_names_it_as_base_model():
    cfg = load_config("arithmetic", [], env_file=None, environ={})
    card = model_card(cfg, {"status": "finished"}, is_adapter=False, merged=False)
    assert front_matter(card)["base_model"] == cfg.model.name and "/" in cfg.model.name
    assert "No evaluation was recorded" in card
