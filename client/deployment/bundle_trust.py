"""Signed code only: a device runs a bundle the organisation released, and exactly that bundle.

Flower's own ``--trusted-entities`` check reads verification records that
Flower Hub adds to a bundle, so it cannot work offline. hearth checks its own
statements instead (``policy.signed_bundle``), against the one organisation key
the device pinned at ``hearth join``:

1. the run's **signed manifest** (run config ``bundle-signature``) verifies, and
   names the SHA-256 the device computes itself from the bytes it received;
2. the ids the SuperLink sent with the run (app id, Flower version, hash) are
   safe names (``[A-Za-z0-9._-]``, no ``/`` but the app id's separator, no
   ``..``) and equal the manifest's, as does the bundle's own ``pyproject.toml``,
   whose ClientApp is the device's own (``client.learning.app:app``);
3. the device's **revocation list** is current and does not name the signing
   key: a newer signed list in the run (``bundle-revocations``) replaces the one
   the device holds, an older one is ignored, and a held list that expired
   refuses every bundle until a run brings a fresh one (so a SuperLink that
   withholds a revocation gains at most the list's lifetime);
4. the manifest is inside its validity window (device clock, 5 minutes'
   grace before not-before);
5. its release number is not below the highest this device accepted for that
   app: a replay of an older release or a downgrade is refused, the same
   release again is not.

State lives in ``<hearth home>/trust`` (0700; files 0600, written atomically
under a lock): the pinned key, ``versions.json`` and ``revocations.json``. A
release counts as accepted once it passed these checks, even if the employee or
the laptop then declines the round. ``client.deployment.runner`` calls ``admit_bundle``
before anything of the run is looked at.

No code of a bundle ever runs on a device. A bundle's ClientApp must be the
device's own ``client.learning.app:app`` (otherwise it is refused, check 2); the device
then runs its installed hearth's ClientApp with the run's configuration. The
bundle's signature says the organisation released this campaign (its ServerApp,
which the SuperLink's gate verifies too, and its configuration); it cannot
replace the device's DP-SGD, ledger, policy pin or guards, because in Python
any code imported into the process that holds them could rewrite them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from client.storage.home import ensure_private_dir
from client.storage.org_key import (
    TRUST_DIR,
    OrgKeyError,
    pinned_key_path,
    read_public_key,
)
from policy.signed_bundle import (
    MANIFEST_CONFIG_KEY,
    REVOCATIONS_CONFIG_KEY,
    Manifest,
    RevocationList,
    TokenError,
    TokenProblem,
    open_manifest,
    open_revocations,
    safe_app_id,
    safe_name,
)

SIGNATURE_CONFIG_KEY: Final = MANIFEST_CONFIG_KEY
VERSIONS_FILE: Final = "versions.json"
REVOCATIONS_FILE: Final = "revocations.json"
LOCK_FILE: Final = ".lock"
# The only ClientApp a device runs: its own installed hearth's, never code from a bundle.
DEVICE_CLIENT_APP: Final = "client.learning.app:app"


class Refusal(StrEnum):
    """Why a bundle was refused (the detail goes to the device's record only)."""

    UNSIGNED = "unsigned"
    FOREIGN = "signed by another key"
    INVALID = "signature does not match the bundle"
    NO_TRUST_ANCHOR = "no organisation key pinned"
    UNSAFE_ID = "unsafe app id, version or hash from the server"
    MISMATCH = "the run does not match the signed manifest"
    REVOKED = "signed by a revoked key"
    REVOCATIONS = "no current revocation list"
    NOT_YET_VALID = "not yet valid"
    EXPIRED = "expired"
    DOWNGRADE = "older than a release this device accepted"
    FOREIGN_CLIENT_APP = "its ClientApp is not the device's own"


class BundleRefused(Exception):
    """The bundle must not be installed or run; ``reason`` says which check failed."""

    def __init__(self, reason: Refusal, detail: str) -> None:
        super().__init__(f"app bundle refused ({reason.value}): {detail}")
        self.reason = reason


_TOKEN_REFUSALS: Final = {
    TokenProblem.MISSING: Refusal.UNSIGNED,
    TokenProblem.MALFORMED: Refusal.INVALID,
    TokenProblem.FOREIGN: Refusal.FOREIGN,
    TokenProblem.BAD_SIGNATURE: Refusal.INVALID,
}


@dataclass(frozen=True)
class RunClaim:
    """What the SuperLink says about the run's bundle: never trusted, only compared."""

    fab_id: str
    fab_version: str
    fab_hash: str


@dataclass(frozen=True)
class TrustedBundle:
    """A bundle that passed: its digest, the org key that signed it, and its manifest."""

    sha256: str
    key_id: str
    manifest: Manifest


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key in PEM, or ``BundleRefused`` with the reason."""
    try:
        return read_public_key(path)
    except OrgKeyError as exc:
        raise BundleRefused(Refusal.NO_TRUST_ANCHOR, str(exc)) from None


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


def _open_signed(fab: bytes, token: str, org_key: Ed25519PublicKey) -> TrustedBundle:
    """The manifest in ``token`` if the org key signed it and it names these bytes."""
    try:
        manifest = open_manifest(token, org_key)
    except TokenError as exc:
        raise BundleRefused(_TOKEN_REFUSALS[exc.problem], f"bundle-signature: {exc}") from None
    digest = hashlib.sha256(fab).hexdigest()
    if manifest.sha256 != digest:
        raise BundleRefused(
            Refusal.INVALID, f"bundle {digest[:12]} is not what the organisation signed"
        )
    return TrustedBundle(digest, manifest.key_id, manifest)


def _check_window(manifest: Manifest, now: float) -> None:
    problem = manifest.validity_problem(now)
    if problem is not None:
        reason = Refusal.EXPIRED if problem.startswith("expired") else Refusal.NOT_YET_VALID
        raise BundleRefused(reason, f"release {manifest.version} of {manifest.app_id}: {problem}")


def verify_bundle(
    fab: bytes, token: str, org_key: Ed25519PublicKey, now: float | None = None
) -> TrustedBundle:
    """Accept ``fab`` only if ``token`` is an org-signed manifest of it, valid at ``now``.

    Stateless: the device's versions and revocations are ``admit_bundle``'s.
    """
    trusted = _open_signed(fab, token, org_key)
    _check_window(trusted.manifest, time.time() if now is None else now)
    return trusted


def _check_claim(claim: RunClaim, fab: bytes, manifest: Manifest) -> None:
    """The server's ids are safe and equal the manifest's; so is the bundle's own pyproject."""
    try:
        safe_app_id(claim.fab_id)
        safe_name(claim.fab_version, "fab_version")
        safe_name(claim.fab_hash, "fab hash")
    except ValueError as exc:
        raise BundleRefused(Refusal.UNSAFE_ID, str(exc)) from None
    said = {"app id": claim.fab_id, "version": claim.fab_version, "hash": claim.fab_hash}
    signed = {"app id": manifest.app_id, "version": manifest.fab_version, "hash": manifest.sha256}
    for field, value in said.items():
        if value != signed[field]:
            raise BundleRefused(
                Refusal.MISMATCH,
                f"the server says {field} {value[:64]!r}, the manifest {signed[field]!r}",
            )
    from flwr.common.config import (  # noqa: PLC0415 (Flower's parser: only after the signature)
        get_fab_config,
        get_metadata_from_config,
    )

    try:
        config = get_fab_config(fab)
        own = get_metadata_from_config(config)
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise BundleRefused(Refusal.MISMATCH, f"not a Flower app bundle: {exc}") from None
    if own != (manifest.app_id, manifest.fab_version):
        raise BundleRefused(
            Refusal.MISMATCH, f"the bundle says it is {own}, the manifest names another app"
        )
    client_app = config["tool"]["flwr"]["app"]["components"].get("clientapp")
    if client_app != DEVICE_CLIENT_APP:
        raise BundleRefused(
            Refusal.FOREIGN_CLIENT_APP,
            f"the bundle names ClientApp {str(client_app)[:64]!r}; a device runs only its"
            f" own {DEVICE_CLIENT_APP}",
        )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (task processes of one device may overlap)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if sys.platform == "win32":
            import msvcrt  # noqa: PLC0415

            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
        else:
            import fcntl  # noqa: PLC0415

            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Atomic, owner-only write: a crash leaves the old file or the new one."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


class TrustStore:
    """The device's memory of what it accepted: releases per app, the newest revocation list."""

    def __init__(self, home: Path) -> None:
        self.dir = home / TRUST_DIR

    @contextlib.contextmanager
    def locked(self) -> Iterator[TrustStore]:
        """Hold the store's lock for a read-check-write."""
        ensure_private_dir(self.dir)
        with _locked(self.dir / LOCK_FILE):
            yield self

    def highest(self, app_id: str) -> int | None:
        """The highest release of ``app_id`` this device accepted, if any."""
        entry = _read_json(self.dir / VERSIONS_FILE).get(app_id)
        return int(entry["version"]) if isinstance(entry, dict) else None

    def accept_release(self, manifest: Manifest, now: float) -> None:
        """Record ``manifest`` as accepted, or refuse it as a downgrade or replay."""
        highest = self.highest(manifest.app_id)
        if highest is not None and manifest.version < highest:
            raise BundleRefused(
                Refusal.DOWNGRADE,
                f"release {manifest.version} of {manifest.app_id} is below release {highest}"
                " this device already accepted (a replay or a downgrade)",
            )
        if highest is None or manifest.version > highest:
            versions = _read_json(self.dir / VERSIONS_FILE)
            versions[manifest.app_id] = {
                "version": manifest.version,
                "sha256": manifest.sha256,
                "key_id": manifest.key_id,
                "accepted_at": now,
            }
            _write_json(self.dir / VERSIONS_FILE, versions)

    def revocations(self) -> RevocationList | None:
        """The newest revocation list this device accepted (verified when it was accepted)."""
        held = _read_json(self.dir / REVOCATIONS_FILE).get("list")
        if not isinstance(held, dict):
            return None
        return RevocationList(**{**held, "revoked": tuple(held["revoked"])})

    def update_revocations(
        self, token: str, org_key: Ed25519PublicKey, now: float
    ) -> RevocationList | None:
        """Take a newer list from ``token`` if it is one; return the list now in force.

        A list that does not verify is refused outright (someone tampered with the
        run). An older or equal version is ignored; a newer one must be valid now
        and signed by a key the held list does not revoke.
        """
        held = self.revocations()
        if not token.strip():
            return held
        try:
            offered = open_revocations(token, org_key)
        except TokenError as exc:
            raise BundleRefused(Refusal.REVOCATIONS, f"bundle-revocations: {exc}") from None
        if held is not None and offered.version <= held.version:
            return held
        problem = offered.validity_problem(now)
        if problem is not None:
            raise BundleRefused(
                Refusal.REVOCATIONS, f"revocation list {offered.version}: {problem}"
            )
        if held is not None and offered.key_id in held.revoked:
            raise BundleRefused(
                Refusal.REVOKED,
                f"revocation list {offered.version} is signed by revoked key {offered.key_id}",
            )
        entry = {**asdict(offered), "revoked": list(offered.revoked)}
        _write_json(
            self.dir / REVOCATIONS_FILE, {"list": entry, "token": token.strip(), "accepted_at": now}
        )
        return offered


def admit_bundle(
    home: Path,
    fab: bytes,
    claim: RunClaim,
    run_config: Mapping[str, object],
    now: float | None = None,
) -> TrustedBundle:
    """Every check of this module, in order; ``BundleRefused`` names the first that fails."""
    now = time.time() if now is None else now
    org_key = load_public_key(pinned_key_path(home))
    token = str(run_config.get(MANIFEST_CONFIG_KEY, ""))
    trusted = _open_signed(fab, token, org_key)
    _check_claim(claim, fab, trusted.manifest)
    with TrustStore(home).locked() as store:
        current = store.update_revocations(
            str(run_config.get(REVOCATIONS_CONFIG_KEY, "")), org_key, now
        )
        if current is not None:
            problem = current.validity_problem(now)
            if problem is not None:
                raise BundleRefused(
                    Refusal.REVOCATIONS,
                    f"the newest revocation list ({current.version}) is {problem}:"
                    " a run must bring a current one",
                )
            if trusted.key_id in current.revoked:
                raise BundleRefused(
                    Refusal.REVOKED,
                    f"key {trusted.key_id} is revoked by revocation list {current.version}",
                )
        _check_window(trusted.manifest, now)
        store.accept_release(trusted.manifest, now)
    return trusted


__all__ = [
    "DEVICE_CLIENT_APP",
    "SIGNATURE_CONFIG_KEY",
    "TRUST_DIR",
    "BundleRefused",
    "Refusal",
    "RunClaim",
    "TrustStore",
    "TrustedBundle",
    "admit_bundle",
    "load_public_key",
    "pin_org_key",
    "pinned_key_path",
    "verify_bundle",
]
