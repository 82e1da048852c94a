"""`sumpipe`: the operator's command-line tool.

Each group of subcommands lives in its own module with a `register(subparsers)` function that
adds its parsers and sets `func` (called with the parsed args, returns an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sumpipe import version

# module -> what it adds
COMMAND_MODULES = (
    "sumpipe.ops.commands.local",    # local up / local down
    "sumpipe.ops.commands.jobs",     # submit, jobs, logs, demo
    "sumpipe.ops.commands.deploy",   # deploy, destroy, package
    "sumpipe.ops.commands.serve",    # serve
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sumpipe", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
