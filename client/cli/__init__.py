"""The ``hearth`` command line: typer commands only, each a thin layer over the packages.

A command parses its options, calls control/, storage/, recording/, learning/,
deployment/ or dashboard/, and prints the result or a one-line error saying what to
fix. Nothing else imports cli/: a rule, report or file format that the dashboard or
the ClientApp also needs lives in the package it belongs to, never in a command.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    """``app`` for console scripts installed before the commands moved into this package."""
    if name == "app":
        from client.cli.main import app  # noqa: PLC0415 (only a stale entry point asks)

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
