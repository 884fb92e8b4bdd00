r"""The organisation's Ed25519 key: it signs each app bundle (FAB) the laptops may run.

What is signed is the bundle's SHA-256, behind a fixed domain tag, so a
signature can never be replayed as anything else::

    message   = b"hearth-fab-v1\x00" + sha256(fab bytes)
    signature = Ed25519(org key, message)

A signature travels as one token ``<key-id>.<base64url signature>`` (key id: the
first 16 hex digits of the SHA-256 of the raw public key). ``hearth-server sign``
writes it next to the bundle (``NAME.fab.sig``) and the campaign passes it to the
devices in the run config (``bundle-signature``), outside the bundle it signs.
Devices check it with ``client.bundle_trust`` before any bundle code is installed.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
)

from policy.signed_bundle import key_id, signed_message
from server.pki import PkiError, write_private

ORG_KEY: Final = "org-signing.key"
ORG_PUBLIC_KEY: Final = "org-signing.pub"
SIGNATURE_SUFFIX: Final = ".sig"


class SigningError(Exception):
    """The organisation key or a bundle cannot be used; one line says why."""


@dataclass(frozen=True)
class BundleSignature:
    """A signed bundle: its digest and the token the devices check."""

    sha256: str
    token: str


def generate_org_key(directory: Path) -> tuple[Path, Path]:
    """Create the org signing key pair in ``directory`` (private 0600, never overwritten)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    private, public = directory / ORG_KEY, directory / ORG_PUBLIC_KEY
    key = Ed25519PrivateKey.generate()
    try:
        write_private(
            private,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    except PkiError as exc:
        raise SigningError(str(exc)) from None
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def load_org_key(path: Path) -> Ed25519PrivateKey:
    """The org's private signing key, or a one-line error."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise SigningError(f"cannot read the org signing key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path} is not an Ed25519 private key")
    return key


def sign_bundle(fab: bytes, key: Ed25519PrivateKey) -> BundleSignature:
    """Sign the SHA-256 of ``fab``."""
    digest = hashlib.sha256(fab).digest()
    signature = key.sign(signed_message(digest))
    token = f"{key_id(key.public_key())}.{base64.urlsafe_b64encode(signature).decode()}"
    return BundleSignature(digest.hex(), token)


def write_signature(fab_path: Path, signature: BundleSignature) -> Path:
    """Write the detached signature next to the bundle: ``NAME.fab.sig``."""
    path = fab_path.with_name(fab_path.name + SIGNATURE_SUFFIX)
    path.write_text(f"{signature.token}\n")
    return path


def build_bundle(app_dir: Path) -> bytes:
    """Build the app's FAB exactly as ``flwr run APP_DIR`` does (the build is deterministic)."""
    from flwr.cli.build import build_fab_from_disk  # noqa: PLC0415 (heavy, CLI-only)

    try:
        return build_fab_from_disk(app_dir)
    except ValueError as exc:
        raise SigningError(f"cannot build a bundle from {app_dir}: {exc}") from None


__all__ = [
    "BundleSignature",
    "SigningError",
    "build_bundle",
    "generate_org_key",
    "key_id",
    "load_org_key",
    "sign_bundle",
    "signed_message",
    "write_signature",
]
