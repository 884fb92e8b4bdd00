"""The dashboard's API: the token, the origin and CSRF checks, and every action."""

from __future__ import annotations

import json
import logging
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from client.cli import app as cli_app
from client.consent import grant
from client.control import pause_state
from client.control_commands import status_report
from client.dashboard import Guard, create_app, load_or_create_token
from client.dashboard.auth import COOKIE_NAME, token_path
from client.dashboard.launch import Launcher
from client.device import Device
from client.keys import KEY_FILE
from client.sensitive_apps import (
    SensitiveApps,
    add_app,
    add_site,
    load_site_additions,
    sensitive_path,
)
from client.vault import Vault
from policy.events import AppCategory, Button, Click, Focus, Key, KeyClass, Modality
from privacy.policy import load_policy

ORIGIN = "http://127.0.0.1:8765"


@pytest.fixture
def token(hearth_home: Path) -> str:
    return load_or_create_token(hearth_home)


@pytest.fixture
def guard(token: str) -> Guard:
    return Guard(token=token, origin=ORIGIN)


@pytest.fixture
def launcher(tmp_path: Path) -> Launcher:
    launcher = Launcher(tmp_path / "dashboard-open.html", ORIGIN)
    launcher.issue()
    return launcher


@pytest.fixture
def client(guard: Guard, launcher: Launcher) -> Iterator[TestClient]:
    app = create_app(guard, launcher)
    with TestClient(app, base_url=ORIGIN, follow_redirects=False) as c:
        yield c


def _launch_code(launcher: Launcher) -> str:
    match = re.search(r"/launch\?code=([A-Za-z0-9_-]+)", launcher.path.read_text())
    assert match, "the launch file carries no code"
    return match.group(1)


@pytest.fixture
def csrf(client: TestClient, token: str) -> str:
    page = client.get("/", headers={"X-Hearth-Token": token})
    match = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', page.text)
    assert match, page.text[:300]
    return match.group(1)


@pytest.fixture
def recorded(hearth_home: Path) -> Path:
    """A consenting employee whose vault holds a few events."""
    grant(hearth_home, (Modality.POINTER, Modality.KEYS, Modality.APPS))
    events = [Focus(0, 0.0, "code", AppCategory.EDITOR)]
    events += [Key(i, i * 0.1, KeyClass.LETTER) for i in range(1, 30)]
    events += [Click(30, 3.0, 0.5, 0.5, Button.LEFT)]
    with Vault.open(hearth_home / "vault") as vault:
        vault.append(events)
    return hearth_home


def _post(client: TestClient, path: str, token: str, csrf: str | None, **body: object):
    headers = {"X-Hearth-Token": token, "Origin": ORIGIN, "Sec-Fetch-Site": "same-origin"}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    return client.post(path, json=body, headers=headers)


# -- who may ask ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/api/state"])
def test_a_request_without_the_token_gets_401(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"X-Hearth-Token": "not-the-token" * 4}).status_code == 401


def test_a_change_without_the_token_gets_401_and_changes_nothing(
    client: TestClient, csrf: str, hearth_home: Path
) -> None:
    response = client.post(
        "/api/pause", json={"duration": "30m"}, headers={"Origin": ORIGIN, "X-CSRF-Token": csrf}
    )
    assert response.status_code == 401
    assert not pause_state(hearth_home).paused


def test_the_token_file_is_created_once_and_owner_only(hearth_home: Path, token: str) -> None:
    assert load_or_create_token(hearth_home) == token
    assert stat.S_IMODE(token_path(hearth_home).stat().st_mode) == 0o600
    assert len(token) >= 32


def test_the_launch_code_is_traded_once_for_a_strict_httponly_session_cookie(
    client: TestClient, token: str, guard: Guard, launcher: Launcher
) -> None:
    assert stat.S_IMODE(launcher.path.stat().st_mode) == 0o600
    assert token not in launcher.path.read_text()
    code = _launch_code(launcher)
    first = client.get(f"/launch?code={code}")
    assert first.status_code == 200
    assert 'http-equiv="refresh" content="0;url=/"' in first.text
    cookie = first.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert token not in cookie and guard.session in cookie  # never the install token
    assert client.get("/").status_code == 200
    # The spent code is refused, in a fresh browser too; the file holds a new one.
    client.cookies.clear()
    assert client.get(f"/launch?code={code}").status_code == 403
    assert client.get("/").status_code == 401
    renewed = _launch_code(launcher)
    assert renewed != code
    assert client.get(f"/launch?code={renewed}").status_code == 200


def test_the_token_in_a_url_or_a_cookie_no_longer_logs_in(client: TestClient, token: str) -> None:
    assert client.get(f"/?token={token}").status_code == 401
    assert client.get("/launch?code=").status_code == 403
    assert client.get(f"/launch?code={token}").status_code == 403
    client.cookies.set(COOKIE_NAME, token)
    assert client.get("/").status_code == 401
    assert client.get("/api/state").status_code == 401


def test_another_host_name_is_refused_against_dns_rebinding(client: TestClient, token: str) -> None:
    response = client.get("/", headers={"X-Hearth-Token": token, "Host": "evil.example:8765"})
    assert response.status_code == 400


def test_a_change_from_another_origin_is_refused(
    client: TestClient, token: str, csrf: str, hearth_home: Path
) -> None:
    response = client.post(
        "/api/pause",
        json={"duration": "30m"},
        headers={"X-Hearth-Token": token, "X-CSRF-Token": csrf, "Origin": "http://evil.example"},
    )
    assert response.status_code == 403
    assert not pause_state(hearth_home).paused


@pytest.mark.parametrize(
    "headers",
    [
        {"Referer": "http://evil.example/page"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "null"},
    ],
)
def test_a_change_from_another_site_is_refused(
    client: TestClient, token: str, csrf: str, hearth_home: Path, headers: dict[str, str]
) -> None:
    response = client.post(
        "/api/pause",
        json={"duration": "30m"},
        headers={"X-Hearth-Token": token, "X-CSRF-Token": csrf, **headers},
    )
    assert response.status_code == 403
    assert not pause_state(hearth_home).paused


def test_a_change_without_the_csrf_token_is_refused(
    client: TestClient, token: str, hearth_home: Path
) -> None:
    assert _post(client, "/api/pause", token, None, duration="30m").status_code == 403
    assert _post(client, "/api/pause", token, "0" * 64, duration="30m").status_code == 403
    assert not pause_state(hearth_home).paused


def test_a_get_cannot_change_anything(client: TestClient, token: str) -> None:
    for path in ("/api/pause", "/api/resume", "/api/data/delete", "/api/consent/revoke"):
        assert client.get(path, headers={"X-Hearth-Token": token}).status_code == 405


# -- the actions ------------------------------------------------------------


def test_pause_until_resumed_is_what_hearth_status_reports(
    client: TestClient, token: str, csrf: str, recorded: Path
) -> None:
    response = _post(client, "/api/pause", token, csrf, duration="until-resumed")
    assert response.status_code == 200
    report = status_report()
    assert report["state"] == "paused"
    assert report["paused_until_resumed"]
    assert response.json()["status"]["report"] == report


def test_pause_for_30_minutes_ends_in_30_minutes(
    client: TestClient, token: str, csrf: str, recorded: Path
) -> None:
    before = time.time()
    assert _post(client, "/api/pause", token, csrf, duration="30m").status_code == 200
    report = status_report()
    assert report["state"] == "paused"
    assert before + 1800 <= report["paused_until"] <= time.time() + 1800


def test_an_unreadable_duration_is_a_400(client: TestClient, token: str, csrf: str) -> None:
    response = _post(client, "/api/pause", token, csrf, duration="soon")
    assert response.status_code == 400
    assert "duration" in response.json()["error"]


def test_resume_ends_the_pause(client: TestClient, token: str, csrf: str, recorded: Path) -> None:
    _post(client, "/api/pause", token, csrf, duration="2h")
    assert _post(client, "/api/resume", token, csrf).status_code == 200
    assert status_report()["state"] == "consented"


def test_a_form_post_from_the_page_pauses_and_returns_to_the_page(
    client: TestClient, guard: Guard, csrf: str, recorded: Path
) -> None:
    client.cookies.set(COOKIE_NAME, guard.session)
    response = client.post(
        "/api/pause",
        data={"duration": "2h", "csrf": csrf},
        headers={"Origin": ORIGIN, "Referer": f"{ORIGIN}/"},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/?done=paused"
    page = client.get(response.headers["location"])
    assert "Recording is paused." in page.text
    assert 'data-state="paused"' in page.text


def test_an_added_sensitive_app_is_in_force_at_once(
    client: TestClient, token: str, csrf: str, hearth_home: Path
) -> None:
    assert _post(client, "/api/sensitive-apps", token, csrf, app="Gimp").status_code == 200
    apps = SensitiveApps.from_policy(load_policy(), hearth_home)
    assert "gimp" in apps.apps
    assert apps.is_sensitive("gimp", AppCategory.DESIGN)


def test_an_invalid_app_id_is_a_400(client: TestClient, token: str, csrf: str) -> None:
    response = _post(client, "/api/sensitive-apps", token, csrf, app="<script>")
    assert response.status_code == 400


def test_the_employee_removes_only_their_own_entries(
    client: TestClient, token: str, csrf: str, hearth_home: Path
) -> None:
    add_app(hearth_home, "gimp")
    assert _post(client, "/api/sensitive-apps/remove", token, csrf, app="gimp").status_code == 200
    assert _post(client, "/api/sensitive-apps/remove", token, csrf, app="slack").status_code == 200
    apps = SensitiveApps.from_policy(load_policy(), hearth_home)
    assert "gimp" not in apps.apps
    assert "slack" in apps.apps  # the policy's entry stays


SITE = "Payslips.Example-Intranet.com"


def test_an_added_site_is_listed_and_in_force_at_once(
    client: TestClient, token: str, csrf: str, hearth_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = _post(client, "/api/sensitive-sites", token, csrf, site=f"  {SITE} ")
    assert response.status_code == 200
    assert response.json()["yours"] == [SITE.casefold()]
    apps = SensitiveApps.from_policy(load_policy(), hearth_home)
    title = f"March - {SITE} - Mozilla Firefox"
    assert apps.is_sensitive("firefox", AppCategory.BROWSER, title)
    state = client.get("/api/state", headers={"X-Hearth-Token": token}).json()
    assert state["sensitive_apps"]["your_sites"] == [SITE.casefold()]
    assert "workday" in state["sensitive_apps"]["policy_sites"]
    assert "example-intranet" not in caplog.text.casefold()  # a site is never logged


def test_the_page_shows_the_policy_sites_read_only_and_yours_removable(
    client: TestClient, guard: Guard, csrf: str, hearth_home: Path
) -> None:
    client.cookies.set(COOKIE_NAME, guard.session)
    response = client.post(
        "/api/sensitive-sites",
        data={"site": "<b>nächste-bank</b>", "csrf": csrf},
        headers={"Origin": ORIGIN, "Referer": f"{ORIGIN}/"},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/?done=site-added"  # no site in the URL
    page = client.get(response.headers["location"]).text
    assert "The site is added to your sensitive list" in page
    assert "<b>nächste-bank</b>" not in page  # escaped
    assert 'aria-label="Remove site &lt;b&gt;nächste-bank&lt;/b&gt;"' in page
    policy_sites = re.search(r'<span id="policy-sites">([^<]*)</span>', page)
    assert policy_sites and "workday" in policy_sites.group(1)
    assert 'value="workday"' not in page  # no button removes the organisation's sites


def test_the_employee_removes_only_their_own_sites(
    client: TestClient, token: str, csrf: str, hearth_home: Path
) -> None:
    add_site(hearth_home, SITE)
    add_site(hearth_home, "family-photos")
    response = _post(client, "/api/sensitive-sites/remove", token, csrf, site=SITE.upper())
    assert response.status_code == 200
    assert response.json()["yours"] == ["family-photos"]
    assert _post(client, "/api/sensitive-sites/remove", token, csrf, site="workday").json()[
        "yours"
    ] == ["family-photos"]
    sites = SensitiveApps.from_policy(load_policy(), hearth_home).sites
    assert SITE.casefold() not in sites
    assert "workday" in sites  # the policy's entry stays


@pytest.mark.parametrize(
    "site",
    ["", "   ", "x", "a" * 65, "bank\nsecret", "bank\tx", "bank\x7f", "bank\x85", "bank\u202e"],
)
def test_a_bad_site_is_a_400_with_one_line_that_does_not_repeat_it(
    client: TestClient, token: str, csrf: str, hearth_home: Path, site: str
) -> None:
    response = _post(client, "/api/sensitive-sites", token, csrf, site=site)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "\n" not in error and "not a site" in error
    assert "bank" not in error and "a" * 65 not in error
    assert not sensitive_path(hearth_home).exists()  # nothing was written


def test_a_site_change_needs_the_token_the_origin_and_the_csrf_token(
    client: TestClient, token: str, csrf: str, hearth_home: Path
) -> None:
    add_site(hearth_home, "family-photos")
    for path in ("/api/sensitive-sites", "/api/sensitive-sites/remove"):
        body = {"site": "family-photos" if path.endswith("remove") else SITE}
        no_token = client.post(path, json=body, headers={"Origin": ORIGIN, "X-CSRF-Token": csrf})
        assert no_token.status_code == 401
        assert _post(client, path, token, None, **body).status_code == 403
        elsewhere = client.post(
            path,
            json=body,
            headers={
                "X-Hearth-Token": token,
                "X-CSRF-Token": csrf,
                "Origin": "http://evil.example",
            },
        )
        assert elsewhere.status_code == 403
        assert client.get(path, headers={"X-Hearth-Token": token}).status_code == 405
    assert load_site_additions(hearth_home) == ("family-photos",)


def test_delete_needs_a_confirmation(
    client: TestClient, token: str, csrf: str, recorded: Path
) -> None:
    assert _post(client, "/api/data/delete", token, csrf).status_code == 400
    assert (recorded / "vault" / KEY_FILE).exists()


def test_delete_all_my_data_removes_the_vault(
    client: TestClient, token: str, csrf: str, recorded: Path
) -> None:
    response = _post(client, "/api/data/delete", token, csrf, confirm=True)
    assert response.status_code == 200
    assert not (recorded / "vault").exists()
    assert status_report()["vault_bytes"] == 0
    state = client.get("/api/state", headers={"X-Hearth-Token": token}).json()
    assert state["vault"]["exists"] is False
    assert not (recorded / "vault").exists()  # showing the page never recreates a vault


def test_revoke_means_not_consented(
    client: TestClient, token: str, csrf: str, recorded: Path
) -> None:
    assert _post(client, "/api/consent/revoke", token, csrf).status_code == 400
    assert status_report()["state"] == "consented"
    assert _post(client, "/api/consent/revoke", token, csrf, confirm=True).status_code == 200
    assert status_report()["state"] == "not consented"
    assert (recorded / "vault").exists()


def test_revoke_can_delete_the_data_too(
    client: TestClient, token: str, csrf: str, recorded: Path
) -> None:
    response = _post(client, "/api/consent/revoke", token, csrf, confirm="yes", delete_data="yes")
    assert response.json()["deleted"] is True
    assert status_report()["state"] == "not consented"
    assert not (recorded / "vault").exists()


# -- what it shows ----------------------------------------------------------


def test_the_page_and_hearth_status_agree(
    client: TestClient, token: str, csrf: str, recorded: Path
) -> None:
    _post(client, "/api/pause", token, csrf, duration="until-resumed")
    cli = CliRunner().invoke(cli_app, ["status", "--json"])
    state = client.get("/api/state", headers={"X-Hearth-Token": token}).json()
    assert state["status"]["report"] == json.loads(cli.output)
    page = client.get("/", headers={"X-Hearth-Token": token}).text
    assert "Paused until you resume" in page
    assert "pointer, keys, apps" in page


def test_the_page_shows_data_budget_uploads_policy_and_apps(
    client: TestClient, token: str, recorded: Path
) -> None:
    add_app(recorded, "gimp")
    Device(recorded).log_upload(
        {"round": 3, "bytes": 48_123, "arrays": [["fc.weight", [16, 8]]], "epsilon": 1.25}
    )
    page = client.get("/", headers={"X-Hearth-Token": token}).text
    day = time.strftime("%Y-%m-%d")
    assert f"<title>{day} keys: 29 events</title>" in page  # the chart
    assert "deleted after 14 days" in page
    assert "one example on one device" in page
    assert "Per example, over the 14 days it is kept: at most epsilon 10" in page
    assert f"<title>{day}: spent 0.00, left 10.00" in page  # today's budget bar
    assert "one recorded action on one device (in up to 9 examples)" in page
    # The default policy adds central noise (distributed): a user-level target of 1.
    assert "at most epsilon 1 (the campaign stops before it), facing readers" in page
    assert "1 in 100,000" in page
    assert '<meter id="budget-meter"' in page
    assert "fc.weight" in page and "16\u00d78" in page and "48,123" in page and "1.250" in page
    assert "Recording may cover" in page  # the policy in words
    assert "<code>gimp</code>" in page and "slack" in page


def test_the_page_loads_nothing_from_elsewhere_and_forbids_framing(
    client: TestClient, token: str, recorded: Path
) -> None:
    response = client.get("/", headers={"X-Hearth-Token": token})
    assert not re.search(r'(src|href)="(https?:)?//', response.text)
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"


def test_upload_records_are_escaped(client: TestClient, token: str, hearth_home: Path) -> None:
    Device(hearth_home).log_upload({"round": 1, "bytes": 1, "arrays": [["<b>x</b>", [1]]]})
    page = client.get("/", headers={"X-Hearth-Token": token}).text
    assert "<b>x</b>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page


def test_the_token_in_the_address_opens_only_the_page(client: TestClient, token: str) -> None:
    assert client.get(f"/api/state?token={token}").status_code == 401


def test_a_locked_vault_still_shows_the_page_and_the_controls(
    client: TestClient, token: str, csrf: str, recorded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEARTH_PASSPHRASE", "not the passphrase")
    page = client.get("/", headers={"X-Hearth-Token": token})
    assert page.status_code == 200
    assert "The state cannot be read: wrong passphrase" in page.text
    assert "Pause until I resume" in page.text
    assert _post(client, "/api/pause", token, csrf, duration="30m").status_code == 200
    assert pause_state(recorded).paused


def test_a_ledger_reset_and_a_rolled_back_ledger_are_shown_on_the_page(
    client: TestClient, token: str, recorded: Path
) -> None:
    device = Device(recorded)
    device.ledger()  # creates its key and anchor
    device.reset_ledger("reset by the employee")
    page = client.get("/", headers={"X-Hearth-Token": token}).text
    assert 'id="budget-resets"' in page and "reset by the employee (0 entries cleared)" in page
    (device.privacy_dir / "ledger.bin").unlink()
    page = client.get("/", headers={"X-Hearth-Token": token}).text
    assert "is missing" in page and "hearth budget reset --i-understand" in page
