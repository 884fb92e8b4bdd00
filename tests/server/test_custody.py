"""`hearth-server up` refuses to start while the SuperLink's user could use the org signing key.

A ServerApp runs as the SuperLink's user, with the SuperLink's environment: these
tests look at the key from that user's and that environment's point of view.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

import server.up as up
from server.cli import app
from server.custody import CustodyError, check_key_custody
from server.pki import add_device, init_pki
from server.signing import generate_org_key

PASSPHRASE = "a long org passphrase"
ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


def _pki(parent: Path, *, key_inside: bool) -> Path:
    pki = init_pki(parent / "pki").root
    key_dir = pki if key_inside else parent / "offline"
    generate_org_key(key_dir, PASSPHRASE, public_directory=pki)
    add_device(pki, "d0")
    return pki


def _config(pki: Path, tmp_path: Path) -> up.LinkConfig:
    return up.LinkConfig(pki, tmp_path / "state", port=9555, control_port=9556)


def test_up_refuses_an_encrypted_org_key_its_user_can_read(tmp_path):
    pki = _pki(tmp_path, key_inside=True)
    with pytest.raises(up.UpError, match="can read it") as err:
        up.preflight(_config(pki, tmp_path))
    assert "(encrypted)" in str(err.value)
    assert "\n" not in str(err.value)


def test_up_refuses_an_unencrypted_org_key_and_says_so(tmp_path):
    pki = _pki(tmp_path, key_inside=False)
    (pki / "org-signing.key").write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(up.UpError, match="UNENCRYPTED"):
        up.preflight(_config(pki, tmp_path))


def test_up_starts_when_only_the_public_key_is_in_the_pki(tmp_path):
    pki = _pki(tmp_path, key_inside=False)
    assert up.preflight(_config(pki, tmp_path)) == ["d0"]


def test_up_needs_the_org_public_key_to_check_bundles(tmp_path):
    pki = _pki(tmp_path, key_inside=False)
    (pki / "org-signing.pub").unlink()
    with pytest.raises(up.UpError, match=r"org-signing\.pub is missing"):
        up.preflight(_config(pki, tmp_path))


def test_the_cli_refuses_in_one_line_and_starts_nothing(tmp_path, monkeypatch):
    pki = _pki(tmp_path, key_inside=True)
    monkeypatch.setattr(up.subprocess, "Popen", lambda *a, **k: pytest.fail("started"))
    result = CliRunner().invoke(
        app, ["up", "--pki", str(pki), "--state", str(tmp_path / "state"), "--port", "9555"]
    )
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "org-signing.key" in result.output


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    """A directory other users can traverse (pytest's own tmp dirs are root-only)."""
    directory = Path(tempfile.mkdtemp(prefix="hearth-custody-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def _as_user(uid: int, act: Callable[[], str]) -> str:
    """Run ``act`` in a forked child that has become ``uid``; its result or exception."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the SuperLink's user
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            result = act()
        except BaseException as exc:  # reported to the parent
            result = f"{type(exc).__name__}: {exc}"
        os.write(write, result.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        result = pipe.read()
    os.waitpid(pid, 0)
    return result


@as_root
def test_a_key_the_superlink_user_cannot_read_passes_and_its_serverapps_cannot_open_it(shared):
    pki = _pki(shared, key_inside=True)  # root's key, 0600, in a directory nobody may enter
    for path in (pki, pki / "devices"):
        path.chmod(0o755)
    key = pki / "org-signing.key"

    def as_the_superlink_user() -> str:
        check_key_custody(pki)  # what `up` checks, as that user: passes
        try:
            key.read_bytes()  # what a ServerApp of that user could try
        except PermissionError:
            return "custody ok; cannot open the key"
        return "custody ok; read the key"

    assert _as_user(NOBODY, as_the_superlink_user) == "custody ok; cannot open the key"


@as_root
def test_a_key_the_superlink_user_owns_is_refused_even_when_unreadable(shared):
    pki = _pki(shared, key_inside=True)
    for path in (pki, pki / "devices"):
        path.chmod(0o755)
    key = pki / "org-signing.key"
    os.chown(key, NOBODY, NOBODY)
    key.chmod(0o000)

    def check() -> str:
        check_key_custody(pki)
        return "accepted"

    outcome = _as_user(NOBODY, check)
    assert outcome.startswith("CustodyError")
    assert "can make it readable again" in outcome


def test_root_can_read_any_key_so_up_as_root_refuses_a_key_even_at_mode_000(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only root reads a mode-000 file")
    pki = _pki(tmp_path, key_inside=True)
    (pki / "org-signing.key").chmod(0o000)
    with pytest.raises(CustodyError, match="can read it"):
        check_key_custody(pki)


def test_a_process_with_the_superlinks_environment_cannot_decrypt_a_copy_of_the_key(
    tmp_path, monkeypatch
):
    # Even where a copy is readable, the SuperLink's children never get the passphrase,
    # though `up` itself was started with it.
    monkeypatch.setenv("HEARTH_ORG_KEY_PASSPHRASE", PASSPHRASE)
    pki = _pki(tmp_path, key_inside=False)
    env = {**up.superlink_env(_config(pki, tmp_path)), "PYTHONPATH": str(ROOT)}
    assert "HEARTH_ORG_KEY_PASSPHRASE" not in env
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from server.signing import load_org_key;"
            "load_org_key(Path(sys.argv[1]))",
            str(tmp_path / "offline" / "org-signing.key"),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "needs its passphrase" in result.stderr
