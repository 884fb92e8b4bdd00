"""The organisation signs the privacy policy the laptops pin (``hearth-server sign-policy``).

Same key and token format as bundles (``server.signing``), a different domain tag
(``policy.signed_policy``). The policy is validated before it is signed: the org never
signs a file a laptop would refuse to parse. The signature is written next to the
policy (``POLICY.sig``); a laptop pins both with
``hearth join --policy POLICY --policy-signature "$(cat POLICY.sig)"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from policy.signed_bundle import key_id
from policy.signed_policy import make_token, policy_digest, signed_message
from privacy.policy import PolicyError, parse_policy, policy_hash

SIGNATURE_SUFFIX: Final = ".sig"


@dataclass(frozen=True)
class PolicySignature:
    """A signed policy: the file's SHA-256, the policy hash rounds carry, the token."""

    file_sha256: str
    policy_hash: str
    token: str


def sign_policy(text: bytes, key: Ed25519PrivateKey, source: str = "policy") -> PolicySignature:
    """Validate the policy, then sign the SHA-256 of its bytes; ``PolicyError`` if invalid."""
    try:
        policy = parse_policy(text.decode(), source)
    except UnicodeDecodeError:
        raise PolicyError(f"privacy policy error: {source} is not UTF-8 text") from None
    digest = policy_digest(text)
    token = make_token(key_id(key.public_key()), key.sign(signed_message(digest)))
    return PolicySignature(digest.hex(), policy_hash(policy), token)


def write_policy_signature(
    policy_path: Path, signature: PolicySignature, out: Path | None = None
) -> Path:
    """Write the token to ``out`` or next to the policy (``POLICY.sig``)."""
    path = out or policy_path.with_name(policy_path.name + SIGNATURE_SUFFIX)
    path.write_text(f"{signature.token}\n")
    return path


__all__ = ["PolicySignature", "sign_policy", "write_policy_signature"]
