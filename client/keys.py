"""The vault's data key, and the key-encryption key (KEK) that wraps it.

A random 256-bit data key encrypts every segment. On disk it exists only
wrapped (AES-GCM) by a KEK that comes from the OS keyring when one is usable,
else from the employee's passphrase through scrypt. There is no fallback: with
neither, opening the vault fails with one line that says what to do.
Destroying the wrapped key (and the keyring entry) crypto-shreds the vault.

Key files carry a generation (bound into the wrap's associated data): a real
rotation (``client.vault.Vault.rotate``) writes the next generation's key to
``key.next.json`` first and makes it ``key.json`` only once every segment is
re-encrypted; the old file is then overwritten and the old keyring entry deleted.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

ENV_PASSPHRASE: Final = "HEARTH_PASSPHRASE"  # noqa: S105
ENV_NEW_PASSPHRASE: Final = "HEARTH_NEW_PASSPHRASE"  # noqa: S105
ENV_KEYRING: Final = "HEARTH_KEYRING"  # "0" disables the OS keyring
KEY_FILE: Final = "key.json"
NEXT_KEY_FILE: Final = "key.next.json"
KEYRING_SERVICE: Final = "hearth-vault"
_WRAP_AAD: Final = b"hearth-data-key-v1"
KEY_FILE_VERSION: Final = 2
SCRYPT_N: Final = 2**15

KekSource = Literal["scrypt", "keyring"]


class VaultKeyError(Exception):
    """Base for key problems; the message says what to do."""


class NoKeySourceError(VaultKeyError):
    """Neither a usable keyring nor a passphrase is available."""


class WrongPassphraseError(VaultKeyError):
    """The passphrase (or keyring secret) does not unwrap the data key."""


@dataclass(frozen=True)
class WrappedKey:
    """The on-disk form of the data key: never the key itself."""

    kek: KekSource
    salt: bytes
    nonce: bytes
    ciphertext: bytes
    scrypt_n: int = SCRYPT_N
    # Version 1 files (no generation) are still read; version 2 binds the generation.
    version: int = KEY_FILE_VERSION
    generation: int = 0

    @property
    def aad(self) -> bytes:
        """Associated data of the wrap: a file edited to another generation fails."""
        if self.version == 1:
            return _WRAP_AAD
        return b"hearth-data-key-v2:%d" % self.generation

    def to_json(self) -> str:
        """Serialize for the key file."""
        return json.dumps(
            {
                "version": self.version,
                "generation": self.generation,
                "kek": self.kek,
                "scrypt_n": self.scrypt_n,
                "salt": self.salt.hex(),
                "nonce": self.nonce.hex(),
                "wrapped": self.ciphertext.hex(),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> WrappedKey:
        """Parse the key file; a damaged file is a clear error."""
        try:
            data = json.loads(text)
            kek = data.get("kek", "scrypt")
            version = int(data.get("version", 1))
            if kek not in ("scrypt", "keyring") or version not in (1, KEY_FILE_VERSION):
                raise ValueError(kek)
            return cls(
                version=version,
                generation=int(data.get("generation", 0)) if version > 1 else 0,
                kek=kek,
                salt=bytes.fromhex(data["salt"]),
                nonce=bytes.fromhex(data["nonce"]),
                ciphertext=bytes.fromhex(data["wrapped"]),
                scrypt_n=int(data["scrypt_n"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise VaultKeyError(
                f"the vault key file {KEY_FILE} is damaged; the vault cannot be opened"
            ) from None


# -- KEK sources -------------------------------------------------------------


def _keyring_name(directory: Path, generation: int = 0) -> str:
    name = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:32]
    return name if generation == 0 else f"{name}.{generation}"


def keyring_usable() -> bool:
    """Whether a real OS keyring backend is available (and not disabled)."""
    if os.environ.get(ENV_KEYRING, "1") == "0":
        return False
    try:
        import keyring  # noqa: PLC0415 - optional at runtime
        from keyring.backends import fail  # noqa: PLC0415
    except ImportError:
        return False
    backend = keyring.get_keyring()
    if isinstance(backend, fail.Keyring):
        return False
    backends = getattr(backend, "backends", None)
    return not (backends is not None and not backends)


def _keyring_secret(directory: Path, create: bool, generation: int = 0) -> bytes | None:
    import keyring  # noqa: PLC0415

    name = _keyring_name(directory, generation)
    stored = keyring.get_password(KEYRING_SERVICE, name)
    if stored is None and create:
        stored = os.urandom(32).hex()
        keyring.set_password(KEYRING_SERVICE, name, stored)
    return bytes.fromhex(stored) if stored else None


def passphrase_from_env_or_prompt(variable: str = ENV_PASSPHRASE, confirm: bool = False) -> str:
    """The passphrase from the environment, or asked for on a terminal."""
    passphrase = os.environ.get(variable)
    if passphrase:
        return passphrase
    if sys.stdin.isatty():
        passphrase = getpass.getpass("hearth vault passphrase: ")
        if confirm and getpass.getpass("again: ") != passphrase:
            raise VaultKeyError("the passphrases do not match")
        if passphrase:
            return passphrase
    raise NoKeySourceError(
        f"no key for the vault: unlock an OS keyring, or set {variable}, or run hearth "
        "in a terminal to type a passphrase"
    )


def _kek_from_passphrase(passphrase: str, salt: bytes, n: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=8, p=1).derive(passphrase.encode("utf-8"))


def _kek_from_keyring_secret(secret: bytes, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_WRAP_AAD).derive(secret)


# -- wrapping ---------------------------------------------------------------


def wrap(
    data_key: bytes, kek_source: KekSource, secret: bytes | str, generation: int = 0
) -> WrappedKey:
    """Wrap ``data_key`` (of ``generation``) under a passphrase (scrypt) or a keyring secret."""
    salt, nonce, cost = os.urandom(16), os.urandom(12), SCRYPT_N
    kek = (
        _kek_from_passphrase(secret, salt, cost)
        if isinstance(secret, str)
        else _kek_from_keyring_secret(secret, salt)
    )
    shell = WrappedKey(kek_source, salt, nonce, b"", generation=generation)
    return WrappedKey(
        kek_source,
        salt,
        nonce,
        AESGCM(kek).encrypt(nonce, data_key, shell.aad),
        scrypt_n=cost,
        generation=generation,
    )


def unwrap(wrapped: WrappedKey, secret: bytes | str) -> bytes:
    """Recover the data key; a wrong secret is a clear error, never garbage."""
    kek = (
        _kek_from_passphrase(secret, wrapped.salt, wrapped.scrypt_n)
        if isinstance(secret, str)
        else _kek_from_keyring_secret(secret, wrapped.salt)
    )
    try:
        return AESGCM(kek).decrypt(wrapped.nonce, wrapped.ciphertext, wrapped.aad)
    except InvalidTag:
        raise WrongPassphraseError(
            f"wrong passphrase for this vault: check {ENV_PASSPHRASE}"
            if wrapped.kek == "scrypt"
            else "the OS keyring holds a different secret for this vault"
        ) from None


def _write_key_file(path: Path, wrapped: WrappedKey) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(wrapped.to_json())
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def _secret_for(
    wrapped_kek: KekSource, directory: Path, passphrase: str | None, generation: int = 0
) -> bytes | str:
    if wrapped_kek == "keyring":
        secret = _keyring_secret(directory, False, generation) if keyring_usable() else None
        if secret is None:
            raise NoKeySourceError(
                "this vault's key is in the OS keyring, which is locked or unavailable"
            )
        return secret
    return passphrase if passphrase is not None else passphrase_from_env_or_prompt()


def load_or_create_data_key(directory: Path, passphrase: str | None = None) -> bytes:
    """Return the vault's data key, creating and wrapping a new one on first use.

    An explicit ``passphrase`` (or ``HEARTH_PASSPHRASE``) chooses scrypt; otherwise
    a usable OS keyring is preferred for a new vault.
    """
    path = directory / KEY_FILE
    if path.exists():
        wrapped = WrappedKey.from_json(path.read_text())
        return unwrap(wrapped, _secret_for(wrapped.kek, directory, passphrase, wrapped.generation))
    data_key = AESGCM.generate_key(bit_length=256)
    if passphrase is None and not os.environ.get(ENV_PASSPHRASE) and keyring_usable():
        secret = _keyring_secret(directory, create=True)
        assert secret is not None
        _write_key_file(path, wrap(data_key, "keyring", secret))
    else:
        chosen = passphrase or passphrase_from_env_or_prompt(confirm=True)
        _write_key_file(path, wrap(data_key, "scrypt", chosen))
    return data_key


def key_generation(directory: Path) -> int:
    """The generation of the vault's current key file (0 for a version-1 file)."""
    return WrappedKey.from_json((directory / KEY_FILE).read_text()).generation


def key_kek(directory: Path) -> KekSource:
    """Where the KEK of the vault's key comes from (a passphrase or the OS keyring)."""
    return WrappedKey.from_json((directory / KEY_FILE).read_text()).kek


def key_file_version(directory: Path) -> int:
    """1 for a key file from before generations (its vault has the old layout), else 2."""
    return WrappedKey.from_json((directory / KEY_FILE).read_text()).version


def upgrade_key_file(directory: Path, passphrase: str | None = None) -> None:
    """Rewrite a version-1 key file as version 2 (same key, same secret, generation 0).

    A passphrase wrap at today's scrypt cost keeps its salt and reuses the KEK the
    unwrap derived: one derivation instead of two, and vaults that shared a salt (a
    synthetic population, ``client.device_cache``) still share it, so a migrated
    population still opens with one derivation per process, not one per device.
    A fresh nonce seals the key again; an older cost is re-derived at today's.
    """
    path = directory / KEY_FILE
    wrapped = WrappedKey.from_json(path.read_text())
    if wrapped.version != 1:
        return
    secret = _secret_for(wrapped.kek, directory, passphrase)
    if isinstance(secret, str) and wrapped.scrypt_n == SCRYPT_N:
        kek = passphrase_kek(secret, wrapped.salt, wrapped.scrypt_n)
        data_key = unwrap_with_kek(wrapped, kek)
        _write_key_file(path, wrap_with_kek(data_key, kek, wrapped.salt, wrapped.scrypt_n))
        return
    _write_key_file(path, wrap(unwrap(wrapped, secret), wrapped.kek, secret))


def rewrap_key(directory: Path, new_passphrase: str, passphrase: str | None = None) -> None:
    """Re-wrap a data key under a new passphrase, the key itself unchanged.

    Only for keys whose data is not the vault's (the privacy ledger's); the vault
    rotates its key for real with ``Vault.rotate``.
    """
    data_key = load_or_create_data_key(directory, passphrase)
    generation = key_generation(directory)
    _write_key_file(directory / KEY_FILE, wrap(data_key, "scrypt", new_passphrase, generation))


def stage_next_key(directory: Path, new_passphrase: str | None) -> bytes:
    """The next generation's data key, written wrapped to ``key.next.json`` (or read back).

    ``new_passphrase`` None wraps it under a fresh OS keyring secret. When a rotation
    was interrupted the staged key is unwrapped again (with the same new secret), so
    the rotation resumes under the key it began with.
    """
    current = WrappedKey.from_json((directory / KEY_FILE).read_text())
    generation = current.generation + 1
    path = directory / NEXT_KEY_FILE
    if path.exists():
        staged = WrappedKey.from_json(path.read_text())
        return unwrap(staged, _secret_for(staged.kek, directory, new_passphrase, generation))
    data_key = AESGCM.generate_key(bit_length=256)
    if new_passphrase is None:
        if not keyring_usable():
            raise NoKeySourceError(
                f"no new key source: set {ENV_NEW_PASSPHRASE} or unlock an OS keyring"
            )
        secret = _keyring_secret(directory, create=True, generation=generation)
        assert secret is not None
        _write_key_file(path, wrap(data_key, "keyring", secret, generation))
    else:
        _write_key_file(path, wrap(data_key, "scrypt", new_passphrase, generation))
    return data_key


def staged_generation(directory: Path) -> int | None:
    """The generation of a staged (rotation in progress) key, else None."""
    path = directory / NEXT_KEY_FILE
    return WrappedKey.from_json(path.read_text()).generation if path.exists() else None


def shred_file(path: Path) -> None:
    """Overwrite a file's bytes in place (fsync'd), then remove it."""
    _overwrite(path)
    path.unlink()


def replace_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` (owner-only) and overwrite the bytes it replaced.

    A hard link keeps the old inode reachable across the rename so its content can
    be overwritten; a crash in between leaves it as ``<name>.old``, which
    ``finish_interrupted_commit`` shreds.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    old = path.with_name(path.name + ".old")
    if old.exists():
        old.unlink()
    if path.exists():
        os.link(path, old)
    tmp.replace(path)
    _fsync_dir(path.parent)
    if old.exists():
        shred_file(old)


def _overwrite(path: Path) -> None:
    """Overwrite a file's bytes in place (fsync'd), so its old content is not left behind."""
    size = max(path.stat().st_size, 256)
    with open(path, "r+b") as handle:
        handle.write(os.urandom(size))
        handle.flush()
        os.fsync(handle.fileno())


def _delete_keyring_entry(directory: Path, generation: int) -> None:
    if not keyring_usable():
        return
    import keyring  # noqa: PLC0415
    from keyring.errors import PasswordDeleteError  # noqa: PLC0415

    with contextlib.suppress(PasswordDeleteError):
        keyring.delete_password(KEYRING_SERVICE, _keyring_name(directory, generation))


def commit_next_key(directory: Path) -> None:
    """Make the staged key current; destroy the old key file and its keyring secret.

    Atomic: ``key.next.json`` replaces ``key.json`` by rename. The old file's bytes
    are overwritten first through a hard link that survives the rename, then the
    link is removed. Call only once no data under the old key remains.
    """
    path, staged = directory / KEY_FILE, directory / NEXT_KEY_FILE
    old = WrappedKey.from_json(path.read_text())
    doomed = directory / "key.old"
    if doomed.exists():
        doomed.unlink()
    os.link(path, doomed)
    staged.replace(path)
    _fsync_dir(directory)
    _overwrite(doomed)
    doomed.unlink()
    if old.kek == "keyring":
        _delete_keyring_entry(directory, old.generation)


def finish_interrupted_commit(directory: Path) -> None:
    """Complete a commit cut short after the rename (``key.old`` still on disk)."""
    for doomed in directory.glob("*.old"):
        shred_file(doomed)
    if (directory / KEY_FILE).exists():
        generation = key_generation(directory)
        if generation > 0:
            _delete_keyring_entry(directory, generation - 1)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def destroy_key(directory: Path) -> bool:
    """Crypto-shred: overwrite and remove the wrapped key and its keyring secret."""
    existed = False
    generations = {0}
    for name in (KEY_FILE, NEXT_KEY_FILE, "key.old"):
        path = directory / name
        if path.exists():
            with contextlib.suppress(VaultKeyError):
                generations.add(WrappedKey.from_json(path.read_text()).generation)
            _overwrite(path)
            path.unlink()
            existed = existed or name == KEY_FILE
    for generation in generations:
        _delete_keyring_entry(directory, generation)
    return existed


# -- one KEK for many keys (synthetic populations) ------------------------------


def passphrase_kek(passphrase: str, salt: bytes, n: int = SCRYPT_N) -> bytes:
    """The scrypt KEK a passphrase gives for ``salt``: the expensive step of unwrapping."""
    return _kek_from_passphrase(passphrase, salt, n)


def wrap_with_kek(
    data_key: bytes, kek: bytes, salt: bytes, n: int = SCRYPT_N, generation: int = 0
) -> WrappedKey:
    """Wrap ``data_key`` under a KEK already derived (``passphrase_kek``) for ``salt``.

    The result is an ordinary (current version) scrypt key file of ``generation``:
    ``unwrap`` with the passphrase opens it. Vaults wrapped this way share the salt,
    so one derivation opens them all; only synthetic employees, who share one
    passphrase anyway, are seeded like this.
    """
    nonce = os.urandom(12)
    shell = WrappedKey("scrypt", salt, nonce, b"", scrypt_n=n, generation=generation)
    return WrappedKey(
        "scrypt",
        salt,
        nonce,
        AESGCM(kek).encrypt(nonce, data_key, shell.aad),
        scrypt_n=n,
        generation=generation,
    )


def unwrap_with_kek(wrapped: WrappedKey, kek: bytes) -> bytes:
    """Recover the data key with a KEK already derived for ``wrapped.salt``."""
    try:
        return AESGCM(kek).decrypt(wrapped.nonce, wrapped.ciphertext, wrapped.aad)
    except InvalidTag:
        raise WrongPassphraseError(
            f"wrong passphrase for this vault: check {ENV_PASSPHRASE}"
        ) from None


def read_key_file(directory: Path) -> WrappedKey | None:
    """The wrapped key in ``directory``, or None when it has none yet."""
    path = directory / KEY_FILE
    return WrappedKey.from_json(path.read_text()) if path.exists() else None


def write_key_file(directory: Path, wrapped: WrappedKey) -> None:
    """Write ``directory``'s key file atomically, owner-only."""
    _write_key_file(directory / KEY_FILE, wrapped)
