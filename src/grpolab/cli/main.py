"""`grpolab` command line: parse, validate, dispatch. No training logic lives here.

grpolab train [--config PRESET] [--resume [CKPT]] [--mode masked|full] [--multirun] [key.sub=value ...]
grpolab eval --model DIR|HUB_ID [--adapter DIR] [--config PRESET] [--split val|test] [key=value ...]
grpolab sweep | report | runs | tensorboard | rewards list|try | export | make-tiny-model
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

from dotenv import load_dotenv

from grpolab.config.load import ConfigError, load_config
from grpolab.config.schema import Config


def fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def resolve_config(preset: str | None, overrides: list[str]) -> Config:
    """Load and fully validate a config (rewards, data) before anything heavy is imported or loaded."""
    from grpolab.data import validate_data
    from grpolab.rewards import build_rewards

    cfg = load_config(preset, overrides)
    build_rewards(cfg.rewards)
    validate_data(cfg.data)
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.mode:
        overrides.append(f"agent.mode={args.mode}")
    if args.resume is not None:
        overrides.append(f"train.resume={args.resume}")
    if args.multirun:
        from grpolab.observe.sweep import default_run_one, default_sweep_dir, run_sweep, split_grid_overrides

        preset = args.config or "default"
        fixed, grid = split_grid_overrides(overrides)
        cfg = resolve_config(preset, fixed)  # validate the fixed part before the first run
        sweep_dir = default_sweep_dir(cfg.train.output_dir, cfg.train.run_name)
        rows = run_sweep(preset, fixed, grid, sweep_dir, partial(default_run_one, preset=preset))
        print((sweep_dir / "results.md").read_text())
        return 0 if all(str(r.get("status", "")).startswith(("finished", "stopped")) for r in rows) else 1
    cfg = resolve_config(args.config or "default", overrides)
    from grpolab.train.preflight import preflight

    preflight(cfg)  # resume path, device, writable output, judge: before the training stack is imported
    from grpolab.train.outcome import exit_code
    from grpolab.train.trainer import run_training

    summary = run_training(cfg)
    print(f"run directory: {summary.run_dir}")
    if summary.degraded:
        print(f"warning: run degraded: {summary.degraded}", file=sys.stderr)
    return exit_code(summary.status, summary.signal)  # 130/143 interrupted, 3 degraded (train/outcome.py)


def cmd_eval(args: argparse.Namespace) -> int:
    overrides = [f"model.name={args.model}", *args.overrides]
    cfg = resolve_config(args.config or "default", overrides)
    from grpolab.models.verify import check_model_dir
    from grpolab.train.preflight import check_device, check_writable

    out = Path(args.out) if args.out else None
    if out:  # before the model loads: a read-only --out must not cost the whole evaluation
        if out.is_dir():
            return fail(f"eval --out: {out} is a directory; give a file path")
        check_writable(out.parent, "eval --out")
    if args.adapter:
        check_model_dir(Path(args.adapter), adapter=True, what="eval --adapter")
    model_dir = Path(args.model).expanduser()
    if model_dir.is_dir():
        check_model_dir(model_dir, adapter=False, what="eval --model")
    check_device(cfg.train.device)
    from grpolab.cli.eval import run_eval

    result = run_eval(cfg, adapter=args.adapter, split=args.split)
    if out:
        out.write_text(result.to_json())
        print(f"wrote {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from grpolab.models.verify import check_model_dir
    from grpolab.train.resume_check import latest_checkpoint

    CONFIG_FILE = "config.yaml"
    source, out = Path(args.checkpoint), Path(args.out)
    if out.is_file() or (out.is_dir() and any(out.iterdir())):
        what = "an existing file; give a directory" if out.is_file() else "not empty; choose another directory"
        return fail(f"export: --out {out} is {what}", 1)
    if not source.exists():
        return fail(f"export: {source} does not exist", 1)
    if not any((source / name).is_file() for name in (CONFIG_FILE, "config.json", "adapter_config.json")):
        # a run directory (or anything else without a model): say what to export instead
        options = [str(p) for p in (source / "final", latest_checkpoint(source / "checkpoints")) if p and p.is_dir()]
        hint = f"; export {' or '.join(options)}" if options else ""
        return fail(f"export: {source} holds no model (neither a checkpoint nor a model directory){hint}", 1)
    check_model_dir(source, what="export")  # a truncated checkpoint fails here, in a second
    from grpolab.models.loading import resolve_source
    from grpolab.train.export import export_model

    base = None
    if (source / CONFIG_FILE).is_file():
        saved = load_config(str(source / CONFIG_FILE), [], env_file=None, environ={})
        base = resolve_source(saved.model.name)
    export_model(source, out, merge=args.merge, base_model_name=base)
    print(f"exported {args.checkpoint} -> {args.out}")
    return 0


def cmd_make_tiny(args: argparse.Namespace) -> int:
    from grpolab.models.make_tiny import make_tiny_agent_model, make_tiny_model
    from grpolab.models.tiny_model import TINY_AGENT_DIR, TINY_DIR

    if args.agent:  # stage 3 on top of the tiny model: tool-use traces for the agent presets
        out = Path(args.out) if args.out else TINY_AGENT_DIR
        card = make_tiny_agent_model(TINY_DIR, out, seed=args.seed)
    else:
        card = make_tiny_model(Path(args.out or TINY_DIR), seed=args.seed, target_accuracy=args.target_accuracy)
    print(json.dumps(card, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grpolab", description="GRPO fine-tuning for language models")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="run GRPO training")
    train.add_argument("--config", "-c", help="preset name (configs/NAME.yaml) or YAML path")
    train.add_argument("--resume", nargs="?", const="auto", default=None, help="resume latest (or CKPT)")
    train.add_argument("--mode", choices=["masked", "full"], help="agent loss mode (agent.mode)")
    train.add_argument("--multirun", "-m", action="store_true", help="comma lists become a sweep grid")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. grpo.beta=0.05")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="evaluate a model, a checkpoint or an adapter")
    ev.add_argument("--model", required=True, help="'tiny', a model directory or a hub id")
    ev.add_argument("--adapter", help="LoRA adapter directory (e.g. a run's checkpoints/best)")
    ev.add_argument("--config", "-c", help="preset for task, prompts, rewards and eval settings")
    ev.add_argument("--split", choices=["val", "test"], default="test")
    ev.add_argument("--out", help="write the results as JSON here")
    ev.add_argument("overrides", nargs="*")
    ev.set_defaults(func=cmd_eval)

    export = sub.add_parser("export", help="write a checkpoint as a plain transformers model")
    export.add_argument("checkpoint")
    export.add_argument("--out", required=True)
    export.add_argument("--merge", action="store_true", help="merge a LoRA adapter into the base weights")
    export.set_defaults(func=cmd_export)

    tiny = sub.add_parser("make-tiny-model", help="rebuild the embedded tiny model")
    tiny.add_argument("--out", help="output directory (default: the embedded model's own)")
    tiny.add_argument("--agent", action="store_true", help="build tiny-agent from tiny (tool-use traces)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--target-accuracy", type=float, default=0.35)
    tiny.set_defaults(func=cmd_make_tiny)

    from grpolab.cli.observe import add_observe_parsers
    from grpolab.cli.rewards import add_rewards_parser

    add_rewards_parser(sub)
    add_observe_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        load_dotenv(".env", override=False)  # API keys for the judge live in the environment only
    except UnicodeDecodeError:
        from grpolab.config.load import read_env_file

        try:
            read_env_file(Path(".env"))
        except ConfigError as err:  # names the file and the line
            return fail(str(err))
    try:
        return int(args.func(args))
    except ConfigError as err:
        return fail(str(err))
    except KeyboardInterrupt:  # a second Ctrl-C / SIGTERM: stopped without saving
        return fail("interrupted", 130)
    except Exception as err:
        if isinstance(err, user_errors()):
            return fail(str(err), 1)
        raise


# Exceptions that describe a problem the user can fix, in one line: printed without a traceback.
USER_ERRORS = {
    "grpolab.data.base": "DataError",
    "grpolab.models.loading": "ModelLoadError",
    "grpolab.models.verify": "ModelFilesError",
    "grpolab.rewards.api": "RewardError",
    "grpolab.train.atomic": "DiskFullError",
    "grpolab.train.control": "ResumeError",
    "grpolab.train.health": "UnscoredRunError",
    "grpolab.train.preflight": "PreflightError",
}


def user_errors() -> tuple[type[BaseException], ...]:
    # only from modules already imported: an exception cannot be of a class never loaded, and importing
    # models.loading here would cost seconds of transformers import on the way to an error line
    loaded = [getattr(sys.modules[module], name) for module, name in USER_ERRORS.items() if module in sys.modules]
    return (*loaded, FileExistsError)
