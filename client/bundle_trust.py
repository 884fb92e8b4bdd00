r"""Signed code only: a device runs an app bundle (FAB) only if the organisation signed it.

Flower's own ``--trusted-entities`` check reads verification records that
Flower Hub adds to a bundle, so it cannot work offline. hearth checks its own
signature instead: the organisation signs ``b"hearth-fab-v1\x00" + sha256(FAB)``
with its Ed25519 key (``hearth-server sign``), the signature reaches the device
in the run config as ``bundle-signature = "<key-id>.<base64url>"``, and the
device verifies it against the org public key it pinned at ``hearth join``.
The device computes the digest of the bytes it received itself, so a changed
bundle fails even with a genuine signature. ``client.runner`` calls
``verify_bundle`` before the bundle is installed or any of its code is imported.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from client.home import ensure_private_dir
from policy.signed_bundle import key_id, signed_message

SIGNATURE_CONFIG_KEY: Final = "bundle-signature"
TRUST_DIR: Final = "trust"
ORG_PUBLIC_KEY_FILE: Final = "org-signing.pub"


class Refusal(StrEnum):
    """Why a bundle was refused."""

    UNSIGNED = "unsigned"
    FOREIGN = "signed by another key"
    INVALID = "signature does not match the bundle"
    NO_TRUST_ANCHOR = "no organisation key pinned"


class BundleRefused(Exception):
    """The bundle is not signed by the organisation; it must not be installed or run."""

    def __init__(self, reason: Refusal, detail: str) -> None:
        super().__init__(f"app bundle refused ({reason.value}): {detail}")
        self.reason = reason


@dataclass(frozen=True)
class TrustedBundle:
    """A bundle that passed: its digest and the org key that signed it."""

    sha256: str
    key_id: str


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key in PEM, or ``BundleRefused`` with the reason."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise BundleRefused(Refusal.NO_TRUST_ANCHOR, f"cannot read {path}: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleRefused(Refusal.NO_TRUST_ANCHOR, f"{path} is not an Ed25519 public key")
    return key


def pinned_key_path(home: Path) -> Path:
    """Where ``hearth join`` pins the organisation's public key."""
    return home / TRUST_DIR / ORG_PUBLIC_KEY_FILE


def pin_org_key(home: Path, source: Path) -> Path:
    """Pin the org public key (validated first); returns the pinned path."""
    key = load_public_key(source)
    path = pinned_key_path(home)
    ensure_private_dir(path.parent)
    path.write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def verify_bundle(fab: bytes, token: str, org_key: Ed25519PublicKey) -> TrustedBundle:
    """Accept ``fab`` only if ``token`` is the org's signature of its SHA-256."""
    digest = hashlib.sha256(fab).digest()
    token = token.strip()
    if not token:
        raise BundleRefused(Refusal.UNSIGNED, "the run carries no bundle-signature")
    expected_id = key_id(org_key)
    signer, _, encoded = token.partition(".")
    if not encoded:
        raise BundleRefused(Refusal.INVALID, "the bundle-signature is malformed")
    if signer != expected_id:
        raise BundleRefused(
            Refusal.FOREIGN, f"key {signer[:16]!r} is not the organisation's key {expected_id}"
        )
    try:
        signature = base64.urlsafe_b64decode(encoded.encode())
    except (binascii.Error, ValueError):
        raise BundleRefused(Refusal.INVALID, "the bundle-signature is malformed") from None
    try:
        org_key.verify(signature, signed_message(digest))
    except InvalidSignature:
        raise BundleRefused(
            Refusal.INVALID, f"bundle {digest.hex()[:12]} is not what the organisation signed"
        ) from None
    return TrustedBundle(digest.hex(), expected_id)


__all__ = [
    "SIGNATURE_CONFIG_KEY",
    "BundleRefused",
    "Refusal",
    "TrustedBundle",
    "load_public_key",
    "pin_org_key",
    "pinned_key_path",
    "verify_bundle",
]
