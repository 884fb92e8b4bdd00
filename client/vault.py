"""The encrypted vault: the only place captured events live on the device.

Events are written in batches ("segments"), each sealed with AES-256-GCM under
the device's data key, with the segment id and schema version as associated
data so a segment cannot be swapped or replayed under another id. Only
non-sensitive metadata (time range, event count per modality) is plaintext.
"""

from __future__ import annotations

import json
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

from client.home import ensure_private_dir
from client.keys import load_or_create_data_key
from policy.events import MODALITY_OF, SCHEMA_VERSION, Event, SchemaError, from_record, to_record

DB_FILE: Final = "vault.db"
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
        self._db.executescript(_SCHEMA_SQL)
        self.corrupt_segments: list[int] = []

    @classmethod
    def open(cls, directory: Path, passphrase: str | None = None) -> Vault:
        """Open (or create) the vault in ``directory``, unlocking its data key."""
        ensure_private_dir(directory)
        return cls(directory, load_or_create_data_key(directory, passphrase))

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
        self._db.execute("BEGIN IMMEDIATE")
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
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return segment_id

    def version(self) -> tuple[int, int]:
        """(segment count, newest segment id): changes whenever the contents change."""
        row = self._db.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM segments").fetchone()
        return int(row[0]), int(row[1])

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
            try:
                events = open_segment(self._key, last_id, int(row[1]), row[2], row[3])
            except CorruptSegmentError as exc:
                self.corrupt_segments.append(exc.segment_id)
                continue
            yield from events

    def delete_older_than(self, wall_time: float) -> int:
        """Delete segments that ended before ``wall_time``; returns how many."""
        cursor = self._db.execute("DELETE FROM segments WHERE wall_end < ?", (wall_time,))
        return cursor.rowcount
