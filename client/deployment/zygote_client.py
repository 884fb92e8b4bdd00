"""Asking a zygote for a process: the requester's side of ``client.deployment.zygote``.

``hearth join`` and hearth's executor start their SuperNode and tasks with
``start_process``: ``subprocess.Popen`` on every laptop, a fork of the zygote named by
``HEARTH_ZYGOTE`` where a fleet shares one machine. Kept apart from the zygote itself so
that a device process loads only this side.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Protocol

ENV_ZYGOTE: Final = "HEARTH_ZYGOTE"
MAX_MESSAGE: Final = 256 * 1024
TERMINATE_GRACE_SECONDS: Final = 5.0
LOST: Final = -int(signal.SIGKILL)  # the exit code reported when the zygote went away


class ZygoteError(RuntimeError):
    """A request the zygote could not carry out; one line says why."""


class ChildProcess(Protocol):
    """The part of ``subprocess.Popen`` that ``hearth join`` and the executor use."""

    @property
    def pid(self) -> int:
        """The child's process id."""

    def poll(self) -> int | None:
        """The exit code, or None while it runs."""

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit code; ``subprocess.TimeoutExpired`` after ``timeout``."""

    def terminate(self) -> None:
        """SIGTERM."""

    def kill(self) -> None:
        """SIGKILL."""


def send_message(sock: socket.socket, message: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
    """One JSON message (and file descriptors) on a SEQPACKET socket, within MAX_MESSAGE."""
    data = json.dumps(message).encode()
    if len(data) > MAX_MESSAGE:
        raise ZygoteError(f"zygote message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)


def decode_message(data: bytes) -> dict[str, Any]:
    """One message back from its bytes; anything but a JSON object is refused."""
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError("a zygote message is a JSON object")
    return message


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        raise ZygoteError(f"no zygote at {path}: {exc.strerror}") from None
    return sock


class ZygoteChild:
    """A process forked by the zygote, seen from the requester; ``Popen``'s small interface.

    The connection stays open while the child runs: signals go over it, and the
    zygote sends the exit code when it has reaped the child. If the requester goes
    away (its end closes), the zygote terminates the child.
    """

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self._sock = sock
        self._pid = pid
        self._lock = threading.Lock()
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._pid

    def _receive(self, timeout: float) -> None:
        with self._lock:
            if self.returncode is not None:
                return
            ready = selectors.DefaultSelector()
            with ready:
                ready.register(self._sock, selectors.EVENT_READ)
                if not ready.select(timeout):
                    return
            try:
                data = self._sock.recv(MAX_MESSAGE)
            except OSError:
                data = b""
            self.returncode = int(decode_message(data)["exit"]) if data else LOST
            self._sock.close()

    def poll(self) -> int | None:
        """The exit code, or None while the child runs."""
        self._receive(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit code (slices, so that another thread may poll meanwhile)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 0.2 if deadline is None else min(0.2, max(0.0, deadline - time.monotonic()))
            self._receive(left)
            if self.returncode is not None:
                return self.returncode
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"zygote child {self._pid}", timeout or 0.0)

    def send_signal(self, sig: int) -> None:
        """Ask the zygote to send ``sig`` to the child (nothing once it has exited)."""
        if self.poll() is None:
            with contextlib.suppress(OSError):
                send_message(self._sock, {"signal": int(sig)})

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)


def _fd(stream: IO[Any] | int | None, default: int) -> int:
    if stream is None:
        return default
    return stream if isinstance(stream, int) else stream.fileno()


def spawn(
    path: Path,
    module: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: IO[Any] | int | None = None,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
    keep: Sequence[int] = (),
) -> ZygoteChild:
    """``python -m module *argv`` forked by the zygote at ``path``; stdio default to ours.

    ``keep``: at most one more descriptor the child holds open for its life (a task slot).
    """
    request = {
        "module": module,
        "argv": list(argv),
        "env": dict(os.environ if env is None else env),
        "cwd": str(cwd or Path.cwd()),
        "executable": sys.executable,
    }
    sock = _connect(path)
    try:
        stdio = [_fd(stdin, 0), _fd(stdout, 1), _fd(stderr, 2)]
        send_message(sock, request, [*stdio, *keep])
        reply = decode_message(sock.recv(MAX_MESSAGE) or b'{"error": "the zygote closed"}')
    except (OSError, ValueError) as exc:
        sock.close()
        raise ZygoteError(f"zygote at {path}: {exc}") from None
    if "error" in reply:
        sock.close()
        raise ZygoteError(str(reply["error"]))
    return ZygoteChild(sock, int(reply["pid"]))


@dataclass(frozen=True)
class ChildInfo:
    """One running child: who asked (their pid) and the HEARTH_HOME it runs for."""

    pid: int
    module: str
    home: str | None
    requester: int


def children(path: Path) -> list[ChildInfo]:
    """The zygote's running children, for grouping a device's processes."""
    sock = _connect(path)
    with sock:
        send_message(sock, {"list": True})
        reply = decode_message(sock.recv(MAX_MESSAGE))
    return [ChildInfo(**c) for c in reply["children"]]


def start_process(
    command: Sequence[str], env: Mapping[str, str] | None = None, keep: Sequence[int] = ()
) -> ChildProcess:
    """Start ``[python, "-m", module, *args]``: through the zygote if ``HEARTH_ZYGOTE`` is set.

    Without it this is ``subprocess.Popen(command, env=env)``, as on every laptop.
    ``keep``: a descriptor the child inherits and holds until it exits (a task slot).
    """
    zygote = os.environ.get(ENV_ZYGOTE)
    if not zygote:
        return subprocess.Popen(command, env=env, pass_fds=tuple(keep))
    if len(command) < 3 or command[1] != "-m" or command[0] != sys.executable:
        raise ZygoteError(f"the zygote runs `{sys.executable} -m MODULE` only, not {command[:3]}")
    return spawn(Path(zygote), command[2], command[3:], env=env, keep=keep)


def private_socket_path(directory: Path) -> Path:
    """``directory/zygote.sock``, after checking that only this user can enter ``directory``."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.stat()
    if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise ZygoteError(f"{directory} must be this user's and mode 0700 (chmod 700 {directory})")
    return directory / "zygote.sock"


__all__ = [
    "ENV_ZYGOTE",
    "LOST",
    "MAX_MESSAGE",
    "TERMINATE_GRACE_SECONDS",
    "ChildInfo",
    "ChildProcess",
    "ZygoteChild",
    "ZygoteError",
    "children",
    "decode_message",
    "private_socket_path",
    "send_message",
    "spawn",
    "start_process",
]
