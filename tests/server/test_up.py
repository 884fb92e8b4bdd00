"""``hearth-server up`` without a real SuperLink: commands, connection file, registration."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import server.up as up
from server import registry
from server.pki import add_device, init_pki
from server.signing import generate_org_key


@pytest.fixture
def link(tmp_path: Path) -> up.LinkConfig:
    pki = init_pki(tmp_path / "pki").root
    generate_org_key(tmp_path / "offline", public_directory=pki)  # the key kept away
    add_device(pki, "d0")
    add_device(pki, "d1")
    return up.LinkConfig(pki_dir=pki, state_dir=tmp_path / "state", port=9555, control_port=9556)


def test_a_wildcard_bind_is_dialled_on_loopback(tmp_path):
    config = up.LinkConfig(tmp_path, tmp_path, host="0.0.0.0", port=1)
    assert config.address == "127.0.0.1:1"
    assert up.LinkConfig(tmp_path, tmp_path, host="link.example", port=2).address == (
        "link.example:2"
    )


def test_the_superlink_runs_with_tls_node_auth_a_database_and_no_installs(link):
    command = up.superlink_command(link)
    assert command[:3] == [sys.executable, "-m", "server.superlink"]  # hearth's launcher
    assert "--insecure" not in command
    for flag in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile"):
        assert Path(command[command.index(flag) + 1]).is_file()
    assert "--enable-supernode-auth" in command
    assert command[command.index("--database") + 1] == str(link.database)
    assert "--disable-runtime-dependency-installation" in command


def test_laptops_get_the_fleet_address_and_flower_serves_everything_on_loopback(link):
    command = up.superlink_command(link)
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "9556"
    assert command[command.index("--fleet-host") + 1] == "127.0.0.1"
    assert command[command.index("--fleet-port") + 1] == "9555"


def test_the_connection_file_points_flwr_at_the_loopback_control_api_with_the_ca(link):
    path = up.write_connection(link)
    config = tomllib.loads(path.read_text())
    assert config["superlink"]["default"] == up.CONNECTION
    connection = config["superlink"][up.CONNECTION]
    assert connection["address"] == "127.0.0.1:9556"
    assert Path(connection["root-certificates"]).read_bytes().startswith(b"-----BEGIN CERT")


def test_flower_processes_get_their_own_home_and_our_scripts_first(link):
    env = up.flwr_env(link, {"PATH": "/usr/bin"})
    assert env["FLWR_HOME"] == str(link.flwr_home)
    assert env["PATH"].split(":")[0] == str(up.bin_dir())
    assert env["FLWR_DISABLE_UPDATE_CHECK"] == "1"


def test_superexec_finds_the_bundle_gate_before_flowers_flwr_serverapp(link):
    env = up.superlink_env(link, {"PATH": "/usr/bin", "HEARTH_ORG_KEY_PASSPHRASE": "x"})
    assert env["PATH"].split(":")[:2] == [str(link.gate_dir), str(up.bin_dir())]
    assert "HEARTH_ORG_KEY_PASSPHRASE" not in env


def _fake_flwr(monkeypatch, replies: dict[str, dict[str, object]]) -> list[list[str]]:
    """``server.node_registration`` answering one JSON line per key it was given."""
    calls: list[list[str]] = []

    def run(command, **kwargs):
        calls.append(command)
        lines = ["some banner"]
        for key in command[command.index(up.CONNECTION) + 1 :]:
            name = Path(key).stem
            if name in replies:
                lines.append(json.dumps({"name": name, **replies[name]}))
        return subprocess.CompletedProcess(command, 0, stdout="\n".join(lines), stderr="")

    monkeypatch.setattr(up.subprocess, "run", run)
    return calls


def test_every_device_key_is_registered_and_a_known_one_is_fine(link, monkeypatch):
    calls = _fake_flwr(
        monkeypatch,
        {
            "d0": {"success": True},
            "d1": {"success": False, "error-message": "Public key already in use"},
        },
    )
    assert up.register_devices(link) == {"d0": "registered", "d1": "already registered"}
    assert len(calls) == 1  # one process for every key, not one a device
    assert calls[0][1:3] == ["-m", up.REGISTRATION_MODULE]
    assert [Path(key).name for key in calls[0][4:]] == ["d0.pub", "d1.pub"]


def test_a_new_registration_is_appended_to_the_registry(link, monkeypatch):
    _fake_flwr(
        monkeypatch,
        {"d0": {"success": True}, "d1": {"success": False, "error-message": "already in use"}},
    )
    up.register_devices(link)
    entries = registry.read_registry(link.pki_dir)
    assert [(e.event, e.device) for e in entries] == [
        ("enrolled", "d0"),
        ("enrolled", "d1"),
        ("registered", "d0"),
    ]
    assert entries[-1].fingerprint == entries[0].fingerprint
    assert entries[-1].detail == "SuperLink 127.0.0.1:9555"


def test_a_device_key_that_was_never_enrolled_is_refused(link, monkeypatch):
    _fake_flwr(monkeypatch, {})
    planted = link.pki_dir / "devices" / "planted.pub"
    planted.write_bytes((link.pki_dir / "devices" / "d0.pub").read_bytes())
    with pytest.raises(up.UpError, match=r"planted's key SHA256:.* is not enrolled"):
        up.register_devices(link)


def test_a_swapped_device_key_is_refused(link, monkeypatch):
    _fake_flwr(monkeypatch, {})
    devices = link.pki_dir / "devices"
    (devices / "d1.pub").write_bytes((devices / "d0.pub").read_bytes())
    with pytest.raises(up.UpError, match=r"d1's key .* is not enrolled"):
        up.preflight(link)


def test_a_broken_registry_stops_up(link):
    path = registry.registry_path(link.pki_dir)
    path.write_text(path.read_text().splitlines()[1] + "\n")
    with pytest.raises(up.UpError, match="line 1"):
        up.preflight(link)


def test_a_failed_registration_is_one_clear_error(link, monkeypatch):
    _fake_flwr(monkeypatch, {"d0": {"success": False, "error-message": "denied"}, "d1": {}})
    with pytest.raises(up.UpError, match="registering d0 failed: denied"):
        up.register_devices(link)


def test_a_failure_still_records_the_devices_registered_beside_it(link, monkeypatch):
    _fake_flwr(
        monkeypatch, {"d0": {"success": False, "error-message": "denied"}, "d1": {"success": True}}
    )
    with pytest.raises(up.UpError, match="registering d0 failed: denied"):
        up.register_devices(link)
    entries = registry.read_registry(link.pki_dir)
    assert [(e.event, e.device) for e in entries][-1] == ("registered", "d1")


def test_a_key_the_registration_process_never_answered_is_an_error(link, monkeypatch):
    _fake_flwr(monkeypatch, {"d0": {"success": True}})
    with pytest.raises(up.UpError, match="registering d1 failed"):
        up.register_devices(link)


def test_a_superlink_that_exits_at_start_is_reported_with_its_log(link, monkeypatch, tmp_path):
    exiting = [sys.executable, "-c", "raise SystemExit(3)"]
    monkeypatch.setattr(up, "superlink_command", lambda config: exiting)
    with pytest.raises(up.UpError, match="exited with code 3"):
        up.start_superlink(link, tmp_path / "logs" / "superlink.log")


def test_the_hint_says_how_to_join_and_start_a_signed_campaign(link):
    hint = up.campaign_hint(link)
    assert "hearth join --superlink 127.0.0.1:9555" in hint
    assert "Fleet API only" in hint
    assert "Control API (flwr) on 127.0.0.1:9556 only" in hint
    assert "hearth-server sign" in hint
    assert str(link.pki_dir / "org-signing.key") not in hint  # signed where the key is kept
    assert "bundle-signature" in hint
    assert "resume=true" in hint
    assert "hearth-server campaign run" in hint
