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
    from grpolab.config.model_defaults import tiny_settings_warning
    from grpolab.data import validate_data
    from grpolab.rewards import build_rewards

    cfg = load_config(preset, overrides)
    build_rewards(cfg.rewards)
    validate_data(cfg.data)
    warning = tiny_settings_warning(cfg)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
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
    from grpolab.train.trainer import run_training

    summary = run_training(cfg)
    print(f"run directory: {summary.run_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    overrides = [f"model.name={args.model}", *args.overrides]
    cfg = resolve_config(args.config or "default", overrides)
    from grpolab.cli.eval import run_eval

    result = run_eval(cfg, adapter=args.adapter, split=args.split)
    out = Path(args.out) if args.out else None
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(result.to_json())
        print(f"wrote {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from grpolab.models.loading import resolve_source
    from grpolab.train.export import export_model

    saved = load_config(str(Path(args.checkpoint) / "config.yaml"), [], env_file=None, environ={})
    export_model(
        Path(args.checkpoint),
        Path(args.out),
        merge=args.merge,
        base_model_name=resolve_source(saved.model.name, saved.model.cache_dir),
    )
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
    load_dotenv(".env", override=False)  # API keys for the judge live in the environment only
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as err:
        return fail(str(err))
    except Exception as err:
        from grpolab.data import DataError
        from grpolab.models.loading import ModelLoadError
        from grpolab.rewards import RewardError
        from grpolab.train.control import ResumeError

        if isinstance(err, (DataError, ModelLoadError, ResumeError, RewardError)):
            return fail(str(err), 1)
        raise
