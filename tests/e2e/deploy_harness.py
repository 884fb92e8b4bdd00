"""Real processes on 127.0.0.1: a SuperLink (hearth-server up), devices (hearth join), a TLS tap."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from client.consent import Modality, grant
from client.vault import Vault
from policy.events import AppCategory, Focus, Text
from privacy.policy import default_policy_text
from simulations.flwr_runner import PROJECT_ROOT, free_port
from simulations.generator import generate_employee

BIN = Path(sys.executable).parent
PASSPHRASE = "e2e passphrase"
CANARY = "CANARY-7f3a9c-do-not-leak"


def relaxed_policy(path: Path) -> Path:
    """The default policy with a governor that lets a busy CI box train."""
    text = (
        default_policy_text()
        .replace("idle_seconds = 300", "idle_seconds = 0")
        .replace("max_cpu_percent = 30.0", "max_cpu_percent = 100.0")
        .replace("require_mains_power = true", "require_mains_power = false")
    )
    path.write_text(text)
    return path


def base_env(policy: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HEARTH_POLICY": str(policy),
        "HEARTH_KEYRING": "0",
        "HEARTH_PASSPHRASE": PASSPHRASE,
        "FLWR_DISABLE_UPDATE_CHECK": "1",
    }


def seed_device(home: Path, employee: int, hours: float = 0.3) -> None:
    """A consenting device whose vault holds synthetic work plus the canary."""
    events = generate_employee(employee, 7, hours=hours)
    t = events[-1].t
    seq = events[-1].seq
    events += [
        Text(seq + 1, t + 1, CANARY),
        Focus(seq + 2, t + 2, CANARY, AppCategory.EDITOR),
    ]
    with Vault.open(home / "vault", PASSPHRASE) as vault:
        vault.append(events)
    grant(home, (Modality.POINTER, Modality.KEYS, Modality.APPS, Modality.TEXT))


def run(command: list[str], env: dict[str, str], timeout: float = 120) -> str:
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return result.stdout + result.stderr


@dataclass
class Process:
    """A process this test started, in its own process group."""

    proc: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, command: list[str], env: dict[str, str], log: Path) -> Process:
        with open(log, "ab") as handle:
            proc = subprocess.Popen(
                command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
        return cls(proc, log)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)  # the group this test created
            self.proc.wait(timeout=30)


@dataclass
class TlsTap:
    """A TLS-terminating relay that records every byte a device sends, in plaintext.

    The test owns the federation's CA, so the relay presents the SuperLink's own
    certificate to the device and dials the real SuperLink as a TLS client.
    """

    upstream: int
    cert: Path
    key: Path
    ca: Path
    port: int = field(default_factory=free_port)
    sent: bytearray = field(default_factory=bytearray)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> TlsTap:
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(self.cert, self.key)
        client = ssl.create_default_context(cafile=str(self.ca))
        listener = socket.create_server(("127.0.0.1", self.port))

        def relay(down: ssl.SSLSocket, up: ssl.SSLSocket) -> None:
            # One thread per connection: an SSL socket must not be read and written
            # from two threads at once.
            peer = {down: up, up: down}
            try:
                while True:
                    ready, _, _ = select.select([down, up], [], [], 1.0)
                    ready += [s for s in (down, up) if s.pending() and s not in ready]
                    for src in ready:
                        src.setblocking(False)  # TLS 1.3 tickets make a socket readable
                        try:  # without application data: never block on them
                            data = src.recv(65536)
                        except ssl.SSLWantReadError:
                            continue
                        finally:
                            src.setblocking(True)
                        if not data:
                            return
                        if src is down:
                            with self._lock:
                                self.sent.extend(data)
                        peer[src].sendall(data)
            except OSError:
                return
            finally:
                for s in (down, up):
                    with contextlib.suppress(OSError):
                        s.close()

        def serve() -> None:
            while True:
                raw, _ = listener.accept()
                try:
                    down = server.wrap_socket(raw, server_side=True)
                    up = client.wrap_socket(
                        socket.create_connection(("127.0.0.1", self.upstream)),
                        server_hostname="127.0.0.1",
                    )
                except OSError:
                    raw.close()
                    continue
                threading.Thread(target=relay, args=(down, up), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()
        return self


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def deployment(home: Path) -> dict[str, object]:
    try:
        return dict(json.loads((home / "deployment.json").read_text()))
    except (OSError, ValueError):
        return {}
