"""`grpolab` command line: parse, validate, dispatch. No training logic lives here.

grpolab train [--config PRESET | CONFIG.yaml] [--resume [CKPT]] [--mode masked|full] [--multirun]
              [--print-config] [script flags: --batch_size N ...] [key.sub=value ...]
grpolab eval [--model DIR|HUB_ID] [--adapter DIR] [--config PRESET] [--split val|test] [key=value ...]
grpolab vllm-serve [--config PRESET] [--host H] [--port P] [key=value ...]
grpolab sweep | report | runs | tensorboard | rewards list|try | export | make-tiny-model
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from functools import partial
from pathlib import Path

from dotenv import load_dotenv

from grpolab.compat.load import load_config
from grpolab.config.load import ConfigError
from grpolab.config.schema import Config
from grpolab.errors import UserError


def fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def resolve_config(preset: str | None, overrides: list[str]) -> Config:
    """Load and fully validate a config (rewards, data) before anything heavy is imported or loaded."""
    from grpolab.data import validate_data
    from grpolab.rewards import build_rewards
    from grpolab.train.optimizer import check_scheduler

    cfg = load_config(preset, overrides)
    build_rewards(cfg.rewards)
    validate_data(cfg.data)
    check_scheduler(cfg.optim, cfg.train.max_steps, cfg.grpo.num_iterations)
    return cfg


def warn_tiny_settings(cfg: Config) -> None:
    """A real model on the tiny model's tuned settings: said once the run is about to start (after the
    checks, so a bad input is still one error line)."""
    from grpolab.config.model_defaults import tiny_settings_warning, unused_lora_warning

    for warning in (tiny_settings_warning(cfg), unused_lora_warning(cfg)):
        if warning:
            print(f"warning: {warning}", file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    from grpolab.cli.train_args import split_resume
    from grpolab.compat.script_flags import (
        batch_size_overrides,
        dataset_type_sizes,
        flag_overrides,
        split_config_path,
    )

    resume, overrides = split_resume(args.resume, list(args.overrides))
    args.config, overrides = split_config_path(args.config, overrides)
    overrides = [*dataset_type_sizes(args.dataset_type), *overrides]
    if args.mode:
        overrides.append(f"agent.mode={args.mode}")
    if resume is not None:
        overrides.append(f"train.resume={resume}")
    overrides += flag_overrides(args)
    if args.batch_size is not None:
        overrides += batch_size_overrides(
            args.batch_size, args.config or "default", overrides, bool(args.num_generations)
        )
    if args.print_config:
        from grpolab.compat.provenance import explain_config, format_config

        if args.multirun:  # the first combination of the grid stands for all of them
            from grpolab.cli.sweep import combo_overrides, parse_grid, split_grid_overrides

            fixed, grid = split_grid_overrides(overrides)
            combos = parse_grid(grid)
            print(f"# --multirun: the first of {len(combos)} combinations")
            overrides = [*fixed, *combo_overrides(combos[0])]
        print(format_config(*explain_config(args.config or "default", overrides)), end="")
        return 0
    if args.multirun:
        from grpolab.cli.sweep import default_run_one, default_sweep_dir, run_sweep, split_grid_overrides

        preset = args.config or "default"
        fixed, grid = split_grid_overrides(overrides)
        cfg = resolve_config(preset, fixed)  # validate the fixed part before the first run
        sweep_dir = default_sweep_dir(cfg.train.output_dir, cfg.train.run_name)
        rows = run_sweep(preset, fixed, grid, sweep_dir, partial(default_run_one, preset=preset))
        print((sweep_dir / "results.md").read_text())
        return 0 if all(str(r.get("status", "")).startswith(("finished", "stopped")) for r in rows) else 1
    cfg = resolve_config(args.config or "default", overrides)
    if resume == "auto" and args.config is None:  # a bare --resume must not start a fresh default run
        from grpolab.train.resume_check import auto_resume_point, nothing_to_resume

        if auto_resume_point(cfg.train.output_dir, cfg.train.run_name) is None:
            return fail(nothing_to_resume(cfg.train.output_dir, cfg.train.run_name), 1)
    from grpolab.train.preflight import preflight

    preflight(cfg)  # resume path, device, writable output, judge: before the training stack is imported
    warn_tiny_settings(cfg)
    from grpolab.train.signals import interrupt_at_once

    for stop in (signal.SIGINT, signal.SIGTERM):  # imports, model load: stop at once (the run has its own)
        signal.signal(stop, interrupt_at_once)
    from grpolab.api import run_training
    from grpolab.compat.provenance import environment_changes, explain_config
    from grpolab.observe.journal import journaled
    from grpolab.train.outcome import exit_code

    changed = environment_changes(explain_config(args.config or "default", overrides)[1])
    if changed:  # a SEED or OUTPUT_DIR left in the shell must not change a run silently
        print(f"info: set from the environment: {', '.join(changed)}", file=sys.stderr)
    summary = journaled(cfg, args.command_line, run_training)
    if os.environ.get("RANK", "0") != "0":  # under torchrun: rank 0 says it, once
        return exit_code(summary.status, summary.signal)
    print(f"run directory: {summary.run_dir}")
    if summary.degraded:
        print(f"warning: run degraded: {summary.degraded}", file=sys.stderr)
    return exit_code(summary.status, summary.signal)  # 130/143 interrupted, 3 degraded (train/outcome.py)


def cmd_eval(args: argparse.Namespace) -> int:
    # no --model: the preset's own model
    overrides = [*([f"model.name={args.model}"] if args.model else []), *args.overrides]
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
    model_dir = Path(args.model).expanduser() if args.model else None
    if model_dir is not None and model_dir.is_dir():
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
    from grpolab.train.export import export_run
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
    if args.push_to_hub:
        from grpolab.train.hub_push import check_repo_id

        check_repo_id(args.push_to_hub)  # before the export: a typo should not cost a merge
    out = export_run(source, out, merge=args.merge)
    print(f"exported {args.checkpoint} -> {out} (model card: {out / 'README.md'})")
    if args.push_to_hub:
        from grpolab.train.hub_push import push_to_hub

        print(f"uploaded to {push_to_hub(out, args.push_to_hub, private=args.private)}")
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


def help_with_presets(parser: argparse.ArgumentParser) -> str:
    """`train --help` ends with the presets; built on demand (it resolves every preset: ~0.5 s)."""
    from grpolab.config.presets import help_text

    parser.epilog = help_text()
    return argparse.ArgumentParser.format_help(parser)


def build_parser() -> argparse.ArgumentParser:
    from grpolab import __version__

    parser = argparse.ArgumentParser(prog="grpolab", description="GRPO fine-tuning for language models")
    parser.add_argument("--version", action="version", version=f"grpolab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="run GRPO training", formatter_class=argparse.RawDescriptionHelpFormatter)
    train.format_help = partial(help_with_presets, train)  # type: ignore[method-assign]
    train.add_argument("--config", "-c", help="preset name (configs/NAME.yaml) or YAML path")
    train.add_argument("--resume", nargs="?", const="auto", default=None, help="resume latest (or CKPT)")
    train.add_argument("--mode", choices=["masked", "full"], help="agent loss mode (agent.mode)")
    train.add_argument("--multirun", "-m", action="store_true", help="comma lists become a sweep grid")
    train.add_argument("--print-config", action="store_true", help="print the resolved config and its sources; exit")
    train.add_argument("overrides", nargs="*", help="dotted overrides (grpo.beta=0.05) or a CONFIG.yaml")
    from grpolab.cli.train_args import add_train_flags

    add_train_flags(train)
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="evaluate a model, a checkpoint or an adapter")
    ev.add_argument("--model", help="'tiny', a model directory or a hub id (default: the preset's model.name)")
    ev.add_argument("--adapter", help="LoRA adapter directory (e.g. a run's checkpoints/best)")
    ev.add_argument("--config", "-c", help="preset for task, prompts, rewards and eval settings")
    ev.add_argument("--split", choices=["val", "test"], default="test")
    ev.add_argument("--out", help="write the results as JSON here")
    ev.add_argument("overrides", nargs="*")
    ev.set_defaults(func=cmd_eval)

    export = sub.add_parser("export", help="a run's final/ or a checkpoint as a model folder with a model card")
    export.add_argument("checkpoint")
    export.add_argument("--out", required=True)
    export.add_argument("--merge", action="store_true", help="merge a LoRA adapter into the base weights")
    export.add_argument("--push-to-hub", metavar="REPO", help="upload the export to this hub model repo")
    export.add_argument("--private", action="store_true", help="create the hub repo as private")
    export.set_defaults(func=cmd_export)

    tiny = sub.add_parser("make-tiny-model", help="rebuild the embedded tiny model")
    tiny.add_argument("--out", help="output directory (default: the embedded model's own)")
    tiny.add_argument("--agent", action="store_true", help="build tiny-agent from tiny (tool-use traces)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--target-accuracy", type=float, default=0.35)
    tiny.set_defaults(func=cmd_make_tiny)

    from grpolab.cli.observe import add_observe_parsers
    from grpolab.cli.rewards import add_rewards_parser
    from grpolab.cli.serve import add_serve_parser

    add_rewards_parser(sub)
    add_observe_parsers(sub)
    add_serve_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from grpolab.parallel.lifecycle import exit_after_distributed_run

    code = run_command(argv)
    exit_after_distributed_run(code)  # returns unless this process started a process group
    return code


def run_command(argv: list[str] | None) -> int:
    if os.getcwd() not in sys.path:  # the `grpolab` script, unlike `python -m`, does not see the cwd:
        sys.path.append(os.getcwd())  # a reward or env module there (fn: my_rewards:f); last, never shadowing
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and (args.command != "train" or any(item.startswith("-") for item in unknown)):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if unknown:  # `key=value` after a flag (argparse gives positionals one slot): still overrides
        args.overrides += unknown
    args.command_line = "grpolab " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        load_dotenv(".env", override=False)  # API keys for the judge live in the environment only
    except UnicodeDecodeError:
        from grpolab.compat.env_vars import read_env_file

        try:
            read_env_file(Path(".env"))
        except ConfigError as err:  # names the file and the line
            return fail(str(err))
    try:
        return int(args.func(args))
    except (UserError, FileExistsError) as err:  # FileExistsError: export's --out is taken
        return fail(str(err), getattr(err, "exit_code", 1))
    except KeyboardInterrupt as err:  # a signal before the run could save, or a second one
        return fail("interrupted", 128 + getattr(err, "signum", signal.SIGINT))
