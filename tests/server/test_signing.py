"""`hearth-server sign` and `revoke`: what the organisation signs and how it is written."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from client.deployment.bundle_trust import load_public_key
from policy.signed_bundle import open_manifest, open_revocations
from server.cli import app
from server.signing import (
    SigningError,
    build_bundle,
    bundle_contents,
    generate_org_key,
    load_org_key,
    sign_bundle,
)
from tests.client.bundles import APP_ID, FAB_VERSION, fab_of, make_app, sha256

DAY = 86_400


@pytest.fixture
def org(tmp_path: Path) -> tuple[Path, Path]:
    return generate_org_key(tmp_path / "org")


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_sign_writes_a_manifest_of_the_built_bundle(org, tmp_path):
    private, public = org
    app_dir = make_app(tmp_path / "app")
    fab_path = tmp_path / "dist" / "app.fab"
    output = _invoke(
        "sign", str(app_dir), "--version", "4", "--key", str(private), "--out", str(fab_path)
    )
    token = (tmp_path / "dist" / "app.fab.sig").read_text().strip()
    assert f"bundle-signature='{token}'" in output
    manifest = open_manifest(token, load_public_key(public))
    assert manifest.sha256 == sha256(fab_path.read_bytes()) == sha256(fab_of(app_dir))
    assert (manifest.app_id, manifest.fab_version, manifest.version) == (APP_ID, FAB_VERSION, 4)
    assert manifest.expires - manifest.not_before == 30 * DAY
    assert "release 4" in output


def test_sign_needs_a_release_number(org, tmp_path):
    fab_path = tmp_path / "app.fab"
    fab_path.write_bytes(fab_of(make_app(tmp_path / "app")))
    result = CliRunner().invoke(app, ["sign", str(fab_path), "--key", str(org[0])])
    assert result.exit_code != 0
    assert "--version" in result.output
    assert not (tmp_path / "app.fab.sig").exists()


def test_sign_takes_the_validity_in_days(org, tmp_path):
    fab_path = tmp_path / "app.fab"
    fab_path.write_bytes(fab_of(make_app(tmp_path / "app")))
    _invoke("sign", str(fab_path), "--version", "1", "--valid-days", "2", "--key", str(org[0]))
    token = (tmp_path / "app.fab.sig").read_text().strip()
    manifest = open_manifest(token, load_public_key(org[1]))
    assert manifest.expires - manifest.not_before == 2 * DAY
    result = CliRunner().invoke(
        app, ["sign", str(fab_path), "--version", "1", "--valid-days", "0", "--key", str(org[0])]
    )
    assert result.exit_code != 0


def test_sign_refuses_what_is_not_a_bundle(org, tmp_path):
    junk = tmp_path / "junk.fab"
    junk.write_bytes(b"PK\x03\x04 not really")
    result = CliRunner().invoke(app, ["sign", str(junk), "--version", "1", "--key", str(org[0])])
    assert result.exit_code == 1
    assert "not a Flower app bundle" in result.output
    with pytest.raises(SigningError):
        sign_bundle(b"junk", load_org_key(org[0]), version=1)


def test_revoke_signs_a_list_of_key_ids(org, tmp_path):
    private, public = org
    out = tmp_path / "revocations.sig"
    output = _invoke(
        "revoke", "cd" * 8, "ab" * 8, "--version", "3", "--key", str(private), "--out", str(out)
    )
    token = out.read_text().strip()
    assert f"bundle-revocations='{token}'" in output
    listed = open_revocations(token, load_public_key(public))
    assert (listed.version, listed.revoked) == (3, ("ab" * 8, "cd" * 8))
    assert listed.not_before <= time.time() < listed.expires


def test_revoke_with_no_key_publishes_a_fresh_empty_list(org, tmp_path):
    out = tmp_path / "revocations.sig"
    _invoke("revoke", "--version", "1", "--key", str(org[0]), "--out", str(out))
    assert open_revocations(out.read_text().strip(), load_public_key(org[1])).revoked == ()


def test_revoke_refuses_a_malformed_key_id(org, tmp_path):
    result = CliRunner().invoke(
        app, ["revoke", "not-a-key-id", "--version", "1", "--key", str(org[0])]
    )
    assert result.exit_code == 1
    assert "cannot sign this revocation list" in result.output


def test_sign_prints_every_file_it_packed(org, tmp_path):
    private, _ = org
    app_dir = make_app(tmp_path / "app")
    output = _invoke(
        "sign", str(app_dir), "--version", "1", "--key", str(private), "--out", str(tmp_path / "a")
    )
    packed = bundle_contents((tmp_path / "a").read_bytes())
    assert f"packed {len(packed)} files" in output
    for name, _ in packed:
        assert Path(name).name in output


def test_hearths_bundle_carries_only_what_devices_and_the_serverapp_run():
    root = Path(__file__).resolve().parents[2]
    names = [name for name, _ in bundle_contents(build_bundle(root))]
    tops = {name.split("/")[0] for name in names}
    assert tops == {
        "client",
        "policy",
        "privacy",
        "server",
        "strategies",
        "pyproject.toml",
        ".info",
    }
    assert "client/learning/app.py" in names and "server/app.py" in names
    assert "privacy/default_policy.toml" in names
    assert not any(
        n.startswith(
            ("client/cli/", "client/dashboard/", "client/recording/", "client/recording/capture/")
        )
        for n in names
    )
    assert "client/recording/recorder.py" not in names
