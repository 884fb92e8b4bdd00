"""What vault.db shows without the key: ids, days and a few sizes, never a timeline."""

import json
import os
import sqlite3
import time
import zlib

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from typer.testing import CliRunner

from client.cli.main import app
from client.storage.day_keys import day_of
from client.storage.keys import (
    KEY_FILE,
    _kek_from_passphrase,
    passphrase_kek,
    read_key_file,
    unwrap_with_kek,
)
from client.storage.segments import PADDED_SIZES
from client.storage.vault import Vault
from client.storage.vault_store import DB_FILE
from policy.events import AppCategory, Focus, Key, KeyClass, Text, to_record

PASSPHRASE = "correct horse battery staple"  # the fixture's HEARTH_PASSPHRASE
MORNING = 1_780_000_000.0 - 1_780_000_000.0 % 86400 + 9 * 3600  # 09:00 UTC, some day
EVENING = MORNING + 8 * 3600


@pytest.fixture(autouse=True)
def _cheap_scrypt(monkeypatch):
    """New wraps use a small scrypt cost (it is stored in the key file), keeping tests fast."""
    monkeypatch.setattr("client.storage.keys.SCRYPT_N", 2**10)


def _plaintext_columns(vault_dir):
    db = sqlite3.connect(vault_dir / DB_FILE)
    try:
        columns = [r[1] for r in db.execute("PRAGMA table_info(segments)")]
        rows = db.execute(
            "SELECT id, schema, gen, day, length(nonce), length(ciphertext) FROM segments"
        ).fetchall()
        return columns, rows
    finally:
        db.close()


def test_when_and_how_much_someone_typed_is_not_in_plaintext(tmp_path, monkeypatch):
    # Two employees, same day: one types fast in the morning (12 keys in a second), the
    # other three keys in the evening. Without the key their vaults look alike.
    views = []
    for name, wall, n in (("busy", MORNING, 12), ("quiet", EVENING, 3)):
        vault_dir = tmp_path / name / "vault"
        with Vault.open(vault_dir, passphrase=PASSPHRASE) as vault:
            vault.append([Focus(0, 0.0, "code", AppCategory.EDITOR)], wall_time=wall)
            vault.append([Key(i, i * 0.1, KeyClass.LETTER) for i in range(n)], wall_time=wall + 5)
        views.append(_plaintext_columns(vault_dir))
    assert views[0] == views[1]
    columns, rows = views[0]
    assert columns == ["id", "schema", "gen", "day", "nonce", "ciphertext"]
    assert {r[3] for r in rows} == {day_of(MORNING)}
    assert {r[5] - 16 for r in rows} <= set(PADDED_SIZES)


def test_ciphertexts_come_in_a_few_sizes(hearth_home):
    with Vault.open(hearth_home / "vault") as vault:
        for n in (1, 5, 50, 500, 3000):
            vault.append([Text(i, float(i), os.urandom(8).hex()) for i in range(n)])
    sizes = {r[5] - 16 for r in _plaintext_columns(hearth_home / "vault")[1]}
    assert sizes <= set(PADDED_SIZES) and len(sizes) < 5


def test_summary_decrypts_to_show_days_and_counts(hearth_home):
    with Vault.open(hearth_home / "vault") as vault:
        vault.append([Focus(0, 0.0, "code", AppCategory.EDITOR)], wall_time=MORNING)
        vault.append([Key(i, 0.0, KeyClass.LETTER) for i in range(1, 8)], wall_time=EVENING)
        (first, second) = vault.segments()
        assert (first.wall_end, first.n_events, first.modalities) == (MORNING, 1, {"apps": 1})
        assert (second.n_events, second.modalities) == (7, {"keys": 7})
    result = CliRunner().invoke(app, ["data", "summary", "--json"])
    days = json.loads(result.stdout)["days"]
    assert {d["modality"]: d["events"] for d in days} == {"apps": 1, "keys": 7}


_LEGACY_SQL = """
CREATE TABLE segments (
    id INTEGER PRIMARY KEY, schema INTEGER NOT NULL, wall_start REAL NOT NULL,
    wall_end REAL NOT NULL, n_events INTEGER NOT NULL, modalities TEXT NOT NULL,
    nonce BLOB NOT NULL, ciphertext BLOB NOT NULL
);
CREATE INDEX segments_wall_end ON segments (wall_end);
"""


def _legacy_vault(vault_dir, batches, salt=None):
    """A vault as hearth wrote it before day keys (key file version 1, plaintext times)."""
    vault_dir.mkdir(parents=True, mode=0o700)
    data_key, nonce = os.urandom(32), os.urandom(12)
    salt = salt or os.urandom(16)
    kek = _kek_from_passphrase(PASSPHRASE, salt, 2**10)
    wrapped = AESGCM(kek).encrypt(nonce, data_key, b"hearth-data-key-v1")
    (vault_dir / KEY_FILE).write_text(
        json.dumps(
            {
                "version": 1,
                "kek": "scrypt",
                "scrypt_n": 2**10,
                "salt": salt.hex(),
                "nonce": nonce.hex(),
                "wrapped": wrapped.hex(),
            }
        )
    )
    db = sqlite3.connect(vault_dir / DB_FILE)
    db.executescript(_LEGACY_SQL)
    blobs = []
    for segment_id, (wall, events) in enumerate(batches, start=1):
        payload = "\n".join(json.dumps(to_record(e), separators=(",", ":")) for e in events)
        seg_nonce = os.urandom(12)
        blob = AESGCM(data_key).encrypt(
            seg_nonce, zlib.compress(payload.encode()), f"hearth-segment:{segment_id}:1".encode()
        )
        blobs.append(blob)
        db.execute(
            "INSERT INTO segments VALUES (?, 1, ?, ?, ?, '{}', ?, ?)",
            (segment_id, wall - 1, wall, len(events), seg_nonce, blob),
        )
    db.commit()
    db.close()
    return blobs


def test_an_old_vault_is_migrated_on_open(hearth_home):
    vault_dir = hearth_home / "vault"
    now = time.time()
    events = [Focus(0, 0.0, "code", AppCategory.EDITOR), Key(1, 0.1, KeyClass.LETTER)]
    blobs = _legacy_vault(vault_dir, [(now - 3600, events[:1]), (now, events[1:])])
    with Vault.open(vault_dir) as vault:
        assert list(vault.iter_events()) == events
        assert vault.corrupt_segments == [] and vault.audit().missing == ()
        assert vault.append([Key(2, 0.2, KeyClass.LETTER)]) == 3
    assert json.loads((vault_dir / KEY_FILE).read_text())["version"] == 2
    assert _plaintext_columns(vault_dir)[0] == ["id", "schema", "gen", "day", "nonce", "ciphertext"]
    on_disk = b"".join(p.read_bytes() for p in vault_dir.iterdir() if p.is_file())
    assert not any(blob[:32] in on_disk for blob in blobs)
    with Vault.open(vault_dir) as vault:  # and it opens again, now as a new vault
        assert len(list(vault.iter_events())) == 3


def test_old_vaults_that_shared_a_salt_still_share_it_once_migrated(hearth_home):
    # A synthetic population seeded before day keys: one salt, so one scrypt KEK opens
    # every vault in a simulation worker (client.learning.device_cache); migrating must keep that.
    salt, now = os.urandom(16), time.time()
    events = [Key(0, 0.0, KeyClass.LETTER)]
    for name in ("a", "b"):
        _legacy_vault(hearth_home / name, [(now, events)], salt=salt)
        with Vault.open(hearth_home / name) as vault:
            assert list(vault.iter_events()) == events
    kek = passphrase_kek(PASSPHRASE, salt, 2**10)
    for name in ("a", "b"):
        wrapped = read_key_file(hearth_home / name)
        assert wrapped is not None and (wrapped.version, wrapped.salt) == (2, salt)
        assert len(unwrap_with_kek(wrapped, kek)) == 32
        with Vault.open(hearth_home / name) as vault:  # the passphrase still opens it
            assert list(vault.iter_events()) == events


def test_an_old_vault_can_be_rotated_straight_away(hearth_home):
    vault_dir = hearth_home / "vault"
    events = [Focus(0, 0.0, "code", AppCategory.EDITOR), Key(1, 0.1, KeyClass.LETTER)]
    _legacy_vault(vault_dir, [(time.time(), events)])
    assert Vault.rotate(vault_dir, "new passphrase").reencrypted == 1
    with Vault.open(vault_dir, passphrase="new passphrase") as vault:
        assert list(vault.iter_events()) == events


def test_an_old_vault_migrated_by_another_process_meanwhile_opens(hearth_home, monkeypatch):
    # The recorder and `hearth` open the vault at once after an upgrade: both see the old
    # layout, one migrates first; the other must find it done under the write lock
    # rather than rename the new table as if it were the old one.
    vault_dir = hearth_home / "vault"
    events = [Focus(0, 0.0, "code", AppCategory.EDITOR), Key(1, 0.1, KeyClass.LETTER)]
    _legacy_vault(vault_dir, [(time.time(), events)])
    migrate = Vault._migrate_legacy
    raced: list[bool] = []

    def other_process_first(self: Vault) -> None:
        if not raced:
            raced.append(True)
            with Vault.open(vault_dir) as other:  # migrates between our look and our lock
                assert list(other.iter_events()) == events
        migrate(self)

    monkeypatch.setattr(Vault, "_migrate_legacy", other_process_first)
    with Vault.open(vault_dir) as vault:
        assert list(vault.iter_events()) == events
        assert vault.corrupt_segments == []
    assert raced == [True]
