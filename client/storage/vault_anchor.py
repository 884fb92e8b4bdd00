"""The vault manifest's anchor: its write counter and hash, where a copy of vault.db cannot reach.

The sealed manifest (``client.storage.vault_manifest``) catches a dropped or re-inserted
segment, but not the whole ``vault.db`` put back as an older copy of itself:
the old manifest comes back with it and is just as authentic. Every manifest
write bumps a counter; after each commit the (counter, SHA-256 of the sealed
manifest) pair is anchored outside the database, the way the privacy ledger is
(``client.storage.ledger_anchor``): in the OS keyring when the vault key is wrapped
there, else in ``vault/vault.anchor`` sealed under a key derived from the data
key. A vault older than its anchor (or a different one with the same counter)
is reported and refuses training.

What it cannot catch: a restore of the whole vault directory including
``vault.anchor`` (passphrase-wrapped vaults), or of the home directory with a
file-based keyring; and a copy taken and put back before any write happened
between the two.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from client.storage.key_lifecycle import staged_generation
from client.storage.keys import keyring_usable, read_key_file

KEYRING_SERVICE: Final = "hearth-vault-manifest"
ANCHOR_FILE: Final = "vault.anchor"
_INFO: Final = b"hearth-vault-anchor-v1"
_HEADER: Final = struct.Struct(">I12s")


class AnchorError(Exception):
    """The anchor exists but cannot be read (damaged or forged)."""


class VaultAnchor(Protocol):
    """Where the newest manifest's (counter, digest) lives."""

    where: str

    def read(self) -> tuple[int, str] | None:
        """The anchored (counter, SHA-256 hex), or None when nothing is anchored."""

    def write(self, counter: int, digest: str) -> None:
        """Anchor a new (counter, digest)."""

    def destroy(self) -> None:
        """Forget the anchor (the vault is being destroyed)."""


def _parse(stored: str) -> tuple[int, str]:
    counter, _, digest = stored.partition(":")
    if not counter.isdigit() or len(digest) != 64:
        raise AnchorError("the vault's anchor is damaged")
    return int(counter), digest


class KeyringVaultAnchor:
    """The anchor as an OS keyring entry, next to the secret that wraps the vault key."""

    where = "the OS keyring"

    def __init__(self, directory: Path) -> None:
        self.name = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:32]

    def read(self) -> tuple[int, str] | None:
        """The anchored pair, or None when the entry does not exist."""
        import keyring  # noqa: PLC0415 (optional at runtime, as in client.storage.keys)

        stored = keyring.get_password(KEYRING_SERVICE, self.name)
        return None if stored is None else _parse(stored)

    def write(self, counter: int, digest: str) -> None:
        """Replace the entry."""
        import keyring  # noqa: PLC0415

        keyring.set_password(KEYRING_SERVICE, self.name, f"{counter}:{digest}")

    def destroy(self) -> None:
        """Delete the entry, if there is one."""
        import keyring  # noqa: PLC0415
        from keyring.errors import PasswordDeleteError  # noqa: PLC0415

        with contextlib.suppress(PasswordDeleteError):
            keyring.delete_password(KEYRING_SERVICE, self.name)


def _key(data_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(data_key)


class FileVaultAnchor:
    """The anchor sealed in ``vault/vault.anchor`` (vaults whose key a passphrase wraps).

    Sealed under the current data key generation, so it cannot be edited to a lower
    counter; it catches ``vault.db`` (and the day keys) put back, not the whole
    directory restored with it.
    """

    where = f"the anchor file {ANCHOR_FILE}"

    def __init__(self, directory: Path, keys: Mapping[int, bytes]) -> None:
        self.path = directory / ANCHOR_FILE
        self._keys = keys  # the vault's data keys by generation (live: rotation adds one)
        self._aeads: dict[int, AESGCM] = {}

    def _aead(self, generation: int) -> AESGCM:
        if generation not in self._aeads:
            self._aeads[generation] = AESGCM(_key(self._keys[generation]))
        return self._aeads[generation]

    def read(self) -> tuple[int, str] | None:
        """The sealed pair, or None when there is no anchor file."""
        if not self.path.exists():
            return None
        blob = self.path.read_bytes()
        if len(blob) < _HEADER.size + 16:
            raise AnchorError(f"the vault's anchor {ANCHOR_FILE} is truncated")
        generation, nonce = _HEADER.unpack_from(blob)
        if generation not in self._keys:
            if generation == staged_generation(self.path.parent):
                # A rotation being resumed: its new key is not unlocked yet.
                raise LookupError("the anchor is sealed under the rotation's new key")
            raise AnchorError(f"the vault's anchor {ANCHOR_FILE} is sealed under an unknown key")
        try:
            plain = self._aead(generation).decrypt(
                nonce, blob[_HEADER.size :], _HEADER.pack(generation, nonce)
            )
            return _parse(plain.decode("ascii"))
        except (InvalidTag, UnicodeDecodeError):
            raise AnchorError(f"the vault's anchor {ANCHOR_FILE} failed authentication") from None

    def write(self, counter: int, digest: str) -> None:
        """Seal under the newest generation and atomically replace the file."""
        gen = max(self._keys)
        nonce = os.urandom(12)
        header = _HEADER.pack(gen, nonce)
        sealed = self._aead(gen).encrypt(nonce, f"{counter}:{digest}".encode(), header)
        tmp = self.path.with_name(ANCHOR_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(header + sealed)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)

    def destroy(self) -> None:
        """Remove the file."""
        self.path.unlink(missing_ok=True)


def vault_anchor(directory: Path, keys: Mapping[int, bytes]) -> VaultAnchor:
    """The OS keyring when the vault key is wrapped there and it is usable, else the file."""
    wrapped = read_key_file(directory)
    if wrapped is not None and wrapped.kek == "keyring" and keyring_usable():
        return KeyringVaultAnchor(directory)
    return FileVaultAnchor(directory, keys)


def destroy_anchor(directory: Path) -> None:
    """Forget a destroyed vault's anchor (keyring entry and file), so a new vault starts clean."""
    if keyring_usable():
        with contextlib.suppress(Exception):  # a locked keyring: the entry is only a counter
            KeyringVaultAnchor(directory).destroy()
    (directory / ANCHOR_FILE).unlink(missing_ok=True)
