"""The org signing key is only ever on disk encrypted, and opens only with its passphrase."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.passphrase import PASSPHRASE_ENV, without_passphrase
from server.signing import SigningError, generate_org_key, load_org_key

PASSPHRASE = "a long org passphrase"


def test_the_key_is_written_encrypted_and_opens_with_its_passphrase(tmp_path):
    private, public = generate_org_key(tmp_path / "org", PASSPHRASE)
    assert private.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    key = load_org_key(private, PASSPHRASE)
    assert key.public_key().public_bytes_raw() == (
        serialization.load_pem_public_key(public.read_bytes()).public_bytes_raw()
    )


def test_a_wrong_passphrase_is_one_line(tmp_path):
    private, _ = generate_org_key(tmp_path / "org", PASSPHRASE)
    with pytest.raises(SigningError, match=r"^wrong passphrase for the org signing key") as err:
        load_org_key(private, "not the passphrase")
    assert "\n" not in str(err.value)


def test_an_unencrypted_key_is_refused_in_one_line(tmp_path):
    path = tmp_path / "org-signing.key"
    path.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(SigningError, match="is not encrypted") as err:
        load_org_key(path, PASSPHRASE)
    assert "\n" not in str(err.value)


def test_without_an_argument_the_passphrase_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    private, _ = generate_org_key(tmp_path / "org")
    assert isinstance(load_org_key(private), Ed25519PrivateKey)


def test_a_process_without_the_passphrase_and_no_terminal_cannot_use_the_key(tmp_path, monkeypatch):
    private, _ = generate_org_key(tmp_path / "org", PASSPHRASE)
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(SigningError, match="needs its passphrase"):
        load_org_key(private)


def test_a_short_passphrase_is_refused_for_a_new_key(tmp_path):
    with pytest.raises(SigningError, match="at least 12"):
        generate_org_key(tmp_path / "org", "short")
    assert not (tmp_path / "org" / "org-signing.key").exists()


def test_the_public_key_can_go_to_another_directory(tmp_path):
    private, public = generate_org_key(
        tmp_path / "offline", PASSPHRASE, public_directory=tmp_path / "pki"
    )
    assert private.parent == tmp_path / "offline"
    assert public == tmp_path / "pki" / "org-signing.pub"
    assert not (tmp_path / "offline" / "org-signing.pub").exists()


def test_an_existing_key_is_never_overwritten(tmp_path):
    private, _ = generate_org_key(tmp_path / "org", PASSPHRASE)
    before = private.read_bytes()
    with pytest.raises(SigningError, match="already exists"):
        generate_org_key(tmp_path / "org", PASSPHRASE)
    assert private.read_bytes() == before


def test_the_passphrase_is_removed_from_an_environment():
    env = {PASSPHRASE_ENV: "x", "PATH": "/bin"}
    assert without_passphrase(env) == {"PATH": "/bin"}
