"""What a device sets up once per process, not once per round.

Profiled on a simulated device (``simulations/benchmarks/scale.py``), a warm round
spent about half its time deriving scrypt key-encryption keys (0.1 s each, one
for the vault and one for the ledger) and a fifth featurizing the vault. In
Flower's simulation engine one worker process serves thousands of simulated
devices over many rounds, so this module keeps, for the life of the process:

- scrypt KEKs by (passphrase digest, salt, cost): a synthetic population shares
  one passphrase and one salt (``simulations.population``), so one derivation
  opens every vault;
- each directory's unwrapped data key, for as long as its key file is unchanged
  (a rotated or destroyed key is read again);
- each vault's actions, compact (``client.learning.featurize.ActionSequence``, 4 bytes an
  action), for as long as the vault's version is unchanged.

The vault format is untouched: keys come from the same key files, through the
same AES-GCM unwrap. Keys are held only for simulated devices (``Device``
decides); a laptop's ClientApp runs each round in a fresh process anyway.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final

from client.learning.featurize import ActionSequence
from client.storage.keys import (
    load_or_create_data_key,
    passphrase_kek,
    read_key_file,
    unwrap_with_kek,
)

_KEKS: dict[tuple[bytes, bytes, int], bytes] = {}
_DATA_KEYS: dict[tuple[Path, int], bytes] = {}
_ACTIONS: dict[Path, tuple[tuple[int, ...], ActionSequence]] = {}
# A laptop holds one vault; a simulation worker as many as it serves devices.
LAPTOP_ENTRIES: Final = 128


def clear() -> None:
    """Forget every key and featurized vault (a fresh process would not have them)."""
    _KEKS.clear()
    _DATA_KEYS.clear()
    _ACTIONS.clear()


def _key_file_stamp(directory: Path) -> int:
    try:
        return (directory / "key.json").stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def data_key(directory: Path, passphrase: str | None) -> bytes:
    """The data key of ``directory`` (created when absent), unwrapped once per process."""
    slot = (directory, _key_file_stamp(directory))
    cached = _DATA_KEYS.get(slot)
    if cached is not None:
        return cached
    wrapped = read_key_file(directory)
    if wrapped is None or wrapped.kek != "scrypt" or passphrase is None:
        key = load_or_create_data_key(directory, passphrase)
        slot = (directory, _key_file_stamp(directory))
    else:
        digest = hashlib.sha256(passphrase.encode("utf-8")).digest()
        kek_slot = (digest, wrapped.salt, wrapped.scrypt_n)
        kek = _KEKS.get(kek_slot)
        if kek is None:
            kek = _KEKS[kek_slot] = passphrase_kek(passphrase, wrapped.salt, wrapped.scrypt_n)
        key = unwrap_with_kek(wrapped, kek)
    _DATA_KEYS[slot] = key
    return key


def cached_actions(vault_dir: Path, version: tuple[int, ...]) -> ActionSequence | None:
    """The actions of ``vault_dir`` at ``version``, if this process featurized them."""
    entry = _ACTIONS.get(vault_dir)
    return entry[1] if entry is not None and entry[0] == version else None


def keep_actions(
    vault_dir: Path, version: tuple[int, ...], actions: ActionSequence, bounded: bool
) -> None:
    """Remember a vault's actions; ``bounded`` keeps at most ``LAPTOP_ENTRIES`` vaults."""
    _ACTIONS.pop(vault_dir, None)
    if bounded and len(_ACTIONS) >= LAPTOP_ENTRIES:
        _ACTIONS.pop(next(iter(_ACTIONS)))
    _ACTIONS[vault_dir] = (version, actions)


def cached_bytes() -> int:
    """Memory the featurized vaults hold (for benchmarks)."""
    return sum(a.nbytes for _, a in _ACTIONS.values())


__all__ = ["cached_actions", "cached_bytes", "clear", "data_key", "keep_actions"]
