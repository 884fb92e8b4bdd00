"""Per-day data keys: segments of one day share a key, so retention can destroy a day.

Each UTC day gets its own random AES-256 key. The set of day keys of one key
generation is sealed under that generation's vault key in a small file
(``days.<generation>.bin``) outside the SQLite database, so no copy of a day key
lingers in the database's WAL or free pages: dropping a day's key from the file
(rewritten atomically, the replaced bytes overwritten) crypto-shreds every segment
of that day, wherever its ciphertext may still lie. ``horizon`` is the first day
retention has not yet destroyed: a segment of an earlier day has expired, it is not
corrupt.

Writers change this file only while holding the vault database's write lock, so
the recorder and a training round never lose each other's updates.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from client.storage.keys import VaultKeyError
from client.storage.shredding import replace_file, shred_file

DAY_SECONDS: Final = 86400
_HEADER: Final = struct.Struct(">I12s")


def day_of(wall_time: float) -> int:
    """The UTC day number (days since 1970-01-01) of a wall-clock time."""
    return int(wall_time // DAY_SECONDS)


def day_keys_path(directory: Path, generation: int) -> Path:
    """Where the day keys of ``generation`` live."""
    return directory / f"days.{generation}.bin"


@dataclass(frozen=True)
class DayKeys:
    """The day keys of one vault-key generation."""

    generation: int
    horizon: int = 0
    keys: dict[int, bytes] = field(default_factory=dict)

    def with_day(self, day: int) -> DayKeys:
        """A copy that holds a fresh key for ``day``."""
        return DayKeys(self.generation, self.horizon, {**self.keys, day: os.urandom(32)})

    def without(self, days: set[int], horizon: int | None = None) -> DayKeys:
        """A copy without ``days``' keys (and the horizon moved forward, never back)."""
        keys = {d: k for d, k in self.keys.items() if d not in days}
        return DayKeys(self.generation, max(self.horizon, horizon or 0), keys)


def _aad(generation: int) -> bytes:
    return b"hearth-day-keys:%d" % generation


def load_day_keys(directory: Path, generation: int, vault_key: bytes) -> DayKeys:
    """The day keys of ``generation`` (none yet when the file does not exist)."""
    path = day_keys_path(directory, generation)
    if not path.exists():
        return DayKeys(generation)
    blob = path.read_bytes()
    try:
        stored, nonce = _HEADER.unpack_from(blob)
        if stored != generation:
            raise ValueError(stored)
        payload = AESGCM(vault_key).decrypt(nonce, blob[_HEADER.size :], _aad(generation))
        data = json.loads(payload)
        keys = {int(d): bytes.fromhex(k) for d, k in data["days"].items()}
        return DayKeys(generation, int(data["horizon"]), keys)
    except (InvalidTag, ValueError, KeyError, TypeError, struct.error):
        raise VaultKeyError(
            f"the vault's day keys ({path.name}) are damaged or do not match its key"
        ) from None


def store_day_keys(directory: Path, vault_key: bytes, day_keys: DayKeys) -> None:
    """Seal and atomically replace the day-key file, overwriting what it replaced."""
    payload = json.dumps(
        {"horizon": day_keys.horizon, "days": {d: k.hex() for d, k in day_keys.keys.items()}}
    ).encode()
    nonce = os.urandom(12)
    sealed = AESGCM(vault_key).encrypt(nonce, payload, _aad(day_keys.generation))
    replace_file(
        day_keys_path(directory, day_keys.generation),
        _HEADER.pack(day_keys.generation, nonce) + sealed,
    )


def destroy_day_keys(directory: Path, generation: int) -> None:
    """Overwrite and remove the day keys of ``generation`` (after a rotation)."""
    path = day_keys_path(directory, generation)
    if path.exists():
        shred_file(path)
