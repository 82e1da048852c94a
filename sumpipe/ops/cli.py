"""`sumpipe`: the operator's command-line tool.

Each group of subcommands lives in its own module with a `register(subparsers)` function that
adds its parsers and sets `func` (called with the parsed args, returns an exit code). An AWS
error ends the command with one line saying what to do (sumpipe.ops.aws_errors), exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from sumpipe import version

# module -> what it adds
COMMAND_MODULES = (
    "sumpipe.ops.commands.local",    # local up / local down
    "sumpipe.ops.commands.jobs",     # submit, jobs, logs, demo
    "sumpipe.ops.commands.deploy",   # deploy, destroy, package
    "sumpipe.ops.commands.serve",    # serve
    "sumpipe.ops.commands.reviewers",  # reviewers add / list / remove
)
# Groups of commands that each talk to AWS: --region and --profile after the action too
# (`sumpipe reviewers list --region eu-west-1`). (`local`'s actions run the emulator instead.)
AWS_GROUPS = ("reviewers",)


def _aws_options(parser: argparse.ArgumentParser, default: object) -> None:
    group = parser.add_argument_group("AWS")
    group.add_argument(
        "--region", default=default, help="AWS region (default: AWS_DEFAULT_REGION, else the profile's)"
    )
    group.add_argument(
        "--profile",
        default=default,
        help="named profile of ~/.aws/config (default: AWS_PROFILE, else the default profile)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sumpipe", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    _aws_options(parser, None)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for name, subparser in subparsers.choices.items():
        # Also after the command (`sumpipe jobs --region eu-west-1`), as the aws CLI takes them;
        # SUPPRESS leaves a value given before the command in place.
        _aws_options(subparser, argparse.SUPPRESS)
        if name in AWS_GROUPS:
            for command in _subcommands(subparser):
                _aws_options(command, argparse.SUPPRESS)
    return parser


def _subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return [
        subparser
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for subparser in action.choices.values()
    ]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # boto3 reads these variables (not AWS_REGION) wherever a session is made.
    if args.region:
        os.environ["AWS_DEFAULT_REGION"] = args.region
    if args.profile:
        os.environ["AWS_PROFILE"] = args.profile
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        from sumpipe.ops.aws_errors import explain

        line = explain(error, _region())
        if line is None:
            raise
        print(f"sumpipe: error: {line}", file=sys.stderr)
        return 1


def _region() -> str | None:
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        return boto3.session.Session().region_name
    except BotoCoreError:  # an unknown profile: the error being explained says so
        return None


if __name__ == "__main__":
    sys.exit(main())
