"""A whole vault.db put back as an older copy of itself: caught through the manifest's anchor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from client.cli.main import app
from client.learning.device import Device
from client.storage.vault import Vault
from client.storage.vault_anchor import ANCHOR_FILE
from client.storage.vault_store import DB_FILES, VaultRollbackError
from policy.events import AppCategory, Focus

PASSPHRASE = "correct horse battery staple"  # the fixture's HEARTH_PASSPHRASE


@pytest.fixture(autouse=True)
def _cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("client.storage.keys.SCRYPT_N", 2**10)


def _record(vault_dir: Path, segments: int, start: int = 0) -> None:
    with Vault.open(vault_dir) as vault:
        for i in range(start, start + segments):
            vault.append([Focus(i, float(i), "code", AppCategory.EDITOR)])
        assert vault.rollback is None


def _files(vault_dir: Path) -> list[Path]:
    """What an attacker copies: the database (with its WAL) and the day keys."""
    names = [*DB_FILES]
    return [p for p in vault_dir.iterdir() if p.name in names or p.name.startswith("days.")]


def _copy_aside(vault_dir: Path, aside: Path) -> None:
    aside.mkdir()
    for path in _files(vault_dir):
        shutil.copy2(path, aside / path.name)


def _put_back(aside: Path, vault_dir: Path) -> None:
    for path in _files(vault_dir):
        path.unlink()
    for path in aside.iterdir():
        shutil.copy2(path, vault_dir / path.name)


def _summary() -> dict[str, object]:
    result = CliRunner().invoke(app, ["data", "summary", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_an_older_copy_of_the_vault_is_reported_and_refuses_training(hearth_home: Path) -> None:
    vault_dir = hearth_home / "vault"
    _record(vault_dir, 3)
    _copy_aside(vault_dir, hearth_home / "aside")
    _record(vault_dir, 4, start=3)
    assert _summary()["rollback"] is None  # reopening the current vault is fine
    _put_back(hearth_home / "aside", vault_dir)

    report = _summary()
    message = str(report["rollback"])
    assert "older copy" in message and "hearth data delete" in message
    assert "\n" not in message
    text = CliRunner().invoke(app, ["data", "summary"])
    assert "older copy" in text.stderr
    device = Device(hearth_home, PASSPHRASE, simulated=True)
    with pytest.raises(VaultRollbackError, match="training is refused"):
        device.examples(4)

    # Writing on into the old copy (a recorder) does not make it look current again.
    _record_unchecked(vault_dir, 10)
    assert "older copy" in str(_summary()["rollback"])

    # Starting a new vault is the way out; the new one is not suspect.
    assert CliRunner().invoke(app, ["data", "delete", "--yes"]).exit_code == 0
    _record(vault_dir, 2)
    assert _summary()["rollback"] is None


def _record_unchecked(vault_dir: Path, segments: int) -> None:
    with Vault.open(vault_dir) as vault:
        for i in range(segments):
            vault.append([Focus(100 + i, float(i), "code", AppCategory.EDITOR)])


def test_a_deleted_anchor_is_reported_and_a_rotation_keeps_the_anchor(hearth_home: Path) -> None:
    vault_dir = hearth_home / "vault"
    _record(vault_dir, 3)
    Vault.rotate(vault_dir, "new passphrase", PASSPHRASE)
    with Vault.open(vault_dir, "new passphrase") as vault:
        assert vault.rollback is None
    (vault_dir / ANCHOR_FILE).unlink()
    with Vault.open(vault_dir, "new passphrase") as vault:
        assert vault.rollback is not None and "anchor" in vault.rollback


def test_a_forged_anchor_with_a_lower_count_fails_authentication(hearth_home: Path) -> None:
    vault_dir = hearth_home / "vault"
    _record(vault_dir, 3)
    blob = bytearray((vault_dir / ANCHOR_FILE).read_bytes())
    blob[-1] ^= 1
    (vault_dir / ANCHOR_FILE).write_bytes(bytes(blob))
    with Vault.open(vault_dir) as vault:
        assert vault.rollback is not None and "failed authentication" in vault.rollback


def test_a_write_by_another_process_while_a_vault_opens_is_not_a_rollback(
    hearth_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The dashboard opens the vault while the recorder seals a segment: if the
    # recorder's commit and anchor land between the opener's read of the manifest and
    # its read of the anchor, the manifest looks older than its anchor.
    import threading  # noqa: PLC0415

    from client.storage import vault_anchor  # noqa: PLC0415

    vault_dir = hearth_home / "vault"
    _record(vault_dir, 3)
    writer = Vault.open(vault_dir)
    raced: list[bool] = []
    threads: list[threading.Thread] = []

    def after_a_write(real_read: Any) -> Any:
        def read(self: Any) -> tuple[int, str] | None:
            if not raced:  # the first read, by the opener: the writer commits meanwhile
                appended = threading.Thread(
                    target=writer.append, args=([Focus(99, 99.0, "code", AppCategory.EDITOR)],)
                )
                appended.start()
                appended.join(1.0)  # blocked by the opener's lock, once fixed
                raced.append(not appended.is_alive())
                threads.append(appended)
            return real_read(self)  # type: ignore[no-any-return]

        return read

    try:
        with monkeypatch.context() as patched:
            for kind in (vault_anchor.KeyringVaultAnchor, vault_anchor.FileVaultAnchor):
                patched.setattr(kind, "read", after_a_write(kind.read))
            with Vault.open(vault_dir) as opener:
                assert opener.rollback is None
    finally:
        for thread in threads:
            thread.join()  # it goes on once the opener's check has committed
        writer.close()
    assert raced == [False]  # the writer waited for the opener's check
    with Vault.open(vault_dir) as again:
        assert again.rollback is None
        assert len(list(again.iter_events())) == 4
