"""Real X for end-to-end tests: Xvfb with openbox, windows with chosen WM_CLASS, xdotool.

The X server comes from ``simulations.xserver`` (the benchmarks use the same one).
Skips only when a tool is missing and CI is not set; under CI a missing tool fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from client.storage.vault import Vault
from policy.events import Event
from simulations.xserver import XServer, missing_tools

ROOT = Path(__file__).resolve().parents[2]
XWINDOW = Path(__file__).with_name("xwindow.py")
PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="session")
def xserver() -> Iterator[XServer]:
    """A private X display (Xvfb + openbox, ``simulations.xserver``), DISPLAY pointing at it."""
    missing = missing_tools()
    if missing:
        message = f"{', '.join(missing)} not installed (make sysdeps)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    previous = os.environ.get("DISPLAY")
    with XServer() as server:
        os.environ["DISPLAY"] = server.display
        try:
            yield server
        finally:
            if previous is None:
                os.environ.pop("DISPLAY", None)
            else:
                os.environ["DISPLAY"] = previous


@pytest.fixture(scope="session")
def xdisplay(xserver: XServer) -> str:
    """The private display's name (``:N``)."""
    return xserver.display


@pytest.fixture
def window(xdisplay: str) -> Iterator[Callable[..., str]]:
    """Open real windows: ``window("slack", "Slack | general")`` returns the window id."""
    processes: list[subprocess.Popen[str]] = []

    def open_window(wm_class: str, title: str, role: str = "") -> str:
        process = subprocess.Popen(
            [sys.executable, str(XWINDOW), wm_class, title, role],
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        assert process.stdout is not None
        return process.stdout.readline().strip()

    yield open_window
    for process in processes:
        process.terminate()
        process.wait(5)


def xdotool(*args: str) -> None:
    """Send real X input (XTEST) or activate a window, and wait for it."""
    subprocess.run(["xdotool", *args], check=True, timeout=60)


def activate(window_id: str) -> None:
    """Bring a window to the front and wait until the window manager says it is active."""
    xdotool("windowactivate", "--sync", window_id)


def recorder_env(home: Path) -> dict[str, str]:
    """The environment a recorder subprocess runs in (this worktree's code, the test home)."""
    env = dict(os.environ)
    env.update(
        HEARTH_HOME=str(home),
        HEARTH_PASSPHRASE=PASSPHRASE,
        HEARTH_KEYRING="0",
        PYTHONPATH=str(ROOT),
    )
    return env


@dataclass
class RunningRecorder:
    """A recorder subprocess."""

    process: subprocess.Popen[str]
    home: Path

    def stop(self, timeout: float = 20.0) -> tuple[int, str, str]:
        """SIGTERM, wait, and return (exit code, stdout, stderr)."""
        self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err


def start_recorder(
    home: Path, *args: str, command: tuple[str, ...] | None = None, timeout: float = 30.0
) -> RunningRecorder:
    """Start ``hearth record`` and wait until its heartbeat says it is listening."""
    argv = [sys.executable, *(command or ("-m", "client.cli.record")), *args]
    process = subprocess.Popen(
        argv, env=recorder_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + timeout
    beat = home / "recorder.json"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"recorder exited {process.returncode}: {out} {err}")
        try:
            if json.loads(beat.read_text()).get("listening"):
                return RunningRecorder(process, home)
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    process.kill()
    raise AssertionError("recorder did not start listening")


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail saying ``what`` was awaited after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def heartbeat(home: Path) -> dict[str, Any]:
    """The running recorder's heartbeat (empty while there is none)."""
    try:
        beat = json.loads((home / "recorder.json").read_text())
    except (OSError, ValueError):
        return {}
    return beat if isinstance(beat, dict) else {}


def wait_written(home: Path, events: int) -> None:
    """Wait until the recorder's heartbeat says ``events`` events are sealed in the vault."""
    wait_for(
        lambda: int(heartbeat(home).get("events_written") or 0) >= events,
        f"{events} events sealed (the heartbeat comes every 5 s)",
    )


def wait_listening(home: Path, listening: bool = True) -> None:
    """Wait until the heartbeat says the recorder listens (or not): rewritten on a change."""
    wait_for(lambda: heartbeat(home).get("listening") is listening, f"listening={listening}")


def vault_events(home: Path) -> list[Event]:
    """Everything in the vault, decrypted, in sequence order."""
    with Vault.open(home / "vault", passphrase=PASSPHRASE) as vault:
        return sorted(vault.iter_events(), key=lambda e: e.seq)


def raw_bytes_under(home: Path) -> bytes:
    """Every byte of every file under ``home`` (for grepping canaries)."""
    return b"".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())


class Kit:
    """The helpers above, handed to tests as the ``kit`` fixture (importlib mode has no
    relative imports of conftest)."""

    activate = staticmethod(activate)
    xdotool = staticmethod(xdotool)
    wait_for = staticmethod(wait_for)
    wait_written = staticmethod(wait_written)
    wait_listening = staticmethod(wait_listening)
    recorder_env = staticmethod(recorder_env)
    start_recorder = staticmethod(start_recorder)
    vault_events = staticmethod(vault_events)
    raw_bytes_under = staticmethod(raw_bytes_under)


@pytest.fixture
def kit(xdisplay: str) -> Kit:
    """Helpers for driving X and reading the vault, with the display running."""
    return Kit()
