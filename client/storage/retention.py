"""Retention: days past their lifetime, the quota, and modalities no longer consented to.

Each deletion shreds the day keys it can first, then deletes the segments and
records it in the manifest, in one transaction.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

from client.storage.day_keys import (
    day_of,
    load_day_keys,
)
from client.storage.segments import MARKER, _modality_name, seal
from client.storage.vault_reading import VaultReader
from policy.events import (
    Modality,
)

DEFAULT_RETENTION_DAYS: Final = 14.0


DEFAULT_QUOTA_BYTES: Final = 500 * 2**20


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one retention pass deleted."""

    deleted_by_age: int
    deleted_by_quota: int


_REKEY_BATCH: Final = 256


class VaultRetention(VaultReader):
    """Deleting what the vault may no longer hold."""

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
