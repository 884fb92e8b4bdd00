import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key
from typer.testing import CliRunner

from server.cli import app
from server.pki import Pki, PkiError, add_device, init_pki, load_certificate


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_superlink_certificate_chains_to_the_ca_and_names_its_sans_and_loopback(tmp_path):
    pki = init_pki(tmp_path / "pki", hostnames=["link.example", "localhost"], ips=["10.0.0.5"])
    ca, server = load_certificate(pki.ca_cert), load_certificate(pki.superlink_cert)
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["link.example", "localhost"]
    # 127.0.0.1 always: the Control and Runtime APIs are served on loopback only.
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("127.0.0.1"),
    ]


def test_private_keys_are_owner_only(tmp_path):
    pki = init_pki(tmp_path / "pki")
    private, public = add_device(pki.root, "alice-laptop")
    for key in (pki.ca_key, pki.superlink_key, private):
        assert _mode(key) == 0o600
    assert _mode(pki.root) == 0o700
    assert _mode(public) == 0o644


def test_device_keys_are_what_flower_supernode_auth_loads(tmp_path):
    pki = init_pki(tmp_path / "pki")
    private, public = add_device(pki.root, "bob")
    key = load_ssh_private_key(private.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(load_ssh_public_key(public.read_bytes()), ec.EllipticCurvePublicKey)
    assert Pki(pki.root).device_names() == ["bob"]


def test_init_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "something").write_text("x")
    with pytest.raises(PkiError, match="not empty"):
        init_pki(tmp_path / "pki")


def test_add_device_refuses_duplicates_bad_names_and_missing_pki(tmp_path):
    with pytest.raises(PkiError, match="pki init"):
        add_device(tmp_path / "nowhere", "a")
    pki = init_pki(tmp_path / "pki")
    add_device(pki.root, "a")
    with pytest.raises(PkiError, match="already has keys"):
        add_device(pki.root, "a")
    with pytest.raises(PkiError, match="device name"):
        add_device(pki.root, "../evil")


def test_bad_ip_is_a_one_line_error(tmp_path):
    with pytest.raises(PkiError, match="not an IP address"):
        init_pki(tmp_path / "pki", ips=["300.1.1.1"])


def test_cli_init_and_add_device(tmp_path):
    runner = CliRunner()
    target = tmp_path / "pki"
    result = runner.invoke(app, ["pki", "init", str(target), "--hostname", "h", "--ip", "::1"])
    assert result.exit_code == 0, result.output
    assert "CA certificate" in result.output
    assert "move" in result.output  # the org key was left in the PKI: up would refuse it
    result = runner.invoke(app, ["pki", "add-device", "dev1", "--pki", str(target)])
    assert result.exit_code == 0, result.output
    again = runner.invoke(app, ["pki", "init", str(target)])
    assert again.exit_code == 1
    assert again.output.count("\n") == 1
    assert "not empty" in again.output


def test_pki_init_writes_the_org_key_encrypted_and_only_its_public_half_to_the_pki(tmp_path):
    offline = tmp_path / "usb"
    result = CliRunner().invoke(
        app, ["pki", "init", str(tmp_path / "pki"), "--org-key-dir", str(offline)]
    )
    assert result.exit_code == 0, result.output
    key = offline / "org-signing.key"
    assert key.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert _mode(key) == 0o600
    assert not (tmp_path / "pki" / "org-signing.key").exists()
    assert (tmp_path / "pki" / "org-signing.pub").is_file()
    assert "move" not in result.output


def test_pki_init_without_a_passphrase_or_a_terminal_fails_before_writing_anything(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("HEARTH_ORG_KEY_PASSPHRASE")
    result = CliRunner().invoke(app, ["pki", "init", str(tmp_path / "pki")])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "HEARTH_ORG_KEY_PASSPHRASE" in result.output
    assert not (tmp_path / "pki").exists()
