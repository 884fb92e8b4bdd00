"""How fast pause and revoke take effect in a running recorder, on a full disk.

A real ``Recorder`` (writer thread, control socket, encrypted vault) runs with
HEARTH_HOME on a tmpfs of its own, fed synthetic key presses at typing speed.
The tmpfs is then filled, so no state file can be written, and each request
goes through ``client.control.recorder_control`` as ``hearth pause`` and ``hearth consent
revoke`` send it. Measured: the round trip until the recorder answered that it
applied the request (listeners stopped, buffer dropped), and the whole call
(which also tries, and fails, to write the state file). Side by side, before the
disk fills: the older path, a state file the recorder notices by polling.

Mounting needs root; elsewhere the same runs on an ordinary temporary
directory that is not full, and the note says so.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.control.consent import grant
from client.control.pause import pause, resume
from client.control.recorder_control import request_pause, request_resume, request_revoke
from client.control.sensitive_apps import SensitiveApps
from client.recording.capture.focus import WindowInfo
from client.recording.capture.keys import RawKey
from client.recording.capture.pointer import ScreenBounds
from client.recording.recorder import Recorder, RecorderConfig
from client.storage.vault import Vault
from policy.events import AppCategory, Button, Modality
from simulations.benchmarks import Measurement

SUBJECT = "controls"
TARGET_SECONDS = 0.1
BENCH_PASSPHRASE = "benchmark only"  # noqa: S105 - a throwaway vault


class _Focus:
    def active_window(self) -> WindowInfo | None:
        return WindowInfo("code", AppCategory.EDITOR, hint="code")

    def close(self) -> None:
        pass


class _TypingSource:
    """An input source whose keyboard 'types' ``rate`` keys a second while it is started."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._on_press: Callable[..., None] | None = None
        self._stop = threading.Event()
        threading.Thread(target=self._type, daemon=True).start()

    def _type(self) -> None:
        while not self._stop.wait(1.0 / self._rate):
            press = self._on_press
            if press is not None:
                press(RawKey(char="a"))

    def start_keyboard(self, on_press: Any, on_release: Any) -> None:
        self._on_press = on_press

    def stop_keyboard(self) -> None:
        self._on_press = None

    def start_mouse(self, *callbacks: Any) -> None:
        pass

    def stop_mouse(self) -> None:
        pass

    def raw_key(self, key: Any) -> RawKey:
        return key if isinstance(key, RawKey) else RawKey(char=str(key))

    def button(self, button: Any) -> Button | None:
        return None

    def bounds(self) -> ScreenBounds:
        return ScreenBounds(0, 0, 1920, 1080)

    def close(self) -> None:
        self._stop.set()


@contextmanager
def _home() -> Iterator[tuple[Path, bool]]:
    """A fresh home on a 2 MiB tmpfs (True) or, without root, a plain directory (False)."""
    with tempfile.TemporaryDirectory(prefix="hearth-bench-controls-") as tmp:
        mount = Path(tmp) / "small"
        mount.mkdir()
        mounted = os.geteuid() == 0 and (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)],
                check=False,
                capture_output=True,
            ).returncode
            == 0
        )
        try:
            yield mount / "home", mounted
        finally:
            if mounted:
                subprocess.run(["umount", str(mount)], check=False)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 1024)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def _wait(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > timeout:
            raise TimeoutError("the recorder did not follow")
        time.sleep(0.0005)
    return time.perf_counter() - started


def _ms(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000, ordered[-1] * 1000


@dataclass
class _Timings:
    pauses_ack: list[float] = field(default_factory=list)
    pauses_call: list[float] = field(default_factory=list)
    polled: list[float] = field(default_factory=list)
    revokes_ack: list[float] = field(default_factory=list)
    saved_on_full_disk: int = 0


def _polled(home: Path, recorder: Recorder, rounds: int, timings: _Timings) -> None:
    """The older path: a state file the recorder notices by polling."""
    for _ in range(rounds):
        started = time.perf_counter()
        pause(home)
        _wait(lambda: not recorder.listening)
        timings.polled.append(time.perf_counter() - started)
        resume(home)
        _wait(lambda: recorder.listening)


def _over_the_socket(
    home: Path, recorder: Recorder, mounted: bool, rounds: int, revokes: int, timings: _Timings
) -> None:
    filler = _fill(home) if mounted else None
    for _ in range(rounds):
        time.sleep(0.05)  # some typing is buffered (held, on a full disk)
        started = time.perf_counter()
        _, result = request_pause(home)
        timings.pauses_call.append(time.perf_counter() - started)
        assert result.recorder is not None and result.recorder.applied
        timings.pauses_ack.append(result.recorder.seconds)
        timings.saved_on_full_disk += result.saved
        request_resume(home)
        _wait(lambda: recorder.listening)
    for _ in range(revokes):
        _, result = request_revoke(home)
        assert result.recorder is not None and result.recorder.applied
        timings.revokes_ack.append(result.recorder.seconds)
        if filler is not None:
            filler.unlink()
        grant(home, (Modality.KEYS,))
        _wait(lambda: recorder.listening)
        if mounted:
            filler = _fill(home)


def run(quick: bool) -> list[Measurement]:
    """Pause and revoke latency on a full disk, and the polled state file beside them."""
    rounds = 10 if quick else 50
    revokes = 3 if quick else 10
    timings = _Timings()
    with _home() as (home, mounted):
        home.mkdir(mode=0o700, parents=True)
        grant(home, (Modality.KEYS,))
        vault = Vault.open(home / "vault", passphrase=BENCH_PASSPHRASE)
        source = _TypingSource(rate=20.0)
        apps = SensitiveApps(frozenset(), frozenset())
        recorder = Recorder(RecorderConfig(home=home), vault, source, _Focus(), lambda: apps)
        recorder.start()
        try:
            _wait(lambda: recorder.listening)
            _polled(home, recorder, rounds, timings)
            _over_the_socket(home, recorder, mounted, rounds, revokes, timings)
        finally:
            recorder.stop()
            source.close()
            vault.close()
    return _measurements(timings, mounted, rounds, revokes)


def _measurements(timings: _Timings, mounted: bool, rounds: int, revokes: int) -> list[Measurement]:
    where = (
        "HEARTH_HOME on a full 2 MiB tmpfs"
        if mounted
        else "not root: an ordinary directory, NOT full"
    )
    ack50, ack99, ackmax = _ms(timings.pauses_ack)
    call50, call99, callmax = _ms(timings.pauses_call)
    poll50, poll99, pollmax = _ms(timings.polled)
    rev50, rev99, revmax = _ms(timings.revokes_ack)
    return [
        Measurement(
            SUBJECT,
            "pause over the socket, until applied (p99)",
            ack99,
            "ms",
            f"< {TARGET_SECONDS * 1000:.0f}",
            ack99 < TARGET_SECONDS * 1000,
            note=f"{where}; {rounds} pauses while typing 20 keys/s; "
            f"median {ack50:.2f} ms, max {ackmax:.2f} ms; "
            f"state file saved {timings.saved_on_full_disk} of {rounds} times",
        ),
        Measurement(
            SUBJECT,
            "`hearth pause`'s request, socket + failed file write (p99)",
            call99,
            "ms",
            f"< {TARGET_SECONDS * 1000:.0f}",
            call99 < TARGET_SECONDS * 1000,
            note=f"median {call50:.2f} ms, max {callmax:.2f} ms",
        ),
        Measurement(
            SUBJECT,
            "revoke over the socket, until applied (p99)",
            rev99,
            "ms",
            f"< {TARGET_SECONDS * 1000:.0f}",
            rev99 < TARGET_SECONDS * 1000,
            note=f"{revokes} revocations; median {rev50:.2f} ms, max {revmax:.2f} ms",
        ),
        Measurement(
            SUBJECT,
            "pause through the polled state file, disk not yet full (p99)",
            poll99,
            "ms",
            note=f"side by side, same recorder; median {poll50:.2f} ms, max {pollmax:.2f} ms; "
            "on a full disk this path never takes effect",
        ),
    ]


if __name__ == "__main__":
    for measurement in run(quick=False):
        print(measurement)
