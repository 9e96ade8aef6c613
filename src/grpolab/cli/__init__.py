"""The command line: one module per command group, each thin (parse, build, call the library)."""

from grpolab.cli.main import main

__all__ = ["main"]
