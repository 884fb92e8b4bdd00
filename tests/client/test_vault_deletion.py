"""Deletion that deletes: grepping the database and its WAL for what retention removed."""

import os
import sqlite3
import time

import pytest
from typer.testing import CliRunner

from client.cli.main import app
from client.storage.day_keys import day_of, load_day_keys
from client.storage.keys import load_or_create_data_key
from client.storage.segments import open_segment
from client.storage.vault import Vault
from client.storage.vault_store import DB_FILE
from policy.events import Key, KeyClass, Text

NOW = time.time()
OLD = NOW - 30 * 86400


@pytest.fixture(autouse=True)
def _cheap_scrypt(monkeypatch):
    """New wraps use a small scrypt cost (it is stored in the key file), keeping tests fast."""
    monkeypatch.setattr("client.storage.keys.SCRYPT_N", 2**10)


def _fill(vault_dir):
    """25 segments a month old, 5 of today; returns the old ones' rows."""
    with Vault.open(vault_dir) as vault:
        for i in range(25):
            vault.append([Text(i, float(i), os.urandom(200).hex())], wall_time=OLD)
        for i in range(5):
            vault.append([Key(25 + i, float(i), KeyClass.LETTER)], wall_time=NOW)
    db = sqlite3.connect(vault_dir / DB_FILE)
    rows = db.execute(
        "SELECT id, schema, gen, day, nonce, ciphertext FROM segments WHERE day = ?",
        (day_of(OLD),),
    ).fetchall()
    db.close()
    assert len(rows) == 25
    return rows


def _lingering(vault_dir, rows):
    """How many of ``rows``' ciphertexts are still in vault.db or vault.db-wal."""
    data = b"".join(
        (vault_dir / name).read_bytes()
        for name in (DB_FILE, DB_FILE + "-wal")
        if (vault_dir / name).exists()
    )
    return sum(1 for row in rows if bytes(row[5])[16:48] in data)


def test_retention_leaves_no_deleted_ciphertext_with_no_reader(hearth_home):
    vault_dir = hearth_home / "vault"
    rows = _fill(vault_dir)
    with Vault.open(vault_dir) as vault:
        assert vault.enforce_retention(14, now=NOW).deleted_by_age == 25
        assert _lingering(vault_dir, rows) == 0
        assert (vault_dir / (DB_FILE + "-wal")).stat().st_size < 8192
        assert len(list(vault.iter_events())) == 5


def test_with_a_reader_open_deleted_ciphertext_is_unreadable_then_gone(hearth_home):
    vault_dir = hearth_home / "vault"
    rows = _fill(vault_dir)
    vault_key = load_or_create_data_key(vault_dir)
    old_day_key = load_day_keys(vault_dir, 0, vault_key).keys[day_of(OLD)]
    reader = sqlite3.connect(vault_dir / DB_FILE)
    reader.execute("BEGIN")
    assert reader.execute("SELECT COUNT(*) FROM segments").fetchone() == (30,)  # a snapshot
    with Vault.open(vault_dir) as vault:
        assert vault.enforce_retention(14, now=NOW).deleted_by_age == 25
        # The reader pins the WAL, so old frames may stay for now, but the day's key is
        # gone: holding the vault key (key.json + passphrase) no longer reaches it.
        lingering_with_reader = _lingering(vault_dir, rows)
        day_keys = load_day_keys(vault_dir, 0, vault_key)
        assert day_of(OLD) not in day_keys.keys and day_keys.horizon > day_of(OLD)
        assert old_day_key not in b"".join(p.read_bytes() for p in vault_dir.iterdir())
        for segment_id, schema, gen, day, nonce, ciphertext in rows:
            for key in day_keys.keys.values():
                with pytest.raises(Exception, match="corrupt"):
                    open_segment(key, segment_id, schema, nonce, ciphertext, gen, day)
        reader.rollback()
        reader.close()
        vault.append([Key(99, 0.0, KeyClass.LETTER)])  # the next write truncates the WAL
        assert _lingering(vault_dir, rows) == 0
    print(f"lingering with a reader: {lingering_with_reader}/25, after it closed: 0/25")


def test_data_delete_zeroes_what_an_open_file_handle_still_sees(hearth_home):
    vault_dir = hearth_home / "vault"
    rows = _fill(vault_dir)
    reader = sqlite3.connect(vault_dir / DB_FILE)  # another process with the vault open
    reader.execute("SELECT COUNT(*) FROM segments").fetchone()
    handles = [open(vault_dir / name, "rb") for name in (DB_FILE, DB_FILE + "-wal")]  # noqa: SIM115

    def seen():  # the inodes as that reader has them, unlinked or not
        return b"".join(os.pread(h.fileno(), 1 << 24, 0) for h in handles)

    try:
        assert sum(bytes(row[5])[16:48] in seen() for row in rows) == 25
        result = CliRunner().invoke(app, ["data", "delete", "--yes"])
        assert result.exit_code == 0, result.output
        assert not vault_dir.exists()
        assert not any(bytes(row[5])[16:48] in seen() for row in rows)
    finally:
        for handle in handles:
            handle.close()
        reader.close()
