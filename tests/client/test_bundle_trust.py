"""The device's side of the signed-bundle chain: manifests, versions, revocations, ids, install."""

from __future__ import annotations

import base64
import json
import stat
import time
from pathlib import Path

import pytest

from client.deployment.bundle_trust import (
    TRUST_DIR,
    BundleRefused,
    Refusal,
    RunClaim,
    TrustStore,
    admit_bundle,
    load_public_key,
    pin_org_key,
    pinned_key_path,
    verify_bundle,
)
from policy.signed_bundle import (
    CLOCK_SKEW_SECONDS,
    MANIFEST_CONFIG_KEY,
    REVOCATIONS_CONFIG_KEY,
    Manifest,
    RevocationList,
    TokenError,
    TokenProblem,
    encode_token,
    key_id,
    manifest_message,
    open_manifest,
    open_revocations,
    revocations_message,
    safe_app_id,
    safe_name,
)
from server.signing import generate_org_key, load_org_key, sign_bundle, sign_revocations
from tests.client.bundles import APP_ID, FAB_VERSION, fab_of, make_app, sha256

DAY = 86_400.0


@pytest.fixture(scope="module")
def fab(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return fab_of(make_app(tmp_path_factory.mktemp("app")))


@pytest.fixture
def org(tmp_path, hearth_home):
    private, public = generate_org_key(tmp_path / "org")
    pin_org_key(hearth_home, public)
    return load_org_key(private), load_public_key(public)


def _claim(fab: bytes, **changes: str) -> RunClaim:
    return RunClaim(
        changes.get("fab_id", APP_ID),
        changes.get("fab_version", FAB_VERSION),
        changes.get("fab_hash", sha256(fab)),
    )


def _admit(home: Path, fab: bytes, token: str, revocations: str = "", **claim: str):
    config = {MANIFEST_CONFIG_KEY: token, REVOCATIONS_CONFIG_KEY: revocations}
    return admit_bundle(home, fab, _claim(fab, **claim), config)


def _refusal(home: Path, fab: bytes, token: str, revocations: str = "", **claim: str):
    with pytest.raises(BundleRefused) as refused:
        _admit(home, fab, token, revocations, **claim)
    return refused.value


# ---------------------------------------------------------------- the manifest


def test_a_manifest_carries_the_fabs_hash_app_id_release_window_and_key(org, fab):
    key, public = org
    before = time.time()
    signed = sign_bundle(fab, key, version=7, valid_days=30)
    manifest = open_manifest(signed.token, public)
    assert manifest == signed.manifest
    assert (manifest.app_id, manifest.fab_version) == (APP_ID, FAB_VERSION)
    assert manifest.sha256 == sha256(fab)
    assert manifest.version == 7
    assert manifest.key_id == key_id(public)
    assert before - 1 <= manifest.not_before <= time.time()
    assert manifest.expires - manifest.not_before == 30 * DAY


def test_a_signed_token_is_compact_unpadded_base64url(org, fab):
    token = sign_bundle(fab, org[0], version=1).token
    payload, signature = token.split(".")
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert len(token) < 600
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    assert json.loads(decoded)["version"] == 1
    assert len(base64.urlsafe_b64decode(signature + "==")) == 64


def test_a_revocation_list_signature_cannot_pass_as_a_manifest(org, fab):
    key, public = org
    manifest = sign_bundle(fab, key, version=1).manifest
    payload = manifest.payload()
    # The org's signature over the manifest's bytes, but under the revocation list's tag.
    token = encode_token(payload, key.sign(revocations_message(payload)))
    with pytest.raises(TokenError) as error:
        open_manifest(token, public)
    assert error.value.problem is TokenProblem.BAD_SIGNATURE


def test_the_retired_bare_signature_is_not_a_manifest(org, fab):
    _, public = org
    legacy = f"{key_id(public)}.{base64.urlsafe_b64encode(b'x' * 64).decode()}"
    with pytest.raises(TokenError) as error:
        open_manifest(legacy, public)
    assert error.value.problem is TokenProblem.MALFORMED


def test_a_manifest_edited_after_signing_is_refused(org, fab):
    key, public = org
    token = sign_bundle(fab, key, version=1).token
    payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["version"] = 99
    edited = Manifest(**data).payload()
    forged = f"{base64.urlsafe_b64encode(edited).decode().rstrip('=')}.{signature}"
    with pytest.raises(TokenError) as error:
        open_manifest(forged, public)
    assert error.value.problem is TokenProblem.BAD_SIGNATURE


@pytest.mark.parametrize(
    "change",
    [
        {"version": 0},
        {"version": True},
        {"version": "3"},
        {"fab_version": "../../etc"},
        {"app_id": "acme/tiny/app"},
        {"sha256": "AB" * 32},
        {"expires": 0},
        {"surprise": 1},
    ],
)
def test_a_manifest_payload_is_parsed_strictly(org, fab, change):
    data = json.loads(sign_bundle(fab, org[0], version=1).manifest.payload())
    data.update(change)
    with pytest.raises(ValueError):
        Manifest.from_payload(json.dumps(data).encode())


@pytest.mark.parametrize(
    "value", ["..", ".", "../x", "a/b", "a\\b", "", "a b", "0.1.0/..", "é", "x" * 129, "1..2"]
)
def test_unsafe_names_are_refused(value):
    with pytest.raises(ValueError):
        safe_name(value, "fab_version")


@pytest.mark.parametrize("value", ["0.1.0", "hearth", "a_b-c.d", "v2"])
def test_safe_names_pass(value):
    assert safe_name(value, "fab_version") == value


@pytest.mark.parametrize("value", ["hearth", "a/b/c", "/hearth", "hearth/", "../hearth", "a/.."])
def test_an_app_id_is_exactly_publisher_slash_name(value):
    with pytest.raises(ValueError):
        safe_app_id(value)


# ---------------------------------------------------------------- stateless verification


def test_a_bundle_signed_by_the_org_is_accepted(org, fab):
    key, public = org
    trusted = verify_bundle(fab, sign_bundle(fab, key, version=1).token, public)
    assert trusted.sha256 == sha256(fab)
    assert trusted.key_id == key_id(public)


def test_an_unsigned_bundle_is_refused(org, fab):
    with pytest.raises(BundleRefused) as refused:
        verify_bundle(fab, "", org[1])
    assert refused.value.reason is Refusal.UNSIGNED


def test_a_bundle_signed_by_another_key_is_refused(org, fab, tmp_path):
    other, _ = generate_org_key(tmp_path / "other")
    with pytest.raises(BundleRefused) as refused:
        verify_bundle(fab, sign_bundle(fab, load_org_key(other), version=1).token, org[1])
    assert refused.value.reason is Refusal.FOREIGN


def test_a_tampered_bundle_is_refused(org, fab):
    token = sign_bundle(fab, org[0], version=1).token
    with pytest.raises(BundleRefused) as refused:
        verify_bundle(fab + b"\x00", token, org[1])
    assert refused.value.reason is Refusal.INVALID


def test_an_expired_bundle_is_refused(org, fab):
    token = sign_bundle(fab, org[0], version=1, valid_days=1, not_before=time.time() - 2 * DAY)
    with pytest.raises(BundleRefused) as refused:
        verify_bundle(fab, token.token, org[1])
    assert refused.value.reason is Refusal.EXPIRED


def test_a_bundle_not_yet_valid_is_refused_beyond_the_clock_skew(org, fab):
    now = time.time()
    early = sign_bundle(fab, org[0], version=1, not_before=now + 2 * CLOCK_SKEW_SECONDS)
    with pytest.raises(BundleRefused) as refused:
        verify_bundle(fab, early.token, org[1], now=now)
    assert refused.value.reason is Refusal.NOT_YET_VALID
    slightly = sign_bundle(fab, org[0], version=1, not_before=now + CLOCK_SKEW_SECONDS / 2)
    verify_bundle(fab, slightly.token, org[1], now=now)


def test_pinning_accepts_only_an_ed25519_key(org, hearth_home, tmp_path):
    bogus = tmp_path / "bogus.pub"
    bogus.write_text("not a key")
    with pytest.raises(BundleRefused) as refused:
        pin_org_key(hearth_home, bogus)
    assert refused.value.reason is Refusal.NO_TRUST_ANCHOR
    assert pinned_key_path(hearth_home).is_file()


# ---------------------------------------------------------------- what the server claims


@pytest.mark.parametrize(
    "claim",
    [
        {"fab_version": "../../../../tmp/evil"},
        {"fab_version": ".."},
        {"fab_id": "acme/../../x"},
        {"fab_id": "acme/tinyapp/x"},
        {"fab_hash": "../" + "a" * 61},
    ],
)
def test_a_run_with_a_path_in_its_ids_is_refused(org, fab, hearth_home, claim):
    token = sign_bundle(fab, org[0], version=1).token
    refused = _refusal(hearth_home, fab, token, **claim)
    assert refused.reason is Refusal.UNSAFE_ID
    assert TrustStore(hearth_home).highest(APP_ID) is None  # nothing accepted


@pytest.mark.parametrize(
    "claim",
    [
        {"fab_version": "0.9.0"},  # another installed release
        {"fab_id": "acme/otherapp"},  # another installed app
        {"fab_hash": "0" * 64},
    ],
)
def test_a_run_pointing_at_another_bundle_is_refused(org, fab, hearth_home, claim):
    token = sign_bundle(fab, org[0], version=1).token
    refused = _refusal(hearth_home, fab, token, **claim)
    assert refused.reason is Refusal.MISMATCH


def test_a_bundle_whose_pyproject_names_another_app_than_its_manifest_is_refused(
    org, hearth_home, tmp_path
):
    key, _ = org
    fab = fab_of(make_app(tmp_path / "renamed", name="otherapp"))
    manifest = Manifest(
        app_id=APP_ID,
        fab_version=FAB_VERSION,
        sha256=sha256(fab),
        version=1,
        not_before=int(time.time()),
        expires=int(time.time() + DAY),
        key_id=key_id(key.public_key()),
    )
    token = encode_token(manifest.payload(), key.sign(manifest_message(manifest.payload())))
    assert _refusal(hearth_home, fab, token).reason is Refusal.MISMATCH


# ---------------------------------------------------------------- versions


def test_the_highest_release_is_kept_and_the_same_release_may_run_again(org, fab, hearth_home):
    first = sign_bundle(fab, org[0], version=3).token
    _admit(hearth_home, fab, first)
    _admit(hearth_home, fab, first)  # the next round of the same campaign
    resigned = sign_bundle(fab, org[0], version=3, valid_days=60).token  # a longer campaign
    _admit(hearth_home, fab, resigned)
    assert TrustStore(hearth_home).highest(APP_ID) == 3


def test_a_replayed_older_release_is_refused(org, fab, hearth_home):
    old = sign_bundle(fab, org[0], version=1).token
    _admit(hearth_home, fab, old)
    _admit(hearth_home, fab, sign_bundle(fab, org[0], version=2).token)
    refused = _refusal(hearth_home, fab, old)
    assert refused.reason is Refusal.DOWNGRADE
    assert "below release 2" in str(refused)


def test_a_downgrade_to_a_release_never_seen_is_refused(org, fab, hearth_home):
    _admit(hearth_home, fab, sign_bundle(fab, org[0], version=5).token)
    refused = _refusal(hearth_home, fab, sign_bundle(fab, org[0], version=4).token)
    assert refused.reason is Refusal.DOWNGRADE
    assert TrustStore(hearth_home).highest(APP_ID) == 5


def test_releases_are_counted_per_app(org, fab, hearth_home, tmp_path):
    other = fab_of(make_app(tmp_path / "other", name="otherapp"))
    _admit(hearth_home, fab, sign_bundle(fab, org[0], version=9).token)
    _admit(hearth_home, other, sign_bundle(other, org[0], version=1).token, fab_id="acme/otherapp")
    assert TrustStore(hearth_home).highest("acme/otherapp") == 1


def test_a_refused_release_is_not_remembered(org, fab, hearth_home):
    expired = sign_bundle(fab, org[0], version=8, valid_days=1, not_before=time.time() - 3 * DAY)
    assert _refusal(hearth_home, fab, expired.token).reason is Refusal.EXPIRED
    _admit(hearth_home, fab, sign_bundle(fab, org[0], version=2).token)
    assert TrustStore(hearth_home).highest(APP_ID) == 2


def test_the_trust_state_is_owner_only_and_written_whole(org, fab, hearth_home):
    revocations = sign_revocations(org[0], version=1).token
    _admit(hearth_home, fab, sign_bundle(fab, org[0], version=1).token, revocations)
    trust = hearth_home / TRUST_DIR
    assert stat.S_IMODE(trust.stat().st_mode) == 0o700
    for name in ("versions.json", "revocations.json"):
        assert stat.S_IMODE((trust / name).stat().st_mode) == 0o600
        json.loads((trust / name).read_text())
    assert not list(trust.glob("*.tmp"))


# ---------------------------------------------------------------- revocations


def test_a_bundle_signed_by_a_revoked_key_is_refused(org, fab, hearth_home):
    key, public = org
    token = sign_bundle(fab, key, version=1).token
    revoking = sign_revocations(key, version=1, revoked=[key_id(public)]).token
    refused = _refusal(hearth_home, fab, token, revoking)
    assert refused.reason is Refusal.REVOKED
    # The device keeps the list: a later run that leaves it out is refused too.
    assert _refusal(hearth_home, fab, token).reason is Refusal.REVOKED


def test_a_revocation_list_naming_other_keys_lets_the_bundle_run(org, fab, hearth_home):
    token = sign_bundle(fab, org[0], version=1).token
    _admit(hearth_home, fab, token, sign_revocations(org[0], version=1, revoked=["ab" * 8]).token)
    held = TrustStore(hearth_home).revocations()
    assert held is not None and held.revoked == ("ab" * 8,)


def test_the_revocation_list_never_goes_backwards(org, fab, hearth_home):
    key, public = org
    token = sign_bundle(fab, key, version=1).token
    clean = sign_revocations(key, version=1).token  # an old list without the revocation
    revoking = sign_revocations(key, version=2, revoked=[key_id(public)]).token
    assert _refusal(hearth_home, fab, token, revoking).reason is Refusal.REVOKED
    assert _refusal(hearth_home, fab, token, clean).reason is Refusal.REVOKED
    held = TrustStore(hearth_home).revocations()
    assert held is not None and held.version == 2


def test_an_expired_revocation_list_refuses_bundles_until_a_fresh_one_arrives(
    org, fab, hearth_home, monkeypatch
):
    key, _ = org
    token = sign_bundle(fab, key, version=1, valid_days=30).token
    _admit(hearth_home, fab, token, sign_revocations(key, version=1, valid_days=1).token)
    later = time.time() + 2 * DAY
    monkeypatch.setattr(time, "time", lambda: later)
    refused = _refusal(hearth_home, fab, token)  # the SuperLink withholds newer lists
    assert refused.reason is Refusal.REVOCATIONS
    _admit(hearth_home, fab, token, sign_revocations(key, version=2, not_before=later).token)


def test_a_revocation_list_that_does_not_verify_refuses_the_run(org, fab, hearth_home, tmp_path):
    other, _ = generate_org_key(tmp_path / "other")
    token = sign_bundle(fab, org[0], version=1).token
    foreign = sign_revocations(load_org_key(other), version=9).token
    assert _refusal(hearth_home, fab, token, foreign).reason is Refusal.REVOCATIONS
    assert _refusal(hearth_home, fab, token, "garbage").reason is Refusal.REVOCATIONS
    assert TrustStore(hearth_home).revocations() is None


def test_a_newer_but_expired_revocation_list_is_not_taken(org, fab, hearth_home):
    stale = sign_revocations(org[0], version=4, valid_days=1, not_before=time.time() - 2 * DAY)
    token = sign_bundle(fab, org[0], version=1).token
    assert _refusal(hearth_home, fab, token, stale.token).reason is Refusal.REVOCATIONS
    assert TrustStore(hearth_home).revocations() is None


def test_a_revocation_list_is_parsed_strictly(org):
    key, public = org
    listed = sign_revocations(key, version=2, revoked=["cd" * 8, "ab" * 8, "ab" * 8])
    assert open_revocations(listed.token, public).revoked == ("ab" * 8, "cd" * 8)
    data = json.loads(listed.revocations.payload())
    data["revoked"] = ["cd" * 8, "ab" * 8]  # unsorted
    with pytest.raises(ValueError):
        RevocationList.from_payload(json.dumps(data).encode())


# ---------------------------------------------------------------- no bundle code on a device


@pytest.mark.parametrize("client_app", ["acme_client.app:app", "client.learning.app:other"])
def test_a_bundle_naming_any_client_app_but_the_devices_own_is_refused(
    org, hearth_home, tmp_path, client_app
):
    own = fab_of(make_app(tmp_path / "own", client_app=client_app))
    with pytest.raises(BundleRefused) as refused:
        _admit(hearth_home, own, sign_bundle(own, org[0], version=1).token)
    assert refused.value.reason is Refusal.FOREIGN_CLIENT_APP
    assert "client.learning.app:app" in str(refused.value)
    # Refused before the version store: release 1 is still new to this device.
    assert TrustStore(hearth_home).highest(APP_ID) is None


def test_admitting_a_bundle_writes_none_of_its_files_on_the_device(org, fab, hearth_home):
    _admit(hearth_home, fab, sign_bundle(fab, org[0], version=1).token)
    written = {p.relative_to(hearth_home).parts[0] for p in hearth_home.rglob("*") if p.is_file()}
    assert written <= {"trust"}, written
