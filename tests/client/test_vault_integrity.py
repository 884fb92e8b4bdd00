"""Integrity across segments, against someone who edits vault.db between runs."""

import json
import sqlite3
import time

import pytest
from typer.testing import CliRunner

from client.cli.main import app
from client.storage.vault import Vault
from client.storage.vault_store import DB_FILE
from policy.events import Key, KeyClass


@pytest.fixture(autouse=True)
def _cheap_scrypt(monkeypatch):
    """New wraps use a small scrypt cost (it is stored in the key file), keeping tests fast."""
    monkeypatch.setattr("client.storage.keys.SCRYPT_N", 2**10)


def _events(n, start=0):
    return [Key(start + i, float(start + i), KeyClass.LETTER) for i in range(n)]


def _fill(vault_dir, segments, wall_time=None):
    with Vault.open(vault_dir) as vault:
        for i in range(segments):
            vault.append(_events(5, start=i * 5), wall_time=wall_time)


def _sql(vault_dir, statement, params=()):
    db = sqlite3.connect(vault_dir / DB_FILE)
    try:
        rows = db.execute(statement, params).fetchall()
        db.commit()
        return rows
    finally:
        db.close()


def _summary():
    result = CliRunner().invoke(app, ["data", "summary", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_dropped_newest_segment_is_reported_and_its_id_never_reused(hearth_home):
    vault_dir = hearth_home / "vault"
    _fill(vault_dir, 3)
    _sql(vault_dir, "DELETE FROM segments WHERE id = 3")
    report = _summary()
    assert report["dropped_segments"] == [3]
    assert report["unexpected_segments"] == []
    with Vault.open(vault_dir) as vault:
        assert vault.append(_events(5, start=15)) == 4  # 3 is never handed out again
        assert [e.seq for e in vault.iter_events()] == [*range(10), *range(15, 20)]


def test_a_reinserted_deleted_segment_is_reported_and_skipped(hearth_home):
    vault_dir = hearth_home / "vault"
    _fill(vault_dir, 1, wall_time=time.time() - 30 * 86400)
    _fill(vault_dir, 2)
    (kept,) = _sql(vault_dir, "SELECT * FROM segments WHERE id = 1")
    with Vault.open(vault_dir) as vault:
        assert vault.enforce_retention(max_age_days=14).deleted_by_age == 1
    clean = _summary()  # a deletion by retention is not tampering
    assert (clean["dropped_segments"], clean["unexpected_segments"]) == ([], [])

    _sql(vault_dir, f"INSERT INTO segments VALUES ({', '.join('?' * len(kept))})", kept)
    assert _summary()["unexpected_segments"] == [1]
    with Vault.open(vault_dir) as vault:
        assert [e.seq for e in vault.iter_events()] == list(range(10))  # segments 2 and 3
        assert vault.corrupt_segments == [1]


def test_reordered_segments_fail_authentication(hearth_home):
    vault_dir = hearth_home / "vault"
    _fill(vault_dir, 3)
    _sql(vault_dir, "UPDATE segments SET id = -1 WHERE id = 1")
    _sql(vault_dir, "UPDATE segments SET id = 1 WHERE id = 2")
    _sql(vault_dir, "UPDATE segments SET id = 2 WHERE id = -1")
    with Vault.open(vault_dir) as vault:
        assert [e.seq for e in vault.iter_events()] == list(range(10, 15))
        assert vault.corrupt_segments == [1, 2]
    assert _summary()["corrupt_segments"] == [1, 2]


def test_an_older_manifest_put_back_exposes_the_newer_segments(hearth_home):
    vault_dir = hearth_home / "vault"
    _fill(vault_dir, 2)
    ((old_manifest,),) = _sql(vault_dir, "SELECT value FROM meta WHERE name = 'manifest'")
    _fill(vault_dir, 1)
    _sql(vault_dir, "UPDATE meta SET value = ? WHERE name = 'manifest'", (old_manifest,))
    assert _summary()["unexpected_segments"] == [3]


def test_a_deleted_or_forged_manifest_trusts_nothing(hearth_home):
    vault_dir = hearth_home / "vault"
    _fill(vault_dir, 2)
    _sql(vault_dir, "UPDATE meta SET value = zeroblob(64) WHERE name = 'manifest'")
    report = _summary()
    assert "failed authentication" in report["manifest_error"]
    assert report["unexpected_segments"] == [1, 2]
    _sql(vault_dir, "DELETE FROM meta WHERE name = 'manifest'")
    with Vault.open(vault_dir) as vault:
        assert list(vault.iter_events()) == []
        assert vault.manifest_error == "the vault's manifest is missing"
    result = CliRunner().invoke(app, ["data", "summary"])
    assert "no segment can be trusted" in result.output
