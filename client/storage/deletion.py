"""Deleting what the laptop recorded: the whole vault (crypto-shred), or revoked modalities.

``hearth data delete``, ``hearth consent revoke --delete`` and the dashboard delete
through ``delete_vault``; ``purge_revoked_modalities`` is the consent listener that
deletes the events of modalities the employee no longer consents to.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
from collections.abc import Collection
from pathlib import Path
from typing import Protocol

from client.storage.key_lifecycle import destroy_key
from client.storage.keys import ENV_PASSPHRASE, KEY_FILE, VaultKeyError, key_kek
from client.storage.shredding import shred_file
from client.storage.vault import Vault
from client.storage.vault_anchor import destroy_anchor
from client.storage.vault_store import DB_FILE, DB_FILES, VaultFullError
from policy.events import Modality

_log = logging.getLogger(__name__)


class Consent(Protocol):
    """What deletion reads of a consent record (``client.control.consent.ConsentRecord``)."""

    @property
    def active(self) -> bool: ...

    @property
    def modalities(self) -> Collection[Modality]: ...


def delete_vault(directory: Path) -> bool:
    """Crypto-shred a vault: keys first (file and keyring), then the database's bytes.

    The rows are deleted (``secure_delete`` zeroes them) and the WAL truncated before
    the files are removed, so a process that still holds them open sees no ciphertext.
    """
    existed = destroy_key(directory)
    destroy_anchor(directory)  # a new vault here starts at write 1 without being suspect
    for path in directory.glob("days.*.bin*"):
        shred_file(path)
        existed = True
    db_path = directory / DB_FILE
    if db_path.exists():
        with contextlib.suppress(sqlite3.Error):
            db = sqlite3.connect(db_path, isolation_level=None, timeout=0.5)
            try:
                db.execute("PRAGMA secure_delete=ON")
                db.execute("DELETE FROM segments")
                db.execute("DELETE FROM meta")
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                db.close()
    for name in DB_FILES:
        path = directory / name
        if path.exists():
            path.unlink()
            existed = True
    if directory.exists():
        shutil.rmtree(directory)
    return existed


def purge_revoked_modalities(home: Path, record: Consent) -> None:
    """After consent narrows, delete the events of modalities no longer granted.

    A ``client.control.consent.on_change`` listener (``hearth data`` registers it, so every
    ``hearth`` command and the dashboard run it). Best effort here (never a
    passphrase prompt): when the vault cannot be unlocked in this process, the next
    training read (``Device.examples``) deletes them first.
    """
    directory = home / "vault"
    if not record.active or not (directory / KEY_FILE).exists():
        return
    try:
        if key_kek(directory) == "scrypt" and not os.environ.get(ENV_PASSPHRASE):
            raise VaultKeyError("no passphrase in this process")
        with Vault.open(directory, keep_modalities=record.modalities):
            pass
    except (VaultKeyError, VaultFullError, sqlite3.Error) as exc:
        _log.warning("events of revoked modalities are deleted before the next round: %s", exc)


__all__ = ["delete_vault", "purge_revoked_modalities"]
