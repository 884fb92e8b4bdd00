"""The signed-bundle chain attacked on real processes: one SuperLink, two devices.

The bundle is this project with one change to its ``client/learning/app.py``: importing it
leaves a marker file in the importing device's hearth home, and on a device that
has a ``bundle-leaks`` file its ClientApp drops its own egress guard and adds a
metric the device's rules forbid. A device never imports a bundle's code (it runs
its own installed ClientApp), so every test, accepted or refused, asserts that the
marker is absent.

A malicious SuperLink is played by its own state database: an SQLite trigger
rewrites the run's ``fab_version`` when the ServerApp dispatches its first
message, i.e. after submission (and after anything that checked the run at
submission) but before any device asks for the run. That is exactly what an
operator with the SuperLink host could do; nothing in the SuperLink's code is
stubbed.

The tests share the devices' state and run in order: releases 1 and 3 are
accepted first, the refusals follow, and the revoked key comes last because it
revokes the only key the devices trust.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sqlite3
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.control.pause import pause, resume
from client.learning.device import Device
from policy.signed_bundle import key_id
from server.checkpoints import read_round_outcomes
from server.signing import build_bundle, load_org_key, sign_revocations
from server.up import DATABASE_FILE
from simulations.deployment import (
    ORG_KEY_PASSPHRASE,
    PASSPHRASE,
    Federation,
    deployment,
    federation,
)
from simulations.flwr_runner import PROJECT_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
DEVICES = 2
MARKER = "bundle-imported"
LEAKS = "bundle-leaks"
LEAK_METRIC = "CANARYLEAK"
DAY = 86_400.0

BUNDLE_PATCH = f'''

# ---- the trust-chain e2e test's bundle ----
import os as _os
from pathlib import Path as _Path

_HOME = _Path(_os.environ.get("HEARTH_HOME", "."))
(_HOME / "{MARKER}").write_text(str(_os.getpid()))
if (_HOME / "{LEAKS}").exists():
    _fit = HearthClient.fit

    def _leaky_fit(self, parameters, config):
        update, weight, metrics = _fit(self, parameters, config)
        return update, weight, {{**metrics, "{LEAK_METRIC}": 1.0}}

    HearthClient.fit = _leaky_fit
    app = ClientApp(client_fn=client_fn)  # its own egress guard dropped
'''


@pytest.fixture(scope="module", name="bundle")
def _bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This project's bundle, unpacked, with the marker in its ClientApp module."""
    root = tmp_path_factory.mktemp("bundle")
    with zipfile.ZipFile(io.BytesIO(build_bundle(PROJECT_ROOT))) as fab:
        for name in fab.namelist():
            if not name.startswith(".info/"):
                fab.extract(name, root)
    app = root / "client" / "learning" / "app.py"
    app.write_text(app.read_text() + BUNDLE_PATCH)
    # The unpacked bundle holds exactly what ships; its include/exclude lists name
    # folders it no longer has (Flower refuses an exclude pattern that matches nothing).
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    text = re.sub(r"^fab-(include|exclude) = \[[^\]]*\]\n", "", text, flags=re.MULTILINE)
    pyproject.write_text(text)
    return root


@pytest.fixture(scope="module", name="federation")
def _federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation(tmp_path_factory.mktemp("trust"), DEVICES) as fed:
        yield fed


def _run(
    fed: Federation,
    bundle: Path,
    name: str,
    token: str,
    revocations: str = "",
    *,
    evaluate: bool = False,
) -> tuple[str, dict[str, object], dict[str, object]]:
    """One round of ``bundle``: the ``flwr run`` log, its checkpoint row and its outcome.

    The row exists only for a round that aggregated and was evaluated (``evaluate``;
    a refused run saves two device processes without it); the outcome (the counts of
    what devices answered, ``round-outcomes.jsonl``) for every round the ServerApp ran.
    """
    for home in fed.homes:
        (home / MARKER).unlink(missing_ok=True)
    checkpoints = fed.root / name
    overrides = {
        "num-server-rounds": 1,
        "fraction-evaluate": 1.0 if evaluate else 0.0,
        "round-timeout": 90.0,
        "checkpoint-dir": str(checkpoints),
        "policy-file": str(fed.policy),
        "bundle-signature": token,
        "bundle-revocations": revocations,
    }
    log = fed.flwr_run(overrides, timeout=240, app_dir=bundle)
    row = checkpoints / "round-0001.json"
    outcomes = read_round_outcomes(checkpoints)
    return (
        log,
        json.loads(row.read_text()) if row.exists() else {},
        outcomes[0] if outcomes else {},
    )


def _imported(fed: Federation) -> list[Path]:
    return [home for home in fed.homes if (home / MARKER).exists()]


def _refusals_since(fed: Federation, started: float, log: str) -> list[dict[str, object]]:
    """Each device's refusal record, made during this run; nothing of the bundle imported."""
    assert _imported(fed) == [], "bundle code was imported"
    refusals = []
    for home in fed.homes:
        refusal = deployment(home).get("refusal")
        assert isinstance(refusal, dict), (fed.device_outcomes(), log[-2000:])
        assert float(refusal["time"]) >= started, (fed.device_outcomes(), log[-2000:])
        refusals.append(refusal)
    return refusals


def _no_device_trained(log: str) -> None:
    """The ServerApp got a failure, and no update, from every device."""
    assert f"aggregate_fit: received 0 results and {DEVICES} failures" in log, log[-3000:]


def _refused_by_every_device(outcome: dict[str, object], log: str) -> None:
    """The server saw the one BUNDLE_REFUSED code from every device and aggregated nothing."""
    assert outcome, log[-3000:]
    assert outcome["clients_bundle_refused"] == DEVICES
    assert outcome["clients_failed"] == 0
    assert outcome["aggregated"] is False


@contextlib.contextmanager
def _superlink_rewrites_fab_version(fed: Federation, forged: str) -> Iterator[None]:
    """The SuperLink's database says ``forged`` as the run's fab_version once dispatch begins."""
    database = fed.state / DATABASE_FILE
    with contextlib.closing(sqlite3.connect(database, timeout=60)) as db:
        db.execute(
            "CREATE TRIGGER forge_fab_version AFTER INSERT ON message_ins BEGIN "
            f"UPDATE run SET fab_version = '{forged}' WHERE run_id = NEW.run_id; END"
        )
        db.commit()
    try:
        yield
    finally:
        with contextlib.closing(sqlite3.connect(database, timeout=60)) as db:
            db.execute("DROP TRIGGER IF EXISTS forge_fab_version")
            db.commit()


def _release(fed: Federation, bundle: Path, version: int, **kwargs: float) -> str:
    return fed.token(version=version, app_dir=bundle, **kwargs)


@pytest.fixture(scope="module", name="releases")
def _releases(federation: Federation, bundle: Path) -> dict[int, str]:
    """Releases 1 and 3 of the bundle, signed now by the organisation."""
    return {version: _release(federation, bundle, version) for version in (1, 3)}


def test_a_signed_release_trains_with_the_devices_own_client_app_never_the_bundles(
    federation: Federation, bundle: Path, releases: dict[int, str]
) -> None:
    for home in federation.homes:
        (home / LEAKS).touch()
    try:
        log, row, _ = _run(federation, bundle, "release-1", releases[1], evaluate=True)
    finally:
        for home in federation.homes:
            (home / LEAKS).unlink()
    assert _imported(federation) == [], log[-3000:]  # the bundle's ClientApp never ran
    fit = row["fit"]
    assert isinstance(fit, dict)
    # Both devices trained with their own DP-SGD, ledger and guards.
    assert fit["clients_trained"] == DEVICES, (federation.device_outcomes(), log[-3000:])
    for home in federation.homes:
        device = Device(home, PASSPHRASE)
        assert device.uploads()
        assert device.ledger().recorded_spend() > 0
    sent = bytes(federation.tap.sent)
    assert b"top1_sum" in sent  # metric names are visible in what the tap decrypted ...
    assert LEAK_METRIC.encode() not in sent  # ... and the bundle's never existed


def test_a_newer_release_is_accepted_even_when_the_employee_declines_the_round(
    federation: Federation, bundle: Path, releases: dict[int, str]
) -> None:
    for home in federation.homes:
        pause(home)
    unrelated = sign_revocations(
        load_org_key(federation.org_key, ORG_KEY_PASSPHRASE), version=1, revoked=["ab" * 8]
    )
    try:
        log, _, _ = _run(federation, bundle, "release-3", releases[3], unrelated.token)
    finally:
        for home in federation.homes:
            resume(home)
    assert _imported(federation) == []
    _no_device_trained(log)
    for home in federation.homes:
        assert deployment(home)["decline"]["reason"] == "paused by the employee"
    for home in federation.homes:
        trust = home / "trust"
        assert json.loads((trust / "versions.json").read_text())["hearth/hearth"]["version"] == 3
        assert json.loads((trust / "revocations.json").read_text())["list"]["version"] == 1


def test_a_replayed_old_release_is_refused(
    federation: Federation, bundle: Path, releases: dict[int, str]
) -> None:
    started = time.time()
    log, row, outcome = _run(federation, bundle, "replay", releases[1], evaluate=True)
    for refusal in _refusals_since(federation, started, log):
        assert refusal["check"] == "DOWNGRADE"
        assert "release 1 of hearth/hearth is below release 3" in str(refusal["reason"])
    _refused_by_every_device(outcome, log)
    assert row == {}  # nothing aggregated: no checkpoint, no evaluation


def test_a_downgrade_to_a_release_never_seen_is_refused(
    federation: Federation, bundle: Path
) -> None:
    started = time.time()
    log, _, _ = _run(federation, bundle, "downgrade", _release(federation, bundle, 2))
    for refusal in _refusals_since(federation, started, log):
        assert refusal["check"] == "DOWNGRADE"
        assert "release 2" in str(refusal["reason"])
    _no_device_trained(log)


def test_an_expired_release_is_refused_before_any_device_sees_it(
    federation: Federation, bundle: Path
) -> None:
    # The SuperLink's ServerApp gate checks the manifest's validity window too; a
    # device's own refusal of an expired bundle (a SuperLink that skips the gate) is
    # tests/client/test_runner.py::test_an_expired_bundle_is_refused.
    expired = _release(federation, bundle, 4, valid_days=1, not_before=time.time() - 2 * DAY)
    before = [deployment(home).get("refusal") for home in federation.homes]
    log, row, outcome = _run(federation, bundle, "expired", expired)
    assert "not valid now" in log, log[-3000:]
    assert row == {} and outcome == {}  # the ServerApp never ran
    assert _imported(federation) == []
    assert [deployment(home).get("refusal") for home in federation.homes] == before


@pytest.mark.parametrize(
    ("forged", "check"),
    [("0.0.9", "MISMATCH"), ("../../../../../../tmp/elsewhere", "UNSAFE_ID")],
    ids=["another-version", "dot-dot"],
)
def test_a_run_whose_fab_version_the_superlink_rewrote_is_refused(
    federation: Federation, bundle: Path, releases: dict[int, str], forged: str, check: str
) -> None:
    started = time.time()
    with _superlink_rewrites_fab_version(federation, forged):
        log, _, _ = _run(federation, bundle, f"forged-{check}", releases[3])
    for refusal in _refusals_since(federation, started, log):
        assert refusal["check"] == check
        assert forged[:20] in str(refusal["reason"])
    _no_device_trained(log)


def test_a_release_signed_by_a_revoked_key_is_refused(
    federation: Federation, bundle: Path, releases: dict[int, str]
) -> None:
    org = load_org_key(federation.org_key, ORG_KEY_PASSPHRASE)
    revoking = sign_revocations(org, version=2, revoked=[key_id(org.public_key())])
    started = time.time()
    log, _, _ = _run(federation, bundle, "revoked", releases[3], revoking.token)
    for refusal in _refusals_since(federation, started, log):
        assert refusal["check"] == "REVOKED"
        assert key_id(org.public_key()) in str(refusal["reason"])
    _no_device_trained(log)
