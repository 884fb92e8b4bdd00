"""The encrypted vault: the only place captured events live on the device.

Events are written in batches ("segments"), each sealed with AES-256-GCM under
the key of its UTC day (``client.day_keys``; the day keys are sealed under the
device's data key), with the segment id, schema version, key generation and day
as associated data so a segment cannot be swapped or replayed under another id.
A sealed manifest (``client.vault_manifest``) lists the live ids, so dropped or
re-inserted segments are noticed; its write counter is anchored outside the
database (``client.vault_anchor``), so a whole older copy of ``vault.db`` is too.
In plaintext a segment shows only its id, its day and its padded size: event
counts and times are inside the ciphertext, and every ciphertext has one of a
few fixed sizes (``PADDED_SIZES``); the recorder seals one per interval, empty
or not, all of one fixed size (``client.vault_cadence``; ``append``'s ``pad_to``).
Retention
destroys whole days: their key first (crypto-shredding), then their rows, with
``secure_delete`` on and the WAL checkpointed and truncated (retried until no
reader holds it).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import time
import zlib
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from client.day_keys import (
    DayKeys,
    day_of,
    destroy_day_keys,
    load_day_keys,
    store_day_keys,
)
from client.home import ensure_private_dir, hearth_home
from client.keys import (
    ENV_PASSPHRASE,
    KEY_FILE,
    VaultKeyError,
    commit_next_key,
    destroy_key,
    finish_interrupted_commit,
    key_file_version,
    key_generation,
    key_kek,
    load_or_create_data_key,
    shred_file,
    stage_next_key,
    staged_generation,
    upgrade_key_file,
)
from client.vault_anchor import AnchorError, destroy_anchor, vault_anchor
from client.vault_manifest import Audit, Manifest, ManifestError, open_manifest, seal_manifest
from policy.events import (
    MODALITY_OF,
    SCHEMA_VERSION,
    Event,
    Modality,
    SchemaError,
    from_record,
    to_record,
)

if TYPE_CHECKING:  # consent pulls in the privacy policy (numpy): the vault stays light
    from client.consent import ConsentRecord

DB_FILE: Final = "vault.db"
DB_FILES: Final = (DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm", DB_FILE + "-journal")
DEFAULT_RETENTION_DAYS: Final = 14.0
DEFAULT_QUOTA_BYTES: Final = 500 * 2**20
_log = logging.getLogger(__name__)
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
# Sealed segments are padded to one of these sizes (then to whole MiB), so their
# length says little about how much happened in them.
PADDED_SIZES: Final = (256, 1024, 4096, 16384, 65536, 262144, 1048576)
_FORMAT: Final = 2  # 1: the pre-day-key layout, migrated on open
MARKER: Final = "marker"  # events of no modality (gaps, session markers): never purged
_REKEY_BATCH: Final = 256
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


class RotationInProgressError(VaultKeyError):
    """A key rotation was cut short; it must be finished before the vault is used."""

    def __init__(self) -> None:
        super().__init__(
            "a key rotation of the vault was interrupted: run `hearth data rotate-key` "
            "again with the same new passphrase to finish it"
        )


class VaultRollbackError(VaultKeyError):
    """The vault is an older copy of itself (or its anchor is gone): training is refused."""


DELETE_HINT: Final = (
    "training is refused until you run `hearth data delete` to start a new vault "
    "(the privacy ledger is kept)"
)


class StaleKeyError(VaultKeyError):
    """The key generation held by this process is no longer the one the vault writes under."""

    def __init__(self) -> None:
        super().__init__("the vault key was rotated while hearth had it open: restart hearth")


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What one (possibly resumed) key rotation did."""

    generation: int
    reencrypted: int
    dropped: int = 0  # corrupt or expired segments that could not move to the new key


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one retention pass deleted."""

    deleted_by_age: int
    deleted_by_quota: int


def default_vault_dir() -> Path:
    """The device's vault directory: ``hearth_home() / "vault"``."""
    return hearth_home() / "vault"


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


class CorruptSegmentError(Exception):
    """A segment failed authentication or decoding; it is skipped, never half-read."""

    def __init__(self, segment_id: int, reason: str) -> None:
        super().__init__(f"vault segment {segment_id} is corrupt ({reason}); skipped")
        self.segment_id = segment_id


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """What one segment holds, read from inside its ciphertext (times and counts)."""

    id: int
    wall_start: float
    wall_end: float
    n_events: int
    modalities: dict[str, int]
    size: int


def _aad(segment_id: int, schema: int, gen: int, day: int) -> bytes:
    return f"hearth-segment:{segment_id}:{schema}:{gen}:{day}".encode("ascii")


def _modality_name(event: Event) -> str:
    modality = MODALITY_OF[event.kind]
    return modality.value if modality is not None else MARKER


def _modality_names(events: Iterable[Event]) -> set[str]:
    return {_modality_name(e) for e in events}


def _pad(body: bytes, at_least: int = 0) -> bytes:
    """Frame ``body`` and pad it to the smallest size class that holds it, and ``at_least``."""
    framed = len(body).to_bytes(4, "big") + body
    need = max(len(framed), at_least)
    size = next((s for s in PADDED_SIZES if s >= need), 0)
    if not size:
        size = -(-need // PADDED_SIZES[-1]) * PADDED_SIZES[-1]
    return framed + bytes(size - len(framed))


def _body(events: Sequence[Event], start: float, end: float) -> bytes:
    counts = Counter(_modality_name(e) for e in events)
    header = {"v": _FORMAT, "start": start, "end": end, "n": len(events), "counts": counts}
    lines = [json.dumps(header, separators=(",", ":"))]
    lines += (json.dumps(to_record(e), separators=(",", ":")) for e in events)
    # A 4 KiB window and a small hash table: deflate's default state (about 256 KiB,
    # allocated and touched on every call) cost the recorder more than the
    # encryption; JSON lines repeat within a few lines, and any zlib stream decodes.
    packer = zlib.compressobj(1, zlib.DEFLATED, 12, 4)
    return packer.compress("\n".join(lines).encode("utf-8")) + packer.flush()


def _encode(events: Sequence[Event], start: float, end: float, pad_to: int = 0) -> bytes:
    """The plaintext of a segment: a header (times, counts) and its events, padded."""
    return _pad(_body(events, start, end), pad_to)


# The widest times a header can hold (17 significant digits), and room for the
# compressor treating other digits a little differently: what ``framed_size`` adds.
_WIDEST_TIME: Final = 1_764_448_671.1234567
_HEADER_SLACK: Final = 32


def framed_size(events: Sequence[Event]) -> int:
    """Bytes ``events`` take of a size class when sealed as one segment, whatever its times.

    An upper bound (the widest header plus a little slack): a batch whose
    ``framed_size`` is at most a class always pads to exactly that class, which is
    what the recorder's fixed-size segments rely on (``client.vault_cadence``).
    """
    return 4 + len(_body(events, _WIDEST_TIME, _WIDEST_TIME)) + _HEADER_SLACK


def _decode(plain: bytes, header_only: bool = False) -> tuple[dict[str, Any], list[Event]]:
    size = int.from_bytes(plain[:4], "big")
    if size > len(plain) - 4:
        raise ValueError("bad padding")
    text = zlib.decompress(plain[4 : 4 + size]).decode("utf-8")
    first, _, rest = text.partition("\n")
    header = json.loads(first)
    if not isinstance(header, dict) or header.get("v") != _FORMAT:
        raise ValueError("bad header")
    if header_only:
        return header, []
    return header, [from_record(json.loads(line)) for line in rest.split("\n") if line]


def seal(
    key: bytes,
    segment_id: int,
    events: Sequence[Event],
    gen: int = 0,
    day: int = 0,
    span: tuple[float, float] = (0.0, 0.0),
    pad_to: int = 0,
) -> tuple[bytes, bytes]:
    """Encrypt a batch of events (and its wall-clock ``span``); returns (nonce, ciphertext).

    The plaintext is padded to the smallest size class that holds it and ``pad_to``.
    """
    nonce = os.urandom(12)
    plain = _encode(events, *span, pad_to=pad_to)
    return nonce, AESGCM(key).encrypt(nonce, plain, _aad(segment_id, SCHEMA_VERSION, gen, day))


def _open_raw(
    key: bytes, segment_id: int, schema: int, nonce: bytes, ciphertext: bytes, gen: int, day: int
) -> bytes:
    if schema != SCHEMA_VERSION:
        raise CorruptSegmentError(segment_id, f"unknown schema version {schema}")
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, _aad(segment_id, schema, gen, day))
    except (InvalidTag, ValueError):
        raise CorruptSegmentError(segment_id, "authentication failed") from None


def _decoded(
    segment_id: int, plain: bytes, header_only: bool = False
) -> tuple[dict[str, Any], list[Event]]:
    try:
        return _decode(plain, header_only)
    except (ValueError, zlib.error, SchemaError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise CorruptSegmentError(segment_id, type(exc).__name__) from None


def open_segment(
    key: bytes,
    segment_id: int,
    schema: int,
    nonce: bytes,
    ciphertext: bytes,
    gen: int = 0,
    day: int = 0,
) -> list[Event]:
    """Authenticate, decrypt and decode one segment, all or nothing."""
    plain = _open_raw(key, segment_id, schema, nonce, ciphertext, gen, day)
    return _decoded(segment_id, plain)[1]


class Vault:
    """An open vault under a device's home directory."""

    def __init__(
        self, directory: Path, key: bytes, generation: int = 0, *, legacy: bool = False
    ) -> None:
        """Open the database under an unlocked data key; ``legacy`` allows migrating format 1."""
        self.directory = ensure_private_dir(directory)
        self._gen = generation
        self._keys: dict[int, bytes] = {generation: key}  # data keys by generation
        self._manifest_seen: tuple[bytes, Manifest] | None = None  # see _load_manifest
        self._days: dict[int, DayKeys] = {generation: load_day_keys(directory, generation, key)}
        # Ids skipped while reading: failed authentication, or not live in the manifest.
        self.corrupt_segments: list[int] = []
        self.manifest_error: str | None = None
        # Set when vault.db is older than its anchor: reported, and training refuses it.
        self.rollback: str | None = None
        self._anchor = vault_anchor(self.directory, self._keys)
        self._anchor_pending: tuple[int, str] | None = None
        self._anchor_seen = 0  # the anchor is never lowered by this process
        path = self.directory / DB_FILE
        existed = path.exists()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if not existed:
            path.chmod(0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(segments)")}
        if columns and "day" not in columns:
            if not legacy:
                self._db.close()
                raise VaultKeyError(
                    "the vault database has the old layout but its key file is new: it was "
                    "replaced; restore it or run `hearth data delete`"
                )
            self._migrate_legacy()
        self._db.executescript(_SCHEMA_SQL)
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute(
            "INSERT OR IGNORE INTO meta VALUES ('write_gen', ?)", (str(generation).encode(),)
        )
        has_manifest = self._db.execute("SELECT 1 FROM meta WHERE name = 'manifest'").fetchone()
        fresh = not has_manifest and not self._db.execute("SELECT 1 FROM segments").fetchone()
        if fresh:  # a new vault (an emptied-out one is reported): it anchors afresh
            self._store_manifest(Manifest())
        self._commit()
        self._secure_files()
        if not fresh:
            self._check_anchor()

    def _migrate_legacy(self) -> None:
        """Move a format-1 vault (one data key, plaintext times and counts) to this format.

        One transaction: every readable segment is re-sealed under its day's key with
        its times and counts inside, with the same id; the manifest lists them; the old
        table is dropped (``secure_delete`` zeroes it) and the WAL truncated. Segments
        that fail authentication are left out (and logged by id).
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("ALTER TABLE segments RENAME TO segments_v1")
            self._db.execute("DROP INDEX IF EXISTS segments_wall_end")
            for statement in _SCHEMA_SQL.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('write_gen', ?)", (b"%d" % self._gen,)
            )
            rows = self._db.execute(
                "SELECT id, schema, wall_start, wall_end, nonce, ciphertext FROM segments_v1 "
                "ORDER BY id"
            )
            manifest = Manifest(
                int(
                    self._db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM segments_v1").fetchone()[
                        0
                    ]
                )
            )
            live: list[tuple[int, int]] = []
            present: set[str] = set()
            for segment_id, schema, start, end, nonce, ciphertext in rows:
                try:
                    aad = f"hearth-segment:{segment_id}:{schema}".encode("ascii")
                    plain = AESGCM(self._keys[self._gen]).decrypt(nonce, ciphertext, aad)
                    text = zlib.decompress(plain).decode("utf-8")
                    events = [from_record(json.loads(line)) for line in text.split("\n") if line]
                except (InvalidTag, ValueError, zlib.error, SchemaError, UnicodeDecodeError):
                    _log.warning(
                        "vault segment %d is corrupt; left out of the migration", segment_id
                    )
                    continue
                day = day_of(float(end))
                key = self._day_key(self._gen, day, create=True)
                assert key is not None
                sealed = seal(key, segment_id, events, self._gen, day, (float(start), float(end)))
                self._db.execute(
                    "INSERT INTO segments VALUES (?, ?, ?, ?, ?, ?)",
                    (segment_id, SCHEMA_VERSION, self._gen, day, *sealed),
                )
                counts = Counter(_modality_name(e) for e in events)
                manifest = manifest.tallied(day, counts, len(sealed[1]))
                present.update(counts)
                if live and live[-1][1] == segment_id - 1:
                    live[-1] = (live[-1][0], segment_id)
                else:
                    live.append((segment_id, segment_id))
            self._store_manifest(
                replace(manifest, live=tuple(live), present=tuple(sorted(present)))
            )
            self._db.execute("DROP TABLE segments_v1")
            self._commit()
        except BaseException as exc:
            self._abort(exc)
            raise
        self._checkpoint()

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
        it look current; only ``hearth data delete`` clears it.
        """
        row = self._db.execute("SELECT value FROM meta WHERE name = 'manifest'").fetchone()
        manifest = self._manifest_or_none()
        if row is None or manifest is None:
            return  # reported as a manifest error already
        where = self._anchor.where
        if manifest.rolled_back is not None:
            found, anchored = manifest.rolled_back
            self.rollback = _rollback_message(found, anchored, where)
            return
        digest = hashlib.sha256(bytes(row[0])).hexdigest()
        try:
            stored = self._anchor.read()
        except AnchorError as exc:
            self._flag_rollback(manifest, -1, f"{exc}; {DELETE_HINT}")
            return
        except Exception as exc:  # a locked or missing keyring: cannot check now
            _log.warning("the vault's anchor could not be read: %s", type(exc).__name__)
            return
        if stored is None:
            if manifest.writes > 1:
                self._flag_rollback(manifest, -1, _rollback_message(manifest.writes, -1, where))
            else:  # a vault from before anchors: it adopts one
                self._write_anchor(manifest.writes, digest)
            return
        counter = stored[0]
        if manifest.writes > counter or (manifest.writes, digest) == stored:
            self._anchor_seen = counter
            self._write_anchor(manifest.writes, digest)  # a crash came between the two
            return
        self._flag_rollback(manifest, counter, _rollback_message(manifest.writes, counter, where))

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

    # -- opening, rotating, closing ---------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path,
        passphrase: str | None = None,
        *,
        retention_days: float | None = None,
        quota_bytes: int | None = None,
        keep_modalities: Collection[Modality] | None = None,
    ) -> Vault:
        """Open (or create) the vault in ``directory``, unlocking its data key.

        With ``retention_days`` or ``quota_bytes``, retention runs right away; with
        ``keep_modalities`` (what the employee consents to now), events of any other
        modality are deleted first. A vault whose key rotation was interrupted is
        refused until the rotation is finished.
        """
        ensure_private_dir(directory)
        if staged_generation(directory) is not None:
            raise RotationInProgressError()
        finish_interrupted_commit(directory)
        key = load_or_create_data_key(directory, passphrase)
        legacy = key_file_version(directory) == 1
        vault = cls(directory, key, key_generation(directory), legacy=legacy)
        if legacy:  # the database is migrated: from now on the key file says so
            upgrade_key_file(directory, passphrase)
        if keep_modalities is not None:
            vault.purge_modalities(keep_modalities)
        if retention_days is not None or quota_bytes is not None:
            vault.enforce_retention(
                retention_days if retention_days is not None else DEFAULT_RETENTION_DAYS,
                quota_bytes if quota_bytes is not None else DEFAULT_QUOTA_BYTES,
            )
        return vault

    @classmethod
    def rotate(
        cls,
        directory: Path,
        new_passphrase: str | None,
        passphrase: str | None = None,
        *,
        batch: int = _REKEY_BATCH,
    ) -> RotationReport:
        """Replace the data key: re-encrypt every segment, then destroy the old key.

        Crash-safe and resumable: the new key is staged (wrapped) in ``key.next.json``
        before any segment changes; each batch of segments is re-encrypted under a
        fresh day key of the new generation in one transaction, so every segment
        exists under the old or the new key at every instant. Only when none is left
        under the old key, and the WAL holding the old ciphertext is checkpointed and
        truncated, are the old day keys and the old key file overwritten and removed
        (and its keyring secret deleted). Run it again with the same new passphrase
        after a kill to resume. ``new_passphrase`` None keeps the key in the OS
        keyring under a fresh secret.
        """
        ensure_private_dir(directory)
        if not (directory / KEY_FILE).exists():
            raise VaultKeyError("there is no vault key to rotate")
        finish_interrupted_commit(directory)
        old_key = load_or_create_data_key(directory, passphrase)
        old_gen = key_generation(directory)
        new_key = stage_next_key(directory, new_passphrase)
        new_gen = old_gen + 1
        vault = cls(directory, old_key, old_gen, legacy=key_file_version(directory) == 1)
        vault._keys[new_gen] = new_key
        vault._days[new_gen] = load_day_keys(directory, new_gen, new_key)
        try:
            done, dropped = vault._reencrypt(new_gen, batch)
            vault._checkpoint(required=True)
        finally:
            vault.close()
        destroy_day_keys(directory, old_gen)
        commit_next_key(directory)
        return RotationReport(new_gen, done, dropped)

    def _reencrypt(self, new_gen: int, batch: int) -> tuple[int, int]:
        """Move every segment to ``new_gen``'s day keys, batch by batch; (moved, dropped)."""
        self._db.execute("UPDATE meta SET value = ? WHERE name = 'write_gen'", (b"%d" % new_gen,))
        self._gen = new_gen
        horizon = max(d.horizon for d in self._days.values())
        self._days[new_gen] = self._days[new_gen].without(set(), horizon)
        done = dropped = 0
        while True:
            self._begin_write()
            try:
                rows = self._db.execute(
                    "SELECT id, schema, gen, day, nonce, ciphertext FROM segments "
                    "WHERE gen != ? ORDER BY id LIMIT ?",
                    (new_gen, batch),
                ).fetchall()
                lost: list[int] = []
                for segment_id, schema, gen, day, nonce, ciphertext in rows:
                    plain = self._plaintext(segment_id, schema, gen, day, nonce, ciphertext)
                    if plain is None:  # corrupt or expired: nothing to carry over
                        lost.append(int(segment_id))
                        continue
                    key = self._day_key(new_gen, day, create=True)
                    assert key is not None
                    new_nonce = os.urandom(12)
                    aad = _aad(segment_id, schema, new_gen, day)
                    sealed = AESGCM(key).encrypt(new_nonce, plain, aad)
                    self._db.execute(
                        "UPDATE segments SET gen = ?, nonce = ?, ciphertext = ? WHERE id = ?",
                        (new_gen, new_nonce, sealed, segment_id),
                    )
                if lost:
                    self._db.executemany("DELETE FROM segments WHERE id = ?", [(i,) for i in lost])
                self._commit()
            except BaseException as exc:
                self._abort(exc)
                raise
            done += len(rows) - len(lost)
            dropped += len(lost)
            if len(rows) < batch:
                break
        self._begin_write()
        row = self._db.execute("SELECT value FROM meta WHERE name = 'manifest'").fetchone()
        if row is not None:  # an untrustworthy manifest stays so under the new key
            with contextlib.suppress(ManifestError):
                manifest = open_manifest(self._keys, bytes(row[0]))[1]
                self._store_manifest(manifest, new_gen)
        self._commit()
        return done, dropped

    def close(self) -> None:
        """Close the database (truncating the WAL first if a deletion still waits for it)."""
        with contextlib.suppress(sqlite3.Error):
            self._checkpoint_if_pending()
        self._db.close()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------

    def append(
        self, events: Sequence[Event], wall_time: float | None = None, *, pad_to: int = 0
    ) -> int | None:
        """Seal ``events`` as one segment of the current day and commit it; returns its id.

        An empty batch is sealed too, padded like any other: the recorder seals one
        segment per interval whether or not anything happened (``client.vault_cadence``).
        ``pad_to`` is the smallest size class the segment may take: the recorder passes
        its fixed class, so every interval's row has the same size (never smaller; a
        batch that does not fit takes the next class that holds it).
        """
        now = time.time() if wall_time is None else wall_time
        day = day_of(now)
        span = max(0.0, events[-1].t - events[0].t) if events else 0.0
        self._begin_write()
        try:
            counts = Counter(_modality_name(e) for e in events)
            segment_id, manifest = self._load_manifest().appended(counts)
            key = self._day_key(self._gen, day, create=True)
            assert key is not None
            nonce, ciphertext = seal(
                key, segment_id, events, self._gen, day, (now - span, now), pad_to
            )
            self._store_manifest(manifest.tallied(day, counts, len(ciphertext)))
            self._db.execute(
                "INSERT INTO segments VALUES (?, ?, ?, ?, ?, ?)",
                (segment_id, SCHEMA_VERSION, self._gen, day, nonce, ciphertext),
            )
            self._commit()
        except BaseException as exc:
            self._abort(exc)
            raise
        self._secure_files()
        self._checkpoint_if_pending()
        return segment_id

    def _delete(
        self,
        ids: Sequence[int],
        forget_days: set[int],
        horizon: int | None = None,
        tallies: Sequence[tuple[int, dict[str, int], int]] = (),
    ) -> int:
        """Delete segments, shred the given days' keys first, and record it, in one transaction.

        ``tallies`` (day, counts, size) of deleted segments of days that live on come
        off the manifest's counts. Marks the WAL for truncation; it is truncated now
        unless a reader holds it.
        """
        if not ids and not forget_days:
            return 0
        self._begin_write()
        try:
            self._forget_days(forget_days, horizon)
            manifest = self._manifest_or_none()
            self._db.executemany("DELETE FROM segments WHERE id = ?", [(i,) for i in ids])
            if manifest is not None:
                manifest = manifest.without(ids).without_days(forget_days)
                for day, counts, size in tallies:
                    if day not in forget_days:
                        manifest = manifest.tallied(day, counts, size, -1)
                self._store_manifest(manifest)
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('shred_pending', x'01')")
            self._commit()
        except BaseException as exc:
            self._abort(exc)
            raise
        self._checkpoint()
        return len(ids)

    def _tallies(self, ids: Sequence[int]) -> list[tuple[int, dict[str, int], int]]:
        """(day, counts, size) of readable segments, for taking them off the counts."""
        tallies = []
        for segment_id in ids:
            row = self._db.execute(
                "SELECT id, schema, gen, day, nonce, ciphertext FROM segments WHERE id = ?",
                (segment_id,),
            ).fetchone()
            if row is None:
                continue
            _, schema, gen, day, nonce, ciphertext = row
            read = self._readable(segment_id, schema, gen, day, nonce, ciphertext, True)
            if read is not None:
                tallies.append((int(day), dict(read[0]["counts"]), len(ciphertext)))
        return tallies

    def day_counts(self) -> dict[int, dict[str, tuple[int, int]]]:
        """Per UTC day and modality: (events, bytes), from the sealed manifest.

        Cheap (nothing but the manifest is decrypted): what was recorded, minus what
        retention, quota and revocation deleted. Empty when the manifest is untrustworthy.
        """
        manifest = self._manifest_or_none()
        if manifest is None:
            return {}
        return {day: dict(entry) for day, entry in sorted(manifest.days.items())}

    def delete_days_through(self, last_day: int) -> int:
        """Destroy every day up to ``last_day`` (UTC day number): keys, then rows."""
        days = set(load_day_keys(self.directory, self._gen, self._keys[self._gen]).keys)
        rows = self._db.execute("SELECT id, day FROM segments WHERE day <= ?", (last_day,))
        ids: list[int] = []
        for segment_id, day in rows.fetchall():
            ids.append(int(segment_id))
            days.add(int(day))
        return self._delete(ids, {d for d in days if d <= last_day}, last_day + 1)

    def enforce_retention(
        self,
        max_age_days: float = DEFAULT_RETENTION_DAYS,
        max_bytes: int = DEFAULT_QUOTA_BYTES,
        now: float | None = None,
    ) -> RetentionReport:
        """Destroy days past their lifetime, then the oldest segments beyond the quota.

        Retention works on whole UTC days: a day is destroyed as soon as any part of
        it is older than ``max_age_days``, so nothing is kept longer than that.
        """
        now = time.time() if now is None else now
        by_age = self.delete_days_through(day_of(now - max_age_days * 86400.0))
        by_quota = 0
        excess = self.size() - max_bytes
        if excess > 0:
            rows = self._db.execute(
                "SELECT id, day, length(ciphertext) FROM segments ORDER BY day, id"
            ).fetchall()
            doomed: list[int] = []
            touched: set[int] = set()
            for segment_id, day, size in rows:
                if excess <= 0:
                    break
                doomed.append(int(segment_id))
                touched.add(int(day))
                excess -= int(size)
            kept = {int(r[1]) for r in rows[len(doomed) :]}
            # A day emptied by the quota loses its key too (not today's: it goes on).
            emptied = {d for d in touched - kept if d < day_of(now)}
            by_quota = self._delete(doomed, emptied, tallies=self._tallies(doomed))
        return RetentionReport(by_age, by_quota)

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

    def purge_modalities(self, keep: Collection[Modality], batch: int = _REKEY_BATCH) -> int:
        """Delete every recorded event of a modality not in ``keep``; returns how many.

        Segments are rewritten in place under the same id (emptied ones deleted and
        recorded in the manifest), batch by batch, then the WAL is truncated. A no-op
        (no decryption) when the manifest shows no such modality can be present.
        """
        names = {m.value for m in keep} | {MARKER}
        manifest = self._manifest_or_none()
        if manifest is None or (manifest.present is not None and set(manifest.present) <= names):
            return 0
        removed, last_id = 0, 0
        while True:
            self._begin_write()
            try:
                rows = self._db.execute(
                    "SELECT id, schema, gen, day, nonce, ciphertext FROM segments "
                    "WHERE id > ? ORDER BY id LIMIT ?",
                    (last_id, batch),
                ).fetchall()
                current = self._load_manifest()
                emptied: list[int] = []
                for segment_id, schema, gen, day, nonce, ciphertext in rows:
                    last_id = int(segment_id)
                    if last_id not in current:
                        continue
                    read = self._readable(last_id, schema, gen, day, nonce, ciphertext)
                    if read is None or set(read[0]["counts"]) <= names:
                        continue
                    header, events = read
                    kept = [e for e in events if _modality_name(e) in names]
                    removed += len(events) - len(kept)
                    current = current.tallied(day, dict(header["counts"]), len(ciphertext), -1)
                    if not kept:
                        emptied.append(last_id)
                        continue
                    key = self._day_key(gen, day)
                    assert key is not None
                    span = (float(header["start"]), float(header["end"]))
                    sealed = seal(key, last_id, kept, gen, day, span)
                    counts = Counter(_modality_name(e) for e in kept)
                    current = current.tallied(day, counts, len(sealed[1]))
                    self._db.execute(
                        "UPDATE segments SET nonce = ?, ciphertext = ? WHERE id = ?",
                        (*sealed, last_id),
                    )
                if emptied:
                    self._db.executemany(
                        "DELETE FROM segments WHERE id = ?", [(i,) for i in emptied]
                    )
                self._store_manifest(current.without(emptied))
                done = len(rows) < batch
                if done:
                    final = self._load_manifest().after_purge(names, removed)
                    self._store_manifest(final)
                    self._db.execute("INSERT OR REPLACE INTO meta VALUES ('shred_pending', x'01')")
                self._commit()
            except BaseException as exc:
                self._abort(exc)
                raise
            if done:
                break
        self._checkpoint()
        return removed

    def next_seq(self) -> int:
        """One past the highest sequence number stored (0 when empty).

        A restarted recorder continues the numbering from here, so it need not note
        the number in its heartbeat after every write.
        """
        manifest = self._manifest_or_none()
        rows = self._db.execute(
            "SELECT id, schema, gen, day, nonce, ciphertext FROM segments ORDER BY id DESC"
        )
        for segment_id, schema, gen, day, nonce, ciphertext in rows:
            if manifest is None or segment_id not in manifest:
                continue
            read = self._readable(segment_id, schema, gen, day, nonce, ciphertext)
            if read is not None and read[1]:  # an empty (idle) segment says nothing
                return max(e.seq for e in read[1]) + 1
        return 0

    def _plaintext(
        self, segment_id: int, schema: int, gen: int, day: int, nonce: bytes, ciphertext: bytes
    ) -> bytes | None:
        """A segment's plaintext, or None when it is corrupt (reported by id) or expired."""
        try:
            key = self._day_key(gen, day)
            if key is None:
                days = self._days.get(gen)
                if days is not None and day < days.horizon:
                    return None  # its day was destroyed by retention; the row goes next
                raise CorruptSegmentError(segment_id, "no key for its day")
            return _open_raw(key, segment_id, schema, nonce, ciphertext, gen, day)
        except CorruptSegmentError as exc:
            self._corrupt(exc)
            return None

    def _corrupt(self, exc: CorruptSegmentError) -> None:
        _log.warning("%s", exc)  # the id and a reason, never content
        self.corrupt_segments.append(exc.segment_id)

    def _readable(
        self,
        segment_id: int,
        schema: int,
        gen: int,
        day: int,
        nonce: bytes,
        ciphertext: bytes,
        header_only: bool = False,
    ) -> tuple[dict[str, Any], list[Event]] | None:
        """A segment's header and events, or None when it is corrupt or expired."""
        plain = self._plaintext(segment_id, schema, gen, day, nonce, ciphertext)
        if plain is None:
            return None
        try:
            return _decoded(segment_id, plain, header_only)
        except CorruptSegmentError as exc:
            self._corrupt(exc)
            return None

    def segments(self) -> list[SegmentInfo]:
        """Every live, readable segment, oldest first: decrypted for its times and counts.

        Corrupt or unlisted segments are skipped (and collected in ``corrupt_segments``).
        """
        manifest = self._manifest_or_none()
        rows = self._db.execute(
            "SELECT id, schema, gen, day, nonce, ciphertext FROM segments ORDER BY id"
        )
        infos: list[SegmentInfo] = []
        for segment_id, schema, gen, day, nonce, ciphertext in rows:
            live, manifest = self._belongs(int(segment_id), manifest)
            if not live:
                continue
            read = self._readable(segment_id, schema, gen, day, nonce, ciphertext, True)
            if read is not None:
                header = read[0]
                counts = {str(k): int(v) for k, v in dict(header["counts"]).items()}
                infos.append(
                    SegmentInfo(
                        int(segment_id),
                        float(header["start"]),
                        float(header["end"]),
                        int(header["n"]),
                        counts,
                        len(ciphertext),
                    )
                )
        return infos

    def _belongs(self, segment_id: int, manifest: Manifest | None) -> tuple[bool, Manifest | None]:
        """Whether a stored segment is live; a segment newer than ``manifest`` re-reads it."""
        if manifest is not None and segment_id >= manifest.next_id:
            manifest = self._manifest_or_none()  # appended since it was read
        if manifest is not None and segment_id in manifest:
            return True, manifest
        _log.warning("vault segment %d is not in the vault's manifest; skipped", segment_id)
        self.corrupt_segments.append(segment_id)
        return False, manifest

    def iter_events(self) -> Iterator[Event]:
        """Stream every readable event in time order, one segment in memory at a time.

        Segments that fail authentication, or that the manifest does not list as live
        (re-inserted after deletion, forged), are skipped and their ids collected in
        ``corrupt_segments``; ``audit()`` also names the dropped ones.
        """
        manifest = self._manifest_or_none()
        last_id = 0
        while True:
            row = self._db.execute(
                "SELECT id, schema, gen, day, nonce, ciphertext FROM segments WHERE id > ? "
                "ORDER BY id LIMIT 1",
                (last_id,),
            ).fetchone()
            if row is None:
                return
            last_id = int(row[0])
            live, manifest = self._belongs(last_id, manifest)
            if not live:
                continue
            read = self._readable(last_id, row[1], row[2], row[3], row[4], row[5])
            if read is not None:
                yield from read[1]

    def size(self) -> int:
        """Bytes of sealed event data (what the quota counts)."""
        row = self._db.execute("SELECT COALESCE(SUM(length(ciphertext)), 0) FROM segments")
        return int(row.fetchone()[0])

    def export(self) -> Iterator[dict[str, object]]:
        """Decrypted records for the employee's own eyes (``hearth data export``)."""
        for event in self.iter_events():
            yield to_record(event)


def destroy_vault(directory: Path) -> bool:
    """Crypto-shred a vault: keys first (file and keyring), then the database's bytes.

    The rows are deleted (``secure_delete`` zeroes them) and the WAL truncated before
    the files are removed, so a process that still holds them open sees no ciphertext.
    """
    existed = destroy_key(directory)
    destroy_anchor(directory)  # a new vault here starts at write 1 without being suspect
    for path in directory.glob("days.*.bin*"):
        shred_file(path)
        existed = True
    db_path = directory / DB_FILE
    if db_path.exists():
        with contextlib.suppress(sqlite3.Error):
            db = sqlite3.connect(db_path, isolation_level=None, timeout=0.5)
            try:
                db.execute("PRAGMA secure_delete=ON")
                db.execute("DELETE FROM segments")
                db.execute("DELETE FROM meta")
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                db.close()
    for name in DB_FILES:
        path = directory / name
        if path.exists():
            path.unlink()
            existed = True
    if directory.exists():
        shutil.rmtree(directory)
    return existed


def purge_revoked_modalities(home: Path, record: ConsentRecord) -> None:
    """After consent narrows, delete the events of modalities no longer granted.

    A ``client.consent.on_change`` listener (``hearth data`` registers it, so every
    ``hearth`` command and the dashboard run it). Best effort here (never a
    passphrase prompt): when the vault cannot be unlocked in this process, the next
    training read (``Device.examples``) deletes them first.
    """
    directory = home / "vault"
    if not record.active or not (directory / KEY_FILE).exists():
        return
    try:
        if key_kek(directory) == "scrypt" and not os.environ.get(ENV_PASSPHRASE):
            raise VaultKeyError("no passphrase in this process")
        with Vault.open(directory, keep_modalities=record.modalities):
            pass
    except (VaultKeyError, VaultFullError, sqlite3.Error) as exc:
        _log.warning("events of revoked modalities are deleted before the next round: %s", exc)
