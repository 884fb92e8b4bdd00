r"""The organisation's Ed25519 key: it signs each app bundle (FAB) the laptops may run.

What is signed is a *bundle manifest* (``policy.signed_bundle``): the FAB's own
SHA-256, its app id and Flower version as the FAB's ``pyproject.toml`` gives them,
a release number that only ever increases, a validity window and the signing
key's id. The organisation also signs *revocation lists* of key ids the devices
must stop trusting, each with its own increasing version and expiry. Both are
signed tokens ``<payload>.<signature>`` (unpadded base64url) behind their own
domain tags, so a signature can never be replayed as anything else.

``hearth-server sign`` writes the manifest token next to the bundle
(``NAME.fab.sig``); the campaign passes it to the devices in the run config
(``bundle-signature``) and the newest revocation list (``hearth-server revoke``)
as ``bundle-revocations``, outside the bundle they describe. Devices check both
with ``client.deployment.bundle_trust`` before any bundle code is installed.
"""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
)

from policy.signed_bundle import (
    Manifest,
    RevocationList,
    encode_token,
    key_id,
    manifest_message,
    revocations_message,
)
from server.passphrase import MIN_LENGTH as PASSPHRASE_MIN_LENGTH
from server.passphrase import PassphraseError, org_key_passphrase
from server.pki import PkiError, write_private

ORG_KEY: Final = "org-signing.key"
ORG_PUBLIC_KEY: Final = "org-signing.pub"
SIGNATURE_SUFFIX: Final = ".sig"
DEFAULT_VALID_DAYS: Final = 30.0
DAY_SECONDS: Final = 86_400


class SigningError(Exception):
    """The organisation key or a bundle cannot be used; one line says why."""


@dataclass(frozen=True)
class BundleSignature:
    """A signed bundle: its digest, its manifest and the token the devices check."""

    sha256: str
    token: str
    manifest: Manifest


@dataclass(frozen=True)
class SignedRevocations:
    """A signed revocation list and the token the devices check."""

    token: str
    revocations: RevocationList


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


def fab_metadata(fab: bytes) -> tuple[str, str]:
    """The app id (``publisher/name``) and version Flower derives from the FAB's pyproject."""
    from flwr.common.config import (  # noqa: PLC0415 (heavy, CLI-only)
        get_fab_config,
        get_metadata_from_config,
    )

    try:
        return get_metadata_from_config(get_fab_config(fab))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise SigningError(f"not a Flower app bundle: {exc}") from None


def _validity(valid_days: float, not_before: float | None) -> tuple[int, int]:
    if not valid_days > 0:
        raise SigningError("--valid-days must be positive")
    start = int(time.time() if not_before is None else not_before)
    return start, start + round(valid_days * DAY_SECONDS)


def sign_bundle(
    fab: bytes,
    key: Ed25519PrivateKey,
    *,
    version: int,
    valid_days: float = DEFAULT_VALID_DAYS,
    not_before: float | None = None,
) -> BundleSignature:
    """Sign the manifest of ``fab``: release ``version``, valid ``valid_days`` from ``not_before``.

    ``not_before`` defaults to now. The app id and Flower version are read from
    the bundle itself, so they cannot disagree with what a device installs.
    """
    app_id, fab_version = fab_metadata(fab)
    start, expires = _validity(valid_days, not_before)
    try:
        manifest = Manifest(
            app_id=app_id,
            fab_version=fab_version,
            sha256=hashlib.sha256(fab).hexdigest(),
            version=version,
            not_before=start,
            expires=expires,
            key_id=key_id(key.public_key()),
        )
    except ValueError as exc:
        raise SigningError(f"cannot sign this bundle: {exc}") from None
    payload = manifest.payload()
    token = encode_token(payload, key.sign(manifest_message(payload)))
    return BundleSignature(manifest.sha256, token, manifest)


def sign_revocations(
    key: Ed25519PrivateKey,
    *,
    version: int,
    revoked: Iterable[str] = (),
    valid_days: float = DEFAULT_VALID_DAYS,
    not_before: float | None = None,
) -> SignedRevocations:
    """Sign revocation list ``version`` naming the ``revoked`` key ids (may be none)."""
    start, expires = _validity(valid_days, not_before)
    try:
        revocations = RevocationList(
            version=version,
            not_before=start,
            expires=expires,
            revoked=tuple(sorted(set(revoked))),
            key_id=key_id(key.public_key()),
        )
    except ValueError as exc:
        raise SigningError(f"cannot sign this revocation list: {exc}") from None
    payload = revocations.payload()
    token = encode_token(payload, key.sign(revocations_message(payload)))
    return SignedRevocations(token, revocations)


def write_signature(fab_path: Path, signature: BundleSignature) -> Path:
    """Write the signed manifest next to the bundle: ``NAME.fab.sig``."""
    path = fab_path.with_name(fab_path.name + SIGNATURE_SUFFIX)
    path.write_text(f"{signature.token}\n")
    return path


def write_revocations(path: Path, signed: SignedRevocations) -> Path:
    """Write a signed revocation list to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{signed.token}\n")
    return path


def bundle_contents(fab: bytes) -> list[tuple[str, int]]:
    """Every file a bundle carries with its size in bytes, in the order it was packed."""
    try:
        with zipfile.ZipFile(io.BytesIO(fab)) as archive:
            return [(i.filename, i.file_size) for i in archive.infolist() if not i.is_dir()]
    except zipfile.BadZipFile as exc:
        raise SigningError(f"not a bundle: {exc}") from None


def describe_contents(fab: bytes) -> list[str]:
    """What a bundle carries, one line per folder: its files and their total size."""
    folders: dict[str, list[tuple[str, int]]] = {}
    for name, size in bundle_contents(fab):
        folder, _, base = name.rpartition("/")
        folders.setdefault(folder, []).append((base, size))
    lines = []
    for folder, files in sorted(folders.items()):
        total = sum(size for _, size in files)
        names = " ".join(base for base, _ in files)
        lines.append(f"  {folder or '.'}/ ({len(files)} files, {total:,} bytes): {names}")
    return lines


def build_bundle(app_dir: Path) -> bytes:
    """Build the app's FAB exactly as ``flwr run APP_DIR`` does (the build is deterministic)."""
    from flwr.cli.build import build_fab_from_disk  # noqa: PLC0415 (heavy, CLI-only)

    try:
        return build_fab_from_disk(app_dir)
    except ValueError as exc:
        raise SigningError(f"cannot build a bundle from {app_dir}: {exc}") from None


__all__ = [
    "DEFAULT_VALID_DAYS",
    "BundleSignature",
    "SignedRevocations",
    "SigningError",
    "build_bundle",
    "bundle_contents",
    "describe_contents",
    "fab_metadata",
    "generate_org_key",
    "key_id",
    "load_org_key",
    "sign_bundle",
    "sign_revocations",
    "write_revocations",
    "write_signature",
]
