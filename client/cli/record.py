"""`hearth record`: the recorder in the foreground until Ctrl-C, SIGTERM or ``--duration``.

The `hearth` command line loads the training stack (torch: hundreds of MB), and
the recorder must stay under 80 MB. So `hearth record` re-executes itself as
``python -m client.cli.record`` (same pid on POSIX), which imports only
what recording needs. Errors are one line that says what to do.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from client.control.consent import load_consent
from client.control.heartbeat import read_heartbeat, running_recorder
from client.control.policy_pin import device_policy
from client.control.sensitive_apps import SensitiveAppsWatcher
from client.recording.capture.focus import FocusBackend, NoDisplayError, open_focus_backend
from client.recording.capture.listener import InputSource, open_input_source
from client.recording.capture.screens import MssGrab, ThumbnailSampler
from client.recording.recorder import Recorder, RecorderConfig
from client.storage.home import hearth_home
from client.storage.keys import VaultKeyError
from client.storage.vault import Vault, default_vault_dir
from client.storage.vault_cadence import SEAL_INTERVAL
from privacy.policy import PolicyError

GRANT_HINT = "hearth consent grant --modalities pointer,keys,apps"


class RecordError(Exception):
    """Recording cannot start; the message is the one line the employee sees."""


def record_command(
    duration: Annotated[
        float | None,
        typer.Option("--duration", help="stop after this many seconds (default: until Ctrl-C)"),
    ] = None,
) -> None:
    """Record in the foreground (only what you consented to) until Ctrl-C."""
    argv = [sys.executable, "-m", "client.cli.record"]
    if duration is not None:
        argv += ["--duration", str(duration)]
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execv(sys.executable, argv)  # noqa: S606 - our own interpreter, fixed arguments
    raise typer.Exit(subprocess.call(argv))


def _open_vault(home: Path) -> tuple[Vault, float, int]:
    try:
        policy = device_policy(home)  # the pinned policy, once the laptop joined
    except PolicyError as exc:
        raise RecordError(str(exc)) from None
    days, quota = policy.data.retention_days, policy.data.vault_quota_mb * 2**20
    try:
        vault = Vault.open(default_vault_dir(), retention_days=days, quota_bytes=quota)
    except VaultKeyError as exc:
        raise RecordError(f"{exc} (set HEARTH_PASSPHRASE, or unlock the OS keyring)") from None
    return vault, days, quota


def build_recorder(home: Path, seal_interval: float = SEAL_INTERVAL) -> tuple[Recorder, Vault]:
    """Check everything recording needs, in the order the employee can fix it."""
    consent = load_consent(home)
    if consent is None or not consent.active:
        raise RecordError(f"nothing is recorded without your consent: run `{GRANT_HINT}`")
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        raise RecordError("no X display: DISPLAY is not set (hearth record needs an X11 session)")
    running = running_recorder(home)
    if running is not None:
        raise RecordError(f"a recorder is already running (pid {running.pid})")
    # The vault first: a passphrase's scrypt briefly needs 32 MB, before the X libraries load.
    vault, days, quota = _open_vault(home)
    try:
        focus = open_focus_backend()
    except NoDisplayError as exc:
        vault.close()
        raise RecordError(str(exc)) from None
    try:
        source = open_input_source()
    except Exception as exc:  # e.g. the display went away between the two connections
        focus.close()
        vault.close()
        raise RecordError(f"cannot listen to input: {type(exc).__name__}: {exc}") from None
    _date_switches(focus, source)
    previous = read_heartbeat(home)
    config = RecorderConfig(
        home=home,
        first_seq=max(previous.next_seq if previous is not None else 0, vault.next_seq()),
        retention=lambda: vault.enforce_retention(days, quota),
        flush_interval=seal_interval,
    )
    sensitive = SensitiveAppsWatcher(device_policy(home), home)
    recorder = Recorder(
        config,
        vault,
        source,
        focus,
        sensitive.current,
        thumbnails=ThumbnailSampler(MssGrab()),
    )
    return recorder, vault


def _date_switches(focus: FocusBackend, source: InputSource) -> None:
    """On X11 the focus backend dates window switches on the input source's server clock."""
    if not sys.platform.startswith("linux"):
        return
    from client.recording.capture.focus_x11 import X11Focus  # noqa: PLC0415 - X11 only
    from client.recording.capture.input_x11 import XRecordSource  # noqa: PLC0415

    if isinstance(focus, X11Focus) and isinstance(source, XRecordSource):
        focus.server_time = source.latest_local_time


def record(duration: float | None = None, seal_interval: float = SEAL_INTERVAL) -> int:
    """Record until a signal or ``duration``; returns the exit code."""
    logging.basicConfig(level=logging.WARNING, format="hearth: %(message)s")
    home = hearth_home()
    try:
        recorder, vault = build_recorder(home, seal_interval)
    except RecordError as exc:
        print(f"hearth: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    try:
        recorder.start()
    except Exception as exc:  # e.g. pynput cannot reach the display
        vault.close()
        print(f"hearth: cannot start listening: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print("recording (only what you consented to); Ctrl-C to stop", flush=True)
    deadline = math.inf if duration is None else time.monotonic() + duration
    # A signal wakes this wait at once; the timeout only bounds how late a recorder
    # failure or the end of --duration is seen (waking 10 times a second cost 0.1% CPU).
    while not stop.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
        if time.monotonic() >= deadline:
            break
        if recorder.wait(0):
            print("hearth: the recorder stopped after repeated failures", file=sys.stderr)
            break
    recorder.stop()
    vault.close()
    print(
        f"stopped: {recorder.events_written:,} events written, {recorder.dropped:,} lost",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m client.cli.record``."""
    parser = argparse.ArgumentParser(prog="hearth record", description=__doc__)
    parser.add_argument("--duration", type=float, default=None, help="seconds, then stop")
    # Tests only (not in `hearth record`): a shorter constant-rate interval, so what
    # was typed is sealed before a pause or revocation in seconds, not half a minute.
    parser.add_argument(
        "--seal-interval", type=float, default=SEAL_INTERVAL, help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    return record(args.duration, max(0.1, args.seal_interval))


if __name__ == "__main__":
    raise SystemExit(main())
