"""The vault's database under its keys: day keys, the sealed manifest and its anchor, writes.

``VaultStore`` is the bottom of ``client.storage.vault.Vault``: what every part of the
vault (reading, retention, rotation, migration) shares: the day key of a segment, the
manifest sealed in the database (and anchored outside it), one write transaction at
a time, and the checkpoints that keep the WAL from holding old ciphertext.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Final, Self

from client.storage.day_keys import (
    DayKeys,
    load_day_keys,
    store_day_keys,
)
from client.storage.keys import (
    VaultKeyError,
)
from client.storage.vault_anchor import AnchorError, VaultAnchor
from client.storage.vault_manifest import (
    Audit,
    Manifest,
    ManifestError,
    open_manifest,
    seal_manifest,
)

_log = logging.getLogger(__name__)

DB_FILE: Final = "vault.db"


DB_FILES: Final = (DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm", DB_FILE + "-journal")


_SCHEMA_SQL: Final = """
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    schema INTEGER NOT NULL,
    gen INTEGER NOT NULL,
    day INTEGER NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS segments_day ON segments (day);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


class StaleKeyError(VaultKeyError):
    """The key generation held by this process is no longer the one the vault writes under."""

    def __init__(self) -> None:
        super().__init__("the vault key was rotated while hearth had it open: restart hearth")


_CHECKPOINT_TRIES: Final = 50


_BUSY_MS: Final = 5000


class VaultFullError(OSError):
    """The disk is full: nothing was written, nothing committed was harmed."""

    def __init__(self) -> None:
        super().__init__(
            errno.ENOSPC,
            "the vault's disk is full: free some space under HEARTH_HOME; "
            "recording resumes writing when space returns",
        )


class VaultRollbackError(VaultKeyError):
    """The vault is an older copy of itself (or its anchor is gone): training is refused."""


DELETE_HINT: Final = (
    "training is refused until you run `hearth data delete` to start a new vault "
    "(the privacy ledger is kept)"
)


def _rollback_message(found: int, anchored: int, where: str) -> str:
    if anchored < 0:
        what = f"the vault's anchor in {where} is missing (vault.db is at write {found})"
    else:
        what = (
            f"vault.db is an older copy of itself (write {found}, {where} records write "
            f"{anchored}): data deleted since may be back, newer data gone"
        )
    return f"{what}; {DELETE_HINT}"


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()


class VaultStore:
    """An open vault database: its keys, manifest, anchor and write transactions."""

    # Set by ``Vault.__init__``, which opens the database.
    directory: Path
    _gen: int  # the data-key generation new segments are sealed under
    _keys: dict[int, bytes]  # data keys by generation
    _manifest_seen: tuple[bytes, Manifest] | None  # the manifest as last sealed or opened
    _days: dict[int, DayKeys]
    # Ids skipped while reading: failed authentication, or not live in the manifest.
    corrupt_segments: list[int]
    manifest_error: str | None
    # Set when vault.db is older than its anchor: reported, and training refuses it.
    rollback: str | None
    _anchor: VaultAnchor
    _anchor_pending: tuple[int, str] | None
    _anchor_seen: int  # the anchor is never lowered by this process
    _db: sqlite3.Connection

    def _secure_files(self) -> None:
        """Owner-only modes on the database and its -wal/-shm companions."""
        for name in DB_FILES:
            path = self.directory / name
            try:
                loose = os.stat(path).st_mode & 0o077  # one stat (this runs at every append)
            except FileNotFoundError:
                continue
            if loose:
                path.chmod(0o600)

    # -- keys --------------------------------------------------------------

    def _day_key(self, gen: int, day: int, create: bool = False) -> bytes | None:
        """The key of ``day`` under data-key generation ``gen``.

        A key missing from memory is looked up again on disk (another process may
        have started the day); ``create`` (only inside a write transaction) makes it.
        """
        days = self._days.get(gen)
        if days is None:
            return None
        key = days.keys.get(day)
        if key is None:
            days = self._days[gen] = load_day_keys(self.directory, gen, self._keys[gen])
            key = days.keys.get(day)
        if key is None and create:
            days = days.with_day(day)
            store_day_keys(self.directory, self._keys[gen], days)
            self._days[gen] = days
            key = days.keys[day]
        return key

    def _forget_days(self, doomed: set[int], horizon: int | None = None) -> None:
        """Crypto-shred days: their keys leave the day-key file (inside a write transaction)."""
        days = load_day_keys(self.directory, self._gen, self._keys[self._gen])
        if doomed & days.keys.keys() or (horizon or 0) > days.horizon:
            days = days.without(doomed, horizon)
            store_day_keys(self.directory, self._keys[self._gen], days)
        self._days[self._gen] = days

    # -- the manifest ---------------------------------------------------------

    def _load_manifest(self) -> Manifest:
        row = self._db.execute("SELECT value FROM meta WHERE name = 'manifest'").fetchone()
        if row is None:
            raise ManifestError("the vault's manifest is missing")
        blob = bytes(row[0])
        # The very bytes this vault last sealed or opened (under keys it never changes)
        # say what they said then: opening the manifest at every append (key derivation,
        # decryption, JSON) was a third of the recorder's cost of sealing a segment.
        cached = self._manifest_seen
        if cached is not None and cached[0] == blob:
            return cached[1]
        manifest = open_manifest(self._keys, blob)[1]
        self._manifest_seen = (blob, manifest)
        return manifest

    def _store_manifest(self, manifest: Manifest, generation: int | None = None) -> None:
        gen = self._gen if generation is None else generation
        manifest = replace(manifest, writes=manifest.writes + 1)
        blob = seal_manifest(self._keys[gen], gen, manifest)
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('manifest', ?)", (blob,))
        self._anchor_pending = (manifest.writes, hashlib.sha256(blob).hexdigest())
        self._manifest_seen = (blob, manifest)

    def _commit(self) -> None:
        """Commit, then anchor the manifest written in the transaction (if one was)."""
        self._db.execute("COMMIT")
        pending, self._anchor_pending = self._anchor_pending, None
        if pending is not None:
            self._write_anchor(*pending)

    def _write_anchor(self, counter: int, digest: str) -> None:
        """Anchor (counter, digest) outside vault.db; never lower, never fatal to a write.

        After the commit: a crash in between leaves the vault one write ahead of its
        anchor, which is accepted (only an older vault is suspect).
        """
        if counter <= self._anchor_seen:
            return
        try:
            self._anchor.write(counter, digest)
        except Exception as exc:  # a locked keyring, a full disk: the next write retries
            _log.warning("the vault's anchor was not written: %s", type(exc).__name__)
            return
        self._anchor_seen = counter

    def _check_anchor(self) -> None:
        """Compare the manifest's write counter with its anchor; flag an older vault.

        A vault without an anchor yet (written before anchors existed) adopts one. A
        flag is sealed into the manifest, so writing on into the old copy does not make
        it look current; only ``hearth data delete`` clears it. Both are read under the
        write lock: another process (the recorder) committing and anchoring between the
        two reads would otherwise look like a rollback, and the flag is for good.
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            finding = self._anchor_finding()
        finally:
            if self._db.in_transaction:
                self._db.execute("COMMIT")
        if finding is not None:
            self._flag_rollback(*finding)

    def _anchor_finding(self) -> tuple[Manifest, int, str] | None:
        """What ``_check_anchor`` must flag (the manifest, the anchored counter, why), if any."""
        row = self._db.execute("SELECT value FROM meta WHERE name = 'manifest'").fetchone()
        manifest = self._manifest_or_none()
        if row is None or manifest is None:
            return None  # reported as a manifest error already
        where = self._anchor.where
        if manifest.rolled_back is not None:
            found, anchored = manifest.rolled_back
            self.rollback = _rollback_message(found, anchored, where)
            return None
        digest = hashlib.sha256(bytes(row[0])).hexdigest()
        try:
            stored = self._anchor.read()
        except AnchorError as exc:
            return manifest, -1, f"{exc}; {DELETE_HINT}"
        except Exception as exc:  # a locked or missing keyring: cannot check now
            _log.warning("the vault's anchor could not be read: %s", type(exc).__name__)
            return None
        if stored is None:
            if manifest.writes > 1:
                return manifest, -1, _rollback_message(manifest.writes, -1, where)
            self._write_anchor(manifest.writes, digest)  # a vault from before anchors adopts one
            return None
        counter = stored[0]
        if manifest.writes > counter or (manifest.writes, digest) == stored:
            self._anchor_seen = counter
            self._write_anchor(manifest.writes, digest)  # a crash came between the two
            return None
        return manifest, counter, _rollback_message(manifest.writes, counter, where)

    def _flag_rollback(self, manifest: Manifest, anchored: int, message: str) -> None:
        """Seal the finding into the manifest (its counter past the anchor), and report it."""
        _log.warning("%s", message)
        self.rollback = message
        self._anchor_seen = max(self._anchor_seen, anchored)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            current = self._load_manifest()
            flagged = replace(
                current,
                rolled_back=(manifest.writes, anchored),
                writes=max(current.writes, anchored),
            )
            self._store_manifest(flagged)
            self._commit()
        except (sqlite3.Error, ManifestError) as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._anchor_pending = None
            _log.warning("the vault's rollback could not be recorded: %s", type(exc).__name__)

    def _manifest_or_none(self) -> Manifest | None:
        """The manifest for reading; None (noted in ``manifest_error``) when untrustworthy."""
        try:
            return self._load_manifest()
        except ManifestError as exc:
            _log.warning("%s", exc)
            self.manifest_error = str(exc)
            return None

    def audit(self) -> Audit:
        """Stored segments against the manifest: dropped ones, and ones that do not belong.

        With no trustworthy manifest, every stored segment is unexpected.
        """
        ids = (int(r[0]) for r in self._db.execute("SELECT id FROM segments ORDER BY id"))
        manifest = self._manifest_or_none()
        if manifest is None:
            return Audit(unexpected=tuple(ids))
        return manifest.audit(ids)

    # -- transactions -------------------------------------------------------------

    def _begin_write(self) -> None:
        """Take the write lock; refuse when this process's key generation is stale."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_disk_full(exc):
                raise VaultFullError() from None
            raise
        written = self._db.execute("SELECT value FROM meta WHERE name = 'write_gen'").fetchone()
        if int(written[0]) != self._gen:
            self._db.execute("ROLLBACK")
            raise StaleKeyError()

    def _abort(self, exc: BaseException) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        if _is_disk_full(exc):
            raise VaultFullError() from None

    def _checkpoint(self, required: bool = False) -> bool:
        """Checkpoint the WAL into the database and truncate it to zero bytes.

        Returns whether it completed. A reader in the middle of a transaction blocks
        it: then the next write (or close) tries again; ``required`` retries for a
        few seconds and then fails.
        """
        tries = _CHECKPOINT_TRIES if required else 1
        self._db.execute("PRAGMA busy_timeout=20")
        try:
            for attempt in range(tries):
                busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                if not busy:
                    self._db.execute("DELETE FROM meta WHERE name = 'shred_pending'")
                    if (
                        self._db.total_changes
                        and self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                    ):
                        continue
                    return True
                if attempt + 1 < tries:
                    time.sleep(0.1)
        finally:
            self._db.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        if required:
            raise VaultKeyError(
                "another program keeps the vault open (the dashboard?); close it and "
                "run the command again"
            )
        return False

    def _checkpoint_if_pending(self) -> None:
        if self._db.execute("SELECT 1 FROM meta WHERE name = 'shred_pending'").fetchone():
            self._checkpoint()

    def close(self) -> None:
        """Close the database (truncating the WAL first if a deletion still waits for it)."""
        with contextlib.suppress(sqlite3.Error):
            self._checkpoint_if_pending()
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------

    def version(self) -> tuple[int, int, int]:
        """(segment count, newest id, purge revision): changes whenever the contents change."""
        row = self._db.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM segments").fetchone()
        manifest = self._manifest_or_none()
        return int(row[0]), int(row[1]), -1 if manifest is None else manifest.revision

    @property
    def purged_events(self) -> int:
        """Events deleted so far because their modality was revoked."""
        manifest = self._manifest_or_none()
        return 0 if manifest is None else manifest.purged

    def size(self) -> int:
        """Bytes of sealed event data (what the quota counts)."""
        row = self._db.execute("SELECT COALESCE(SUM(length(ciphertext)), 0) FROM segments")
        return int(row.fetchone()[0])
