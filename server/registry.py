"""The device registry: every enrolment, appended to one hash-chained file.

``PKI/registry.jsonl`` holds one JSON object a line::

    {"seq": 1, "time": "...Z", "event": "enrolled", "device": "alice-laptop",
     "fingerprint": "SHA256:...", "detail": "", "prev": "<hash of line 0>", "hash": "..."}

``hash`` is the SHA-256 of the line's other fields (canonical JSON), and each line
names the previous line's hash, so changing, removing or reordering any line
breaks every hash after it. ``hearth-server pki add-device`` appends ``enrolled``;
``hearth-server up`` appends ``registered`` when it registers a key with the
SuperLink, and registers only keys enrolled here.

The chain is not signed here, on purpose: the org signing key stays offline. A
chain alone proves nothing against whoever can rewrite the whole file; what does
is its head hash (``hearth-server pki registry``), countersigned out of band by
the privacy team. A later registry is honest only if it still contains that head
(``--since HEAD`` lists what was appended after it).
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization

REGISTRY_FILE: Final = "registry.jsonl"
GENESIS: Final = "0" * 64
ENROLLED: Final = "enrolled"
REGISTERED: Final = "registered"
_FIELDS: Final = ("seq", "time", "event", "device", "fingerprint", "detail", "prev", "hash")


class RegistryError(Exception):
    """The registry is broken or cannot be written; one line says where."""


@dataclass(frozen=True)
class Entry:
    """One line of the registry."""

    seq: int
    time: str
    event: str
    device: str
    fingerprint: str
    detail: str
    prev: str
    hash: str

    def line(self) -> str:
        """The entry as one line of ``registry.jsonl`` (no newline)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


def entry_hash(entry: Entry) -> str:
    """SHA-256 (hex) of an entry's fields other than its own hash, as canonical JSON."""
    fields = {name: value for name, value in asdict(entry).items() if name != "hash"}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def fingerprint(public_key: bytes) -> str:
    """The OpenSSH fingerprint (``SHA256:<base64>``, as ``ssh-keygen -l``) of a public key line."""
    try:
        key = serialization.load_ssh_public_key(public_key)
    except ValueError as exc:
        raise RegistryError(f"not an OpenSSH public key: {exc}") from None
    blob = base64.b64decode(
        key.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).split()[1]
    )
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def registry_path(pki_dir: Path) -> Path:
    """Where the registry of ``pki_dir`` lives."""
    return pki_dir / REGISTRY_FILE


def _parse(number: int, text: str) -> Entry:
    try:
        raw = json.loads(text)
    except ValueError:
        raise RegistryError(f"registry line {number} is not JSON") from None
    if not isinstance(raw, dict) or set(raw) != set(_FIELDS):
        raise RegistryError(f"registry line {number} does not have the registry's fields")
    if not isinstance(raw["seq"], int) or not all(
        isinstance(raw[name], str) for name in _FIELDS if name != "seq"
    ):
        raise RegistryError(f"registry line {number} has a field of the wrong type")
    return Entry(**raw)


def verify(lines: list[str]) -> list[Entry]:
    """Parse and check the chain; ``RegistryError`` names the first line that breaks it."""
    entries: list[Entry] = []
    prev = GENESIS
    for number, text in enumerate(lines, start=1):
        entry = _parse(number, text)
        if entry.seq != number:
            raise RegistryError(f"registry line {number} says it is entry {entry.seq}")
        if entry.prev != prev:
            raise RegistryError(
                f"registry chain broken at line {number}: it does not follow line {number - 1}"
            )
        if entry.hash != entry_hash(entry):
            raise RegistryError(f"registry chain broken at line {number}: it was changed")
        entries.append(entry)
        prev = entry.hash
    return entries


def _lines(pki_dir: Path) -> list[str]:
    try:
        text = registry_path(pki_dir).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RegistryError(f"cannot read {registry_path(pki_dir)}: {exc.strerror}") from None
    if text and not text.endswith("\n"):
        raise RegistryError(f"{registry_path(pki_dir)} ends in a partial line")
    return text.splitlines()


def read_registry(pki_dir: Path) -> list[Entry]:
    """Every entry of ``pki_dir``'s registry, the chain checked (empty if none yet)."""
    return verify(_lines(pki_dir))


def head(entries: list[Entry]) -> str:
    """The hash to countersign: the last entry's (the genesis value if empty)."""
    return entries[-1].hash if entries else GENESIS


def since(entries: list[Entry], countersigned: str) -> list[Entry]:
    """The entries after the one whose hash is ``countersigned``; refuses a head not found."""
    if countersigned == GENESIS:
        return entries
    for index, entry in enumerate(entries):
        if entry.hash == countersigned:
            return entries[index + 1 :]
    raise RegistryError(
        f"head {countersigned[:16]} is not in this registry: entries were rewritten or removed"
    )


def enrolled(entries: list[Entry]) -> dict[str, str]:
    """Device name -> the fingerprint it was enrolled with."""
    return {e.device: e.fingerprint for e in entries if e.event == ENROLLED}


@contextmanager
def _locked(pki_dir: Path) -> Iterator[None]:
    lock = pki_dir / f".{REGISTRY_FILE}.lock"
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def append(pki_dir: Path, event: str, device: str, key_fingerprint: str, detail: str = "") -> Entry:
    """Append one entry after checking the chain so far; returns it."""
    with _locked(pki_dir):
        entries = read_registry(pki_dir)
        seq = len(entries) + 1
        time = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        prev = head(entries)
        entry = Entry(seq, time, event, device, key_fingerprint, detail, prev, "")
        entry = replace(entry, hash=entry_hash(entry))
        path = registry_path(pki_dir)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            handle.write(entry.line() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    return entry


__all__ = [
    "ENROLLED",
    "GENESIS",
    "REGISTERED",
    "REGISTRY_FILE",
    "Entry",
    "RegistryError",
    "append",
    "enrolled",
    "entry_hash",
    "fingerprint",
    "head",
    "read_registry",
    "registry_path",
    "since",
    "verify",
]
