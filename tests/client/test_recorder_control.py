"""Pause and revoke reach a running recorder over its socket, even on a real full disk."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from client.cli.main import app
from client.control.consent import grant, load_consent
from client.control.pause import pause, pause_state, resume
from client.control.recorder_control import (
    ControlMessage,
    _address,
    request_pause,
    request_resume,
    request_revoke,
    send,
    socket_path,
)
from client.control.sensitive_apps import SensitiveApps
from client.recording.capture.keys import RawKey
from client.recording.clock import SYSTEM_CLOCK, Clock, ManualClock
from client.recording.recorder import Recorder, RecorderConfig
from client.storage.vault import Vault
from policy.events import KeyRun, Modality, Paused, Resumed
from privacy.policy import load_policy
from tests.client.test_recorder import FakeFocus, FakeSink, FakeSource


def _until(condition: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _held(recorder: Recorder) -> int:
    """Keys typed and not yet written: in closed runs waiting for a flush, or the open run."""
    closed = sum(getattr(e, "count", 0) for e in recorder.writer.pending)
    return closed + (recorder.runs.open.count if recorder.runs.open is not None else 0)


def _recorder(
    home: Path, sink: object, source: FakeSource, clock: Clock = SYSTEM_CLOCK, **config: float
) -> Recorder:
    apps = SensitiveApps.from_policy(load_policy(), home)
    settings = {"suppress_tail": 0.01, "focus_idle_interval": 0.01, **config}
    return Recorder(
        RecorderConfig(home=home, **settings),  # type: ignore[arg-type]
        sink,  # type: ignore[arg-type]
        source,
        FakeFocus(),
        lambda: apps,
        clock=clock,
    )


@pytest.fixture
def home(hearth_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home deep enough that its socket path passes 100 bytes (macOS allows 104)."""
    deep = hearth_home / "a-directory-name-long-enough-for-the-socket-path"
    monkeypatch.setenv("HEARTH_HOME", str(deep))
    deep.mkdir(parents=True)
    return deep


@pytest.fixture
def running(home: Path) -> Iterator[tuple[Recorder, FakeSource, FakeSink]]:
    hearth_home = home
    grant(hearth_home, (Modality.KEYS,))
    source, sink = FakeSource(), FakeSink()
    recorder = _recorder(hearth_home, sink, source, flush_interval=60.0)
    recorder.start()
    try:
        _until(lambda: source.keyboard is not None and socket_path(hearth_home).exists())
        yield recorder, source, sink
    finally:
        recorder.stop()


def test_the_socket_is_owner_only_and_a_pause_is_applied_before_the_answer(
    running: tuple[Recorder, FakeSource, FakeSink], home: Path
) -> None:
    recorder, source, sink = running
    path = socket_path(home)
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(os.fsencode(path)) > 100  # so it goes through /proc/self/fd
    source.type("ab")
    _until(lambda: _held(recorder) == 2)  # buffered, not yet sealed
    state, result = request_pause(home)
    assert result.recorder is not None and result.recorder.applied and result.saved
    # Applied when the answer came: no listener, and a late callback keeps nothing.
    assert not recorder.listening and source.keyboard is None
    recorder.on_press(RawKey(char="x"))
    assert len(recorder.input.items) == 0
    assert pause_state(home).paused and state.paused
    assert request_resume(home).recorder is not None
    assert recorder.listening
    recorder.stop()
    # The two buffered keys were dropped, never written; the markers are.
    assert [type(e) for e in sink.events] == [Paused, Resumed]


def test_revoke_over_the_socket_stops_capture_and_drops_the_buffer(
    running: tuple[Recorder, FakeSource, FakeSink], home: Path
) -> None:
    recorder, source, sink = running
    source.type("ab")
    _until(lambda: _held(recorder) == 2)
    record, result = request_revoke(home)
    assert record is not None and record.active
    assert result.recorder is not None and result.recorder.applied and result.saved
    assert not recorder.listening
    consent = load_consent(home)
    assert consent is not None and not consent.active
    recorder.stop()
    assert sink.events == []


def test_a_timed_pause_over_the_socket_ends_by_itself(
    running: tuple[Recorder, FakeSource, FakeSink], home: Path
) -> None:
    recorder, _, _ = running
    state, result = request_pause(home, 0.3)
    assert result.recorder is not None and result.recorder.applied
    assert not recorder.listening and state.until is not None
    _until(lambda: recorder.listening, timeout=3.0)


def test_an_unsaved_revocation_is_never_written_over_a_newer_grant(home: Path) -> None:
    grant(home, (Modality.KEYS,))
    first = load_consent(home)
    assert first is not None
    recorder = _recorder(home, FakeSink(), FakeSource(), save_retry=0.0, control_interval=0.0)
    recorder.step()
    assert recorder.listening
    # The socket's revocation arrives; say the disk refused the command's own write.
    message = ControlMessage("revoke", revoked_at=time.time(), granted_at=first.granted_at)
    assert recorder.request(message) is False  # not started: applied at the next step
    time.sleep(0.002)
    grant(home, (Modality.KEYS,))  # the employee consents again before the recorder saved
    recorder.step()
    recorder.step()
    consent = load_consent(home)
    assert consent is not None and consent.active and consent.granted_at != first.granted_at
    assert recorder.listening  # the new grant is in force


def test_a_resume_written_to_the_file_after_a_socket_pause_is_not_undone(home: Path) -> None:
    # The pause command answers over the socket, then saves the file; a resume written to
    # the file within save_retry must stand (the retry once wrote the pause back).
    grant(home, (Modality.KEYS,))
    clock = ManualClock()
    recorder = _recorder(
        home, FakeSink(), FakeSource(), clock, save_retry=0.2, control_interval=0.0
    )
    recorder.step()
    now = time.time()
    assert recorder.request(ControlMessage("pause", since=now)) is False  # applied at the step
    recorder.step()
    pause(home, now=now)  # what the command saves right after the answer
    recorder.step()
    assert not recorder.listening
    resume(home)
    recorder.step()
    assert recorder.listening
    clock.advance(1.0)  # well past save_retry
    recorder.step()
    recorder.step()
    assert recorder.listening and not pause_state(home).paused


def test_a_dead_recorders_socket_or_none_means_the_file_alone(home: Path) -> None:
    assert send(home, ControlMessage("pause")) is None
    path = socket_path(home)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead, _address(path) as address:
        dead.bind(address)  # bound, never listening: what a killed recorder leaves
    _, result = request_pause(home)
    assert result.recorder is None and result.saved
    assert pause_state(home).paused


def test_another_request_than_pause_resume_revoke_is_refused(
    running: tuple[Recorder, FakeSource, FakeSink], home: Path
) -> None:
    recorder, _, _ = running
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock,
        _address(socket_path(home)) as address,
    ):
        sock.connect(address)
        sock.sendall(b'{"op": "delete"}\n')
        sock.settimeout(2)
        assert sock.recv(100) == b""
    assert recorder.listening


# -- a real full filesystem ------------------------------------------------------


def _fill(directory: Path) -> Path:
    """Take every free byte of the filesystem ``directory`` is on."""
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


@pytest.fixture
def full_disk_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """HEARTH_HOME on a small tmpfs of its own (root only, as tests/client/test_vault.py mounts).

    256 KiB: the real vault needs room for its key and first segment before the test
    fills every byte that is left. Without root, or where mounting is not allowed
    (an unprivileged container), the test skips and says why.
    """
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)],
        check=False,
        capture_output=True,
    )
    if mounted.returncode:
        pytest.skip("this sandbox does not allow mounting a tmpfs")
    home = mount / "home"
    monkeypatch.setenv("HEARTH_HOME", str(home))
    try:
        yield home
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_pause_and_revoke_work_on_a_full_disk_and_the_held_events_are_never_written(
    full_disk_home: Path,
) -> None:
    home = full_disk_home
    home.mkdir(mode=0o700)
    grant(home, (Modality.KEYS,))
    vault = Vault.open(home / "vault")
    source = FakeSource()
    recorder = _recorder(home, vault, source, flush_interval=0.5, save_retry=0.05, key_run_idle=0.1)
    recorder.start()
    cli = CliRunner()
    try:
        _until(lambda: source.keyboard is not None)
        source.type("a")
        _until(lambda: recorder.events_written == 1, timeout=15.0)  # once the run closes
        filler = _fill(home)

        # The disk is full: the vault holds keys back, the state file cannot be written.
        source.type("bc")
        _until(lambda: recorder.dropped == 0 and _held(recorder) == 2)
        paused = cli.invoke(app, ["pause"])
        assert paused.exit_code == 0, paused.output
        assert "paused until you run `hearth resume`" in paused.output
        assert "could not be saved (No space left on device)" in paused.output
        assert not recorder.listening
        assert [type(e) for e in recorder.writer.pending] == [Paused]  # the keys are gone
        assert not pause_state(home).paused  # nothing on disk says so yet
        # No half-written file is left (the recorder's heartbeat may be mid-replace: wait).
        _until(lambda: not list(home.glob("*.tmp")))
        # `hearth status` asks the recorder, so it does not say "recording".
        status = json.loads(cli.invoke(app, ["status", "--json"]).stdout)
        assert (status["state"], status["unsaved"]) == ("paused", ["control"])
        assert "not saved to disk yet" in status["summary"]

        # Space comes back: the recorder saves the pause; the held keys stay dropped.
        filler.unlink()
        _until(lambda: pause_state(home).paused)
        _until(lambda: recorder.writer.pending == [])
        resumed = cli.invoke(app, ["resume"])
        assert resumed.exit_code == 0 and "recording resumed" in resumed.output
        _until(lambda: recorder.listening and recorder.events_written == 3)

        # Revoke on a full disk, with keys held back again.
        filler = _fill(home)
        source.type("de")
        _until(lambda: _held(recorder) >= 2)
        revoked = cli.invoke(app, ["consent", "revoke"])
        assert revoked.exit_code == 0, revoked.output
        assert "consent revoked" in revoked.output
        assert "revocation is in force" in revoked.output
        assert not recorder.listening and _held(recorder) == 0 and recorder.writer.pending == []
        consent = load_consent(home)
        assert consent is not None and consent.active  # the file could not say it yet
        status = json.loads(cli.invoke(app, ["status", "--json"]).stdout)
        assert (status["state"], status["unsaved"]) == ("not consented", ["consent"])
        filler.unlink()
        _until(lambda: not (load_consent(home) or consent).active)
    finally:
        recorder.stop()
        vault.close()
    with Vault.open(home / "vault") as reopened:
        kept = list(reopened.iter_events())
    # "a" was sealed before the disk filled; "bc" and "de" were held, then dropped.
    assert [type(e) for e in kept] == [KeyRun, Paused, Resumed]
    assert [e.seq for e in kept] == [0, 1, 2]


def test_a_pause_only_the_recorder_holds_still_stops_training(
    running: tuple[Recorder, FakeSource, FakeSink], home: Path
) -> None:
    from client.control.participation import admit  # noqa: PLC0415

    assert admit(home).allowed
    # As on a full disk: the recorder applied the pause, no file says so.
    ack = send(home, ControlMessage("pause", since=time.time(), until=None))
    assert ack is not None and ack.applied
    assert not pause_state(home).paused
    decision = admit(home)
    assert not decision.allowed and decision.reason == "paused by the employee"
