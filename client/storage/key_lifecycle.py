"""A data key's later life: the next generation staged and committed, the old one destroyed.

``Vault.rotate`` stages the next key (``key.next.json``), re-encrypts, then commits
it by rename and shreds the old key file and its keyring secret; an interrupted
commit is finished on the next open. ``destroy_key`` crypto-shreds a vault's keys
outright (``hearth data delete``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from client.storage.keys import (
    ENV_NEW_PASSPHRASE,
    KEY_FILE,
    KEYRING_SERVICE,
    NEXT_KEY_FILE,
    NoKeySourceError,
    VaultKeyError,
    WrappedKey,
    _keyring_name,
    _keyring_secret,
    _secret_for,
    _write_key_file,
    key_generation,
    keyring_usable,
    unwrap,
    wrap,
)
from client.storage.shredding import _overwrite, shred_file
from policy.durable import fsync_directory


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
    fsync_directory(directory)
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
