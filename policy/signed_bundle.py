"""What an organisation signature over an app bundle covers: the contract both sides share.

The server signs and the laptop verifies exactly these bytes, so they are defined
once here rather than kept in step by a comment in two packages.
"""

from __future__ import annotations

import hashlib
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

DOMAIN_TAG: Final = b"hearth-fab-v1\x00"


def signed_message(fab_sha256: bytes) -> bytes:
    """The exact bytes the org key signs for a bundle with this 32-byte SHA-256 digest."""
    if len(fab_sha256) != 32:
        raise ValueError("a bundle digest is 32 bytes of SHA-256")
    return DOMAIN_TAG + fab_sha256


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short, stable id of an org public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]
