"""The SuperLink side's bundle check: a run's ServerApp runs only if the org signed its bundle.

Flower's SuperExec starts every task by command name (``flwr-serverapp``,
``flwr-agentapp``, ...), looked up on its ``PATH``. ``hearth-server up`` puts a
directory first on that ``PATH`` (``write_gate``) in which

* ``flwr-serverapp`` is this module: it runs Flower's own ``flwr-serverapp``, but
  between receiving the run and installing its bundle (FAB) it checks the bundle
  against the org signature in the run config (``bundle-signature``) and the org
  PUBLIC key in the PKI directory. A refused run ends, before anything of the
  bundle is unpacked or imported, with one line in its log
  (``hearth: run N refused: ...``) and Flower's FAILED status;
* every other task command Flower could start (``flwr-agentapp``, ``flwr-simulation``,
  ...) refuses at once: hearth runs no such tasks, and an AgentApp bundle would
  otherwise run unchecked on the SuperLink host.

The check itself is one function, ``verify_submitted_bundle``: the org-signed
manifest of ``policy.signed_bundle`` that devices check too (signature, digest,
validity window).

Run as ``python -m server.serverapp_gate --org-public-key PUB [flwr-serverapp args]``
or ``python -m server.serverapp_gate --refuse COMMAND``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import shlex
import sys
import time
from collections.abc import Mapping
from logging import ERROR, INFO
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from policy.signed_bundle import (
    MANIFEST_CONFIG_KEY,
    OrgKeyError,
    TokenError,
    open_manifest,
    read_public_key,
)

GATED_COMMAND: Final = "flwr-serverapp"
RUNTIME_MODULE: Final = "flwr.superlink.runtime.run_serverapp"
_HOOKED: Final = ("run_from_proto", "fab_from_proto", "install_from_fab")


class RunRefused(Exception):
    """A submitted bundle is not the organisation's; the message is the one log line."""


def load_org_public_key(path: Path) -> Ed25519PublicKey:
    """The org public key (PEM), or ``RunRefused`` saying why it cannot be used."""
    try:
        return read_public_key(path)
    except OrgKeyError as exc:
        raise RunRefused(f"no org public key to check bundles against: {exc}") from None


def verify_submitted_bundle(
    fab: bytes,
    run_config: Mapping[str, object],
    org_key: Ed25519PublicKey,
    now: float | None = None,
) -> str:
    """Accept ``fab`` only if the run config carries the org's signed manifest of it.

    The one place the SuperLink decides whether a submitted bundle is the
    organisation's: the manifest (``policy.signed_bundle``, as devices check it)
    must be signed by the org key, name this bundle's SHA-256 and be valid now.
    Versions and revocations are each device's to enforce (it keeps what it accepted).

    Returns
    -------
    str
        The bundle's SHA-256 (hex).

    Raises
    ------
    RunRefused
        Unsigned, signed by another key, malformed, expired, or not this bundle's manifest.

    """
    digest = hashlib.sha256(fab).hexdigest()
    token = run_config.get(MANIFEST_CONFIG_KEY, "")
    if not isinstance(token, str) or not token.strip():
        raise RunRefused("unsigned: the run carries no bundle-signature")
    try:
        manifest = open_manifest(token, org_key)
    except TokenError as exc:
        raise RunRefused(f"{exc.problem.value}: {exc}") from None
    if manifest.sha256 != digest:
        raise RunRefused(f"bundle {digest[:12]} is not what the organisation signed")
    problem = manifest.validity_problem(time.time() if now is None else now)
    if problem is not None:
        raise RunRefused(f"the bundle's manifest is not valid now: {problem}")
    return digest


def check_run(run: Any, fab: Any, content: bytes, org_public_key: Path) -> str:
    """Check the bundle Flower is about to install for ``run``; returns its SHA-256.

    ``content`` must be the bytes of ``fab`` Flower received with the run, and the
    hash Flower will use to find the installed app must be theirs.
    """
    if run is None or fab is None or not isinstance(content, bytes) or content != fab.content:
        raise RunRefused("the bundle to install is not the one received with the run")
    digest = verify_submitted_bundle(
        content, dict(run.override_config), load_org_public_key(org_public_key)
    )
    if fab.hash_str != digest:
        raise RunRefused(f"the run names bundle {fab.hash_str[:12]} but carries {digest[:12]}")
    return digest


def install_gate(module: ModuleType, org_public_key: Path) -> None:
    """Make ``module`` (Flower's ServerApp runtime) check each bundle before installing it."""
    from flwr.supercore import log  # noqa: PLC0415

    missing = [name for name in _HOOKED if not callable(getattr(module, name, None))]
    if missing:
        raise RunRefused(
            f"Flower's {module.__name__} no longer has {', '.join(missing)}; "
            "update server/serverapp_gate.py"
        )
    received: dict[str, Any] = {}
    run_from_proto = module.run_from_proto
    fab_from_proto = module.fab_from_proto
    install_from_fab = module.install_from_fab

    def capture_run(proto: Any) -> Any:
        received["run"] = run_from_proto(proto)
        return received["run"]

    def capture_fab(proto: Any) -> Any:
        received["fab"] = fab_from_proto(proto)
        return received["fab"]

    def checked_install(content: Any, *args: Any, **kwargs: Any) -> Any:
        run = received.get("run")
        run_id = getattr(run, "run_id", "?")
        try:
            digest = check_run(run, received.get("fab"), content, org_public_key)
        except RunRefused as refusal:
            log(ERROR, "hearth: run %s refused before install: %s", run_id, refusal)
            raise RunRefused(f"hearth: run {run_id} refused: {refusal}") from None
        log(INFO, "hearth: run %s bundle %s is signed by the organisation", run_id, digest[:12])
        return install_from_fab(content, *args, **kwargs)

    module.run_from_proto = capture_run  # type: ignore[attr-defined]
    module.fab_from_proto = capture_fab  # type: ignore[attr-defined]
    module.install_from_fab = checked_install  # type: ignore[attr-defined]


def task_commands() -> list[str]:
    """Every command Flower's SuperExec may start a task with."""
    from flwr.supercore.constant import TASK_TYPE_TO_COMMAND  # noqa: PLC0415

    return sorted(set(TASK_TYPE_TO_COMMAND.values()))


def write_gate(directory: Path, org_public_key: Path, python: str = sys.executable) -> Path:
    """Write the commands SuperExec finds first on its ``PATH``; returns ``directory``."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    base = f"exec {shlex.quote(python)} -m server.serverapp_gate"
    for command in task_commands():
        if command == GATED_COMMAND:
            line = f'{base} --org-public-key {shlex.quote(str(org_public_key.resolve()))} "$@"'
        else:
            line = f"{base} --refuse {shlex.quote(command)}"
        path = directory / command
        path.write_text(
            "#!/bin/sh\n"
            "# Written by hearth-server up: SuperExec starts tasks through hearth's bundle check.\n"
            f"{line}\n"
        )
        path.chmod(0o700)
    return directory


def main() -> None:
    """``flwr-serverapp`` behind the org-signature check (or a refused task command)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--org-public-key", type=Path)
    parser.add_argument("--refuse")
    ours, rest = parser.parse_known_args(sys.argv[1:])
    if ours.refuse:
        sys.exit(f"hearth: this SuperLink runs only org-signed ServerApps; refused {ours.refuse}")
    if ours.org_public_key is None:
        sys.exit("hearth: --org-public-key is required; no ServerApp runs unchecked")
    try:
        install_gate(importlib.import_module(RUNTIME_MODULE), ours.org_public_key)
    except RunRefused as err:
        sys.exit(f"hearth: {err}")
    from flwr.superlink.cli.flwr_serverapp import flwr_serverapp  # noqa: PLC0415

    sys.argv = [GATED_COMMAND, *rest]
    flwr_serverapp()


if __name__ == "__main__":
    main()
