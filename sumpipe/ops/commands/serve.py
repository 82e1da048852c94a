"""`sumpipe serve`: the realtime API (`POST /summarize`, `GET /health`, docs at /docs) under uvicorn."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the realtime summarization API locally",
        description="Serve POST /summarize and GET /health; OpenAPI at /openapi.json, docs at /docs.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind (default: %(default)s)")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes, e.g. one per core (default: %(default)s)"
    )
    parser.add_argument(
        "--access-log", action="store_true", help="log every request (off by default: it costs throughput)"
    )
    parser.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    import uvicorn  # deferred: `sumpipe --help` and the other commands don't need it

    uvicorn.run(
        "sumpipe.api.app:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=args.access_log,
    )
    return 0
