"""`sumpipe deploy`, `sumpipe destroy` and `sumpipe package`: the stack on AWS (or the emulator
named by AWS_ENDPOINT_URL)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import boto3

from sumpipe import deploy, package


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _parameter(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _deploy(args: argparse.Namespace) -> int:
    session = boto3.session.Session()
    try:
        outputs = deploy.deploy(session, args.stack, dict(args.param), _progress)
    except (deploy.DeployError, package.PackageError) as error:
        print(f"sumpipe deploy: {error}", file=sys.stderr)
        return 1
    print(json.dumps(outputs, indent=2, sort_keys=True))
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
    try:
        artifacts = package.build_pipeline_artifacts(args.out)
        wheel = package.build_wheel(args.out)
    except package.PackageError as error:
        print(f"sumpipe package: {error}", file=sys.stderr)
        return 1
    mb = package.MB
    for artifact in [*artifacts.functions.values(), artifacts.layer]:
        print(f"{artifact.path}  {artifact.zipped_bytes / mb:6.1f} MB zipped  "
              f"{artifact.unzipped_bytes / mb:6.1f} MB unzipped")
    print(f"{wheel}  {wheel.stat().st_size / mb:6.1f} MB")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("deploy", help="create or update the stack (builds and uploads artifacts)")
    parser.add_argument("--stack", default="sumpipe", help="stack name (lowercase; default: sumpipe)")
    parser.add_argument("--param", action="append", type=_parameter, default=[], metavar="KEY=VALUE",
                        help="template parameter, e.g. --param InstanceType=c7i.large (repeatable)")
    parser.set_defaults(func=_deploy)

    parser = subparsers.add_parser("destroy", help="delete the stack and its artifacts")
    parser.add_argument("--stack", default="sumpipe")
    parser.add_argument("--force", action="store_true", help="empty the input and output buckets first")
    parser.set_defaults(func=_destroy)

    parser = subparsers.add_parser("package", help="build the Lambda zips, layer and wheel, size-checked")
    parser.add_argument("--out", type=Path, default=Path("build/lambda"), help="output directory")
    parser.set_defaults(func=_package)
