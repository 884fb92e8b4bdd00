"""`hearth record` refuses clearly, in one line, before listening to anything."""

from __future__ import annotations

import pytest

import client.cli.record as record_commands
from client.cli.record import record
from client.control.consent import grant
from client.control.heartbeat import Heartbeat, write_heartbeat
from client.storage.vault import Vault
from policy.events import Key, KeyClass, Modality
from tests.client.test_recorder import FakeFocus, FakeSource


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hearth: ")
    return err


def test_without_consent_it_says_how_to_grant(hearth_home, capsys, monkeypatch):
    monkeypatch.setenv("DISPLAY", ":4242")
    assert record(0.1) == 1
    assert "run `hearth consent grant --modalities" in _one_line_error(capsys)
    assert not (hearth_home / "vault").exists()


def test_without_a_display_it_says_so(hearth_home, capsys, monkeypatch):
    grant(hearth_home, (Modality.KEYS,))
    monkeypatch.delenv("DISPLAY", raising=False)
    assert record(0.1) == 1
    assert "DISPLAY is not set" in _one_line_error(capsys)


def test_without_a_vault_key_it_says_to_set_the_passphrase(hearth_home, capsys, monkeypatch):
    grant(hearth_home, (Modality.KEYS,))
    monkeypatch.setenv("DISPLAY", ":4242")
    monkeypatch.delenv("HEARTH_PASSPHRASE")
    assert record(0.1) == 1
    assert "set HEARTH_PASSPHRASE" in _one_line_error(capsys)


def test_an_unreachable_display_is_one_line_too(hearth_home, capsys, monkeypatch):
    grant(hearth_home, (Modality.KEYS,))
    monkeypatch.setenv("DISPLAY", ":4242")
    assert record(0.1) == 1
    assert "cannot open the X display :4242" in _one_line_error(capsys)


def test_numbering_continues_from_the_vault_when_the_heartbeat_lags(hearth_home, monkeypatch):
    # The heartbeat is written every few seconds, not after every write: a recorder
    # killed in between leaves it behind the vault, and numbering must not repeat.
    grant(hearth_home, (Modality.KEYS,))
    monkeypatch.setenv("DISPLAY", ":4242")
    with Vault.open(hearth_home / "vault") as vault:
        vault.append([Key(i, float(i), KeyClass.LETTER) for i in range(40)])
    write_heartbeat(hearth_home, Heartbeat(pid=1, started=0, updated=0, next_seq=25, running=False))
    monkeypatch.setattr(record_commands, "open_focus_backend", FakeFocus)
    monkeypatch.setattr(record_commands, "open_input_source", FakeSource)
    recorder, vault = record_commands.build_recorder(hearth_home)
    vault.close()
    assert recorder.config.first_seq == 40
