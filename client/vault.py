"""The encrypted vault: the only place captured events live on the device.

Events are written in batches ("segments"), each sealed with AES-256-GCM under
the device's data key, with the segment id and schema version as associated
data so a segment cannot be swapped or replayed under another id. Only
non-sensitive metadata (time range, event count per modality) is plaintext.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from client.home import ensure_private_dir, hearth_home
from client.keys import load_or_create_data_key
from policy.events import MODALITY_OF, SCHEMA_VERSION, Event, SchemaError, from_record, to_record

DB_FILE: Final = "vault.db"
DB_FILES: Final = (DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm", DB_FILE + "-journal")
DEFAULT_RETENTION_DAYS: Final = 14.0
DEFAULT_QUOTA_BYTES: Final = 500 * 2**20
_log = logging.getLogger(__name__)
_SCHEMA_SQL: Final = """
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    schema INTEGER NOT NULL,
    wall_start REAL NOT NULL,
    wall_end REAL NOT NULL,
    n_events INTEGER NOT NULL,
    modalities TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS segments_wall_end ON segments (wall_end);
"""


class VaultFullError(OSError):
    """The disk is full: nothing was written, nothing committed was harmed."""

    def __init__(self) -> None:
        super().__init__(
            errno.ENOSPC,
            "the vault's disk is full: free some space under HEARTH_HOME; "
            "recording resumes writing when space returns",
        )


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one retention pass deleted."""

    deleted_by_age: int
    deleted_by_quota: int


def default_vault_dir() -> Path:
    """The device's vault directory: ``hearth_home() / "vault"``."""
    return hearth_home() / "vault"


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()


class CorruptSegmentError(Exception):
    """A segment failed authentication or decoding; it is skipped, never half-read."""

    def __init__(self, segment_id: int, reason: str) -> None:
        super().__init__(f"vault segment {segment_id} is corrupt ({reason}); skipped")
        self.segment_id = segment_id


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """Plaintext metadata of one segment."""

    id: int
    wall_start: float
    wall_end: float
    n_events: int
    modalities: dict[str, int]
    size: int


def _aad(segment_id: int, schema: int) -> bytes:
    return f"hearth-segment:{segment_id}:{schema}".encode("ascii")


def seal(key: bytes, segment_id: int, events: Sequence[Event]) -> tuple[bytes, bytes]:
    """Encrypt a batch of events; returns (nonce, ciphertext)."""
    payload = "\n".join(json.dumps(to_record(e), separators=(",", ":")) for e in events)
    nonce = os.urandom(12)
    plain = zlib.compress(payload.encode("utf-8"), 1)
    return nonce, AESGCM(key).encrypt(nonce, plain, _aad(segment_id, SCHEMA_VERSION))


def open_segment(
    key: bytes, segment_id: int, schema: int, nonce: bytes, ciphertext: bytes
) -> list[Event]:
    """Authenticate, decrypt and decode one segment, all or nothing."""
    if schema != SCHEMA_VERSION:
        raise CorruptSegmentError(segment_id, f"unknown schema version {schema}")
    try:
        plain = AESGCM(key).decrypt(nonce, ciphertext, _aad(segment_id, schema))
        text = zlib.decompress(plain).decode("utf-8")
        return [from_record(json.loads(line)) for line in text.split("\n") if line]
    except InvalidTag:
        raise CorruptSegmentError(segment_id, "authentication failed") from None
    except (ValueError, zlib.error, SchemaError, UnicodeDecodeError) as exc:
        raise CorruptSegmentError(segment_id, type(exc).__name__) from None


class Vault:
    """An open vault under a device's home directory."""

    def __init__(self, directory: Path, key: bytes) -> None:
        self.directory = ensure_private_dir(directory)
        self._key = key
        path = self.directory / DB_FILE
        existed = path.exists()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if not existed:
            path.chmod(0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(_SCHEMA_SQL)
        self._secure_files()
        self.corrupt_segments: list[int] = []

    def _secure_files(self) -> None:
        """Owner-only modes on the database and its -wal/-shm companions."""
        for name in DB_FILES:
            path = self.directory / name
            if path.exists() and path.stat().st_mode & 0o077:
                path.chmod(0o600)

    @classmethod
    def open(
        cls,
        directory: Path,
        passphrase: str | None = None,
        *,
        retention_days: float | None = None,
        quota_bytes: int | None = None,
    ) -> Vault:
        """Open (or create) the vault in ``directory``, unlocking its data key.

        With ``retention_days`` or ``quota_bytes``, retention runs right away.
        """
        ensure_private_dir(directory)
        vault = cls(directory, load_or_create_data_key(directory, passphrase))
        if retention_days is not None or quota_bytes is not None:
            vault.enforce_retention(
                retention_days if retention_days is not None else DEFAULT_RETENTION_DAYS,
                quota_bytes if quota_bytes is not None else DEFAULT_QUOTA_BYTES,
            )
        return vault

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def append(self, events: Sequence[Event], wall_time: float | None = None) -> int | None:
        """Seal ``events`` as one segment and commit it; returns the segment id."""
        if not events:
            return None
        now = time.time() if wall_time is None else wall_time
        span = max(0.0, events[-1].t - events[0].t)
        counts = Counter((m.value if (m := MODALITY_OF[e.kind]) else "marker") for e in events)
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_disk_full(exc):
                raise VaultFullError() from None
            raise
        try:
            row = self._db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM segments").fetchone()
            segment_id = int(row[0])
            nonce, ciphertext = seal(self._key, segment_id, events)
            self._db.execute(
                "INSERT INTO segments VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    segment_id,
                    SCHEMA_VERSION,
                    now - span,
                    now,
                    len(events),
                    json.dumps(dict(counts), sort_keys=True),
                    nonce,
                    ciphertext,
                ),
            )
            self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if _is_disk_full(exc):
                raise VaultFullError() from None
            raise
        self._secure_files()
        return segment_id

    def version(self) -> tuple[int, int]:
        """(segment count, newest segment id): changes whenever the contents change."""
        row = self._db.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM segments").fetchone()
        return int(row[0]), int(row[1])

    def next_seq(self) -> int:
        """One past the highest sequence number stored (0 when empty).

        A restarted recorder continues the numbering from here, so it need not note
        the number in its heartbeat after every write.
        """
        rows = self._db.execute(
            "SELECT id, schema, nonce, ciphertext FROM segments ORDER BY id DESC"
        )
        for segment_id, schema, nonce, ciphertext in rows:
            events = self._readable(int(segment_id), int(schema), nonce, ciphertext)
            if events is not None:
                return max((e.seq for e in events), default=-1) + 1
        return 0

    def _readable(
        self, segment_id: int, schema: int, nonce: bytes, ciphertext: bytes
    ) -> list[Event] | None:
        """A segment's events, or None (reported by id, collected) when it is corrupt."""
        try:
            return open_segment(self._key, segment_id, schema, nonce, ciphertext)
        except CorruptSegmentError as exc:
            _log.warning("%s", exc)  # the id and a reason, never content
            self.corrupt_segments.append(exc.segment_id)
            return None

    def segments(self) -> list[SegmentInfo]:
        """Plaintext metadata of every segment, oldest first."""
        rows = self._db.execute(
            "SELECT id, wall_start, wall_end, n_events, modalities, length(ciphertext) "
            "FROM segments ORDER BY id"
        ).fetchall()
        return [SegmentInfo(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]

    def iter_events(self) -> Iterator[Event]:
        """Stream every readable event in time order, one segment in memory at a time.

        Corrupt segments are skipped and their ids collected in ``corrupt_segments``.
        """
        last_id = 0
        while True:
            row = self._db.execute(
                "SELECT id, schema, nonce, ciphertext FROM segments WHERE id > ? "
                "ORDER BY id LIMIT 1",
                (last_id,),
            ).fetchone()
            if row is None:
                return
            last_id = int(row[0])
            events = self._readable(last_id, int(row[1]), row[2], row[3])
            if events is not None:
                yield from events

    def delete_older_than(self, wall_time: float) -> int:
        """Delete segments that ended before ``wall_time``; returns how many."""
        cursor = self._db.execute("DELETE FROM segments WHERE wall_end < ?", (wall_time,))
        return cursor.rowcount

    def size(self) -> int:
        """Bytes of sealed event data (what the quota counts)."""
        row = self._db.execute("SELECT COALESCE(SUM(length(ciphertext)), 0) FROM segments")
        return int(row.fetchone()[0])

    def enforce_retention(
        self,
        max_age_days: float = DEFAULT_RETENTION_DAYS,
        max_bytes: int = DEFAULT_QUOTA_BYTES,
        now: float | None = None,
    ) -> RetentionReport:
        """Delete segments past their lifetime, then the oldest beyond the quota."""
        now = time.time() if now is None else now
        by_age = self.delete_older_than(now - max_age_days * 86400.0)
        by_quota = 0
        excess = self.size() - max_bytes
        if excess > 0:
            rows = self._db.execute(
                "SELECT id, length(ciphertext) FROM segments ORDER BY id"
            ).fetchall()
            doomed: list[int] = []
            for segment_id, size in rows:
                if excess <= 0:
                    break
                doomed.append(int(segment_id))
                excess -= int(size)
            self._db.executemany("DELETE FROM segments WHERE id = ?", [(i,) for i in doomed])
            by_quota = len(doomed)
        if by_age or by_quota:
            # Move the deletion out of the WAL too, so no ciphertext lingers there.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return RetentionReport(by_age, by_quota)

    def export(self) -> Iterator[dict[str, object]]:
        """Decrypted records for the employee's own eyes (``hearth data export``)."""
        for event in self.iter_events():
            yield to_record(event)
