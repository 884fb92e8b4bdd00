"""The device's privacy policy: the one the organisation signed and the device pinned at enrolment.

``hearth join --policy POLICY --policy-signature SIG`` (or ``hearth policy accept``)
checks the organisation's Ed25519 signature over the policy file's SHA-256
(``policy.signed_policy``) against the org public key pinned in ``trust/``, then
keeps the file and its signature there. From then on that policy is the device's:
``Device.policy()``, the governor, consent and the round check read it, never the
bundle's default nor ``HEARTH_POLICY``. The pinned file is verified again each time
it is read, so a file changed on disk is refused, not trusted. Only the employee
pins a policy, on the laptop; the server can ask for a round under another policy,
and the device refuses it.

A laptop that never pinned one has not joined a federation: it follows
``HEARTH_POLICY`` or the shipped default, as ``hearth`` always did (``hearth join``
refuses to start without a pinned policy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from client.storage.home import ensure_private_dir
from client.storage.org_key import OrgKeyError, pinned_key_path, read_public_key
from policy.signed_bundle import key_id
from policy.signed_policy import parse_token, policy_digest, signed_message
from privacy.policy import PolicyError, PrivacyPolicy, load_policy, parse_policy, policy_hash

PINNED_POLICY_FILE: Final = "policy.toml"
PINNED_SIGNATURE_FILE: Final = "policy.toml.sig"


class PolicyRefused(PolicyError):
    """A policy is not the organisation's (or cannot be checked); it is not pinned or used."""


@dataclass(frozen=True)
class PinnedPolicy:
    """A policy that passed: the policy, its hash (as rounds carry it), the file's SHA-256."""

    policy: PrivacyPolicy
    policy_hash: str
    file_sha256: str
    key_id: str


def pinned_policy_path(home: Path) -> Path:
    """Where the pinned policy file lives (its signature sits beside it)."""
    return pinned_key_path(home).parent / PINNED_POLICY_FILE


def verify_policy(
    text: bytes, token: str, org_key: Ed25519PublicKey, source: str = "policy"
) -> PinnedPolicy:
    """Accept ``text`` only if ``token`` is the org's signature of its SHA-256 and it parses."""
    try:
        signer, signature = parse_token(token)
    except ValueError as exc:
        raise PolicyRefused(f"policy refused: {exc}") from None
    expected = key_id(org_key)
    if signer != expected:
        raise PolicyRefused(
            f"policy refused: signed by key {signer[:16]!r}, not the organisation's key {expected}"
        )
    digest = policy_digest(text)
    try:
        org_key.verify(signature, signed_message(digest))
    except InvalidSignature:
        raise PolicyRefused(
            f"policy refused: {source} is not what the organisation signed"
        ) from None
    try:
        policy = parse_policy(text.decode(), source)
    except UnicodeDecodeError:
        raise PolicyRefused(f"policy refused: {source} is not UTF-8 text") from None
    return PinnedPolicy(policy, policy_hash(policy), digest.hex(), expected)


def _org_key(home: Path) -> Ed25519PublicKey:
    try:
        return read_public_key(pinned_key_path(home))
    except OrgKeyError:
        raise PolicyRefused(
            "policy refused: no organisation key pinned yet (pass --org-key org-signing.pub)"
        ) from None


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def load_pinned(home: Path) -> PinnedPolicy | None:
    """The pinned policy, verified again; None if none was pinned, ``PolicyRefused`` if broken."""
    path = pinned_policy_path(home)
    if not path.exists():
        return None
    try:
        text = path.read_bytes()
        token = path.with_name(PINNED_SIGNATURE_FILE).read_text()
    except OSError as exc:
        raise PolicyRefused(f"the pinned policy cannot be read: {exc.strerror}") from None
    return verify_policy(text, token, _org_key(home), "the pinned policy")


def pin_policy(home: Path, source: Path, token: str) -> tuple[PinnedPolicy, PinnedPolicy | None]:
    """Verify ``source`` against the pinned org key and pin it; returns (new, previous).

    Nothing is written unless the signature and the policy are valid. The previous
    pin is None when there was none (or it no longer verified).
    """
    try:
        text = source.read_bytes()
    except OSError as exc:
        raise PolicyRefused(f"policy refused: cannot read {source}: {exc.strerror}") from None
    pinned = verify_policy(text, token, _org_key(home), str(source))
    try:
        previous = load_pinned(home)
    except PolicyError:
        previous = None
    path = pinned_policy_path(home)
    ensure_private_dir(path.parent)
    # The signature first: a crash between the two writes leaves a pair that fails to
    # verify (refused), never an unsigned policy that is trusted.
    _write_private(path.with_name(PINNED_SIGNATURE_FILE), f"{token.strip()}\n".encode())
    _write_private(path, text)
    return pinned, previous


def device_policy(home: Path) -> PrivacyPolicy:
    """The policy this device is under: the pinned one, else ``HEARTH_POLICY`` or the default."""
    pinned = load_pinned(home)
    return pinned.policy if pinned is not None else load_policy()


def read_signature_option(value: str) -> str:
    """A ``--policy-signature`` is the token itself or the ``.sig`` file that holds it."""
    candidate = Path(value).expanduser()
    if candidate.is_file():
        return candidate.read_text().strip()
    return value.strip()


__all__ = [
    "PinnedPolicy",
    "PolicyRefused",
    "device_policy",
    "load_pinned",
    "pin_policy",
    "pinned_policy_path",
    "read_signature_option",
    "verify_policy",
]
