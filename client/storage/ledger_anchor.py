"""The privacy ledger's anchor in the OS keyring, next to the entry that wraps the vault key.

A copy of the home directory's files cannot carry an OS keyring entry (Secret Service,
Keychain, Credential Manager) back in time, so restoring an older ``ledger.bin``, even
with its whole directory, is caught. A file-based keyring restored with the home is not.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final

from privacy.ledger import RESET_HINT, LedgerRollbackError

KEYRING_SERVICE: Final = "hearth-ledger"


class KeyringAnchor:
    """(counter, digest) of the newest ledger as an OS keyring entry."""

    where = "the OS keyring"

    def __init__(self, directory: Path) -> None:
        self.name = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:32]

    def read(self) -> tuple[int, str] | None:
        """The anchored (counter, digest), or None when the entry does not exist."""
        import keyring  # noqa: PLC0415 (optional at runtime, as in client.storage.keys)

        stored = keyring.get_password(KEYRING_SERVICE, self.name)
        if stored is None:
            return None
        counter, _, digest = stored.partition(":")
        if not counter.isdigit() or len(digest) != 64:
            raise LedgerRollbackError(f"the ledger's keyring entry is damaged; {RESET_HINT}")
        return int(counter), digest

    def write(self, counter: int, digest: str) -> None:
        """Replace the entry."""
        import keyring  # noqa: PLC0415

        keyring.set_password(KEYRING_SERVICE, self.name, f"{counter}:{digest}")
