"""The vault's data key, and the key-encryption key that wraps it.

A random 256-bit data key encrypts every segment. It is stored only wrapped
(AES-GCM) by a key-encryption key derived from the employee's passphrase with
scrypt. Destroying the wrapped key file crypto-shreds the vault.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

ENV_PASSPHRASE: Final = "HEARTH_PASSPHRASE"  # noqa: S105
KEY_FILE: Final = "key.json"
_WRAP_AAD: Final = b"hearth-data-key-v1"
SCRYPT_N: Final = 2**15


class KeyError_(Exception):
    """Base for key problems; the message says what to do."""


class NoKeySourceError(KeyError_):
    """Neither a usable keyring nor a passphrase is available."""


class WrongPassphraseError(KeyError_):
    """The passphrase does not unwrap the data key."""


@dataclass(frozen=True)
class WrappedKey:
    """The on-disk form of the data key: never the key itself."""

    salt: bytes
    nonce: bytes
    ciphertext: bytes
    scrypt_n: int = SCRYPT_N

    def to_json(self) -> str:
        """Serialize for the key file."""
        return json.dumps(
            {
                "version": 1,
                "kek": "scrypt",
                "scrypt_n": self.scrypt_n,
                "salt": self.salt.hex(),
                "nonce": self.nonce.hex(),
                "wrapped": self.ciphertext.hex(),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> WrappedKey:
        """Parse the key file."""
        data = json.loads(text)
        return cls(
            salt=bytes.fromhex(data["salt"]),
            nonce=bytes.fromhex(data["nonce"]),
            ciphertext=bytes.fromhex(data["wrapped"]),
            scrypt_n=int(data["scrypt_n"]),
        )


def passphrase_from_env() -> str:
    """Return the passphrase from ``HEARTH_PASSPHRASE`` or explain how to give one."""
    passphrase = os.environ.get(ENV_PASSPHRASE)
    if not passphrase:
        raise NoKeySourceError(
            f"no key source for the vault: set {ENV_PASSPHRASE} (or unlock the OS keyring)"
        )
    return passphrase


def _kek(passphrase: str, salt: bytes, n: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=8, p=1).derive(passphrase.encode("utf-8"))


def wrap(data_key: bytes, passphrase: str) -> WrappedKey:
    """Wrap ``data_key`` under a fresh scrypt-derived key."""
    salt, nonce = os.urandom(16), os.urandom(12)
    kek = _kek(passphrase, salt, SCRYPT_N)
    return WrappedKey(salt, nonce, AESGCM(kek).encrypt(nonce, data_key, _WRAP_AAD))


def unwrap(wrapped: WrappedKey, passphrase: str) -> bytes:
    """Recover the data key; a wrong passphrase is a clear error, never garbage."""
    kek = _kek(passphrase, wrapped.salt, wrapped.scrypt_n)
    try:
        return AESGCM(kek).decrypt(wrapped.nonce, wrapped.ciphertext, _WRAP_AAD)
    except InvalidTag:
        raise WrongPassphraseError(
            "wrong passphrase for this vault: check HEARTH_PASSPHRASE"
        ) from None


def load_or_create_data_key(directory: Path, passphrase: str | None = None) -> bytes:
    """Return the vault's data key, creating and wrapping a new one on first use."""
    passphrase = passphrase if passphrase is not None else passphrase_from_env()
    path = directory / KEY_FILE
    if path.exists():
        return unwrap(WrappedKey.from_json(path.read_text()), passphrase)
    data_key = AESGCM.generate_key(bit_length=256)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(wrap(data_key, passphrase).to_json())
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    return data_key
