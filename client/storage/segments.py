"""A sealed segment: a batch of events, compressed, padded to a size class, AES-GCM.

Each segment is sealed under its UTC day's key and bound (as associated data) to its
id, schema, key generation and day, so a segment moved, replayed or re-labelled
fails authentication. Times and counts are inside the ciphertext; the padding keeps
its length from telling how much happened in it.
"""

from __future__ import annotations

import json
import os
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from policy.events import (
    MODALITY_OF,
    SCHEMA_VERSION,
    Event,
    SchemaError,
    from_record,
    to_record,
)

_FORMAT: Final = 2  # 1: the pre-day-key layout, migrated on open


# Sealed segments are padded to one of these sizes (then to whole MiB), so their
# length says little about how much happened in them.
PADDED_SIZES: Final = (256, 1024, 4096, 16384, 65536, 262144, 1048576)


MARKER: Final = "marker"  # events of no modality (gaps, session markers): never purged


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


# The widest times a header can hold (17 significant digits), and room for the
# compressor treating other digits a little differently: what ``framed_size`` adds.
_WIDEST_TIME: Final = 1_764_448_671.1234567


_HEADER_SLACK: Final = 32


def framed_size(events: Sequence[Event]) -> int:
    """Bytes ``events`` take of a size class when sealed as one segment, whatever its times.

    An upper bound (the widest header plus a little slack): a batch whose
    ``framed_size`` is at most a class always pads to exactly that class, which is
    what the recorder's fixed-size segments rely on (``client.storage.vault_cadence``).
    """
    return 4 + len(_body(events, _WIDEST_TIME, _WIDEST_TIME)) + _HEADER_SLACK


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


def _encode(events: Sequence[Event], start: float, end: float, pad_to: int = 0) -> bytes:
    """The plaintext of a segment: a header (times, counts) and its events, padded."""
    return _pad(_body(events, start, end), pad_to)


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
