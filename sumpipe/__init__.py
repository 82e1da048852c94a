"""Shared code of the summarization pipeline: settings, job ledger, S3 key layout,
EC2 control, remote execution, the instance-side job runner, the local stack and the CLI."""

from importlib import metadata


def version() -> str:
    """This distribution's version, as installed (the console scripts' --version)."""
    try:
        return metadata.version("sumpipe")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"
