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
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

from client.deployment.zygote_child import Order, become
from client.deployment.zygote_client import (
    MAX_MESSAGE,
    TERMINATE_GRACE_SECONDS,
    ChildInfo,
    ZygoteError,
    decode_message,
    private_socket_path,
    send_message,
)

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
            send_message(conn, {"error": why})
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
        if len(fds) not in (3, 4):
            return "a request passes stdin, stdout, stderr and at most one descriptor to keep"
        if threading.active_count() != 1 or _thread_count() != 1:
            return "the zygote has more than one thread: refusing to fork"
        return None

    def _request(
        self, conn: socket.socket, requester: int, sel: selectors.BaseSelector
    ) -> Order | None:
        data, fds, flags, _ = socket.recv_fds(conn, MAX_MESSAGE, 4)
        if not data:
            sel.unregister(conn)
            conn.close()
            return None
        del self.waiting[conn]
        try:
            request = decode_message(data)
        except ValueError:
            request = {}
        if request.get("list"):
            sel.unregister(conn)
            running = [c.info.__dict__ for c in self.children.values()]
            with contextlib.suppress(OSError):
                send_message(conn, {"children": running})
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
            return Order(
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
            send_message(conn, {"pid": pid})
        except OSError:  # the requester is already gone
            self._lost(conn, sel)
        return None

    def _lost(self, conn: socket.socket, sel: selectors.BaseSelector) -> None:
        """The requester closed its end: terminate what it started."""
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(conn)
        conn.close()
        for pid, child in self._started_by(conn):
            child.conn = None
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _started_by(self, conn: socket.socket) -> list[tuple[int, _Child]]:
        """The children a requester's connection asked for."""
        return [(pid, child) for pid, child in self.children.items() if child.conn is conn]

    def _control(self, conn: socket.socket, sel: selectors.BaseSelector) -> None:
        try:
            data = conn.recv(MAX_MESSAGE)
        except OSError:
            data = b""
        if not data:
            self._lost(conn, sel)
            return
        with contextlib.suppress(ValueError, KeyError, TypeError):
            sig = int(decode_message(data)["signal"])
            for pid, _child in self._started_by(conn):
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
                send_message(child.conn, {"exit": os.waitstatus_to_exitcode(status)})
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
    ) -> Order | None:
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

    def serve(self) -> Order | None:
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
        order: Order | None = None
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
    return become(order)  # SystemExit from the module ends this process with its code


__all__ = [
    "IMPORT_TIME_ENV",
    "PRELOAD",
    "THREAD_ENV",
    "Zygote",
    "main",
    "preload",
]


if __name__ == "__main__":
    raise SystemExit(main())
