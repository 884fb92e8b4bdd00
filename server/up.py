"""`hearth-server up`: the SuperLink with TLS, SuperNode authentication and a database.

It starts ``flower-superlink`` (through ``server.superlink``, which gives its
SQLite state a longer busy timeout; Flower 1.41 serves the Fleet, Control and
Runtime APIs on one HTTPS port) with the PKI's certificate, ``--enable-supernode-auth``,
a persistent SQLite ``--database`` (so a restart keeps runs and registered
devices) and no runtime dependency installation; writes a Flower connection
``hearth`` into its own ``FLWR_HOME``; registers every device public key in the
PKI with ``flwr supernode register`` (a key already registered is fine); and
prints the address and how to start a campaign.
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

from server.pki import Pki

CONNECTION: Final = "hearth"
DATABASE_FILE: Final = "superlink.db"
READY_TIMEOUT: Final = 60.0
SUPERLINK_MODULE: Final = "server.superlink"  # flower-superlink with hearth's SQLite timeout


class UpError(Exception):
    """The SuperLink could not be brought up; one line says why."""


@dataclass(frozen=True)
class LinkConfig:
    """Where and how the SuperLink runs."""

    pki_dir: Path
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 9093

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
        """``host:port`` for SuperNodes and ``flwr``."""
        return f"{self.connect_host}:{self.port}"


def bin_dir() -> Path:
    """The directory of this Python's console scripts (flower-superlink, flwr, ...)."""
    return Path(sys.executable).parent


def flwr_env(config: LinkConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for Flower processes: our FLWR_HOME, our scripts first on PATH."""
    env = dict(os.environ if base is None else base)
    env["FLWR_HOME"] = str(config.flwr_home)
    env["PATH"] = f"{bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
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
        f'address = "{config.address}"\n'
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
        config.host,
        "--port",
        str(config.port),
        "--disable-runtime-dependency-installation",
    ]


def start_superlink(config: LinkConfig, log_file: Path) -> subprocess.Popen[bytes]:
    """Start the SuperLink process and wait until it accepts connections."""
    Pki(config.pki_dir).require()
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_connection(config)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            superlink_command(config), env=flwr_env(config), stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UpError(f"flower-superlink exited with code {proc.returncode}; see {log_file}")
        try:
            with socket.create_connection((config.connect_host, config.port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise UpError(f"flower-superlink did not listen on {config.address}; see {log_file}")


def register_device(config: LinkConfig, public_key: Path) -> str:
    """Register one device key; returns "registered" or "already registered"."""
    result = subprocess.run(
        [
            str(bin_dir() / "flwr"),
            "supernode",
            "register",
            str(public_key),
            CONNECTION,
            "--name",
            public_key.stem,
            "--format",
            "json",
        ],
        env=flwr_env(config),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        payload = json.loads(result.stdout[result.stdout.index("{") :])
    except ValueError:
        raise UpError(f"registering {public_key.stem} failed: {result.stderr.strip()}") from None
    if payload.get("success"):
        return "registered"
    if "already in use" in str(payload.get("error-message", "")):
        return "already registered"
    raise UpError(f"registering {public_key.stem} failed: {payload.get('error-message')}")


def register_devices(config: LinkConfig) -> dict[str, str]:
    """Register every device in the PKI; returns name -> outcome."""
    pki = Pki(config.pki_dir)
    return {
        name: register_device(config, pki.device_public_key(name)) for name in pki.device_names()
    }


def campaign_hint(config: LinkConfig, app_dir: str = ".") -> str:
    """How the ML team starts a campaign against this SuperLink."""
    return (
        f"SuperLink at {config.address} (TLS, SuperNode authentication, database "
        f"{config.database}).\n"
        "Devices join with:\n"
        f"  hearth join --superlink {config.address} --root-cert ca.crt "
        "--key NAME.key --org-key org-signing.pub\n"
        "Start a campaign with a signed bundle:\n"
        f"  hearth-server sign {app_dir} --key {config.pki_dir / 'org-signing.key'}\n"
        f"  FLWR_HOME={config.flwr_home} flwr run {app_dir} {CONNECTION} --stream "
        "--run-config \"bundle-signature='TOKEN' secaggplus=true\"\n"
        "After a restart, continue a campaign with checkpoint-dir='DIR' resume=true."
    )


__all__ = [
    "LinkConfig",
    "UpError",
    "campaign_hint",
    "flwr_env",
    "register_devices",
    "start_superlink",
    "superlink_command",
    "write_connection",
]
