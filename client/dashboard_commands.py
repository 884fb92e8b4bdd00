"""`hearth dashboard`: open the employee's local dashboard in a browser."""

from __future__ import annotations

import os
import sys
import webbrowser
from typing import Annotated

import typer

from client.dashboard import Guard, bind_loopback, create_app, load_or_create_token, serve
from client.dashboard.snapshot import recording_status
from client.home import hearth_home


def dashboard_command(
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="only print the address, do not open it")
    ] = False,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="port on 127.0.0.1; 0 picks a free one")
    ] = 0,
) -> None:
    """Show what is recorded, uploads and budget; pause, resume, delete, revoke."""
    home = hearth_home()
    token = load_or_create_token(home)
    try:
        sock = bind_loopback(port)
    except OSError as exc:
        typer.echo(f"hearth: cannot listen on 127.0.0.1:{port}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_app(Guard(token=token, origin=origin))
    # The server never asks for a passphrase (a prompt would hang a request): it
    # unlocks the vault with the OS keyring or HEARTH_PASSPHRASE, or shows it locked.
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    locked = recording_status()["error"]
    if locked:
        typer.echo(f"hearth: the vault stays locked in the dashboard: {locked}", err=True)
    url = f"{origin}/?token={token}"
    typer.echo(f"hearth dashboard: {url}")
    typer.echo("Keep this address private; press Ctrl+C to stop the dashboard.")
    sys.stdout.flush()
    if not no_browser:
        webbrowser.open(url)
    serve(app, sock)
