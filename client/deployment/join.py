"""`hearth join`: take part in the organisation's federation from this laptop.

Starts ``flower-supernode`` (through ``client.deployment.supernode``, which only shortens
its idle wait during a round) with TLS (``--root-certificates``), SuperNode
authentication (``--auth-supernode-private-key``), no runtime dependency
installation, and ``--isolation process`` so that Flower starts no app code
itself; then runs hearth's own executor (``client.deployment.runner.serve``) in this
process, which admits each message through consent, pause, the bundle
signature and the resource governor before any ClientApp runs.

Before anything starts, the device pins its trust anchors: the organisation's
public key (``--org-key``), then the privacy policy the organisation signed
(``--policy`` with ``--policy-signature``, ``client.control.policy_pin``), checked against
that key. Without a pinned policy, or without the employee's consent to exactly
that policy, it does not join at all.

With ``HEARTH_ZYGOTE`` set (a fleet on one machine, ``client.deployment.zygote``) the
SuperNode and the ClientApp tasks are forked from that preloaded interpreter instead
of started fresh; a laptop leaves it unset. ``python -m client.cli join ARGS``
is ``hearth join ARGS``, the form a zygote can start.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

from client.control.participation import consent_problem, record
from client.control.policy_pin import load_pinned, pin_policy
from client.deployment.bundle_trust import BundleRefused, pin_org_key, pinned_key_path
from client.deployment.zygote_client import ChildProcess, start_process
from client.storage.home import ensure_private_dir
from privacy.policy import PolicyError

SECRET_FILE: Final = "superexec.secret"  # noqa: S105 (a file name)
FLWR_DIR: Final = "flwr"
RESTART_SECONDS: Final = 5.0


class JoinError(Exception):
    """The device cannot join; one line says why."""


@dataclass(frozen=True)
class JoinConfig:
    """Everything ``hearth join`` needs."""

    superlink: str
    root_cert: Path
    key: Path
    home: Path
    org_key: Path | None = None
    runtime_port: int = 0
    # The privacy policy to pin and the org's signature of it (the token).
    policy: Path | None = None
    policy_signature: str = ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pin_policy(config: JoinConfig) -> None:
    """Pin ``--policy`` (signed by the org key) or check that a policy is already pinned."""
    if config.policy is None:
        if load_pinned(config.home) is None:
            raise JoinError(
                "no privacy policy pinned yet: pass --policy POLICY --policy-signature SIG "
                "(the organisation's, from `hearth-server sign-policy`)"
            )
        return
    if not config.policy_signature:
        raise JoinError("--policy needs --policy-signature (from `hearth-server sign-policy`)")
    pinned, previous = pin_policy(config.home, config.policy, config.policy_signature)
    if previous is None or previous.policy_hash != pinned.policy_hash:
        record(
            config.home,
            "policy",
            pinned=pinned.policy_hash,
            previous=None if previous is None else previous.policy_hash,
        )


def prepare(config: JoinConfig) -> tuple[int, Path]:
    """Check keys, pin the org key and the policy, check consent; returns (port, secret file)."""
    for path, what in ((config.root_cert, "--root-cert"), (config.key, "--key")):
        if not path.is_file():
            raise JoinError(f"{what} {path} does not exist")
    try:
        if config.org_key is not None:
            pin_org_key(config.home, config.org_key)
        elif not pinned_key_path(config.home).is_file():
            raise JoinError("no organisation key pinned yet: pass --org-key org-signing.pub")
        _pin_policy(config)
    except (BundleRefused, PolicyError) as exc:
        raise JoinError(str(exc)) from None
    # Consent after the policy is pinned: it must be consent to exactly that policy.
    problem = consent_problem(config.home)
    if problem is not None:
        record(config.home, "join", joined=False, reason=problem)
        raise JoinError(f"{problem}; this laptop does not join")
    secret = ensure_private_dir(config.home) / SECRET_FILE
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secrets.token_bytes(32))
    return config.runtime_port or _free_port(), secret


def supernode_command(config: JoinConfig, runtime_port: int, secret: Path) -> list[str]:
    """The ``flower-supernode`` command line."""
    return [
        sys.executable,
        "-m",
        "client.deployment.supernode",  # Flower's flower-supernode, round-aware idle wait
        "--superlink",
        config.superlink,
        "--root-certificates",
        str(config.root_cert),
        "--auth-supernode-private-key",
        str(config.key),
        "--isolation",
        "process",
        "--host",
        "127.0.0.1",
        "--port",
        str(runtime_port),
        "--superexec-auth-secret-file",
        str(secret),
    ]


def join(config: JoinConfig) -> int:
    """Run the SuperNode and hearth's executor until stopped; returns an exit code."""
    from client.deployment.runner import ENV_SECRET_FILE, serve  # noqa: PLC0415 (Flower runtime: heavy)

    runtime_port, secret = prepare(config)
    env = {
        **os.environ,
        "FLWR_HOME": str(ensure_private_dir(config.home / FLWR_DIR)),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
    }
    os.environ.update({"FLWR_HOME": env["FLWR_HOME"], ENV_SECRET_FILE: str(secret)})
    command = supernode_command(config, runtime_port, secret)
    stop = threading.Event()
    current: list[ChildProcess] = []

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def _supervise() -> None:
        # A laptop that was offline, a SuperLink restart, or a node the SuperLink still
        # believes online: Flower's SuperNode exits, and hearth starts it again.
        while not stop.is_set():
            current[:] = [start_process(command, env)]
            record(config.home, "join", joined=True, superlink=config.superlink, pid=os.getpid())
            current[0].wait()
            stop.wait(RESTART_SECONDS)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    threading.Thread(target=_supervise, daemon=True).start()
    try:
        serve(f"127.0.0.1:{runtime_port}", stop)
    finally:
        stop.set()
        for supernode in current:
            if supernode.poll() is None:
                supernode.terminate()
                try:
                    supernode.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    supernode.kill()
        record(config.home, "leave", superlink=config.superlink)
    return 0


__all__ = ["JoinConfig", "JoinError", "join", "prepare", "supernode_command"]
