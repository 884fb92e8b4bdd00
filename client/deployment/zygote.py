"""A preloaded interpreter that forks device processes: ``python -m MODULE`` without the import.

A device is several Python processes (``hearth join``, its SuperNode, one ClientApp
task per message), and each fresh one spends seconds and ~100 MiB importing torch
and Flower. Where many devices share one machine (the fleet benchmark: 100
SuperNodes on 127.0.0.1), ``python -m client.deployment.zygote --socket PATH``
imports those modules once, freezes them out of the garbage collector
(``gc.freeze``, so a child's collections do not write to the shared pages) and
then forks one child per request: ``python -m MODULE ARGV`` semantics
(``runpy.run_module(..., run_name="__main__")``) with the requester's argv,
environment, working directory and stdin/stdout/stderr (passed as file
descriptors, ``SCM_RIGHTS``). Pages the children do not write stay shared, so the
kernel counts them once. A laptop never uses it: ``hearth join`` and hearth's
executor start processes through a zygote only when ``HEARTH_ZYGOTE`` names its
socket (``start_process``); otherwise ``subprocess.Popen``, exactly as before.

What it does not change. Each device is still its own processes, none a thread of
another. A forked ClientApp task runs the same ``client.deployment.runner task``
code as a fresh one, with the same checks (signed bundle, consent, pause,
governor) before the device's ClientApp sees a message: the zygote only saves
the import. The module that is run is executed anew as ``__main__`` in the child.

Who may ask. A request names a module and an environment, so whoever can reach
the socket can run code as this user. The socket lives in a directory only this
user can enter (0700, checked), is itself 0600, and each connection's peer must be
this user (``SO_PEERCRED``); another local user cannot connect.

Fork safety. The zygote stays single-threaded: it refuses to fork when
``threading.active_count()`` or the kernel's count of its threads is not 1
(BLAS pools are capped at one thread before numpy is imported, so none start).
It never makes a gRPC channel or server: grpcio 1.85 leaves fork support off
(``GRPC_ENABLE_FORK_SUPPORT``, read at import), which is safe because gRPC's core
is initialised only by the first channel, in the child, as in a fresh process.
torch's thread pool is not started before a fork; the ClientApp sets its own
thread count when it trains, as it does in a fresh process. numpy's legacy
global generator is reseeded from the OS in each child (a fork copies it);
hearth's privacy randomness never uses it (``privacy.randomness``).

Differences from a fresh process, stated: ``sys.path`` and environment variables
read at import time are the zygote's, so a request whose ``PYTHONPATH`` or
interpreter differs is refused rather than run against other code; the BLAS
libraries use one thread (``THREAD_ENV``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import runpy
import selectors
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, Final, Protocol

ENV_ZYGOTE: Final = "HEARTH_ZYGOTE"
# What every device process imports: the executor, Flower's SuperNode, hearth's CLI for
# `hearth join`, and what the ClientApp imports when a message arrives (torch, Opacus,
# the vault, the accountants: seconds and ~180 MiB a task otherwise).
PRELOAD: Final = (
    "client.deployment.runner",
    "client.deployment.supernode",
    "flwr.supernode.cli",
    "client.deployment.join",
    "client.cli.main",
    "client.learning.device",
    "client.learning.training",
    "client.learning.threads",
    "client.storage.vault_store",
    "policy.model",
    "privacy.accountants",
    "privacy.ledger",
    "privacy.randomness",
)
# Set before the preload so that numpy's BLAS starts no thread pool in the zygote.
THREAD_ENV: Final = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
# Variables the preloaded modules read at import: a request must agree with the zygote.
IMPORT_TIME_ENV: Final = (
    "PYTHONPATH",
    "FLWR_TELEMETRY_ENABLED",
    "FLWR_TELEMETRY_LOGGING",
    "FLWR_LOG_LEVEL",
)
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


def _send(sock: socket.socket, message: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
    data = json.dumps(message).encode()
    if len(data) > MAX_MESSAGE:
        raise ZygoteError(f"zygote message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)


def _decode(data: bytes) -> dict[str, Any]:
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
            self.returncode = int(_decode(data)["exit"]) if data else LOST
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
                _send(self._sock, {"signal": int(sig)})

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
) -> ZygoteChild:
    """``python -m module *argv`` forked by the zygote at ``path``; stdio default to ours."""
    request = {
        "module": module,
        "argv": list(argv),
        "env": dict(os.environ if env is None else env),
        "cwd": str(cwd or Path.cwd()),
        "executable": sys.executable,
    }
    sock = _connect(path)
    try:
        _send(sock, request, [_fd(stdin, 0), _fd(stdout, 1), _fd(stderr, 2)])
        reply = _decode(sock.recv(MAX_MESSAGE) or b'{"error": "the zygote closed"}')
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
        _send(sock, {"list": True})
        reply = _decode(sock.recv(MAX_MESSAGE))
    return [ChildInfo(**c) for c in reply["children"]]


def start_process(command: Sequence[str], env: Mapping[str, str] | None = None) -> ChildProcess:
    """Start ``[python, "-m", module, *args]``: through the zygote if ``HEARTH_ZYGOTE`` is set.

    Without it this is ``subprocess.Popen(command, env=env)``, as on every laptop.
    """
    zygote = os.environ.get(ENV_ZYGOTE)
    if not zygote:
        return subprocess.Popen(command, env=env)
    if len(command) < 3 or command[1] != "-m" or command[0] != sys.executable:
        raise ZygoteError(f"the zygote runs `{sys.executable} -m MODULE` only, not {command[:3]}")
    return spawn(Path(zygote), command[2], command[3:], env=env)


# ---------------------------------------------------------------- the zygote itself


@dataclass(frozen=True)
class _Order:
    """What a freshly forked child is to run."""

    module: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    fds: list[int]


@dataclass
class _Child:
    conn: socket.socket | None
    info: ChildInfo


def _peer(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the connection's peer."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    pid, uid, _gid = (int.from_bytes(creds[i : i + 4], sys.byteorder) for i in (0, 4, 8))
    return pid, uid


def _thread_count() -> int:
    """Threads of this process as the kernel sees them (native ones included)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def private_socket_path(directory: Path) -> Path:
    """``directory/zygote.sock``, after checking that only this user can enter ``directory``."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.stat()
    if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise ZygoteError(f"{directory} must be this user's and mode 0700 (chmod 700 {directory})")
    return directory / "zygote.sock"


@dataclass
class Zygote:
    """The preloaded, single-threaded server that forks children on request."""

    path: Path
    listener: socket.socket = field(init=False)
    children: dict[int, _Child] = field(default_factory=dict)
    waiting: dict[socket.socket, int] = field(default_factory=dict)  # conn -> requester pid
    stopping: bool = False
    exit_with_parent: bool = False  # stop (and end every child) when who started us dies
    _pid: int = field(default_factory=os.getpid)
    _parent: int = field(default_factory=os.getppid)
    _handlers: dict[signal.Signals, Any] = field(default_factory=dict)

    def _bind(self) -> None:
        self.path.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        old = os.umask(0o177)
        try:
            self.listener.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self.listener.listen(128)

    def _refuse(self, conn: socket.socket, why: str) -> None:
        with contextlib.suppress(OSError):
            _send(conn, {"error": why})
        conn.close()

    def _check(self, request: dict[str, Any], fds: list[int]) -> str | None:
        if request.get("executable") != sys.executable:
            return f"the zygote runs {sys.executable}, not {request.get('executable')}"
        env = request.get("env")
        if not isinstance(env, dict) or not isinstance(request.get("module"), str):
            return "a request needs a module and an environment"
        for name in IMPORT_TIME_ENV:
            if env.get(name) != os.environ.get(name):
                return f"{name} differs from the zygote's: start a zygote with the same {name}"
        if len(fds) != 3:
            return "a request passes stdin, stdout and stderr"
        if threading.active_count() != 1 or _thread_count() != 1:
            return "the zygote has more than one thread: refusing to fork"
        return None

    def _request(
        self, conn: socket.socket, requester: int, sel: selectors.BaseSelector
    ) -> _Order | None:
        data, fds, flags, _ = socket.recv_fds(conn, MAX_MESSAGE, 3)
        if not data:
            sel.unregister(conn)
            conn.close()
            return None
        del self.waiting[conn]
        try:
            request = _decode(data)
        except ValueError:
            request = {}
        if request.get("list"):
            sel.unregister(conn)
            running = [c.info.__dict__ for c in self.children.values()]
            with contextlib.suppress(OSError):
                _send(conn, {"children": running})
            conn.close()
            return None
        problem = "a truncated request" if flags & socket.MSG_TRUNC else self._check(request, fds)
        if problem is not None:
            sel.unregister(conn)
            for fd in fds:
                os.close(fd)
            self._refuse(conn, problem)
            return None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            return _Order(
                request["module"],
                list(request.get("argv", [])),
                request["env"],
                str(request.get("cwd", "/")),
                fds,
            )
        for fd in fds:
            os.close(fd)
        home = request["env"].get("HEARTH_HOME")
        self.children[pid] = _Child(conn, ChildInfo(pid, request["module"], home, requester))
        try:
            _send(conn, {"pid": pid})
        except OSError:  # the requester is already gone
            self._lost(conn, sel)
        return None

    def _lost(self, conn: socket.socket, sel: selectors.BaseSelector) -> None:
        """The requester closed its end: terminate what it started."""
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(conn)
        conn.close()
        for pid, child in self.children.items():
            if child.conn is conn:
                child.conn = None
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)

    def _control(self, conn: socket.socket, sel: selectors.BaseSelector) -> None:
        try:
            data = conn.recv(MAX_MESSAGE)
        except OSError:
            data = b""
        if not data:
            self._lost(conn, sel)
            return
        with contextlib.suppress(ValueError, KeyError, TypeError):
            sig = int(_decode(data)["signal"])
            for pid, child in self.children.items():
                if child.conn is conn:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)

    def _reap(self, sel: selectors.BaseSelector) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None or child.conn is None:
                continue
            with contextlib.suppress(OSError):
                _send(child.conn, {"exit": os.waitstatus_to_exitcode(status)})
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(child.conn)
            child.conn.close()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _shutdown(self) -> None:
        """Terminate every child, then kill what is left after the grace period."""
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + TERMINATE_GRACE_SECONDS
        while self.children and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                pid, _ = os.waitpid(-1, os.WNOHANG)
                if pid:
                    self.children.pop(pid, None)
                    continue
            time.sleep(0.05)
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.path.unlink(missing_ok=True)

    def _accept(self, sel: selectors.BaseSelector) -> None:
        conn, _ = self.listener.accept()
        pid, uid = _peer(conn)
        if uid != os.getuid():
            conn.close()  # another user: never served
            return
        self.waiting[conn] = pid
        sel.register(conn, selectors.EVENT_READ)

    def _handle(
        self, sock: socket.socket, wake: socket.socket, sel: selectors.BaseSelector
    ) -> _Order | None:
        if sock is self.listener:
            self._accept(sel)
        elif sock is wake:
            with contextlib.suppress(BlockingIOError):
                wake.recv(4096)
        elif sock in self.waiting:
            return self._request(sock, self.waiting[sock], sel)
        else:
            self._control(sock, sel)
        return None

    def _leave(self, sel: selectors.BaseSelector) -> None:
        """In the forked child: drop every socket and signal handler of the zygote's."""
        for sig, handler in self._handlers.items():
            signal.signal(sig, handler)
        for key in list(sel.get_map().values()):
            assert isinstance(key.fileobj, socket.socket)
            key.fileobj.close()
        for child in self.children.values():  # those whose requester already left
            if child.conn is not None:
                child.conn.close()
        self.children.clear()

    def serve(self) -> _Order | None:
        """Answer requests until SIGTERM or SIGINT; in a forked child, return its order."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            self._handlers[sig] = signal.getsignal(sig)
        signal.set_wakeup_fd(wake_w.fileno())
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self._bind()
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ)
        sel.register(wake_r, selectors.EVENT_READ)
        order: _Order | None = None
        try:
            while not self.stopping and order is None:
                for key, _ in sel.select(1.0):
                    assert isinstance(key.fileobj, socket.socket)
                    order = self._handle(key.fileobj, wake_r, sel)
                    if order is not None:
                        break
                else:
                    self._reap(sel)
                    if self.exit_with_parent and os.getppid() != self._parent:
                        self.stopping = True  # orphaned: whoever started the fleet is gone
        finally:
            signal.set_wakeup_fd(-1)
            if os.getpid() == self._pid:
                self._shutdown()
            else:
                self._leave(sel)
            wake_w.close()
            sel.close()
        return order


def _run_child(order: _Order) -> int:
    """In the forked child: become ``python -m module argv`` and run it."""
    for target, fd in enumerate(order.fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(order.cwd)
    os.environ.clear()
    os.environ.update(order.env)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()  # a fork copies the legacy generator's state
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(line_buffering=stream.isatty())  # type: ignore[union-attr]
    sys.argv = ["-m", *order.argv]
    # A fresh `python -m` runs the module as __main__ next to no copy of itself.
    sys.modules.pop(order.module, None)
    runpy.run_module(order.module, run_name="__main__", alter_sys=True)
    return 0


def preload(modules: Sequence[str] = PRELOAD) -> None:
    """Import what every device process imports, then freeze it out of the collector."""
    os.environ.update(THREAD_ENV)
    for module in modules:
        __import__(module)
    gc.collect()
    gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m client.deployment.zygote --socket-dir DIR``: preload, then serve forks."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--socket-dir", type=Path, required=True, help="a private directory")
    parser.add_argument("--preload", nargs="*", default=list(PRELOAD), help="modules to import")
    parser.add_argument(
        "--exit-with-parent", action="store_true", help="stop when the starting process dies"
    )
    args = parser.parse_args(argv)
    parent = os.getppid()  # before the seconds of preloading
    try:
        path = private_socket_path(args.socket_dir)
    except ZygoteError as exc:
        print(f"hearth zygote: {exc}", file=sys.stderr)
        return 2
    preload(args.preload)
    order = Zygote(path, exit_with_parent=args.exit_with_parent, _parent=parent).serve()
    if order is None:
        return 0
    return _run_child(order)  # SystemExit from the module ends this process with its code


__all__ = [
    "ENV_ZYGOTE",
    "ChildInfo",
    "ChildProcess",
    "Zygote",
    "ZygoteChild",
    "ZygoteError",
    "children",
    "main",
    "private_socket_path",
    "spawn",
    "start_process",
]

if __name__ == "__main__":
    raise SystemExit(main())
