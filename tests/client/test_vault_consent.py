"""Revoking a modality deletes what was recorded of it, not just what comes next."""

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from client.cli.main import app
from client.control.consent import grant
from client.learning.device import Device
from client.storage.vault import Vault
from client.storage.vault_store import DB_FILE
from policy.events import AppCategory, Button, Click, Focus, Key, KeyClass, Modality

ALL = (Modality.POINTER, Modality.KEYS, Modality.APPS)


@pytest.fixture(autouse=True)
def _cheap_scrypt(monkeypatch):
    """New wraps use a small scrypt cost (it is stored in the key file), keeping tests fast."""
    monkeypatch.setattr("client.storage.keys.SCRYPT_N", 2**10)


def _record(vault_dir):
    with Vault.open(vault_dir) as vault:
        for i in range(10):
            vault.append(
                [
                    Focus(4 * i, float(i), "code", AppCategory.EDITOR),
                    Key(4 * i + 1, float(i), KeyClass.LETTER),
                    Key(4 * i + 2, float(i), KeyClass.SPACE),
                    Click(4 * i + 3, float(i), 0.5, 0.5, Button.LEFT),
                ]
            )
        vault.append([Key(40 + i, 10.0, KeyClass.LETTER) for i in range(5)])  # keys only
    db = sqlite3.connect(vault_dir / DB_FILE)
    blobs = [bytes(r[0]) for r in db.execute("SELECT ciphertext FROM segments")]
    db.close()
    return blobs


def _summary():
    result = CliRunner().invoke(app, ["data", "summary", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    return {d["modality"]: d["events"] for d in report["days"]}, report


def test_revoking_keys_deletes_the_recorded_keys(hearth_home):
    vault_dir = hearth_home / "vault"
    grant(hearth_home, ALL)
    blobs = _record(vault_dir)
    assert _summary()[0] == {"apps": 10, "keys": 25, "pointer": 10}

    grant(hearth_home, (Modality.POINTER, Modality.APPS))  # keys revoked
    counts, report = _summary()
    assert counts == {"apps": 10, "pointer": 10}
    assert report["purged_events"] == 25
    assert report["dropped_segments"] == [] and report["unexpected_segments"] == []
    with Vault.open(vault_dir) as vault:
        events = list(vault.iter_events())
        assert len(events) == 20 and not any(isinstance(e, Key) for e in events)
        assert vault.corrupt_segments == []
    on_disk = b"".join(p.read_bytes() for p in vault_dir.iterdir() if p.is_file())
    assert not any(blob[16:48] in on_disk for blob in blobs)  # rewritten, WAL truncated
    text = CliRunner().invoke(app, ["data", "summary"]).output
    assert "25 events of revoked modalities were deleted" in text


def test_a_vault_locked_at_revocation_is_purged_before_training_reads_it(hearth_home, monkeypatch):
    vault_dir = hearth_home / "vault"
    grant(hearth_home, ALL)
    _record(vault_dir)
    passphrase = monkeypatch.delenv("HEARTH_PASSPHRASE") or "correct horse battery staple"
    grant(hearth_home, (Modality.APPS,))  # nothing can be unlocked in this process
    monkeypatch.setenv("HEARTH_PASSPHRASE", passphrase)
    assert _summary()[0] == {"apps": 10, "keys": 25, "pointer": 10}
    examples = Device(hearth_home, passphrase).examples(context_length=4)
    assert examples is not None
    counts, report = _summary()
    assert counts == {"apps": 10} and report["purged_events"] == 35
