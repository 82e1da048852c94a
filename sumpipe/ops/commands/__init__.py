"""Subcommands of `sumpipe`, one module per group."""
