"""The device registry: every enrolment visible, hash-chained, with a head to countersign."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from server import registry
from server.cli import app
from server.pki import PkiError, add_device, init_pki


@pytest.fixture
def pki(tmp_path):
    root = init_pki(tmp_path / "pki").root
    for name in ("alice", "bob", "carol"):
        add_device(root, name)
    return root


def _lines(pki):
    return registry.registry_path(pki).read_text().splitlines()


def _write(pki, lines):
    registry.registry_path(pki).write_text("".join(f"{line}\n" for line in lines))


def test_add_device_enrols_its_name_and_key_fingerprint_in_a_chain(pki):
    entries = registry.read_registry(pki)
    assert [(e.seq, e.event, e.device) for e in entries] == [
        (1, "enrolled", "alice"),
        (2, "enrolled", "bob"),
        (3, "enrolled", "carol"),
    ]
    assert entries[0].prev == registry.GENESIS
    assert [e.prev for e in entries[1:]] == [e.hash for e in entries[:-1]]
    public = (pki / "devices" / "bob.pub").read_bytes()
    assert entries[1].fingerprint == registry.fingerprint(public)
    assert entries[1].time.endswith("Z")


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no ssh-keygen")
def test_the_fingerprint_is_the_one_ssh_keygen_prints(pki):
    public = pki / "devices" / "alice.pub"
    printed = subprocess.run(
        ["ssh-keygen", "-lf", str(public)], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert registry.fingerprint(public.read_bytes()) == printed


def test_a_changed_entry_breaks_the_chain_at_its_line(pki):
    lines = _lines(pki)
    changed = json.loads(lines[1])
    changed["device"] = "mallory"
    _write(pki, [lines[0], json.dumps(changed), lines[2]])
    with pytest.raises(registry.RegistryError, match="broken at line 2: it was changed"):
        registry.read_registry(pki)


def test_a_rehashed_change_still_breaks_the_next_line(pki):
    lines = _lines(pki)
    entry = registry.Entry(**json.loads(lines[1]))
    forged = registry.Entry(**{**entry.__dict__, "device": "mallory", "hash": ""})
    forged = registry.Entry(**{**forged.__dict__, "hash": registry.entry_hash(forged)})
    _write(pki, [lines[0], forged.line(), lines[2]])
    with pytest.raises(registry.RegistryError, match="broken at line 3"):
        registry.read_registry(pki)


def test_a_removed_entry_breaks_the_chain(pki):
    lines = _lines(pki)
    _write(pki, [lines[0], lines[2]])
    with pytest.raises(registry.RegistryError, match="line 2"):
        registry.read_registry(pki)


def test_no_device_is_enrolled_on_a_broken_registry(pki):
    lines = _lines(pki)
    _write(pki, [lines[1], lines[0], lines[2]])
    with pytest.raises(PkiError, match="not enrolled"):
        add_device(pki, "dave")
    assert not (pki / "devices" / "dave.key").exists()
    assert not (pki / "devices" / "dave.pub").exists()


def test_a_countersigned_head_shows_what_came_after_it(pki):
    entries = registry.read_registry(pki)
    countersigned = registry.head(entries[:2])
    assert [e.device for e in registry.since(entries, countersigned)] == ["carol"]
    assert registry.since(entries, registry.head(entries)) == []


def test_a_registry_rewritten_from_scratch_no_longer_holds_the_countersigned_head(pki, tmp_path):
    countersigned = registry.head(registry.read_registry(pki))
    registry.registry_path(pki).unlink()
    for name in ("alice", "mallory"):
        registry.append(pki, registry.ENROLLED, name, "SHA256:x")
    rewritten = registry.read_registry(pki)  # a valid chain on its own
    with pytest.raises(registry.RegistryError, match="not in this registry"):
        registry.since(rewritten, countersigned)


def test_cli_lists_the_registry_and_prints_the_head_to_countersign(pki):
    result = CliRunner().invoke(app, ["pki", "registry", "--pki", str(pki)])
    assert result.exit_code == 0, result.output
    head = registry.head(registry.read_registry(pki))
    assert f"head {head} (3 entries, chain intact)" in result.output
    assert "bob" in result.output
    assert "not signed here" in result.output
    assert "countersign" in result.output


def test_cli_says_where_the_chain_breaks_in_one_line(pki):
    lines = _lines(pki)
    _write(pki, [lines[0], lines[2]])
    result = CliRunner().invoke(app, ["pki", "registry", "--pki", str(pki)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "line 2" in result.output


def test_cli_since_a_head_lists_only_later_entries(pki):
    first = registry.read_registry(pki)[0].hash
    result = CliRunner().invoke(app, ["pki", "registry", "--pki", str(pki), "--since", first])
    assert result.exit_code == 0, result.output
    assert "alice" not in result.output
    assert "carol" in result.output
