"""Shared code of the summarization pipeline: settings, job ledger, S3 key layout,
EC2 control, remote execution, the instance-side job runner, the local stack and the CLI."""
