"""The organisation's public key, pinned at ``hearth join``: bundles and policies verify against it.

It lives in ``<hearth home>/trust``. Reading it is all the policy pin (control/)
and the bundle checks (deployment/) share, so it sits below both; pinning it, and
refusing a bundle when it is missing, stay with the bundle checks
(``client.deployment.bundle_trust``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from policy.signed_bundle import OrgKeyError, read_public_key

TRUST_DIR: Final = "trust"
ORG_PUBLIC_KEY_FILE: Final = "org-signing.pub"


def pinned_key_path(home: Path) -> Path:
    """Where ``hearth join`` pins the organisation's public key."""
    return home / TRUST_DIR / ORG_PUBLIC_KEY_FILE


__all__ = ["ORG_PUBLIC_KEY_FILE", "TRUST_DIR", "OrgKeyError", "pinned_key_path", "read_public_key"]
