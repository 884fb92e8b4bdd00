"""`hearth-server up`: the SuperLink with TLS, SuperNode authentication and a database.

Before anything starts it checks custody (``server.custody``): the org signing key
must not be where the SuperLink's user can use it, and the org public key must be
there. It then starts ``flower-superlink`` through ``server.superlink`` (a longer
SQLite busy timeout; only the Fleet API on the laptops' ``--host``/``--port``, and
the Control and Runtime APIs on 127.0.0.1:``--control-port`` only) with the PKI's
certificate, ``--enable-supernode-auth``, a persistent SQLite ``--database`` and no
runtime dependency installation. Its SuperExec finds ``server.serverapp_gate``
first on its ``PATH``, so a run's ServerApp starts only if the org signed its
bundle. The org key passphrase never reaches any of these processes. ``up`` writes
a Flower connection ``hearth`` (the loopback Control address) into its own
``FLWR_HOME``, registers every device key enrolled in the PKI's registry (and
refuses keys that are not), appends each new registration to the registry, and
prints the addresses and how to start a campaign.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from server import registry
from server.custody import CustodyError, check_key_custody
from server.passphrase import without_passphrase
from server.pki import Pki
from server.serverapp_gate import write_gate
from server.signing import ORG_PUBLIC_KEY
from server.superlink import CONTROL_HOST

CONNECTION: Final = "hearth"
DATABASE_FILE: Final = "superlink.db"
GATE_DIR: Final = "gate"
READY_TIMEOUT: Final = 60.0
SUPERLINK_MODULE: Final = "server.superlink"  # flower-superlink, hearth's way (see there)


class UpError(Exception):
    """The SuperLink could not be brought up; one line says why."""


@dataclass(frozen=True)
class LinkConfig:
    """Where and how the SuperLink runs."""

    pki_dir: Path
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 9093
    control_port: int = 9094

    @property
    def flwr_home(self) -> Path:
        """The ``FLWR_HOME`` of the SuperLink and of ``flwr`` commands against it."""
        return self.state_dir / "flwr"

    @property
    def database(self) -> Path:
        """The SuperLink's persistent state."""
        return self.state_dir / DATABASE_FILE

    @property
    def connect_host(self) -> str:
        """The host to dial (a wildcard bind is dialled on loopback)."""
        return "127.0.0.1" if self.host in {"0.0.0.0", "::", ""} else self.host  # noqa: S104

    @property
    def address(self) -> str:
        """``host:port`` for SuperNodes: the Fleet API only."""
        return f"{self.connect_host}:{self.port}"

    @property
    def control_address(self) -> str:
        """Where ``flwr`` (Control API) and SuperExec (Runtime API) connect: loopback only."""
        return f"{CONTROL_HOST}:{self.control_port}"

    @property
    def gate_dir(self) -> Path:
        """The commands SuperExec finds first on its ``PATH`` (``server.serverapp_gate``)."""
        return self.state_dir / GATE_DIR


def bin_dir() -> Path:
    """The directory of this Python's console scripts (flower-superlink, flwr, ...)."""
    return Path(sys.executable).parent


def flwr_env(config: LinkConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for Flower processes: our FLWR_HOME, our scripts first on PATH.

    Never the org key passphrase (``HEARTH_ORG_KEY_PASSPHRASE``), even if ``up``
    itself was given it.
    """
    env = without_passphrase(dict(os.environ if base is None else base))
    env["FLWR_HOME"] = str(config.flwr_home)
    env["PATH"] = f"{bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    return env


def superlink_env(config: LinkConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The SuperLink's environment: ``flwr_env`` with the bundle gate first on ``PATH``."""
    env = flwr_env(config, base)
    env["PATH"] = f"{config.gate_dir}{os.pathsep}{env['PATH']}"
    return env


def write_connection(config: LinkConfig) -> Path:
    """Write the ``hearth`` connection to ``FLWR_HOME/config.toml``."""
    ca = Pki(config.pki_dir).ca_cert.resolve()
    config.flwr_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = config.flwr_home / "config.toml"
    path.write_text(
        "[superlink]\n"
        f'default = "{CONNECTION}"\n\n'
        f"[superlink.{CONNECTION}]\n"
        f'address = "{config.control_address}"\n'
        f'root-certificates = "{ca}"\n'
    )
    return path


def superlink_command(config: LinkConfig) -> list[str]:
    """The ``flower-superlink`` command line."""
    pki = Pki(config.pki_dir)
    return [
        sys.executable,
        "-m",
        SUPERLINK_MODULE,
        "--ssl-ca-certfile",
        str(pki.ca_cert),
        "--ssl-certfile",
        str(pki.superlink_cert),
        "--ssl-keyfile",
        str(pki.superlink_key),
        "--enable-supernode-auth",
        "--database",
        str(config.database),
        "--host",
        CONTROL_HOST,
        "--port",
        str(config.control_port),
        "--fleet-host",
        config.host,
        "--fleet-port",
        str(config.port),
        "--disable-runtime-dependency-installation",
    ]


def enrolled_devices(config: LinkConfig) -> list[str]:
    """The PKI's devices, each checked against its enrolment in the registry.

    Raises ``UpError`` on a broken registry chain, or a device key that was never
    enrolled or differs from the key enrolled under its name.
    """
    pki = Pki(config.pki_dir)
    try:
        enrolled = registry.enrolled(registry.read_registry(config.pki_dir))
        names = pki.device_names()
        for name in names:
            key = registry.fingerprint(pki.device_public_key(name).read_bytes())
            if enrolled.get(name) != key:
                raise UpError(
                    f"device {name}'s key {key} is not enrolled in "
                    f"{registry.registry_path(config.pki_dir)}; enrol devices with "
                    "`hearth-server pki add-device`"
                )
    except (registry.RegistryError, OSError) as exc:
        raise UpError(str(exc)) from None
    return names


def preflight(config: LinkConfig) -> list[str]:
    """Everything ``up`` checks before it starts a process; returns the devices to register."""
    Pki(config.pki_dir).require()
    try:
        check_key_custody(config.pki_dir)
    except CustodyError as exc:
        raise UpError(str(exc)) from None
    if config.port == config.control_port:
        raise UpError(f"--control-port must differ from the laptops' port {config.port}")
    return enrolled_devices(config)


def _wait_listening(
    proc: subprocess.Popen[bytes], host: str, port: int, deadline: float, log_file: Path
) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UpError(f"flower-superlink exited with code {proc.returncode}; see {log_file}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.3)
    return False


def start_superlink(config: LinkConfig, log_file: Path) -> subprocess.Popen[bytes]:
    """Check custody, start the SuperLink process and wait until both addresses accept."""
    preflight(config)
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_connection(config)
    write_gate(config.gate_dir, config.pki_dir / ORG_PUBLIC_KEY)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            superlink_command(config),
            env=superlink_env(config),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + READY_TIMEOUT
    for host, port in ((CONTROL_HOST, config.control_port), (config.connect_host, config.port)):
        if not _wait_listening(proc, host, port, deadline, log_file):
            proc.terminate()
            raise UpError(f"flower-superlink did not listen on {host}:{port}; see {log_file}")
    return proc


REGISTRATION_MODULE: Final = "server.node_registration"


def register_devices(config: LinkConfig) -> dict[str, str]:
    """Register every device enrolled in the PKI's registry; returns name -> outcome.

    Outcomes are "registered" or "already registered". One process registers every
    key (``server.node_registration``: Flower's own ``RegisterNode`` request, one
    import of Flower instead of one ``flwr supernode register`` process a device).
    Each new registration is appended to the registry (event ``registered``).
    """
    pki = Pki(config.pki_dir)
    names = enrolled_devices(config)
    if not names:
        return {}
    keys = {name: pki.device_public_key(name) for name in names}
    result = subprocess.run(
        [sys.executable, "-m", REGISTRATION_MODULE, CONNECTION, *map(str, keys.values())],
        env=flwr_env(config),
        capture_output=True,
        text=True,
        timeout=60 + 5 * len(keys),
        check=False,
    )
    replies: dict[str, dict[str, object]] = {}
    for line in result.stdout.splitlines():
        try:
            reply = json.loads(line)
        except ValueError:
            continue  # Flower's own console output
        if isinstance(reply, dict) and isinstance(reply.get("name"), str):
            replies[reply["name"]] = reply
    outcomes: dict[str, str] = {}
    failures: list[str] = []
    for name, key in keys.items():  # every registration is recorded before any error
        reply = replies.get(name)
        if reply is None:
            failures.append(f"registering {name} failed: {result.stderr.strip() or 'no reply'}")
        elif reply.get("success"):
            _record_registration(config, name, key)
            outcomes[name] = "registered"
        elif "already in use" in str(reply.get("error-message", "")):
            outcomes[name] = "already registered"
        else:
            failures.append(f"registering {name} failed: {reply.get('error-message')}")
    if failures:
        raise UpError(failures[0])
    return outcomes


def _record_registration(config: LinkConfig, name: str, public_key: Path) -> None:
    try:
        registry.append(
            config.pki_dir,
            registry.REGISTERED,
            name,
            registry.fingerprint(public_key.read_bytes()),
            f"SuperLink {config.address}",
        )
    except (registry.RegistryError, OSError) as exc:
        raise UpError(f"{name} registered but not recorded: {exc}") from None


def campaign_hint(config: LinkConfig, app_dir: str = ".") -> str:
    """How the ML team starts a campaign against this SuperLink."""
    return (
        f"SuperLink for laptops at {config.address}: Fleet API only (TLS, SuperNode "
        f"authentication, database {config.database}).\n"
        f"Control API (flwr) on {config.control_address} only: run flwr on this host, "
        "or through an SSH tunnel.\n"
        "Devices join with:\n"
        f"  hearth join --superlink {config.address} --root-cert ca.crt "
        "--key NAME.key --org-key org-signing.pub --policy POLICY --policy-signature POLICY.sig\n"
        "Start a campaign with a release signed where the org key is kept (offline):\n"
        f"  hearth-server sign {app_dir} --version N --key /offline/org-signing.key\n"
        f"  FLWR_HOME={config.flwr_home} flwr run {app_dir} {CONNECTION} --stream "
        "--run-config \"bundle-signature='TOKEN' secaggplus=true\"\n"
        "or, to see each round's outcome and get a non-zero exit when nothing aggregated:\n"
        f"  hearth-server campaign run {app_dir} --state {config.flwr_home} "
        "--run-config \"bundle-signature='TOKEN' secaggplus=true\"\n"
        "This SuperLink runs a ServerApp only if its bundle carries the org's signature.\n"
        "After a restart, continue a campaign with checkpoint-dir='DIR' resume=true."
    )


__all__ = [
    "LinkConfig",
    "UpError",
    "campaign_hint",
    "enrolled_devices",
    "flwr_env",
    "preflight",
    "register_devices",
    "start_superlink",
    "superlink_command",
    "superlink_env",
    "write_connection",
]
