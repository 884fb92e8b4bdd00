import pytest
from typer.testing import CliRunner

from client.bundle_trust import (
    BundleRefused,
    Refusal,
    load_public_key,
    pin_org_key,
    pinned_key_path,
    verify_bundle,
)
from server.cli import app
from server.signing import generate_org_key, load_org_key, sign_bundle

FAB = b"PK\x03\x04 pretend this is a bundle"


@pytest.fixture
def org(tmp_path):
    private, public = generate_org_key(tmp_path / "org")
    return load_org_key(private), load_public_key(public), public


def test_a_bundle_signed_by_the_org_is_accepted(org):
    key, public, _ = org
    trusted = verify_bundle(FAB, sign_bundle(FAB, key).token, public)
    assert len(trusted.sha256) == 64


def test_an_unsigned_bundle_is_refused(org):
    _, public, _ = org
    with pytest.raises(BundleRefused) as refused:
        verify_bundle(FAB, "", public)
    assert refused.value.reason is Refusal.UNSIGNED


def test_a_bundle_signed_by_another_key_is_refused(org, tmp_path):
    _, public, _ = org
    other, _ = generate_org_key(tmp_path / "other")
    with pytest.raises(BundleRefused) as refused:
        verify_bundle(FAB, sign_bundle(FAB, load_org_key(other)).token, public)
    assert refused.value.reason is Refusal.FOREIGN


def test_a_foreign_signature_relabelled_with_the_org_key_id_is_refused(org, tmp_path):
    key, public, _ = org
    other, _ = generate_org_key(tmp_path / "other")
    forged = sign_bundle(FAB, load_org_key(other)).token.split(".", 1)[1]
    org_id = sign_bundle(FAB, key).token.split(".", 1)[0]
    with pytest.raises(BundleRefused) as refused:
        verify_bundle(FAB, f"{org_id}.{forged}", public)
    assert refused.value.reason is Refusal.INVALID


def test_a_tampered_bundle_is_refused(org):
    key, public, _ = org
    token = sign_bundle(FAB, key).token
    with pytest.raises(BundleRefused) as refused:
        verify_bundle(FAB + b"\x00", token, public)
    assert refused.value.reason is Refusal.INVALID


def test_pinning_accepts_only_an_ed25519_key(org, hearth_home, tmp_path):
    _, _, public_path = org
    assert pin_org_key(hearth_home, public_path) == pinned_key_path(hearth_home)
    bogus = tmp_path / "bogus.pub"
    bogus.write_text("not a key")
    with pytest.raises(BundleRefused) as refused:
        pin_org_key(hearth_home, bogus)
    assert refused.value.reason is Refusal.NO_TRUST_ANCHOR


def test_hearth_server_sign_writes_a_detached_signature(org, tmp_path):
    _, public, _ = org
    fab_path = tmp_path / "app.fab"
    fab_path.write_bytes(FAB)
    result = CliRunner().invoke(
        app, ["sign", str(fab_path), "--key", str(tmp_path / "org" / "org-signing.key")]
    )
    assert result.exit_code == 0, result.output
    token = (tmp_path / "app.fab.sig").read_text().strip()
    assert token in result.output
    verify_bundle(FAB, token, public)
