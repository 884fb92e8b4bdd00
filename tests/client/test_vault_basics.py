import pytest

from client.storage.keys import WrongPassphraseError
from client.storage.vault import Vault
from policy.events import AppCategory, Focus, Key, KeyClass, Text


def test_events_round_trip_through_the_vault_in_order(hearth_home):
    events = [Focus(0, 0.0, "code", AppCategory.EDITOR)] + [
        Key(i, i * 0.1, KeyClass.LETTER) for i in range(1, 100)
    ]
    with Vault.open(hearth_home / "vault") as vault:
        vault.append(events[:40])
        vault.append(events[40:])
    with Vault.open(hearth_home / "vault") as vault:
        assert list(vault.iter_events()) == events


def test_canary_text_is_not_in_any_file_on_disk(hearth_home):
    canary = "CANARY-7f3a9c-never-plaintext"
    with Vault.open(hearth_home / "vault") as vault:
        vault.append([Text(0, 0.0, canary)])
        # Read back while the WAL still holds the write.
        assert [e.text for e in vault.iter_events()] == [canary]  # type: ignore[union-attr]
        for path in hearth_home.rglob("*"):
            if path.is_file():
                assert canary.encode() not in path.read_bytes(), path


def test_wrong_passphrase_is_a_clear_error(hearth_home):
    Vault.open(hearth_home / "vault").close()
    with pytest.raises(WrongPassphraseError, match="wrong passphrase"):
        Vault.open(hearth_home / "vault", passphrase="not it")
