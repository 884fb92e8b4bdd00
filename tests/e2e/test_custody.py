"""Key custody on real processes: `hearth-server up`, its SuperLink, SuperExec and ServerApps.

The attack traced in issue 14: reach the Control API, submit a run whose ServerApp
reads the org signing key on the SuperLink host, sign a bundle with it. Here:
the laptops' address serves the Fleet API only; a ServerApp runs only if the org
signed its bundle; a signed one finds no key under the PKI and no passphrase in
its environment; and `up` will not start next to a key it could read.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.pki import add_device, init_pki
from server.signing import build_bundle, generate_org_key, load_org_key, sign_bundle
from simulations.deployment import BIN, ORG_KEY_PASSPHRASE, Process, wait_for
from simulations.flwr_runner import PROJECT_ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PROBE_MODULE = '''\
"""A ServerApp that looks for the org signing key from inside the SuperLink."""

import json
import os
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

PROBE = Path(os.environ["HEARTH_PROBE_DIR"])
PROBE.mkdir(exist_ok=True)
(PROBE / f"imported-{os.getpid()}").touch()  # any import of this bundle leaves a mark

app = ServerApp()


def _try_load(path):
    from server.signing import SigningError, load_org_key

    try:
        load_org_key(path)
    except SigningError as exc:
        return str(exc)
    return "loaded"


@app.main()
def main(grid: Grid, context: Context) -> None:
    pki = Path(os.environ["HEARTH_PROBE_PKI"])
    report = {
        "passphrase_in_env": "HEARTH_ORG_KEY_PASSPHRASE" in os.environ,
        "private_keys_in_pki": sorted(p.name for p in pki.glob("org-signing.key*")),
        "load_from_pki": _try_load(pki / "org-signing.key"),
        "load_copy": _try_load(Path(os.environ["HEARTH_PROBE_KEY_COPY"])),
    }
    (PROBE / "report.json").write_text(json.dumps(report))
'''

PROBE_PYPROJECT = """\
[project]
name = "hearth-custody-probe"
version = "1.0.0"
description = "Looks for the org signing key from inside a ServerApp"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "hearth-tests"

[tool.flwr.app.components]
serverapp = "hearth_custody_probe:app"
clientapp = "hearth_custody_probe:app"

[tool.flwr.app.config]
bundle-signature = ""
"""


@dataclass
class Link:
    """`hearth-server up` running, with the org key kept outside its PKI."""

    root: Path
    pki: Path
    state: Path
    port: int
    control_port: int
    env: dict[str, str]
    probe_app: Path
    probe_dir: Path
    up: Process

    def flwr(self, *args: str, home: Path | None = None, timeout: float = 120) -> str:
        """A ``flwr`` command against this SuperLink's connection (or ``home``'s)."""
        env = {**self.env, "FLWR_HOME": str(home or self.state / "flwr")}
        result = subprocess.run(
            [str(BIN / "flwr"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return result.stdout + result.stderr

    def run_probe(self, token: str) -> str:
        """Submit the probe bundle with ``token`` and wait for the run to end; the output."""
        return self.flwr(
            "run",
            str(self.probe_app),
            "hearth",
            "--stream",
            "--run-config",
            f"bundle-signature='{token}'",
            timeout=150,
        )


def _probe_app(root: Path) -> Path:
    app = root / "probe-app"
    app.mkdir()
    (app / "pyproject.toml").write_text(PROBE_PYPROJECT)
    (app / "hearth_custody_probe.py").write_text(PROBE_MODULE)
    return app


def _env(root: Path, pki: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HEARTH_HOME": str(root / "server-home"),
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        # `up` is given the passphrase (as an operator who just signed might be)...
        "HEARTH_ORG_KEY_PASSPHRASE": ORG_KEY_PASSPHRASE,
        "HEARTH_PROBE_DIR": str(root / "probe"),
        "HEARTH_PROBE_PKI": str(pki),
        "HEARTH_PROBE_KEY_COPY": str(root / "org-key" / "org-signing.key"),
    }


def _up_command(pki: Path, state: Path, port: int, control_port: int) -> list[str]:
    return [
        str(BIN / "hearth-server"),
        "up",
        "--pki",
        str(pki),
        "--state",
        str(state),
        "--port",
        str(port),
        "--control-port",
        str(control_port),
    ]


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Link]:
    root = tmp_path_factory.mktemp("custody")
    pki = init_pki(root / "pki").root
    generate_org_key(root / "org-key", ORG_KEY_PASSPHRASE, public_directory=pki)
    add_device(pki, "d0")
    state, port, control_port = root / "state", free_port(), free_port()
    env = _env(root, pki)
    up = Process.start(_up_command(pki, state, port, control_port), env, root / "up.log")
    try:
        wait_for(lambda: "resume=true" in (root / "up.log").read_text(), 90, "hearth-server up")
        yield Link(root, pki, state, port, control_port, env, _probe_app(root), root / "probe", up)
    finally:
        up.kill()


def _post(port: int, path: str, ca: Path) -> int:
    context = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(verify=context, timeout=30) as client:
        return client.post(f"https://127.0.0.1:{port}{path}", content=b"").status_code


@pytest.mark.parametrize(
    "path",
    [
        "/v1/control/start-run",
        "/v1/control/list-runs",
        "/v1/runtime/acquire-task",
        "/v1/runtime/pull-task-input",
        "/health",
    ],
)
def test_control_and_runtime_paths_are_403_on_the_laptops_address(link: Link, path: str) -> None:
    ca = link.pki / "ca.crt"
    assert _post(link.port, path, ca) == 403
    assert _post(link.control_port, path, ca) != 403  # Flower's own answer on loopback


def test_the_fleet_api_is_reachable_on_the_laptops_address(link: Link) -> None:
    assert _post(link.port, "/v1/fleet/get-run", link.pki / "ca.crt") != 403


def test_flwr_reaches_the_control_api_on_loopback_and_not_on_the_laptops_address(
    link: Link,
) -> None:
    listed = link.flwr("ls", "hearth", "--format", "json")
    assert json.loads(listed)["success"] is True, listed
    laptops = link.root / "flwr-laptops"
    laptops.mkdir()
    (laptops / "config.toml").write_text(
        '[superlink]\ndefault = "laptops"\n\n[superlink.laptops]\n'
        f'address = "127.0.0.1:{link.port}"\nroot-certificates = "{link.pki / "ca.crt"}"\n'
    )
    refused = json.loads(link.flwr("ls", "laptops", "--format", "json", home=laptops))
    assert refused["success"] is False
    assert "403 Forbidden" in refused["error-message"]


def _imports(link: Link) -> list[Path]:
    return sorted(link.probe_dir.glob("imported-*")) if link.probe_dir.exists() else []


def _other_org_token(link: Link) -> str:
    other = Ed25519PrivateKey.generate()
    return sign_bundle(build_bundle(link.probe_app), other, version=1).token


@pytest.mark.parametrize("signature", ["unsigned", "another key"])
def test_an_unsigned_or_wrongly_signed_runs_serverapp_never_runs(
    link: Link, signature: str
) -> None:
    token = "" if signature == "unsigned" else _other_org_token(link)
    before = _imports(link)
    output = link.run_probe(token)
    assert _imports(link) == before, output[-3000:]  # nothing of the bundle was imported
    assert not (link.probe_dir / "report.json").exists()
    refusal = "unsigned" if signature == "unsigned" else "signed by another key"
    line = next(x for x in output.splitlines() if "refused before install" in x)
    assert refusal in line, output[-3000:]
    # Nothing of it was unpacked either (Flower installs bundles under the SuperLink's FLWR_HOME).
    assert list((link.state / "flwr").rglob("hearth_custody_probe.py")) == [], output[-3000:]


def test_a_signed_serverapp_runs_and_can_neither_read_nor_use_the_org_key(link: Link) -> None:
    key = load_org_key(link.root / "org-key" / "org-signing.key", ORG_KEY_PASSPHRASE)
    output = link.run_probe(sign_bundle(build_bundle(link.probe_app), key, version=1).token)
    report_path = link.probe_dir / "report.json"
    assert report_path.exists(), output[-3000:]
    report = json.loads(report_path.read_text())
    assert report["passphrase_in_env"] is False  # `up` had it; its children do not
    assert report["private_keys_in_pki"] == []
    assert "cannot read the org signing key" in report["load_from_pki"]
    assert "needs its passphrase" in report["load_copy"]  # even a copy it could read


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("key", ["encrypted", "unencrypted"])
def test_up_refuses_to_start_next_to_a_signing_key_it_can_read(tmp_path: Path, key: str) -> None:
    pki = init_pki(tmp_path / "pki").root
    generate_org_key(pki, ORG_KEY_PASSPHRASE)  # `pki init` without --org-key-dir
    if key == "unencrypted":
        (pki / "org-signing.key").unlink()
        (pki / "org-signing.key").write_bytes(
            Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    port, control_port = free_port(), free_port()
    result = subprocess.run(
        _up_command(pki, tmp_path / "state", port, control_port),
        env=_env(tmp_path, pki),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "org-signing.key" in result.stderr
    assert ("UNENCRYPTED" in result.stderr) == (key == "unencrypted")
    assert not _listening(port)
    assert not _listening(control_port)
    assert not (tmp_path / "state" / "superlink.db").exists()
