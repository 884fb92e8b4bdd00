"""`hearth dashboard`: open the employee's local dashboard in a browser.

The browser is started on a launch file (0600, ``client.dashboard.launch``), never
on a URL with a secret, so another local user reading ``/proc/PID/cmdline`` (what
``ps`` shows) learns a path they cannot open.
"""

from __future__ import annotations

import os
import sys
import threading
import webbrowser
from typing import Annotated

import typer

from client.cli_errors import fail
from client.dashboard import Guard, bind_loopback, create_app, load_or_create_token, serve
from client.dashboard.launch import Launcher
from client.dashboard.snapshot import recording_status
from client.home import hearth_home, runtime_dir


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
        raise fail(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
    launcher = Launcher(runtime_dir(home) / f"dashboard-{os.getpid()}-open.html", origin)
    try:
        launcher.issue()
    except OSError as exc:
        sock.close()
        raise fail(
            f"cannot write the dashboard's launch file {launcher.path}: {exc.strerror}"
        ) from None
    app = create_app(Guard(token=token, origin=origin), launcher)
    # The server never asks for a passphrase (a prompt would hang a request): it
    # unlocks the vault with the OS keyring or HEARTH_PASSPHRASE, or shows it locked.
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    locked = recording_status()["error"]
    if locked:
        typer.echo(f"hearth: the vault stays locked in the dashboard: {locked}", err=True)
    typer.echo(f"hearth dashboard: {origin}/")
    typer.echo(f"Log in by opening {launcher.path.as_uri()} (readable only by you).")
    typer.echo("Press Ctrl+C to stop the dashboard.")
    sys.stdout.flush()
    if not no_browser:
        # In a thread: some browsers block until they exit, and they need the server.
        threading.Thread(
            target=webbrowser.open, args=(launcher.path.as_uri(),), daemon=True
        ).start()
    try:
        serve(app, sock)
    finally:
        launcher.remove()
