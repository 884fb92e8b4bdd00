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
from server.passphrase import MIN_LENGTH as PASSPHRASE_MIN_LENGTH
from server.passphrase import PassphraseError, org_key_passphrase
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


def generate_org_key(
    directory: Path, passphrase: str | None = None, *, public_directory: Path | None = None
) -> tuple[Path, Path]:
    """Create the org signing key pair; the private key only ever encrypted.

    Parameters
    ----------
    directory
        Where ``org-signing.key`` goes (0600, never overwritten): a directory kept
        offline, away from the SuperLink (``hearth-server up`` refuses to start while
        its user can read the key under its PKI directory).
    passphrase
        Encrypts the key (cryptography's best available PKCS#8 encryption); ``None``
        asks for it (``server.passphrase.org_key_passphrase``). At least 12 characters.
    public_directory
        Where ``org-signing.pub`` goes (default: ``directory``); the PKI directory, so
        that laptops and the SuperLink's bundle check get it without the private key.

    Returns
    -------
    tuple[Path, Path]
        The private and the public key's paths.

    """
    try:
        secret = org_key_passphrase(new=True) if passphrase is None else passphrase
    except PassphraseError as exc:
        raise SigningError(str(exc)) from None
    if len(secret) < PASSPHRASE_MIN_LENGTH:
        raise SigningError(
            f"the org signing key passphrase must be at least {PASSPHRASE_MIN_LENGTH} characters"
        )
    public_directory = public_directory or directory
    private, public = directory / ORG_KEY, public_directory / ORG_PUBLIC_KEY
    for path in (private, public):
        if path.exists():
            raise SigningError(f"{path} already exists; refusing to overwrite a key")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    public_directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    try:
        write_private(
            private,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(secret.encode()),
            ),
        )
    except PkiError as exc:
        raise SigningError(str(exc)) from None
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    public.chmod(0o644)
    return private, public


def load_org_key(path: Path, passphrase: str | None = None) -> Ed25519PrivateKey:
    """The org's private signing key, decrypted with ``passphrase``; or a one-line error.

    ``None`` asks for the passphrase (``HEARTH_ORG_KEY_PASSPHRASE`` or the terminal).
    An unencrypted key is refused: it is what a breached server would have copied.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read the org signing key {path}: {exc.strerror}") from None
    try:
        serialization.load_pem_private_key(data, password=None)
    except TypeError:
        pass  # encrypted, as it must be
    except ValueError:
        raise SigningError(f"{path} is not a PEM private key") from None
    else:
        raise SigningError(
            f"the org signing key {path} is not encrypted; make a new one with "
            "`hearth-server pki init` (it writes it encrypted) and keep it offline"
        )
    try:
        secret = org_key_passphrase() if passphrase is None else passphrase
        key = serialization.load_pem_private_key(data, password=secret.encode())
    except PassphraseError as exc:
        raise SigningError(str(exc)) from None
    except ValueError:
        raise SigningError(f"wrong passphrase for the org signing key {path}") from None
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
