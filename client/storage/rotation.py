"""Key rotation: every segment re-encrypted under a new data key, then the old one shredded.

``client.storage.vault.Vault.rotate`` stages the new key, re-encrypts in batches
(``VaultRotation._reencrypt``) and commits the key only when no segment is left
under the old one.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from client.storage.keys import (
    VaultKeyError,
)
from client.storage.retention import VaultRetention
from client.storage.segments import _aad
from client.storage.vault_manifest import (
    ManifestError,
    open_manifest,
)


class RotationInProgressError(VaultKeyError):
    """A key rotation was cut short; it must be finished before the vault is used."""

    def __init__(self) -> None:
        super().__init__(
            "a key rotation of the vault was interrupted: run `hearth data rotate-key` "
            "again with the same new passphrase to finish it"
        )


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What one (possibly resumed) key rotation did."""

    generation: int
    reencrypted: int
    dropped: int = 0  # corrupt or expired segments that could not move to the new key


class VaultRotation(VaultRetention):
    """Re-encrypting the vault under the next key generation."""

    def _reencrypt(self, new_gen: int, batch: int) -> tuple[int, int]:
        """Move every segment to ``new_gen``'s day keys, batch by batch; (moved, dropped)."""
        self._db.execute("UPDATE meta SET value = ? WHERE name = 'write_gen'", (b"%d" % new_gen,))
        self._gen = new_gen
        horizon = max(d.horizon for d in self._days.values())
        self._days[new_gen] = self._days[new_gen].without(set(), horizon)
        done = dropped = 0
        while True:
            self._begin_write()
            try:
                rows = self._db.execute(
                    "SELECT id, schema, gen, day, nonce, ciphertext FROM segments "
                    "WHERE gen != ? ORDER BY id LIMIT ?",
                    (new_gen, batch),
                ).fetchall()
                lost: list[int] = []
                for segment_id, schema, gen, day, nonce, ciphertext in rows:
                    plain = self._plaintext(segment_id, schema, gen, day, nonce, ciphertext)
                    if plain is None:  # corrupt or expired: nothing to carry over
                        lost.append(int(segment_id))
                        continue
                    key = self._day_key(new_gen, day, create=True)
                    assert key is not None
                    new_nonce = os.urandom(12)
                    aad = _aad(segment_id, schema, new_gen, day)
                    sealed = AESGCM(key).encrypt(new_nonce, plain, aad)
                    self._db.execute(
                        "UPDATE segments SET gen = ?, nonce = ?, ciphertext = ? WHERE id = ?",
                        (new_gen, new_nonce, sealed, segment_id),
                    )
                if lost:
                    self._db.executemany("DELETE FROM segments WHERE id = ?", [(i,) for i in lost])
                self._commit()
            except BaseException as exc:
                self._abort(exc)
                raise
            done += len(rows) - len(lost)
            dropped += len(lost)
            if len(rows) < batch:
                break
        self._begin_write()
        row = self._db.execute("SELECT value FROM meta WHERE name = 'manifest'").fetchone()
        if row is not None:  # an untrustworthy manifest stays so under the new key
            with contextlib.suppress(ManifestError):
                manifest = open_manifest(self._keys, bytes(row[0]))[1]
                self._store_manifest(manifest, new_gen)
        self._commit()
        return done, dropped
