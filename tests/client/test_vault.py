"""The vault under faults: tampering, truncation, kills, full disks, retention, fuzzing."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import keyring
import keyring.backend
import keyring.errors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from client.cli.main import app
from client.storage.keys import KEY_FILE, NoKeySourceError
from client.storage.segments import CorruptSegmentError, open_segment, seal
from client.storage.vault import Vault
from client.storage.vault_store import DB_FILE, VaultFullError
from policy.events import AppCategory, Focus, Key, KeyClass, Text

KEY = bytes(range(32))


def _events(n, start=0):
    return [Key(start + i, float(start + i), KeyClass.LETTER) for i in range(n)]


def _ciphertext(vault_dir, segment_id):
    db = sqlite3.connect(vault_dir / DB_FILE)
    row = db.execute("SELECT ciphertext FROM segments WHERE id = ?", (segment_id,)).fetchone()
    return db, bytearray(row[0])


def test_database_and_directory_are_owner_only(hearth_home):
    with Vault.open(hearth_home / "vault") as vault:
        vault.append(_events(10))
        modes = {p.name: p.stat().st_mode & 0o777 for p in (hearth_home / "vault").iterdir()}
    assert (hearth_home / "vault").stat().st_mode & 0o777 == 0o700
    assert modes[DB_FILE] == 0o600
    assert modes[KEY_FILE] == 0o600
    assert all(mode == 0o600 for mode in modes.values()), modes


def test_a_tampered_segment_is_reported_by_id_and_skipped(hearth_home, caplog):
    vault_dir = hearth_home / "vault"
    with Vault.open(vault_dir) as vault:
        for i in range(3):
            vault.append(_events(5, start=i * 5))
    db, blob = _ciphertext(vault_dir, 2)
    blob[10] ^= 0x01
    db.execute("UPDATE segments SET ciphertext = ? WHERE id = 2", (bytes(blob),))
    db.commit()
    with Vault.open(vault_dir) as vault:
        seqs = [e.seq for e in vault.iter_events()]
        assert vault.corrupt_segments == [2]
    assert seqs == list(range(5)) + list(range(10, 15))
    assert "segment 2 is corrupt" in caplog.text


def test_a_truncated_segment_is_reported_and_skipped(hearth_home):
    vault_dir = hearth_home / "vault"
    with Vault.open(vault_dir) as vault:
        vault.append(_events(5))
        vault.append(_events(5, start=5))
    db, blob = _ciphertext(vault_dir, 1)
    db.execute("UPDATE segments SET ciphertext = ? WHERE id = 1", (bytes(blob[:-7]),))
    db.commit()
    with Vault.open(vault_dir) as vault:
        assert [e.seq for e in vault.iter_events()] == list(range(5, 10))
        assert vault.corrupt_segments == [1]


def test_a_segment_moved_to_another_id_does_not_decrypt(hearth_home):
    nonce, ciphertext = seal(KEY, 7, _events(3))
    with pytest.raises(CorruptSegmentError, match="segment 8"):
        open_segment(KEY, 8, 1, nonce, ciphertext)


WRITER = """
import sys, time
from pathlib import Path
from client.storage.vault import Vault
from policy.events import Key, KeyClass
vault = Vault.open(Path(sys.argv[1]))
seq = 0
print("ready", flush=True)
while True:
    vault.append([Key(seq + i, time.monotonic(), KeyClass.LETTER) for i in range(200)])
    seq += 200
"""


def test_sigkill_mid_write_never_corrupts_committed_data(hearth_home):
    vault_dir = hearth_home / "vault"
    Vault.open(vault_dir).close()
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(vault_dir)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Vault.open(vault_dir) as vault:
        seqs = [e.seq for e in vault.iter_events()]
        assert vault.corrupt_segments == []
    assert len(seqs) > 0 and len(seqs) % 200 == 0  # whole batches only
    assert seqs == list(range(len(seqs)))
    check = sqlite3.connect(vault_dir / DB_FILE).execute("PRAGMA integrity_check").fetchone()
    assert check == ("ok",)


def test_retention_deletes_segments_older_than_the_policy(hearth_home):
    now = time.time()
    with Vault.open(hearth_home / "vault") as vault:
        vault.append(_events(3), wall_time=now - 20 * 86400)
        vault.append(_events(3, start=3), wall_time=now - 1 * 86400)
        report = vault.enforce_retention(max_age_days=14, now=now)
        assert (report.deleted_by_age, report.deleted_by_quota) == (1, 0)
        assert [e.seq for e in vault.iter_events()] == [3, 4, 5]


def test_retention_keeps_the_newest_data_within_the_quota(hearth_home):
    with Vault.open(hearth_home / "vault") as vault:
        for i in range(10):
            vault.append(_events(50, start=i * 50))
        per_segment = vault.size() // 10
        report = vault.enforce_retention(max_bytes=per_segment * 4)
        assert report.deleted_by_quota >= 6
        assert vault.size() <= per_segment * 4 + per_segment // 2
        assert max(e.seq for e in vault.iter_events()) == 499


def test_no_passphrase_and_no_keyring_is_a_one_line_refusal(hearth_home, monkeypatch):
    monkeypatch.delenv("HEARTH_PASSPHRASE")
    monkeypatch.setenv("HEARTH_KEYRING", "0")
    with pytest.raises(NoKeySourceError, match="HEARTH_PASSPHRASE") as info:
        Vault.open(hearth_home / "vault")
    assert "\n" not in str(info.value)
    assert not (hearth_home / "vault" / KEY_FILE).exists()


def test_a_full_disk_stops_writing_cleanly_and_writing_resumes(hearth_home, monkeypatch):
    with Vault.open(hearth_home / "vault") as vault:
        vault.append(_events(5))
        real_seal = seal

        def disk_full(*args, **kwargs):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr("client.storage.vault.seal", disk_full)
        with pytest.raises(VaultFullError, match="disk is full"):
            vault.append(_events(5, start=5))
        monkeypatch.setattr("client.storage.vault.seal", real_seal)
        vault.append(_events(5, start=5))
        assert [e.seq for e in vault.iter_events()] == list(range(10))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_real_full_tmpfs_gives_the_clear_error(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], check=False
    )
    if mounted.returncode:
        pytest.skip("this sandbox does not allow mounting a tmpfs")
    try:
        vault = Vault.open(mount / "vault")
        written, error = 0, None
        for i in range(2000):
            try:
                vault.append([Text(i, float(i), os.urandom(1500).hex())])
                written += 1
            except VaultFullError as exc:
                error = exc
                break
        assert error is not None and "disk is full" in str(error)
        assert sum(1 for _ in vault.iter_events()) == written
        assert vault.corrupt_segments == []
        vault.close()
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@settings(max_examples=300, deadline=None)
@given(nonce=st.binary(min_size=0, max_size=16), ciphertext=st.binary(max_size=512))
def test_random_bytes_never_decode_to_anything(nonce, ciphertext):
    try:
        open_segment(KEY, 1, 1, nonce, ciphertext)
    except CorruptSegmentError:
        return
    raise AssertionError("random bytes decoded")


_SEALED = seal(KEY, 3, _events(20))


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_mutated_byte_gives_only_the_clear_error(position, flip):
    nonce, ciphertext = _SEALED
    mutated = bytearray(ciphertext)
    mutated[position % len(mutated)] ^= flip
    with pytest.raises(CorruptSegmentError):
        open_segment(KEY, 3, 1, nonce, bytes(mutated))


def test_cli_summary_export_and_delete(hearth_home, tmp_path):
    runner = CliRunner()
    with Vault.open(hearth_home / "vault") as vault:
        vault.append([Focus(0, 0.0, "code", AppCategory.EDITOR), *_events(4, start=1)])
    result = runner.invoke(app, ["data", "summary", "--json"])
    assert result.exit_code == 0, result.output
    days = json.loads(result.output)["days"]
    assert {d["modality"]: d["events"] for d in days} == {"apps": 1, "keys": 4}

    out = tmp_path / "mine.jsonl"
    result = runner.invoke(app, ["data", "export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 5
    assert out.stat().st_mode & 0o777 == 0o600

    result = runner.invoke(app, ["data", "delete"], input="n\n")
    assert result.exit_code == 1
    assert (hearth_home / "vault" / KEY_FILE).exists()
    result = runner.invoke(app, ["data", "delete", "--yes"])
    assert result.exit_code == 0
    assert not (hearth_home / "vault").exists()
    assert "empty" in runner.invoke(app, ["data", "summary"]).output


def test_cli_errors_are_one_line_without_traceback(hearth_home, monkeypatch):
    Vault.open(hearth_home / "vault").close()
    monkeypatch.setenv("HEARTH_PASSPHRASE", "wrong")
    result = CliRunner().invoke(app, ["data", "summary"])
    assert result.exit_code == 1
    assert "wrong passphrase" in result.output
    assert "Traceback" not in result.output


class _MemoryKeyring(keyring.backend.KeyringBackend):
    """Stands in for the OS keyring (Secret Service, Keychain), which cannot run here."""

    priority = 10

    def __init__(self):
        super().__init__()
        self.store = {}

    def get_password(self, service, username):
        return self.store.get((service, username))

    def set_password(self, service, username, password):
        self.store[(service, username)] = password

    def delete_password(self, service, username):
        if (service, username) not in self.store:
            raise keyring.errors.PasswordDeleteError(username)
        del self.store[(service, username)]


def test_a_usable_keyring_holds_the_kek_and_delete_removes_it(hearth_home, monkeypatch):
    backend = _MemoryKeyring()
    previous = keyring.get_keyring()
    keyring.set_keyring(backend)
    monkeypatch.delenv("HEARTH_PASSPHRASE")
    monkeypatch.setenv("HEARTH_KEYRING", "1")
    try:
        with Vault.open(hearth_home / "vault") as vault:
            vault.append(_events(3))
        assert json.loads((hearth_home / "vault" / KEY_FILE).read_text())["kek"] == "keyring"
        # The KEK's secret, and the manifest's anchor (client.storage.vault_anchor) beside it.
        assert sorted(service for service, _ in backend.store) == [
            "hearth-vault",
            "hearth-vault-manifest",
        ]
        with Vault.open(hearth_home / "vault") as vault:
            assert len(list(vault.iter_events())) == 3
        result = CliRunner().invoke(app, ["data", "delete", "--yes"])
        assert result.exit_code == 0
        assert backend.store == {}
    finally:
        keyring.set_keyring(previous)


def test_the_vault_knows_the_next_sequence_number_even_past_a_corrupt_newest_segment(hearth_home):
    vault_dir = hearth_home / "vault"
    with Vault.open(vault_dir) as vault:
        assert vault.next_seq() == 0
        for i in range(3):
            vault.append(_events(5, start=i * 5))
        assert vault.next_seq() == 15
    db, blob = _ciphertext(vault_dir, 3)
    blob[10] ^= 0x01
    db.execute("UPDATE segments SET ciphertext = ? WHERE id = 3", (bytes(blob),))
    db.commit()
    with Vault.open(vault_dir) as vault:
        # The damaged segment cannot say; the one before it can (numbering may reuse 10..14,
        # never anything still readable).
        assert vault.next_seq() == 10
