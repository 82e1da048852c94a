"""`sumpipe serve`: the review page (`/`) and the realtime API (`POST /summarize`, `GET /health`,
docs at /docs) under uvicorn."""

from __future__ import annotations

import argparse
import os


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the review page and the realtime summarization API locally",
        description="Serve the review page at /, POST /summarize and GET /health; OpenAPI at "
        "/openapi.json, docs at /docs. Reviewers' decisions go to a SQLite file (GET /feedback.csv).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind (default: %(default)s)")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes, e.g. one per core (default: %(default)s)"
    )
    parser.add_argument(
        "--access-log", action="store_true", help="log every request (off by default: it costs throughput)"
    )
    parser.add_argument(
        "--feedback-db",
        metavar="PATH",
        help="the SQLite file the page's decisions are kept in "
        "(default: $SUMPIPE_FEEDBACK_DB, else .sumpipe/feedback.sqlite3)",
    )
    parser.add_argument(
        "--stack",
        metavar="NAME",
        help="the stack whose batch jobs the page uploads, lists and downloads "
        "(default: the local stack when it is up; without one, the page has no batch section)",
    )
    parser.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    import uvicorn  # deferred: `sumpipe --help` and the other commands don't need it

    from sumpipe.api.server_limits import uvicorn_options

    # The app reads its settings in its own process (uvicorn's workers are separate processes).
    if args.feedback_db:
        os.environ["SUMPIPE_FEEDBACK_DB"] = args.feedback_db
    os.environ.setdefault("SUMPIPE_PUBLIC_URL", public_url(args.host, args.port))
    os.environ.update(batch_settings(args))

    uvicorn.run(
        "sumpipe.api.app:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=args.access_log,
        **uvicorn_options(),
    )
    return 0


def public_url(host: str, port: int) -> str:
    """Where browsers reach this server, unless $SUMPIPE_PUBLIC_URL says (behind a proxy, or bound
    to every address): the page's redirects and its allowed origin come from it, never from a
    request's Host header."""
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 (a bind address, compared)
        host = "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def batch_settings(args: argparse.Namespace) -> dict[str, str]:
    """The SUMPIPE_* settings that give the page a stack's batch jobs: the named stack's, else the
    local stack's when it is up (its endpoint and administrator then go into this environment, as
    for `sumpipe jobs`), else none."""
    from sumpipe.ops.commands import jobs

    aws_named = bool(args.region or args.profile)
    if args.stack is None and not jobs.use_local_stack_if_up(aws_named=aws_named):
        return {}
    target = jobs.resolve_stack(args.stack, aws_named=aws_named)
    return {
        "SUMPIPE_STACK_NAME": args.stack or os.environ.get("SUMPIPE_STACK_NAME") or "sumpipe",
        "SUMPIPE_INPUT_BUCKET": target.input_bucket,
        "SUMPIPE_OUTPUT_BUCKET": target.output_bucket,
        "SUMPIPE_JOB_TABLE": target.outputs["JobTableName"],
    }
