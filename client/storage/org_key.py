"""The organisation's public key, pinned at ``hearth join``: bundles and policies verify against it.

It lives in ``<hearth home>/trust``. Reading it is all the policy pin (control/)
and the bundle checks (deployment/) share, so it sits below both; pinning it, and
refusing a bundle when it is missing, stay with the bundle checks
(``client.deployment.bundle_trust``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

TRUST_DIR: Final = "trust"
ORG_PUBLIC_KEY_FILE: Final = "org-signing.pub"


class OrgKeyError(ValueError):
    """The file is not a readable Ed25519 public key; the message says which file and why."""


def read_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key in PEM, or ``OrgKeyError``."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise OrgKeyError(f"cannot read {path}: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise OrgKeyError(f"{path} is not an Ed25519 public key")
    return key


def pinned_key_path(home: Path) -> Path:
    """Where ``hearth join`` pins the organisation's public key."""
    return home / TRUST_DIR / ORG_PUBLIC_KEY_FILE


__all__ = ["ORG_PUBLIC_KEY_FILE", "TRUST_DIR", "OrgKeyError", "pinned_key_path", "read_public_key"]
