"""The encrypted vault: the only place captured events live on the device.

Events are written in batches ("segments"), each sealed with AES-256-GCM under
the key of its UTC day (``client.storage.day_keys``; the day keys are sealed under the
device's data key), with the segment id, schema version, key generation and day
as associated data so a segment cannot be swapped or replayed under another id.
A sealed manifest (``client.storage.vault_manifest``) lists the live ids, so dropped or
re-inserted segments are noticed; its write counter is anchored outside the
database (``client.storage.vault_anchor``), so a whole older copy of ``vault.db`` is too.
In plaintext a segment shows only its id, its day and its padded size: event
counts and times are inside the ciphertext, and every ciphertext has one of a
few fixed sizes (``PADDED_SIZES``); the recorder seals one per interval, empty
or not, all of one fixed size (``client.storage.vault_cadence``; ``append``'s ``pad_to``).
Retention
destroys whole days: their key first (crypto-shredding), then their rows, with
``secure_delete`` on and the WAL checkpointed and truncated (retried until no
reader holds it).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import zlib
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from client.storage.day_keys import (
    DayKeys,
    day_of,
    destroy_day_keys,
    load_day_keys,
)
from client.storage.home import ensure_private_dir, hearth_home
from client.storage.key_lifecycle import (
    commit_next_key,
    finish_interrupted_commit,
    stage_next_key,
    staged_generation,
)
from client.storage.keys import (
    KEY_FILE,
    VaultKeyError,
    key_file_version,
    key_generation,
    load_or_create_data_key,
    upgrade_key_file,
)
from client.storage.retention import _REKEY_BATCH, DEFAULT_QUOTA_BYTES, DEFAULT_RETENTION_DAYS
from client.storage.rotation import RotationInProgressError, RotationReport, VaultRotation
from client.storage.segments import _modality_name, seal
from client.storage.vault_anchor import vault_anchor
from client.storage.vault_manifest import (
    Manifest,
)
from client.storage.vault_store import _BUSY_MS, _SCHEMA_SQL, DB_FILE
from policy.events import (
    SCHEMA_VERSION,
    Event,
    Modality,
    SchemaError,
    from_record,
)

_log = logging.getLogger(__name__)


def default_vault_dir() -> Path:
    """The device's vault directory: ``hearth_home() / "vault"``."""
    return hearth_home() / "vault"


class Vault(VaultRotation):
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
        that fail authentication are left out (and logged by id). The layout is read
        again under the write lock: another process (the recorder and ``hearth`` both
        opening the vault after an upgrade) may have migrated it since the first look.
        """
        self._db.execute("BEGIN IMMEDIATE")
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(segments)")}
        if "day" in columns:
            self._db.execute("ROLLBACK")
            return
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

    # -- writing ------------------------------------------------------------------

    def append(
        self, events: Sequence[Event], wall_time: float | None = None, *, pad_to: int = 0
    ) -> int | None:
        """Seal ``events`` as one segment of the current day and commit it; returns its id.

        An empty batch is sealed too, padded like any other: the recorder seals one
        segment per interval whether or not anything happened (``client.storage.vault_cadence``).
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
