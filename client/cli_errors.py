"""How `hearth` commands stop on bad input: one line on stderr saying what to fix, exit 1."""

from __future__ import annotations

import typer

PROGRAM = "hearth"


def fail(message: str) -> typer.Exit:
    """Say ``hearth: message`` on stderr; return the exit for the caller to raise.

    Used as ``raise fail("what to fix") from None``.
    """
    typer.echo(f"{PROGRAM}: {message}", err=True)
    return typer.Exit(1)
