"""The vault's manifest: which segment ids are live and which id comes next, sealed.

AES-GCM per segment proves that a segment is intact and sits under its own id; only
a record across segments can tell that the newest one was dropped, or that a
deleted one was put back. The manifest is that record, sealed with a key derived
from the vault's data key and rewritten in the same SQLite transaction as every
append and deletion, so deletions by retention or on request are never mistaken for
tampering, and ids are never handed out twice (the counter lives in here, not in a
plaintext table anyone can edit).

The manifest alone cannot catch the whole database replaced by an older copy of
itself (manifest included): its write counter is anchored outside the database
for that (``client.storage.vault_anchor``).
"""

from __future__ import annotations

import bisect
import json
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO: Final = b"hearth-vault-manifest-v1"
_HEADER: Final = struct.Struct(">I12s")


class ManifestError(Exception):
    """The manifest is missing or failed authentication; the vault cannot be trusted."""


@dataclass(frozen=True, slots=True)
class Audit:
    """Stored segments checked against the manifest."""

    missing: tuple[int, ...] = ()  # live in the manifest, gone from the database
    unexpected: tuple[int, ...] = ()  # in the database, never live or already deleted


@dataclass(frozen=True, slots=True)
class Manifest:
    """Live segment ids as sorted, disjoint, inclusive ranges, and the next id."""

    next_id: int = 1
    live: tuple[tuple[int, int], ...] = ()
    deleted: int = 0  # segments removed by retention or on request, for the summary
    # Modalities that may have events in the vault (None: unknown, e.g. after migration);
    # a revoked modality outside it needs no purge.
    present: tuple[str, ...] | None = ()
    revision: int = 0  # bumped whenever segments are rewritten in place (a purge)
    purged: int = 0  # events deleted because their modality was revoked
    # What the summary shows without decrypting every segment: per UTC day and
    # modality, events and (apportioned) ciphertext bytes, as appended minus deleted.
    days: Mapping[int, Mapping[str, tuple[int, int]]] = field(default_factory=dict)
    writes: int = (
        0  # bumped on every write; anchored outside vault.db (client.storage.vault_anchor)
    )
    # (counter found, counter anchored) once this vault was found older than its anchor:
    # sealed in, so writing on into the old copy does not make it look current again.
    rolled_back: tuple[int, int] | None = None
    _starts: tuple[int, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", tuple(a for a, _ in self.live))

    def __contains__(self, segment_id: object) -> bool:
        if not isinstance(segment_id, int):
            return False
        index = bisect.bisect_right(self._starts, segment_id) - 1
        return index >= 0 and segment_id <= self.live[index][1]

    @property
    def count(self) -> int:
        """How many segments are live."""
        return sum(b - a + 1 for a, b in self.live)

    def tallied(self, day: int, counts: Mapping[str, int], size: int, sign: int = 1) -> Manifest:
        """The manifest with one segment's counts added (``sign`` 1) or removed (-1)."""
        total = max(1, sum(counts.values()))
        entry = dict(self.days.get(day, {}))
        for modality, n in counts.items():
            events, size_so_far = entry.get(modality, (0, 0))
            events, size_so_far = events + sign * n, size_so_far + sign * (size * n // total)
            if events > 0:
                entry[modality] = (events, max(0, size_so_far))
            else:
                entry.pop(modality, None)
        days = {**self.days, day: entry}
        if not entry:
            del days[day]
        return replace(self, days=days)

    def without_days(self, doomed: Iterable[int]) -> Manifest:
        """The manifest once whole days are destroyed."""
        gone = set(doomed)
        return replace(self, days={d: e for d, e in self.days.items() if d not in gone})

    def appended(self, modalities: Iterable[str] = ()) -> tuple[int, Manifest]:
        """The id for a new segment (holding ``modalities``), and the manifest with it live."""
        new = self.next_id
        live = list(self.live)
        if live and live[-1][1] == new - 1:
            live[-1] = (live[-1][0], new)
        else:
            live.append((new, new))
        present = None if self.present is None else tuple(sorted({*self.present, *modalities}))
        return new, replace(self, next_id=new + 1, live=tuple(live), present=present)

    def after_purge(self, kept: Iterable[str], events: int) -> Manifest:
        """The manifest once only ``kept`` modalities remain (``events`` were deleted)."""
        keep = set(kept)
        present = keep if self.present is None else keep & set(self.present)
        return replace(
            self,
            present=tuple(sorted(present)),
            revision=self.revision + 1,
            purged=self.purged + events,
        )

    def without(self, ids: Iterable[int]) -> Manifest:
        """The manifest after ``ids`` were deleted (ids not live are ignored)."""
        doomed = sorted({i for i in ids if i in self})
        if not doomed:
            return self
        live: list[tuple[int, int]] = []
        k = 0
        for a, b in self.live:
            start = a
            while k < len(doomed) and doomed[k] <= b:
                if doomed[k] > start:
                    live.append((start, doomed[k] - 1))
                start = doomed[k] + 1
                k += 1
            if start <= b:
                live.append((start, b))
        return replace(self, live=tuple(live), deleted=self.deleted + len(doomed))

    def audit(self, stored: Iterable[int]) -> Audit:
        """Compare the ids stored (ascending) with the live ones."""
        unexpected: list[int] = []
        seen: set[int] = set()
        for segment_id in stored:
            if segment_id in self:
                seen.add(segment_id)
            else:
                unexpected.append(segment_id)
        missing = [i for a, b in self.live for i in range(a, b + 1) if i not in seen]
        return Audit(tuple(missing), tuple(unexpected))

    def to_json(self) -> bytes:
        """Serialize (the sealed payload)."""
        return json.dumps(
            {
                "next": self.next_id,
                "live": self.live,
                "deleted": self.deleted,
                "present": self.present,
                "revision": self.revision,
                "purged": self.purged,
                "days": {
                    str(day): {m: list(v) for m, v in entry.items()}
                    for day, entry in self.days.items()
                },
                "writes": self.writes,
                "rolled_back": self.rolled_back,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, payload: bytes) -> Manifest:
        """Parse an authenticated payload."""
        data = json.loads(payload)
        live = tuple((int(a), int(b)) for a, b in data["live"])
        present = data.get("present")
        rolled_back = data.get("rolled_back")
        return cls(
            int(data["next"]),
            live,
            int(data.get("deleted", 0)),
            None if present is None else tuple(str(m) for m in present),
            int(data.get("revision", 0)),
            int(data.get("purged", 0)),
            {
                int(day): {str(m): (int(v[0]), int(v[1])) for m, v in entry.items()}
                for day, entry in dict(data.get("days", {})).items()
            },
            int(data.get("writes", 0)),
            None if rolled_back is None else (int(rolled_back[0]), int(rolled_back[1])),
        )


def _key(data_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(data_key)


def _aad(generation: int) -> bytes:
    return b"hearth-manifest:%d" % generation


def seal_manifest(data_key: bytes, generation: int, manifest: Manifest) -> bytes:
    """The manifest sealed under the data key of ``generation``."""
    nonce = os.urandom(12)
    sealed = AESGCM(_key(data_key)).encrypt(nonce, manifest.to_json(), _aad(generation))
    return _HEADER.pack(generation, nonce) + sealed


def open_manifest(keys: Mapping[int, bytes], blob: bytes) -> tuple[int, Manifest]:
    """(generation, manifest) of a sealed manifest, or ``ManifestError``."""
    if len(blob) < _HEADER.size + 16:
        raise ManifestError("the vault's manifest is truncated")
    generation, nonce = _HEADER.unpack_from(blob)
    key = keys.get(generation)
    if key is None:
        raise ManifestError(f"the vault's manifest is sealed under unknown key {generation}")
    try:
        payload = AESGCM(_key(key)).decrypt(nonce, blob[_HEADER.size :], _aad(generation))
        return generation, Manifest.from_json(payload)
    except InvalidTag:
        raise ManifestError("the vault's manifest failed authentication") from None
    except (ValueError, KeyError, TypeError):
        raise ManifestError("the vault's manifest is damaged") from None
