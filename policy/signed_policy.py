r"""What an organisation signature over a privacy policy covers: the contract both sides share.

The organisation signs the SHA-256 of the policy file's exact bytes, behind a domain
tag of its own, with the same Ed25519 key that signs bundles::

    message   = b"hearth-policy-v1\x00" + sha256(policy file bytes)
    signature = Ed25519(org key, message)

The tag differs from the bundle's (``policy.signed_bundle``), so a policy signature
never verifies as a bundle signature, nor the other way round. A signature travels
as the same kind of token as a bundle's: ``<key-id>.<base64url signature>``.
``hearth-server sign-policy`` makes it; ``hearth join --policy`` and ``hearth policy
accept`` check it against the org key the device pinned (``client.control.policy_pin``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Final

DOMAIN_TAG: Final = b"hearth-policy-v1\x00"


def policy_digest(text: bytes) -> bytes:
    """The SHA-256 of a policy file's bytes: what a signature covers."""
    return hashlib.sha256(text).digest()


def signed_message(policy_sha256: bytes) -> bytes:
    """The exact bytes the org key signs for a policy file with this SHA-256 digest."""
    if len(policy_sha256) != 32:
        raise ValueError("a policy digest is 32 bytes of SHA-256")
    return DOMAIN_TAG + policy_sha256


def make_token(signer: str, signature: bytes) -> str:
    """``<key-id>.<base64url signature>``."""
    return f"{signer}.{base64.urlsafe_b64encode(signature).decode()}"


def parse_token(token: str) -> tuple[str, bytes]:
    """The key id and the signature of a token; ``ValueError`` when it is malformed."""
    signer, _, encoded = token.strip().partition(".")
    if not signer or not encoded:
        raise ValueError("a policy signature is <key-id>.<base64url signature>")
    try:
        signature = base64.urlsafe_b64decode(encoded.encode())
    except (binascii.Error, ValueError):
        raise ValueError("the policy signature is not base64url") from None
    return signer, signature


__all__ = ["DOMAIN_TAG", "make_token", "parse_token", "policy_digest", "signed_message"]
