"""Key rotation played against someone who kept a copy of the old key file."""

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
from typer.testing import CliRunner

from client.cli.main import app
from client.control.heartbeat import Heartbeat, write_heartbeat
from client.storage.day_keys import day_keys_path, load_day_keys
from client.storage.keys import KEY_FILE, NEXT_KEY_FILE, VaultKeyError, WrappedKey, unwrap
from client.storage.rotation import RotationInProgressError
from client.storage.segments import open_segment
from client.storage.vault import Vault
from client.storage.vault_store import DB_FILE
from policy.events import Key, KeyClass, Text

OLD = "correct horse battery staple"  # the fixture's HEARTH_PASSPHRASE
NEW = "a brand new passphrase"
CANARY = "CANARY-rotation-4411"


@pytest.fixture(autouse=True)
def _cheap_scrypt(monkeypatch):
    """New wraps use a small scrypt cost (it is stored in the key file), keeping tests fast."""
    monkeypatch.setattr("client.storage.keys.SCRYPT_N", 2**10)


def _fill(vault_dir, segments):
    with Vault.open(vault_dir) as vault:
        for i in range(segments):
            vault.append([Text(2 * i, float(i), CANARY), Key(2 * i + 1, float(i), KeyClass.LETTER)])


def _rows(vault_dir):
    db = sqlite3.connect(vault_dir / DB_FILE)
    try:
        return db.execute("SELECT id, schema, gen, day, nonce, ciphertext FROM segments").fetchall()
    finally:
        db.close()


def _day_keys(vault_dir, gen, vault_key):
    return load_day_keys(vault_dir, gen, vault_key).keys


def _disk_bytes(vault_dir):
    return b"".join(p.read_bytes() for p in vault_dir.iterdir() if p.is_file())


def test_after_rotation_the_old_key_file_and_passphrase_decrypt_nothing(hearth_home):
    vault_dir = hearth_home / "vault"
    _fill(vault_dir, 20)
    stolen = (vault_dir / KEY_FILE).read_text()
    old_ciphertexts = [row[5] for row in _rows(vault_dir)]

    report = Vault.rotate(vault_dir, NEW)
    assert (report.generation, report.reencrypted) == (1, 20)
    assert not (vault_dir / NEXT_KEY_FILE).exists()

    with Vault.open(vault_dir, passphrase=NEW) as vault:
        assert [e.seq for e in vault.iter_events()] == list(range(40))
    # The adversary: the old key file and passphrase still unwrap the old key ...
    old_key = unwrap(WrappedKey.from_json(stolen), OLD)
    # ... which opens no day-key file of the vault as it now is (the old one is gone),
    assert not day_keys_path(vault_dir, 0).exists()
    day_files = sorted(vault_dir.glob("days.*.bin"))
    assert [p.name for p in day_files] == ["days.1.bin"]
    with pytest.raises(VaultKeyError):
        load_day_keys(vault_dir, 1, old_key)
    # ... nor any segment directly,
    for segment_id, schema, gen, day, nonce, ciphertext in _rows(vault_dir):
        for guess in {0, gen}:
            with pytest.raises(Exception, match="corrupt"):
                open_segment(old_key, segment_id, schema, nonce, ciphertext, guess, day)
    # ... and no old ciphertext is left in the database or its WAL.
    on_disk = _disk_bytes(vault_dir)
    assert not any(blob in on_disk for blob in old_ciphertexts)
    # Putting the old key file back reads nothing either.
    (vault_dir / KEY_FILE).write_text(stolen)
    with Vault.open(vault_dir, passphrase=OLD) as vault:
        assert list(vault.iter_events()) == []
        assert len(vault.corrupt_segments) == 20


KILLER = """
import os, signal, sys
from pathlib import Path
import client.storage.rotation as r
import client.storage.segments as s
import client.storage.vault as v
calls = 0
real = s._aad
def aad(*args, **kwargs):  # twice per segment moved: once to open, once to seal
    global calls
    calls += 1
    if calls == 80:  # the 40th segment, in the third batch of 16
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
s._aad = r._aad = aad  # segments open and seal with it; rotation seals with it too
v.Vault.rotate(Path(sys.argv[1]), sys.argv[2], batch=16)
"""


def test_a_rotation_killed_midway_keeps_every_segment_and_resumes(hearth_home):
    vault_dir = hearth_home / "vault"
    _fill(vault_dir, 100)
    proc = subprocess.run([sys.executable, "-c", KILLER, str(vault_dir), NEW], check=False)
    assert proc.returncode == -signal.SIGKILL
    with pytest.raises(RotationInProgressError, match="rotate-key"):
        Vault.open(vault_dir)
    # At this instant every segment is readable under exactly one of the two keys.
    keys = {
        0: _day_keys(
            vault_dir, 0, unwrap(WrappedKey.from_json((vault_dir / KEY_FILE).read_text()), OLD)
        ),
        1: _day_keys(
            vault_dir, 1, unwrap(WrappedKey.from_json((vault_dir / NEXT_KEY_FILE).read_text()), NEW)
        ),
    }
    rows = _rows(vault_dir)
    assert sorted(r[2] for r in rows) == [0] * 68 + [1] * 32  # two whole batches moved
    for segment_id, schema, gen, day, nonce, ciphertext in rows:
        events = open_segment(keys[gen][day], segment_id, schema, nonce, ciphertext, gen, day)
        assert len(events) == 2

    assert Vault.rotate(vault_dir, NEW).reencrypted == 68
    with Vault.open(vault_dir, passphrase=NEW) as vault:
        assert [e.seq for e in vault.iter_events()] == list(range(200))
        assert vault.corrupt_segments == []


def test_a_process_holding_the_old_key_cannot_append_after_rotation(hearth_home):
    vault_dir = hearth_home / "vault"
    _fill(vault_dir, 2)
    with Vault.open(vault_dir) as stale:
        Vault.rotate(vault_dir, NEW)
        with pytest.raises(Exception, match="restart hearth"):
            stale.append([Key(9, 9.0, KeyClass.LETTER)])
    with Vault.open(vault_dir, passphrase=NEW) as vault:
        assert vault.corrupt_segments == [] and len(list(vault.iter_events())) == 4


def test_the_cli_rotates_and_the_new_passphrase_opens_the_vault(hearth_home, monkeypatch):
    vault_dir = hearth_home / "vault"
    _fill(vault_dir, 3)
    monkeypatch.setenv("HEARTH_NEW_PASSPHRASE", NEW)
    result = CliRunner().invoke(app, ["data", "rotate-key"])
    assert result.exit_code == 0, result.output
    assert "3 segments re-encrypted" in result.output
    with Vault.open(vault_dir, passphrase=NEW) as vault:
        assert len(list(vault.iter_events())) == 6


def test_the_cli_refuses_to_rotate_under_a_running_recorder(hearth_home, monkeypatch):
    vault_dir = hearth_home / "vault"
    _fill(vault_dir, 1)
    now = time.time()
    write_heartbeat(hearth_home, Heartbeat(pid=os.getpid(), started=now, updated=now))
    monkeypatch.setenv("HEARTH_NEW_PASSPHRASE", NEW)
    result = CliRunner().invoke(app, ["data", "rotate-key"])
    assert result.exit_code == 1 and "recorder is running" in result.output
    assert json.loads((vault_dir / KEY_FILE).read_text())["generation"] == 0


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


def test_rotation_in_the_keyring_destroys_the_old_secret(hearth_home, monkeypatch):
    backend, previous = _MemoryKeyring(), keyring.get_keyring()
    keyring.set_keyring(backend)
    monkeypatch.delenv("HEARTH_PASSPHRASE")
    monkeypatch.setenv("HEARTH_KEYRING", "1")
    vault_dir = hearth_home / "vault"
    try:
        _fill(vault_dir, 3)
        secrets = {k: v for k, v in backend.store.items() if k[0] == "hearth-vault"}
        (old_secret,) = secrets.values()  # the manifest's anchor is the other entry
        stolen = WrappedKey.from_json((vault_dir / KEY_FILE).read_text())
        Vault.rotate(vault_dir, None)
        secrets = {k: v for k, v in backend.store.items() if k[0] == "hearth-vault"}
        assert old_secret not in backend.store.values() and len(secrets) == 1
        assert json.loads((vault_dir / KEY_FILE).read_text())["generation"] == 1
        with Vault.open(vault_dir) as vault:
            assert len(list(vault.iter_events())) == 6
        old_key = unwrap(stolen, bytes.fromhex(old_secret))  # a copied keyring secret
        with pytest.raises(VaultKeyError):
            load_day_keys(vault_dir, 1, old_key)
        assert not day_keys_path(vault_dir, 0).exists()
    finally:
        keyring.set_keyring(previous)
    assert os.listdir(vault_dir)
