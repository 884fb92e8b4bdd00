"""A real federation on 127.0.0.1: ``hearth-server up``, ``hearth join`` devices, a TLS tap.

Used by the deployment e2e tests and the deployment benchmark. Every process is
started in its own process group and stopped by that group's id. Devices reach
the SuperLink through ``TlsTap``, a TLS-terminating relay that counts (and on
request keeps) every byte a device sends and receives, in plaintext: the test
owns the federation's CA, so the relay presents the SuperLink's own certificate.

``federation(..., zygote=True)`` starts one preloaded interpreter
(``client.deployment.zygote``) for the whole fleet and forks every device's
processes from it (``hearth join`` in its module form, then through
``HEARTH_ZYGOTE`` its SuperNode and ClientApp tasks): the fleet benchmark's way to
fit 100 SuperNodes on one machine. Without it every process starts fresh, as on
laptops.
"""

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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from client.control.consent import grant
from client.deployment.task_slots import ENV_TASK_SLOTS, make_slots
from client.deployment.zygote_client import ENV_ZYGOTE, ZygoteChild, private_socket_path, spawn
from client.storage.vault import Vault
from policy.events import AppCategory, Focus, Modality, Text
from privacy.policy import demo_policy_text, load_policy
from server.pki import add_device, init_pki
from server.policy_signing import sign_policy
from server.signing import (
    DEFAULT_VALID_DAYS,
    build_bundle,
    generate_org_key,
    load_org_key,
    sign_bundle,
)
from server.up import SUPERLINK_MODULE
from simulations.flwr_runner import PROJECT_ROOT, free_port, run_config_arg
from simulations.generator import generate_employee

BIN = Path(sys.executable).parent
PASSPHRASE = "e2e passphrase"  # noqa: S105 - throwaway vaults of synthetic events
ORG_KEY_PASSPHRASE = "e2e org key passphrase"  # noqa: S105 - a throwaway org key
CANARY = "CANARY-7f3a9c-do-not-leak"


@dataclass(frozen=True)
class DistributedNoise:
    """Distributed DP for a protocol benchmark: each device's share under SecAgg+.

    ``min_cohort`` is the cohort the shares are calibrated for (devices refuse to
    unmask fewer); the user-level target is lifted so that a benchmark's rounds are
    never stopped by it (this measures the protocol, not a guarantee).
    """

    noise_multiplier: float = 1.0
    min_cohort: int = 2


def relaxed_policy(
    path: Path,
    device_epsilon_cap: float | None = None,
    distributed_noise: DistributedNoise | None = None,
) -> Path:
    """The demo policy with a governor that lets a busy CI box train, and short rounds.

    The demo policy, not the default: these federations run 2-5 devices, and the
    default's cohort of 800 (with distributed noise calibrated for it) would refuse
    every round. Two DP-SGD steps a round: these federations test the protocol, not the model. A
    test machine has no NetworkManager, so a network whose metering is unknown may train.

    ``device_epsilon_cap`` raises the cap for benchmarks that run several campaigns
    on the same devices (the ledger counts them all) and measure the protocol.
    """
    replacements = {
        "idle_seconds = 300": "idle_seconds = 0",
        "max_cpu_percent = 30.0": "max_cpu_percent = 100.0",
        "require_mains_power = true": "require_mains_power = false",
        "allow_unknown_metering = false": "allow_unknown_metering = true",
        "steps = 8": "steps = 2",
    }
    if device_epsilon_cap is not None:
        replacements["device_epsilon_cap = 10.0"] = f"device_epsilon_cap = {device_epsilon_cap}"
    if distributed_noise is not None:
        replacements |= {
            "central_noise_multiplier = 0.0": (
                f"central_noise_multiplier = {distributed_noise.noise_multiplier}"
            ),
            "min_cohort = 2": f"min_cohort = {distributed_noise.min_cohort}",
            "distributed_noise = false": "distributed_noise = true",
            "user_epsilon_target = 1.0": "user_epsilon_target = 1000000.0",
        }
    text = demo_policy_text()
    for old, new in replacements.items():
        if old not in text:
            raise ValueError(f"the demo policy no longer says {old!r}; update relaxed_policy")
        text = text.replace(old, new)
    path.write_text(text)
    return path


def base_env(policy: Path) -> dict[str, str]:
    """Environment of every hearth and Flower process of the federation."""
    return {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HEARTH_POLICY": str(policy),
        "HEARTH_KEYRING": "0",
        "HEARTH_PASSPHRASE": PASSPHRASE,
        "FLWR_DISABLE_UPDATE_CHECK": "1",
    }


def seed_device(home: Path, employee: int, hours: float = 0.3, policy: Path | None = None) -> None:
    """A device whose vault holds synthetic work plus the canary, consenting under ``policy``."""
    events = generate_employee(employee, 7, hours=hours)
    t = events[-1].t
    seq = events[-1].seq
    events += [
        Text(seq + 1, t + 1, CANARY),
        Focus(seq + 2, t + 2, CANARY, AppCategory.EDITOR),
    ]
    with Vault.open(home / "vault", PASSPHRASE) as vault:
        vault.append(events)
    modalities = (Modality.POINTER, Modality.KEYS, Modality.APPS, Modality.TEXT)
    grant(home, modalities, load_policy(policy) if policy is not None else None)


def run(command: list[str], env: dict[str, str], timeout: float = 120) -> str:
    """Run a command to completion; its stdout and stderr together."""
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return result.stdout + result.stderr


@dataclass
class Process:
    """A process started here, in its own process group."""

    proc: subprocess.Popen[bytes] | ZygoteChild
    log: Path

    @classmethod
    def start(
        cls, command: list[str], env: dict[str, str], log: Path, zygote: Path | None = None
    ) -> Process:
        """Start ``command`` with output to ``log``; ``[python, -m, module, ...]`` by ``zygote``."""
        with open(log, "ab") as handle:
            if zygote is not None:
                child = spawn(
                    zygote, command[2], command[3:], env=env, stdout=handle, stderr=handle
                )
                return cls(child, log)
            proc = subprocess.Popen(
                command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
        return cls(proc, log)

    @property
    def running(self) -> bool:
        """Whether the process has not exited."""
        return self.proc.poll() is None

    def send(self, sig: int) -> None:
        """Signal the process (its group, if it leads one) without waiting."""
        if self.proc.poll() is None:
            if isinstance(self.proc, ZygoteChild):
                self.proc.send_signal(sig)
            else:
                os.killpg(self.proc.pid, sig)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the group this process leads (or, forked by a zygote, it) and wait for it."""
        if self.proc.poll() is None:
            self.send(sig)
            if isinstance(self.proc, ZygoteChild):  # the zygote ends what it started as it stops
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()  # a device that would not stop on a loaded machine
                    self.proc.wait(timeout=30)
                return
            self.proc.wait(timeout=30)


HANDSHAKE_TIMEOUT = 30.0


@dataclass
class TlsTap:
    """A TLS-terminating relay that counts every byte a device sends and receives."""

    upstream: int
    cert: Path
    key: Path
    ca: Path
    keep_sent: bool = True
    port: int = field(default_factory=free_port)
    sent: bytearray = field(default_factory=bytearray)
    sent_bytes: int = 0
    received_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def counts(self) -> tuple[int, int]:
        """Plaintext bytes (sent by devices, received by devices) so far."""
        with self._lock:
            return self.sent_bytes, self.received_bytes

    def _record(self, data: bytes, from_device: bool) -> None:
        with self._lock:
            if from_device:
                self.sent_bytes += len(data)
                if self.keep_sent:
                    self.sent.extend(data)
            else:
                self.received_bytes += len(data)

    def start(self) -> TlsTap:
        """Listen on ``port`` and relay each connection in its own thread."""
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
                        self._record(data, from_device=src is down)
                        peer[src].sendall(data)
            except OSError:
                return
            finally:
                for s in (down, up):
                    with contextlib.suppress(OSError):
                        s.close()

        def connect(raw: socket.socket) -> None:
            # Both handshakes in the connection's own thread: one slow or dead device
            # must not hold up every other device's next connection.
            try:
                raw.settimeout(HANDSHAKE_TIMEOUT)
                down = server.wrap_socket(raw, server_side=True)
                up = client.wrap_socket(
                    socket.create_connection(("127.0.0.1", self.upstream), HANDSHAKE_TIMEOUT),
                    server_hostname="127.0.0.1",
                )
                down.settimeout(None)
                up.settimeout(None)
            except OSError:
                raw.close()
                return
            relay(down, up)

        def serve() -> None:
            while True:
                raw, _ = listener.accept()
                threading.Thread(target=connect, args=(raw,), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()
        return self


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it is true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def deployment(home: Path) -> dict[str, object]:
    """A device's ``deployment.json`` (what ``hearth status`` shows), or empty."""
    try:
        return dict(json.loads((home / "deployment.json").read_text()))
    except (OSError, ValueError):
        return {}


@dataclass
class Federation:
    """A running SuperLink (``hearth-server up``) and devices (``hearth join``)."""

    root: Path
    pki: Path
    state: Path
    policy: Path
    env: dict[str, str]
    port: int
    up: Process
    up_command: list[str]
    tap: TlsTap
    homes: list[Path] = field(default_factory=list)
    joins: list[Process] = field(default_factory=list)
    zygote: Process | None = None  # forks every device process (``federation(zygote=True)``)
    zygote_socket: Path | None = None

    @property
    def org_key(self) -> Path:
        """The organisation's signing key: encrypted, outside the SuperLink's PKI directory."""
        return self.root / "org-key" / "org-signing.key"

    def token(
        self,
        key: Path | None = None,
        passphrase: str | None = None,
        *,
        version: int = 1,
        app_dir: Path = PROJECT_ROOT,
        valid_days: float = DEFAULT_VALID_DAYS,
        not_before: float | None = None,
    ) -> str:
        """The signed manifest of ``app_dir``'s bundle (release ``version``, valid from now).

        Signed by the organisation's key unless ``key``. ``flwr run`` builds the
        same bytes, so the manifest names the bundle the devices receive.
        """
        if key is None:
            key, passphrase = self.org_key, ORG_KEY_PASSPHRASE
        signed = sign_bundle(
            build_bundle(app_dir),
            load_org_key(key, passphrase),
            version=version,
            valid_days=valid_days,
            not_before=not_before,
        )
        return signed.token

    def flwr_run(
        self, overrides: Mapping[str, object], timeout: float, app_dir: Path = PROJECT_ROOT
    ) -> str:
        """``flwr run`` the app in ``app_dir`` (this project) against the SuperLink; its output."""
        env = {**self.env, "FLWR_HOME": str(self.state / "flwr")}
        command = [str(BIN / "flwr"), "run", str(app_dir), "hearth", "--stream"]
        return run([*command, "--run-config", run_config_arg(overrides)], env, timeout=timeout)

    def restart_superlink(self) -> None:
        """Stop ``hearth-server up`` and start it again on the same port and database."""
        self.up.kill(signal.SIGTERM)
        seen = len(self.up.log.read_text())
        env = {**self.env, "HEARTH_HOME": str(self.root / "server-home")}
        self.up = Process.start(self.up_command, env, self.up.log)
        last = f"device d{len(self.homes) - 1}:"
        wait_for(lambda: last in self.up.log.read_text()[seen:], 240, "the SuperLink to restart")

    def policy_signature(self, policy: Path | None = None) -> str:
        """The organisation's signature of ``policy`` (by default the federation's)."""
        text = (policy or self.policy).read_bytes()
        return sign_policy(text, load_org_key(self.org_key, ORG_KEY_PASSPHRASE)).token

    def start_join(self, device: int) -> Process:
        """Start ``hearth join`` for device ``device`` (through the tap); its log is appended to.

        The device pins the federation's policy, signed by the organisation. With a
        zygote, ``hearth join``'s module form is forked from it, and so (through
        ``HEARTH_ZYGOTE``) are the device's SuperNode and tasks.
        """
        env = {**self.env, "HEARTH_HOME": str(self.homes[device])}
        command = [str(BIN / "hearth"), "join"]
        if self.zygote_socket is not None:
            command = [sys.executable, "-m", "client.cli", "join"]
            env[ENV_ZYGOTE] = str(self.zygote_socket)
        return Process.start(
            [
                *command,
                "--superlink",
                f"127.0.0.1:{self.tap.port}",
                "--root-cert",
                str(self.pki / "ca.crt"),
                "--key",
                str(self.pki / "devices" / f"d{device}.key"),
                "--org-key",
                str(self.pki / "org-signing.pub"),
                "--policy",
                str(self.policy),
                "--policy-signature",
                self.policy_signature(),
            ],
            env,
            self.root / f"join-{device}.log",
            self.zygote_socket,
        )

    def rejoin(self, device: int) -> None:
        """Bring a device that was stopped back online and wait until it is connected."""
        log = self.root / f"join-{device}.log"
        seen = log.read_text().count("SuperNode ID")
        self.joins[device].kill(signal.SIGTERM)  # if it was still running
        self.joins[device] = self.start_join(device)
        wait_for(lambda: log.read_text().count("SuperNode ID") > seen, 90, "the device to rejoin")

    def device_outcomes(self) -> list[str]:
        """Each device's last decline or refusal reason (or "ok"), for failure messages."""
        outcomes = []
        for home in self.homes:
            record = deployment(home)
            last = record.get("decline") or record.get("refusal")
            outcomes.append(str(last.get("reason")) if isinstance(last, dict) else "ok")
        return outcomes

    def superlink(self) -> psutil.Process | None:
        """The ``flower-superlink`` process under ``hearth-server up``."""
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.up.proc.pid).children(recursive=True):
                if SUPERLINK_MODULE in child.cmdline()[:3]:
                    return child
        return None


@contextlib.contextmanager
def federation(
    root: Path,
    devices: int,
    *,
    keep_sent: bool = True,
    device_epsilon_cap: float | None = None,
    distributed_noise: DistributedNoise | None = None,
    zygote: bool = False,
    task_slots: int | None = None,
) -> Iterator[Federation]:
    """A SuperLink with ``devices`` joined devices under ``root``; everything stops after.

    ``zygote``: fork every device's processes from one preloaded interpreter.
    ``task_slots``: at most this many ClientApp tasks of the whole fleet run at once
    (``client.deployment.task_slots``: one machine standing in for many laptops).
    """
    pki = init_pki(root / "pki").root
    # The org key is kept away from the SuperLink (`up` refuses one it could read).
    generate_org_key(root / "org-key", ORG_KEY_PASSPHRASE, public_directory=pki)
    for i in range(devices):
        add_device(pki, f"d{i}")
    policy = relaxed_policy(root / "policy.toml", device_epsilon_cap, distributed_noise)
    env = base_env(policy)
    if task_slots is not None:
        env[ENV_TASK_SLOTS] = str(make_slots(root / "task-slots", task_slots))
    port = free_port()
    state = root / "state"
    up_command = [str(BIN / "hearth-server"), "up", "--pki", str(pki), "--state", str(state)]
    up_command += ["--port", str(port), "--control-port", str(free_port())]
    up = Process.start(
        up_command, {**env, "HEARTH_HOME": str(root / "server-home")}, root / "up.log"
    )
    joins: list[Process] = []
    fed: Federation | None = None
    forks: Process | None = None
    socket_path: Path | None = None
    try:
        if zygote:
            socket_path = private_socket_path(root / "zygote")
            forks = Process.start(
                [
                    sys.executable,
                    "-m",
                    "client.deployment.zygote",
                    "--socket-dir",
                    str(root / "zygote"),
                    "--exit-with-parent",  # a federation that died takes its fleet along
                ],
                env,
                root / "zygote.log",
            )
            wait_for(socket_path.exists, 180, "the zygote's socket")
        # `up` registers the devices (one process for all of them, server.node_registration).
        up_timeout = 90 + 10 * devices
        wait_for(
            lambda: f"device d{devices - 1}:" in (root / "up.log").read_text(), up_timeout, "up"
        )
        tap = TlsTap(
            port, pki / "superlink.crt", pki / "superlink.key", pki / "ca.crt", keep_sent
        ).start()
        fed = Federation(
            root,
            pki,
            state,
            policy,
            env,
            port,
            up,
            up_command,
            tap,
            joins=joins,
            zygote=forks,
            zygote_socket=socket_path,
        )
        for i in range(devices):
            home = root / f"home-{i}"
            seed_device(home, i, policy=policy)
            fed.homes.append(home)
            joins.append(fed.start_join(i))
        wait_for(
            lambda: all(
                "SuperNode ID" in (root / f"join-{i}.log").read_text() for i in range(devices)
            ),
            60 + 6 * devices,
            "all SuperNodes connected",
        )
        yield fed
    finally:
        for process in joins:  # every device at once: a fleet stops in parallel
            process.send(signal.SIGTERM)
        for process in joins:
            process.kill(signal.SIGTERM)
        up.kill(signal.SIGTERM)
        if fed is not None:
            fed.up.kill(signal.SIGTERM)  # a restarted SuperLink
        if forks is not None:
            forks.kill(signal.SIGTERM)  # and it ends anything of the devices' still running
