"""`sumpipe deploy`, `sumpipe destroy` and `sumpipe package`: the stack on AWS (or the emulator
named by AWS_ENDPOINT_URL)."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import boto3

from sumpipe.ops import deploy, package


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _parameter(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _interactive() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):  # closed or replaced stdin
        return False


def _ask(preview: list[str]) -> bool:
    """The operator's answer to the change set just shown (the preview lines went to stderr)."""
    print("apply these changes? [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = input()
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _deploy(args: argparse.Namespace) -> int:
    session = boto3.session.Session()
    # Checked before anything is built: an update would need an answer nobody can give.
    cloudformation = session.client("cloudformation")
    if not args.yes and not _interactive() and deploy.stack_status(cloudformation, args.stack) is not None:
        print(f"sumpipe deploy: stack {args.stack} exists and stdin is not a terminal to confirm the "
              "update: pass --yes to apply it without asking", file=sys.stderr)
        return 1
    try:
        build = functools.partial(deploy.build_cloud_artifacts, api=args.api)
        outputs = deploy.deploy(
            session, args.stack, dict(args.param), _progress, build=build,
            confirm=None if args.yes else _ask, ebs_key_grants_ok=args.ebs_key_grants_ok,
        )
    except (deploy.DeployError, package.PackageError) as error:
        print(f"sumpipe deploy: {error}", file=sys.stderr)
        return 1
    print(json.dumps(outputs, indent=2, sort_keys=True))
    # After the outputs, on stderr with the progress: stdout stays the outputs' JSON.
    parameters = deploy.stack_parameters(cloudformation, args.stack) or {}
    for line in deploy.api_next_steps(outputs, parameters, args.stack):
        _progress(line)
    return 0


def _destroy(args: argparse.Namespace) -> int:
    session = boto3.session.Session()
    try:
        deploy.destroy(session, args.stack, _progress, force=args.force)
    except deploy.DeployError as error:
        print(f"sumpipe destroy: {error}", file=sys.stderr)
        return 1
    return 0


def _package(args: argparse.Namespace) -> int:
    mb = package.MB
    try:
        artifacts = package.build_pipeline_artifacts(args.out)
        built = [*artifacts.functions.values(), artifacts.layer]
        wheel = package.build_wheel(args.out)
        if args.api:
            api = package.build_api_artifacts(args.out / "api")
            built += [api.function, api.layer, api.glove]
    except package.PackageError as error:
        print(f"sumpipe package: {error}", file=sys.stderr)
        return 1
    for artifact in built:
        print(f"{artifact.path}  {artifact.zipped_bytes / mb:6.1f} MB zipped  "
              f"{artifact.unzipped_bytes / mb:6.1f} MB unzipped")
    print(f"{wheel}  {wheel.stat().st_size / mb:6.1f} MB")
    if args.api:
        total = sum(a.unzipped_bytes for a in (api.function, api.layer, api.glove))
        print(f"api function + layers: {total / mb:.1f} MB unzipped of Lambda's "
              f"{package.UNZIPPED_LIMIT / mb:.0f} MB")
        timings = package.measure_glove_cold_start(api.glove)
        print("GloVe layer cold start (fresh process, files evicted from the page cache): "
              + ", ".join(f"{k} {v:.3f}" if k.endswith("_s") else f"{k} {v}" for k, v in timings.items()))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("deploy", help="create or update the stack (builds and uploads artifacts)")
    parser.add_argument("--stack", default="sumpipe", help="stack name (lowercase; default: sumpipe)")
    parser.add_argument("--param", action="append", type=_parameter, default=[], metavar="KEY=VALUE",
                        help="template parameter, e.g. --param InstanceType=c7i.large (repeatable)")
    parser.add_argument("--api", action="store_true",
                        help="also deploy the realtime API and the review page (HTTP API, Lambda, GloVe "
                             "layer); reviewers sign in with the stack's Cognito user pool (sumpipe "
                             "reviewers add), unless --param ApiAuth=iam or ApiJwtIssuer=... is given")
    parser.add_argument("--yes", "-y", action="store_true",
                        help="apply an update's change set without asking (needed without a terminal)")
    parser.add_argument("--ebs-key-grants-ok", action="store_true",
                        help="the account's default EBS key is customer managed and its key policy already "
                             "lets EC2 create grants for this account (see docs/deploy.md, Preflight checks)")
    parser.set_defaults(func=_deploy)

    parser = subparsers.add_parser("destroy", help="delete the stack and its artifacts")
    parser.add_argument("--stack", default="sumpipe")
    parser.add_argument("--force", action="store_true", help="empty the input and output buckets first")
    parser.set_defaults(func=_destroy)

    parser = subparsers.add_parser("package", help="build the Lambda zips, layer and wheel, size-checked")
    parser.add_argument("--out", type=Path, default=Path("build/lambda"), help="output directory")
    parser.add_argument("--api", action="store_true",
                        help="also build the API function and layers; measure the vectors' cold start")
    parser.set_defaults(func=_package)
