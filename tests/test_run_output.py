"""What a person sees and what a run leaves on disk: status lines where a run used to be silent,
the presets in `train --help`, one-line warnings, and the save policy (best/ weights only, no
end-of-run optimizer state for a large model, no second evaluation of weights already tested)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

import grpolab.train.trainer as trainer_module
from grpolab.cli.main import main
from grpolab.compat.load import load_config
from grpolab.config.model_defaults import unused_lora_warning
from grpolab.config.presets import presets
from grpolab.observe.console import Working
from grpolab.train import checkpoint

pytestmark = pytest.mark.slow
SHORT = [
    "-c", "quick_test", "train.max_steps=1", "eval.size=4", "data.val_size=4", "data.test_size=4",
    "generation.max_new_tokens=8", "train.torch_threads=1",
]  # fmt: skip


def only_run(out: Path) -> Path:
    (run_dir,) = [p.parent for p in out.glob("*/*/status.json")]
    return run_dir


def test_working_prints_start_and_end_lines_without_a_terminal(monkeypatch):
    out = io.StringIO()
    with Working("loading model m", file=out) as outer:
        with Working("converting m (once)", file=out):  # nested: its own lines, no second live display
            pass
        outer.update("half way")  # without a terminal: at most one line per 30 s, none this soon
    lines = out.getvalue().splitlines()
    assert lines[0] == "loading model m ..." and lines[1] == "converting m (once) ..."
    assert lines[2].startswith("converting m (once): done in 0:0") and lines[3].startswith("loading model m: done")
    quiet = io.StringIO()
    with Working("x", quiet=True, file=quiet):
        pass
    monkeypatch.setenv("RANK", "1")  # under torchrun only rank 0 speaks
    other_rank = io.StringIO()
    with Working("x", file=other_rank):
        pass
    assert quiet.getvalue() == "" and other_rank.getvalue() == ""


def test_a_run_says_what_it_loads_and_evaluates_and_rank_0_prints_the_run_directory(tmp_path, capsys, monkeypatch):
    assert main(["train", *SHORT, f"train.output_dir={tmp_path / 'a'}"]) == 0
    out, err = capsys.readouterr()
    assert "loading model tiny (full) ..." in err and "loading model tiny (full): done in" in err
    assert "before training: evaluating test ..." in err
    assert out.count("run directory:") == 1
    monkeypatch.setenv("RANK", "1")  # what torchrun sets in the other processes (WORLD_SIZE unset: one process)
    assert main(["train", *SHORT, f"train.output_dir={tmp_path / 'b'}"]) == 0
    out, err = capsys.readouterr()
    assert "run directory:" not in out and "loading model" not in err


def test_train_help_lists_every_preset(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    listed = text.split("presets (-c NAME", 1)[1]
    for name in presets():
        assert f"  {name} " in listed or f"+experiment={name}" in listed, name
    assert "smollm2-135m-instruct, LoRA r16" in listed  # numbers come from the preset itself


def test_lora_keys_on_a_full_finetuning_run_say_they_do_nothing(tmp_path, capsys):
    warning = unused_lora_warning(load_config("quick_test", ["model.lora_rank=8"], env_file=None, environ={}))
    assert warning == "model.lora_rank: no effect with model.finetune=full (all weights train); add model.finetune=lora"
    lora = load_config("quick_test", ["model.lora_rank=8", "model.finetune=lora"], env_file=None, environ={})
    assert unused_lora_warning(lora) is None
    assert unused_lora_warning(load_config("quick_test", env_file=None, environ={})) is None  # nothing set
    assert main(["train", *SHORT, "model.lora_alpha=16", f"train.output_dir={tmp_path}"]) == 0
    assert "warning: model.lora_alpha: no effect with model.finetune=full" in capsys.readouterr().err


def test_best_keeps_weights_only_and_a_large_optimizer_state_is_not_kept_at_the_end(tmp_path, monkeypatch, capsys):
    assert main(["train", *SHORT, "train.max_steps=2", f"train.output_dir={tmp_path / 'small'}"]) == 0
    run_dir = only_run(tmp_path / "small")
    best, last = run_dir / "checkpoints" / "best", run_dir / "checkpoints" / "step-2"
    assert (best / "model.safetensors").is_file() and (best / "trainer_state.json").is_file()
    assert not any((best / name).exists() for name in ("optimizer.pt", "scheduler.pt", "rng_state.pt"))
    assert (last / "optimizer.pt").is_file()  # the tiny model's optimizer state is small: resumable
    # best/ is not a resume point, and says so in one line
    assert main(["train", *SHORT, "train.max_steps=3", "--resume", str(best)]) == 1
    assert "holds weights only, no optimizer state" in capsys.readouterr().err

    monkeypatch.setattr(checkpoint, "END_CHECKPOINT_LIMIT", 0)  # as if the model were SmolLM2 in full FT
    assert main(["train", *SHORT, "train.max_steps=2", f"train.output_dir={tmp_path / 'large'}"]) == 0
    run_dir = only_run(tmp_path / "large")
    assert not list((run_dir / "checkpoints").glob("step-*")) and (run_dir / "final" / "model.safetensors").is_file()
    assert "no end-of-run checkpoint (its optimizer state would take" in (run_dir / "train.log").read_text()
    # asked for explicitly, it is kept
    argv = ["train", *SHORT, "train.end_checkpoint=resumable", f"train.output_dir={tmp_path / 'asked'}"]
    assert main(argv) == 0
    assert (only_run(tmp_path / "asked") / "checkpoints" / "step-1" / "optimizer.pt").is_file()


@pytest.mark.parametrize(
    ("split", "expected"),
    [
        # before (0, test), validation (0, val), validation (1, val); the exported model is step 0's,
        # whose test result is the before-training one: 3 evaluations, not 4
        ("test", 3),
        # before (0, val) = the first validation; validation (1, val); after = one of them: 2, not 4
        ("val", 2),
    ],
)
def test_weights_already_tested_are_not_evaluated_again(tmp_path, monkeypatch, split, expected):
    calls = []
    real = trainer_module.evaluate_examples

    def counted(*args, **kwargs):
        calls.append(len(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate_examples", counted)
    argv = ["train", *SHORT, "train.min_delta=1.0", f"eval.final_split={split}", "logging.quiet=true",
            f"train.output_dir={tmp_path}"]  # fmt: skip
    assert main(argv) == 0  # min_delta 1.0: no step can beat the untrained model, so step 0 is exported
    assert len(calls) == expected
    status = json.loads((only_run(tmp_path) / "status.json").read_text())
    assert status["after"] == status["before"]
