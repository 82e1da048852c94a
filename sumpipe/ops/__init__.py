"""Operator tooling: the `sumpipe` command, packaging and deployment."""
