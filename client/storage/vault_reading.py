"""Reading the vault: segments authenticated against the manifest, decrypted, decoded.

A segment that fails authentication, or that the manifest does not list, is skipped
and reported by id (``corrupt_segments``), never read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from client.storage.segments import CorruptSegmentError, SegmentInfo, _decoded, _open_raw
from client.storage.vault_manifest import (
    Manifest,
)
from client.storage.vault_store import VaultStore
from policy.events import (
    Event,
    to_record,
)

_log = logging.getLogger(__name__)


class VaultReader(VaultStore):
    """The vault's segments and events, each checked before it is read."""

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

    def export(self) -> Iterator[dict[str, object]]:
        """Decrypted records for the employee's own eyes (``hearth data export``)."""
        for event in self.iter_events():
            yield to_record(event)

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
