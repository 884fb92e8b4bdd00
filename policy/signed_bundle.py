r"""What an organisation signature covers: the contract the server and the laptops share.

The organisation's Ed25519 key signs two kinds of statement, each a *signed
token* ``<payload>.<signature>`` (both unpadded base64url). The payload is
canonical JSON (sorted keys, no spaces); the signature covers a domain tag
followed by the payload bytes, so a statement of one kind can never be read as
the other, nor as the bare bundle signature hearth used before
(``b"hearth-fab-v1\x00" + sha256``, retired: it carried no version or expiry).

A **bundle manifest** (tag ``hearth-bundle-manifest-v2``) says which bundle the
organisation released::

    {"app_id": "hearth/hearth",        # publisher/name, as Flower derives it
     "fab_version": "0.1.0",           # [project] version of the bundle
     "sha256": "<64 hex>",             # of the FAB's bytes
     "version": 7,                     # release number, only ever increases
     "not_before": 1767225600,         # unix seconds
     "expires": 1769817600,
     "key_id": "<16 hex>"}             # the signing key

A **revocation list** (tag ``hearth-revocation-list-v1``) names signing keys that
must no longer be trusted, with its own increasing version and validity::

    {"version": 2, "not_before": ..., "expires": ..., "revoked": ["<16 hex>", ...],
     "key_id": "<16 hex>"}

Both travel with a run in its run config (``bundle-signature`` and
``bundle-revocations``), outside the bundle they describe. This module parses
and verifies them; what a device does with them (versions it accepted, the
newest revocation list it holds) is ``client.deployment.bundle_trust``'s.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MANIFEST_TAG: Final = b"hearth-bundle-manifest-v2\x00"
REVOCATIONS_TAG: Final = b"hearth-revocation-list-v1\x00"
MANIFEST_CONFIG_KEY: Final = "bundle-signature"
REVOCATIONS_CONFIG_KEY: Final = "bundle-revocations"

MAX_TOKEN_CHARS: Final = 64 * 1024
MAX_REVOKED: Final = 1024
MAX_VERSION: Final = 2**53 - 1  # exact in every JSON reader
# A device accepts a statement this many seconds before its not-before (clock drift).
CLOCK_SKEW_SECONDS: Final = 300

_SAFE: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")
_SHA256: Final = re.compile(r"[0-9a-f]{64}")
_KEY_ID: Final = re.compile(r"[0-9a-f]{16}")


class TokenProblem(StrEnum):
    """Why a signed token was not accepted."""

    MISSING = "missing"
    MALFORMED = "malformed"
    FOREIGN = "signed by another key"
    BAD_SIGNATURE = "signature does not verify"


class TokenError(Exception):
    """A signed token that must not be trusted; ``problem`` says which way."""

    def __init__(self, problem: TokenProblem, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem


class OrgKeyError(ValueError):
    """A file is not a readable Ed25519 public key; the message says which file and why."""


def read_public_key(path: Path) -> Ed25519PublicKey:
    """The organisation's Ed25519 public key in PEM (device and SuperLink read it alike)."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise OrgKeyError(f"cannot read {path}: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise OrgKeyError(f"{path} is not an Ed25519 public key")
    return key


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short, stable id of an org public key: 16 hex digits of the SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def safe_name(value: object, what: str) -> str:
    """``value`` if it is a non-empty name of ``[A-Za-z0-9._-]`` that cannot walk a path.

    Refuses ``/``, ``..`` anywhere, and ``.`` alone: these strings become parts of
    directory names on the device. Raises ``ValueError`` naming ``what``.
    """
    if not isinstance(value, str) or not _SAFE.fullmatch(value) or ".." in value or value == ".":
        raise ValueError(f"{what} {str(value)[:64]!r} is not a safe name ([A-Za-z0-9._-], no '..')")
    return value


def safe_app_id(value: object) -> str:
    """A Flower app id ``publisher/name``: ``/`` only as the one separator, both parts safe."""
    if not isinstance(value, str) or value.count("/") != 1:
        raise ValueError(f"app id {str(value)[:64]!r} is not publisher/name")
    publisher, name = value.split("/")
    safe_name(publisher, "app publisher")
    safe_name(name, "app name")
    return value


def _int(data: Mapping[str, Any], key: str, low: int = 0, high: int = MAX_VERSION) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{key} must be an integer in {low}..{high}")
    return value


def _hex(data: Mapping[str, Any], key: str, pattern: re.Pattern[str]) -> str:
    value = data[key]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"{key} is not lowercase hex of the right length")
    return value


def _fields(payload: bytes, expected: frozenset[str]) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("payload is not JSON") from None
    if not isinstance(data, dict) or set(data) != expected:
        raise ValueError(f"payload must have exactly the fields {sorted(expected)}")
    return data


def _canonical(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _window(not_before: int, expires: int) -> None:
    if expires <= not_before:
        raise ValueError("expires must be after not_before")


@dataclass(frozen=True)
class Manifest:
    """The organisation's statement about one released bundle."""

    app_id: str
    fab_version: str
    sha256: str
    version: int
    not_before: int
    expires: int
    key_id: str

    def __post_init__(self) -> None:
        safe_app_id(self.app_id)
        safe_name(self.fab_version, "fab_version")
        _hex({"sha256": self.sha256}, "sha256", _SHA256)
        _int({"version": self.version}, "version", 1)
        _int({"not_before": self.not_before}, "not_before")
        _int({"expires": self.expires}, "expires")
        _window(self.not_before, self.expires)
        _hex({"key_id": self.key_id}, "key_id", _KEY_ID)

    def payload(self) -> bytes:
        """The canonical bytes that are signed."""
        return _canonical(asdict(self))

    @classmethod
    def from_payload(cls, payload: bytes) -> Manifest:
        """Parse signed bytes strictly; ``ValueError`` if anything is off."""
        data = _fields(payload, frozenset(cls.__dataclass_fields__))
        return cls(**data)

    def validity_problem(self, now: float) -> str | None:
        """Why the manifest is not valid at ``now`` (unix seconds), or None."""
        return _validity_problem(self.not_before, self.expires, now)


@dataclass(frozen=True)
class RevocationList:
    """The organisation's list of signing keys that must no longer be trusted."""

    version: int
    not_before: int
    expires: int
    revoked: tuple[str, ...]
    key_id: str

    def __post_init__(self) -> None:
        _int({"version": self.version}, "version", 1)
        _int({"not_before": self.not_before}, "not_before")
        _int({"expires": self.expires}, "expires")
        _window(self.not_before, self.expires)
        _hex({"key_id": self.key_id}, "key_id", _KEY_ID)
        if not isinstance(self.revoked, tuple) or len(self.revoked) > MAX_REVOKED:
            raise ValueError(f"revoked must be a list of at most {MAX_REVOKED} key ids")
        for revoked in self.revoked:
            _hex({"revoked": revoked}, "revoked", _KEY_ID)
        if list(self.revoked) != sorted(set(self.revoked)):
            raise ValueError("revoked key ids must be sorted and unique")

    def payload(self) -> bytes:
        """The canonical bytes that are signed."""
        return _canonical({**asdict(self), "revoked": list(self.revoked)})

    @classmethod
    def from_payload(cls, payload: bytes) -> RevocationList:
        """Parse signed bytes strictly; ``ValueError`` if anything is off."""
        data = _fields(payload, frozenset(cls.__dataclass_fields__))
        if not isinstance(data["revoked"], list):
            raise ValueError("revoked must be a list")
        return cls(**{**data, "revoked": tuple(data["revoked"])})

    def validity_problem(self, now: float) -> str | None:
        """Why the list is not valid at ``now`` (unix seconds), or None."""
        return _validity_problem(self.not_before, self.expires, now)


def _validity_problem(not_before: int, expires: int, now: float) -> str | None:
    if now < not_before - CLOCK_SKEW_SECONDS:
        return f"not valid before {not_before} (now {int(now)})"
    if now >= expires:
        return f"expired at {expires} (now {int(now)})"
    return None


def manifest_message(payload: bytes) -> bytes:
    """The exact bytes the org key signs for a manifest payload."""
    return MANIFEST_TAG + payload


def revocations_message(payload: bytes) -> bytes:
    """The exact bytes the org key signs for a revocation-list payload."""
    return REVOCATIONS_TAG + payload


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64decode(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_token(payload: bytes, signature: bytes) -> str:
    """``<payload>.<signature>``, both unpadded base64url."""
    return f"{_b64encode(payload)}.{_b64encode(signature)}"


def _open(token: str, tag: bytes, public_key: Ed25519PublicKey, kind: type[Any]) -> Any:
    token = token.strip()
    if not token:
        raise TokenError(TokenProblem.MISSING, "no signed token")
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        raise TokenError(TokenProblem.MALFORMED, "not a signed token")
    encoded_payload, encoded_signature = token.split(".")
    try:
        payload = _b64decode(encoded_payload)
        signature = _b64decode(encoded_signature)
        statement = kind.from_payload(payload)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise TokenError(TokenProblem.MALFORMED, f"not a signed token: {exc}") from None
    expected = key_id(public_key)
    if statement.key_id != expected:
        raise TokenError(
            TokenProblem.FOREIGN,
            f"key {statement.key_id} is not the organisation's key {expected}",
        )
    try:
        public_key.verify(signature, tag + payload)
    except InvalidSignature:
        raise TokenError(
            TokenProblem.BAD_SIGNATURE, "the signature is not the organisation's"
        ) from None
    return statement


def open_manifest(token: str, public_key: Ed25519PublicKey) -> Manifest:
    """The manifest in ``token`` if ``public_key`` signed it; ``TokenError`` otherwise.

    Checks form and signature only: whether it fits the bundle, the clock, the
    device's versions and revocations is the caller's.
    """
    manifest: Manifest = _open(token, MANIFEST_TAG, public_key, Manifest)
    return manifest


def open_revocations(token: str, public_key: Ed25519PublicKey) -> RevocationList:
    """The revocation list in ``token`` if ``public_key`` signed it; ``TokenError`` otherwise."""
    revocations: RevocationList = _open(token, REVOCATIONS_TAG, public_key, RevocationList)
    return revocations


__all__ = [
    "CLOCK_SKEW_SECONDS",
    "MANIFEST_CONFIG_KEY",
    "MANIFEST_TAG",
    "REVOCATIONS_CONFIG_KEY",
    "REVOCATIONS_TAG",
    "Manifest",
    "RevocationList",
    "TokenError",
    "TokenProblem",
    "encode_token",
    "key_id",
    "manifest_message",
    "open_manifest",
    "open_revocations",
    "revocations_message",
    "safe_app_id",
    "safe_name",
]
