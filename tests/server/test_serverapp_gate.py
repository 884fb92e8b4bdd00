"""The SuperLink runs a submitted ServerApp only if the org signed its bundle."""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
import tempfile
import types
from pathlib import Path

import pytest
from flwr.supercore.constant import TASK_TYPE_TO_COMMAND

from server import serverapp_gate as gate
from server.signing import generate_org_key, load_org_key, sign_bundle
from tests.client.bundles import fab_of, make_app

FAB = fab_of(make_app(Path(tempfile.mkdtemp(prefix="hearth-gate-app-"))))
PASSPHRASE = "a long org passphrase"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def org(tmp_path):
    private, public = generate_org_key(tmp_path / "org", PASSPHRASE)
    return load_org_key(private, PASSPHRASE), public


def _token(key, fab: bytes = FAB) -> str:
    return sign_bundle(fab, key, version=1).token


def _runtime(installed: list[bytes]) -> types.ModuleType:
    """Stands in for flwr.superlink.runtime.run_serverapp: the three names the gate wraps."""
    module = types.ModuleType("fake_run_serverapp")
    module.run_from_proto = lambda proto: proto
    module.fab_from_proto = lambda proto: proto
    module.install_from_fab = lambda content, **kwargs: installed.append(content)
    return module


def _run(module: types.ModuleType, token: str, fab: bytes = FAB, hash_str: str | None = None):
    """What Flower's run_serverapp does, in its order: run, fab, then install."""
    run = module.run_from_proto(
        types.SimpleNamespace(run_id=7, override_config={"bundle-signature": token})
    )
    received = module.fab_from_proto(
        types.SimpleNamespace(content=fab, hash_str=hash_str or hashlib.sha256(fab).hexdigest())
    )
    assert run.run_id == 7
    module.install_from_fab(received.content, skip_prompt=True)


def test_a_bundle_signed_by_the_org_is_installed(org):
    key, public = org
    installed: list[bytes] = []
    module = _runtime(installed)
    gate.install_gate(module, public)
    _run(module, _token(key))
    assert installed == [FAB]


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("", "unsigned"),
        ("   ", "unsigned"),
        ("nodot", "malformed"),
    ],
)
def test_an_unsigned_or_malformed_run_is_refused_before_install(org, token, says):
    _, public = org
    installed: list[bytes] = []
    module = _runtime(installed)
    gate.install_gate(module, public)
    with pytest.raises(gate.RunRefused, match=f"hearth: run 7 refused: .*{says}") as err:
        _run(module, token)
    assert installed == []
    assert "\n" not in str(err.value)


def test_a_bundle_signed_by_another_key_is_refused(org, tmp_path):
    _, public = org
    other, _ = generate_org_key(tmp_path / "other", PASSPHRASE)
    installed: list[bytes] = []
    module = _runtime(installed)
    gate.install_gate(module, public)
    with pytest.raises(gate.RunRefused, match="signed by another key"):
        _run(module, _token(load_org_key(other, PASSPHRASE)))
    assert installed == []


def test_a_changed_bundle_with_a_genuine_signature_is_refused(org):
    key, public = org
    installed: list[bytes] = []
    module = _runtime(installed)
    gate.install_gate(module, public)
    with pytest.raises(gate.RunRefused, match="is not what the organisation signed"):
        _run(module, _token(key), fab=FAB + b" and something else")
    assert installed == []


def test_a_run_naming_another_installed_bundle_is_refused(org):
    key, public = org
    installed: list[bytes] = []
    module = _runtime(installed)
    gate.install_gate(module, public)
    with pytest.raises(gate.RunRefused, match="names bundle"):
        _run(module, _token(key), hash_str="ab" * 32)
    assert installed == []


def test_without_the_org_public_key_every_run_is_refused(org, tmp_path):
    key, _ = org
    installed: list[bytes] = []
    module = _runtime(installed)
    gate.install_gate(module, tmp_path / "missing.pub")
    with pytest.raises(gate.RunRefused, match="no org public key"):
        _run(module, _token(key))
    assert installed == []


def test_a_flower_without_the_expected_runtime_is_refused(org):
    _, public = org
    module = types.ModuleType("changed")
    module.run_from_proto = lambda proto: proto
    with pytest.raises(gate.RunRefused, match=r"update server/serverapp_gate\.py"):
        gate.install_gate(module, public)


def test_flowers_serverapp_runtime_still_has_what_the_gate_wraps():
    module = importlib.import_module(gate.RUNTIME_MODULE)
    for name in ("run_from_proto", "fab_from_proto", "install_from_fab"):
        assert callable(getattr(module, name))


def _gate_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_superexec_finds_a_gate_for_every_task_command_it_can_start(org, tmp_path):
    _, public = org
    directory = gate.write_gate(tmp_path / "gate", public)
    for command in set(TASK_TYPE_TO_COMMAND.values()):
        assert shutil.which(command, path=str(directory)) == str(directory / command)
    script = (directory / "flwr-serverapp").read_text()
    assert "-m server.serverapp_gate --org-public-key" in script
    assert str(public.resolve()) in script


def test_every_other_task_command_refuses_in_one_line(org, tmp_path):
    _, public = org
    directory = gate.write_gate(tmp_path / "gate", public)
    result = subprocess.run(
        [str(directory / "flwr-agentapp"), "--runtime-api-address", "127.0.0.1:1"],
        env=_gate_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "hearth: this SuperLink runs only org-signed ServerApps; refused flwr-agentapp"
    )


def test_the_gated_command_is_flowers_own_flwr_serverapp(org, tmp_path):
    _, public = org
    directory = gate.write_gate(tmp_path / "gate", public)
    result = subprocess.run(
        [str(directory / "flwr-serverapp"), "--help"],
        env=_gate_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: flwr-serverapp" in result.stdout
    assert "--runtime-api-address" in result.stdout
