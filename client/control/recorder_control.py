"""Reaching a running recorder: pause, resume and revoke over a local socket, no disk needed.

The recorder listens on ``run/recorder.sock`` under HEARTH_HOME: a Unix socket,
0600 in the 0700 runtime directory, and on Linux it also checks that the peer
runs as the same user. A command sends one JSON line and waits until the
recorder applied it (listeners stopped, the unwritten buffer dropped), then
writes the state file. On a full disk that write fails: the pause or revocation
is in force anyway, the command says so in one line, and the recorder keeps
retrying the write (``Recorder.request``). A local root user can still do
anything the employee can, including connecting here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final, Literal

from client.control.consent import ConsentRecord, load_consent, revoke
from client.control.pause import PauseState, pause, resume
from client.storage.home import runtime_dir

_log = logging.getLogger(__name__)

SOCKET_NAME: Final = "recorder.sock"
REPLY_TIMEOUT: Final = 2.0
_MAX_MESSAGE: Final = 4096
_MAX_ADDRESS: Final = 100  # sun_path is 104 (macOS) or 108 (Linux) bytes with its NUL

Operation = Literal["pause", "resume", "revoke", "status"]


@dataclass(frozen=True)
class ControlMessage:
    """What a command asks of the recorder; times are wall-clock seconds."""

    op: Operation
    since: float | None = None
    until: float | None = None  # pause: when it ends; None: until resumed
    revoked_at: float | None = None
    granted_at: float | None = None  # revoke: the consent being revoked (a newer one stays)

    def pause_state(self) -> PauseState:
        """The pause this message asks for (``op`` is pause or resume)."""
        if self.op != "pause":
            return PauseState(False)
        return PauseState(True, math.inf if self.until is None else self.until, self.since)


@dataclass(frozen=True)
class LiveState:
    """What the running recorder does now, which the files may not say yet (a full disk)."""

    consenting: bool
    paused: bool
    paused_until: float | None  # None: until resumed (or not paused)
    unsaved: tuple[str, ...]  # "control" / "consent": changes no file says yet


@dataclass(frozen=True)
class Ack:
    """The recorder's answer: whether it applied the request, and how long the round trip took."""

    applied: bool
    seconds: float
    live: LiveState | None = None  # the answer to a "status" request


@dataclass(frozen=True)
class ControlResult:
    """What a pause, resume or revoke did: reached a recorder, and saved (or why not)."""

    recorder: Ack | None  # None: no recorder was listening
    saved: bool
    problem: str | None = None  # why the state file was not written

    @property
    def in_force(self) -> bool:
        """Saved, or a running recorder has it (input refused at once, applied in order)."""
        return self.saved or self.recorder is not None


def socket_path(home: Path) -> Path:
    """Where a running recorder listens."""
    return runtime_dir(home) / SOCKET_NAME


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """``path`` as a socket address, through ``/proc/self/fd`` when it is too long."""
    if len(os.fsencode(path)) <= _MAX_ADDRESS or not sys.platform.startswith("linux"):
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _peer_uid(conn: socket.socket) -> int | None:
    """The connecting process's uid (Linux), or None where the OS does not say."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None  # macOS/BSD: the 0600 socket in a 0700 directory is the check
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < _MAX_MESSAGE:
        chunk = conn.recv(_MAX_MESSAGE)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def _parse(raw: bytes) -> ControlMessage:
    data = json.loads(raw)
    if not isinstance(data, dict) or data.get("op") not in ("pause", "resume", "revoke", "status"):
        raise ValueError("unknown request")
    numbers = {k: data.get(k) for k in ("since", "until", "revoked_at", "granted_at")}
    for value in numbers.values():
        if value is not None and (not isinstance(value, int | float) or math.isnan(value)):
            raise ValueError("a time is not a number")
    return ControlMessage(
        data["op"],
        **{k: None if v is None else float(v) for k, v in numbers.items()},
    )


class ControlListener:
    """The recorder's end: one thread accepting one request per connection."""

    def __init__(self, home: Path, handle: Callable[[ControlMessage], bool | LiveState]) -> None:
        """``handle`` applies a request and says whether it was, or answers a status."""
        self.home = home
        self.path = socket_path(home)
        self._handle = handle
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def start(self) -> None:
        """Bind (replacing a dead recorder's socket), restrict to the owner, listen."""
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _address(self.path) as address:
                sock.bind(address)
            self.path.chmod(0o600)
            sock.listen(8)
            sock.settimeout(0.5)  # so close() is seen
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="hearth-control", daemon=True)
        self._thread.start()

    def _remove_stale(self) -> None:
        if not self.path.exists():
            return
        if send(self.home, None) is not None:
            raise OSError(f"another recorder listens on {self.path}")
        self.path.unlink(missing_ok=True)

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            with conn:
                try:
                    self._answer(conn)
                except Exception as exc:  # keep listening; never log the request itself
                    _log.warning("control request refused: %s", type(exc).__name__)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(1.0)
        uid = _peer_uid(conn)
        if uid is not None and uid != os.geteuid():
            conn.sendall(b'{"ok": false, "error": "another user"}\n')
            return
        raw = _read_line(conn)
        if not raw:  # a liveness probe
            conn.sendall(b'{"ok": true, "applied": false}\n')
            return
        answer = self._handle(_parse(raw))
        reply: dict[str, object] = {"ok": True, "applied": answer is True}
        if isinstance(answer, LiveState):
            reply["live"] = asdict(answer)
        conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        """Stop listening and remove the socket."""
        self._closed.set()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        self.path.unlink(missing_ok=True)


def send(home: Path, message: ControlMessage | None, timeout: float = REPLY_TIMEOUT) -> Ack | None:
    """Ask the recorder of ``home``; None when none listens. ``None`` only checks it is there."""
    path = socket_path(home)
    if not path.exists():
        return None
    started = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            with _address(path) as address:
                sock.connect(address)
            payload = b"" if message is None else json.dumps(asdict(message)).encode()
            sock.sendall(payload + b"\n")
            reply = json.loads(_read_line(sock) or b"{}")
        except (OSError, ValueError):
            return None  # a dead recorder's socket, or one that did not answer in time
    if not isinstance(reply, dict) or not reply.get("ok"):
        return None
    return Ack(bool(reply.get("applied")), time.perf_counter() - started, _live(reply.get("live")))


def _live(data: object) -> LiveState | None:
    if not isinstance(data, dict):
        return None
    try:
        until = data.get("paused_until")
        return LiveState(
            consenting=bool(data["consenting"]),
            paused=bool(data["paused"]),
            paused_until=None if until is None else float(until),
            unsaved=tuple(str(k) for k in data.get("unsaved", ())),
        )
    except (KeyError, TypeError, ValueError):
        return None


def live_state(home: Path) -> LiveState | None:
    """What the running recorder does now; None when none answers."""
    ack = send(home, ControlMessage("status"), timeout=0.5)
    return None if ack is None else ack.live


def _saved(write: Callable[[], object]) -> tuple[bool, str | None]:
    try:
        write()
    except OSError as exc:
        return False, exc.strerror or type(exc).__name__
    return True, None


def request_pause(home: Path, duration: float | None = None) -> tuple[PauseState, ControlResult]:
    """Pause the running recorder at once, then save the pause (survives restarts)."""
    now = time.time()
    until = None if duration is None else now + duration
    ack = send(home, ControlMessage("pause", since=now, until=until))
    saved, problem = _saved(lambda: pause(home, duration, now=now))
    state = PauseState(True, math.inf if until is None else until, now)
    return state, ControlResult(ack, saved, problem)


def request_resume(home: Path) -> ControlResult:
    """Resume the running recorder, then save that."""
    ack = send(home, ControlMessage("resume"))
    saved, problem = _saved(lambda: resume(home))
    return ControlResult(ack, saved, problem)


def request_revoke(home: Path) -> tuple[ConsentRecord | None, ControlResult]:
    """Revoke consent in the running recorder at once, then save the revoked record.

    Returns the record as it was before (None or inactive: nothing to revoke).
    """
    record = load_consent(home)
    if record is None or not record.active:
        return record, ControlResult(None, True)
    now = time.time()
    ack = send(home, ControlMessage("revoke", revoked_at=now, granted_at=record.granted_at))
    saved, problem = _saved(lambda: revoke(home, at=now))
    return record, ControlResult(ack, saved, problem)
