"""The federation's keys and certificates, made with ``cryptography``.

One directory holds everything the server side needs::

    DIR/ca.crt, ca.key                  the federation's own certificate authority
    DIR/superlink.crt, superlink.key    the SuperLink's TLS certificate (SANs: hostnames, IPs)
    DIR/devices/NAME.key, NAME.pub      one SuperNode key pair per device (EC P-384, OpenSSH)
    DIR/registry.jsonl                  every enrolment, hash-chained (``server.registry``)
    DIR/org-signing.pub                 the org's public bundle-signing key (its private
                                        half is kept offline, never here)

``ca.crt`` goes to every laptop (``hearth join --root-cert``), ``devices/NAME.key``
to exactly one laptop (``--key``); ``NAME.pub`` is what the SuperLink registers.
Private keys are written owner-only (0600) and never overwritten.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from server import registry

CA_CERT: Final = "ca.crt"
CA_KEY: Final = "ca.key"
SUPERLINK_CERT: Final = "superlink.crt"
SUPERLINK_KEY: Final = "superlink.key"
DEVICES_DIR: Final = "devices"
CA_DAYS: Final = 3650
SERVER_DAYS: Final = 825
LOOPBACK: Final = "127.0.0.1"
_DEVICE_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class PkiError(Exception):
    """A PKI operation cannot proceed; the message is one line that says why."""


@dataclass(frozen=True)
class Pki:
    """Paths inside one PKI directory."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        """The CA certificate (public: every laptop gets it)."""
        return self.root / CA_CERT

    @property
    def ca_key(self) -> Path:
        """The CA's private key."""
        return self.root / CA_KEY

    @property
    def superlink_cert(self) -> Path:
        """The SuperLink's TLS certificate."""
        return self.root / SUPERLINK_CERT

    @property
    def superlink_key(self) -> Path:
        """The SuperLink's TLS private key."""
        return self.root / SUPERLINK_KEY

    @property
    def devices(self) -> Path:
        """Where device key pairs live."""
        return self.root / DEVICES_DIR

    def device_key(self, name: str) -> Path:
        """The private key of device ``name`` (goes to that laptop only)."""
        return self.devices / f"{name}.key"

    def device_public_key(self, name: str) -> Path:
        """The public key of device ``name`` (registered with the SuperLink)."""
        return self.devices / f"{name}.pub"

    def device_names(self) -> list[str]:
        """Every device with a public key here, sorted."""
        if not self.devices.is_dir():
            return []
        return sorted(p.stem for p in self.devices.glob("*.pub"))

    def require(self) -> None:
        """Raise unless ``pki init`` has run here."""
        for path in (self.ca_cert, self.ca_key, self.superlink_cert, self.superlink_key):
            if not path.is_file():
                raise PkiError(f"{path} is missing; run `hearth-server pki init {self.root}`")


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` owner-only (0600) with ``data``; refuse to overwrite."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PkiError(f"{path} already exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    path.chmod(0o600)


def _write_public(path: Path, data: bytes) -> None:
    if path.exists():
        raise PkiError(f"{path} already exists; refusing to overwrite it")
    path.write_bytes(data)
    path.chmod(0o644)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hearth"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def subject_alt_names(
    hostnames: Sequence[str], ips: Sequence[str]
) -> list[x509.DNSName | x509.IPAddress]:
    """SAN entries for the SuperLink certificate; a bad IP is a clear error."""
    names: list[x509.DNSName | x509.IPAddress] = [x509.DNSName(h) for h in hostnames if h]
    for ip in ips:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError:
            raise PkiError(f"{ip!r} is not an IP address") from None
    if not names:
        raise PkiError("the SuperLink certificate needs at least one hostname or IP")
    return names


def init_pki(
    directory: Path,
    hostnames: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1",),
    organisation: str = "hearth",
) -> Pki:
    """Create a CA and a SuperLink certificate in a new (or empty) ``directory``.

    The certificate always names 127.0.0.1 too: the Control and Runtime APIs
    (``flwr run``, SuperExec) are served on loopback only.
    """
    pki = Pki(directory)
    if directory.exists() and any(directory.iterdir()):
        raise PkiError(f"{directory} is not empty; choose a new directory for the PKI")
    sans = subject_alt_names(hostnames, [*ips, *([LOOPBACK] if LOOPBACK not in ips else [])])
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    pki.devices.mkdir(mode=0o700)

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = _name(f"{organisation} federation CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA384())
    )

    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(str(sans[0].value)))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA384())
    )

    write_private(pki.ca_key, _pem_key(ca_key))
    _write_public(pki.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    write_private(pki.superlink_key, _pem_key(server_key))
    _write_public(pki.superlink_cert, server_cert.public_bytes(serialization.Encoding.PEM))
    return pki


def add_device(directory: Path, name: str) -> tuple[Path, Path]:
    """Create the SuperNode key pair of device ``name`` and enrol it in the registry.

    The enrolment (name, key fingerprint, time) is appended to the hash-chained
    ``registry.jsonl`` (``server.registry``); on a broken registry the keys are
    removed again and nothing is enrolled. Returns the (private, public) paths.
    """
    pki = Pki(directory)
    pki.require()
    if not _DEVICE_NAME.match(name):
        raise PkiError(
            f"device name {name!r} must be letters, digits, '.', '_' or '-' (at most 64)"
        )
    private, public = pki.device_key(name), pki.device_public_key(name)
    if private.exists() or public.exists():
        raise PkiError(f"device {name!r} already has keys in {pki.devices}")
    try:
        registry.read_registry(directory)
    except registry.RegistryError as exc:
        raise PkiError(f"device {name!r} not enrolled: {exc}") from None
    pki.devices.mkdir(exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP384R1())
    public_line = (
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + f" hearth-device-{name}\n".encode()
    )
    write_private(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    _write_public(public, public_line)
    try:
        registry.append(directory, registry.ENROLLED, name, registry.fingerprint(public_line))
    except registry.RegistryError as exc:
        private.unlink()
        public.unlink()
        raise PkiError(f"device {name!r} not enrolled: {exc}") from None
    return private, public


def load_certificate(path: Path) -> x509.Certificate:
    """A PEM certificate, or a one-line error."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read certificate {path}: {exc}") from None


__all__ = [
    "Pki",
    "PkiError",
    "add_device",
    "init_pki",
    "load_certificate",
    "subject_alt_names",
    "write_private",
]
