"""`sumpipe local up|attach|down|status`: the embedded local stack (moto + real sshd workers + Lambda
runtime). `up` deploys the template itself; `up --emulator-only`, then `sumpipe deploy` with the printed
parameters, then `attach` runs the same stack deployed by hand, exactly as a user deploys to AWS."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sumpipe.local import motoserver, stack


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("local", help="start/stop the embedded local AWS stack")
    commands = parser.add_subparsers(dest="local_command", required=True, metavar="up|attach|down|status")

    up = commands.add_parser("up", help="start the stack (returns when ready; `down` stops it)")
    _common(up)
    up.add_argument("--foreground", action="store_true", help="run in this process until Ctrl-C")
    up.add_argument(
        "--emulator-only",
        action="store_true",
        help="start only the emulator and print the parameters for `sumpipe deploy`; then `local attach`",
    )
    up.add_argument("--workers", type=int, default=1, choices=(1, 2, 3), help="worker instances (default: 1)")
    up.add_argument("--stack", default="sumpipe", help="CloudFormation stack name (default: %(default)s)")
    add_hosts_argument(up)
    up.add_argument(
        "--subnet",
        default="",
        metavar="CIDR",
        help="the workers' network, /22 or larger; another stack's must not overlap it (default: "
        "10.200.0.0/16 for namespaces, 127.77.0.0/16 for loopback, where it must lie in 127.0.0.0/8)",
    )
    up.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a SUMPIPE_* setting for the functions, e.g. SUMPIPE_JOB_DEADLINE_S=60 (repeatable)",
    )
    up.add_argument(
        "--no-api",
        dest="api",
        action="store_false",
        help="don't deploy the realtime API and review page (by default they are, behind a local "
        "HTTP API front whose URL is printed; reviewers sign in with the stack's Cognito pool)",
    )
    up.add_argument(
        "--watchdog-interval",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds between watchdog runs (default: %(default)s; AWS: the template's schedule)",
    )
    up.set_defaults(func=run_up)

    attach = commands.add_parser(
        "attach", help="run the worker hosts and Lambda runtime for a stack deployed into the emulator"
    )
    _common(attach)
    attach.add_argument("--stack", default="sumpipe", help="the deployed stack (default: %(default)s)")
    attach.set_defaults(func=run_attach)

    down = commands.add_parser("down", help="stop the stack; leaves no process, namespace or bridge behind")
    _common(down)
    down.set_defaults(func=run_down)

    status = commands.add_parser("status", help="is the stack up, and where")
    _common(status)
    status.set_defaults(func=run_status)


def add_hosts_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-iam",
        dest="iam",
        action="store_false",
        help="don't enforce IAM in the emulator (debugging only: the rehearsal of AWS is then "
        "friendlier than AWS)",
    )
    parser.add_argument(
        "--hosts",
        choices=("auto", "namespaces", "loopback"),
        default="auto",
        help="where the worker hosts' sshd runs: a network namespace each (needs root), loopback "
        "addresses (no root needed), or auto: namespaces when possible (default: %(default)s)",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", type=Path, default=stack.DEFAULT_DIR, help="state directory (default: %(default)s)"
    )


def run_up(args: argparse.Namespace) -> int:
    overrides = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("SUMPIPE_"):
            raise SystemExit(f"sumpipe local up: --set expects SUMPIPE_NAME=VALUE, got {item!r}")
        overrides[name] = value
    config = stack.StackConfig(
        state_dir=args.dir,
        stack_name=args.stack,
        workers=args.workers,
        hosts=args.hosts,
        iam=args.iam,
        subnet=args.subnet,
        settings=overrides,
        watchdog_interval_s=args.watchdog_interval,
        deploy=not args.emulator_only,
        api=args.api,
    )
    try:
        if args.foreground:
            stack.run_foreground(config)
            return 0
        if args.emulator_only:
            stack.up_emulator(config)
            _print_emulator_instructions(args.dir, args.stack)
            return 0
        _print_ready(stack.up(config), args.dir)
    except (stack.StackError, motoserver.EmulatorError) as error:
        print(f"sumpipe local up: {error}", file=sys.stderr)
        return 1
    return 0


def _print_emulator_instructions(state_dir: Path, stack_name: str) -> None:
    params = " ".join(f"--param {k}={v}" for k, v in stack.emulator_parameters(state_dir).items())
    print(f"emulator up; its client settings are in {state_dir / 'env'}. Deploy into it and attach:")
    print(f"  set -a; . {state_dir / 'env'}; set +a")
    print(f"  sumpipe deploy --stack {stack_name} {params}")
    directory = "" if state_dir == stack.DEFAULT_DIR else f" --dir {state_dir}"
    print(f"  sumpipe local attach --stack {stack_name}{directory}")


def run_attach(args: argparse.Namespace) -> int:
    try:
        info = stack.attach(args.dir, args.stack)
    except stack.StackError as error:
        print(f"sumpipe local attach: {error}")
        return 1
    _print_ready(info, args.dir)
    return 0


def _print_ready(info: stack.StackInfo, state_dir: Path) -> None:
    print(
        f"local stack up in {info.timings['total_s']:.1f}s ({info.hosts} worker hosts): "
        f"endpoint {info.env['AWS_ENDPOINT_URL']}"
    )
    print(f"input bucket  s3://{info.outputs['InputBucketName']}")
    print(f"output bucket s3://{info.outputs['OutputBucketName']}")
    if "ApiUrl" in info.outputs:
        print(f"realtime API and review page {info.outputs['ApiUrl']}/")
        if "ReviewerPoolId" in info.outputs:
            env = state_dir / "env"
            print(f"  add a reviewer to sign in there: set -a; . {env}; set +a; sumpipe reviewers add NAME")
    print(f"the sumpipe commands use it through {state_dir / 'env'}; stop it with `sumpipe local down`")


def run_down(args: argparse.Namespace) -> int:
    stack.down(args.dir)
    print("local stack down")
    return 0


def run_status(args: argparse.Namespace) -> int:
    if not stack.is_up(args.dir):
        if (args.dir / "emulator-ready").exists():
            stack_name = stack.read_env_file(args.dir / "env")["SUMPIPE_STACK_NAME"]
            _print_emulator_instructions(args.dir, stack_name)
            return 0
        print("local stack is not running")
        return 1
    info = stack.info(args.dir)
    print(json.dumps({"endpoint": info.env["AWS_ENDPOINT_URL"], "outputs": info.outputs}, indent=2))
    return 0
