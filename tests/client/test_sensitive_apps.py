"""The sensitive-app list: policy defaults, employee additions, live reload."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from client.sensitive_apps import (
    SensitiveAppError,
    SensitiveApps,
    SensitiveAppsWatcher,
    add_app,
    add_site,
    load_additions,
    remove_app,
    remove_site,
    sensitive_path,
)
from policy.events import AppCategory
from privacy.policy import load_policy


def test_policy_defaults_cover_chat_hr_and_password_managers(tmp_path: Path) -> None:
    apps = SensitiveApps.from_policy(load_policy(), tmp_path)
    assert apps.is_sensitive("slack", AppCategory.OTHER)
    assert apps.is_sensitive("unknown-tool", AppCategory.PASSWORD_MANAGER)
    assert apps.is_sensitive("mybank-desktop", AppCategory.OTHER)
    assert not apps.is_sensitive("code", AppCategory.EDITOR)


def test_private_browser_windows_are_sensitive_by_hint(tmp_path: Path) -> None:
    apps = SensitiveApps.from_policy(load_policy(), tmp_path)
    assert apps.is_sensitive("firefox", AppCategory.BROWSER, "Mozilla Firefox Private Browsing")
    assert not apps.is_sensitive("firefox", AppCategory.BROWSER, "Mozilla Firefox")


def test_additions_persist_owner_only_and_can_be_removed(tmp_path: Path) -> None:
    add_app(tmp_path, "Gimp")
    assert load_additions(tmp_path) == ("gimp",)
    assert sensitive_path(tmp_path).stat().st_mode & 0o777 == 0o600
    assert SensitiveApps.from_policy(load_policy(), tmp_path).is_sensitive(
        "gimp", AppCategory.DESIGN
    )
    remove_app(tmp_path, "gimp")
    assert load_additions(tmp_path) == ()


def test_invalid_app_id_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SensitiveAppError, match="not an app id"):
        add_app(tmp_path, "../etc/passwd")


def test_damaged_additions_file_keeps_the_policy_list(tmp_path: Path) -> None:
    sensitive_path(tmp_path).write_text("{not json")
    apps = SensitiveApps.from_policy(load_policy(), tmp_path)
    assert apps.is_sensitive("slack", AppCategory.OTHER)


def test_one_damaged_entry_does_not_drop_the_employees_other_additions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    add_site(tmp_path, "mybank.example")
    add_app(tmp_path, "signal-desktop")
    data = json.loads(sensitive_path(tmp_path).read_text())
    data["sites"].append("bad\u202esite")  # a control character, refused when added
    data["apps"].append("Not An App!")
    sensitive_path(tmp_path).write_text(json.dumps(data))
    apps = SensitiveApps.from_policy(load_policy(), tmp_path)
    assert apps.is_sensitive("firefox", AppCategory.BROWSER, "Login - mybank.example")
    assert apps.is_sensitive("signal-desktop", AppCategory.OTHER)
    assert "skipped" in caplog.text
    assert "bad" not in caplog.text and "Not An App" not in caplog.text  # names never logged


def test_a_policy_site_matches_titles_whatever_their_case_folding(tmp_path: Path) -> None:
    policy = load_policy()
    data = policy.data.model_copy(update={"sensitive_sites": ("straße-bank",)})
    apps = SensitiveApps.from_policy(policy.model_copy(update={"data": data}), tmp_path)
    assert apps.is_sensitive("firefox", AppCategory.BROWSER, "STRASSE-BANK - Kontostand")


def test_watcher_sees_an_addition_without_restart(tmp_path: Path) -> None:
    watcher = SensitiveAppsWatcher(load_policy(), tmp_path)
    assert not watcher.current().is_sensitive("gimp", AppCategory.DESIGN)
    add_app(tmp_path, "gimp")
    later = time.time() + 5
    os.utime(sensitive_path(tmp_path), (later, later))  # mtime granularity on some filesystems
    assert watcher.current().is_sensitive("gimp", AppCategory.DESIGN)


@pytest.mark.parametrize(
    "title",
    [
        "Home - Workday - Chromium",
        "Online-Banking | Sparkasse — Mozilla Firefox",
        "(3) WhatsApp - Google Chrome",
        "web.whatsapp.com - Chromium",
        "Vaults | Bitwarden Web Vault — Mozilla Firefox",
        "Sign in - Google Accounts - Chromium",
        "N26 — Mozilla Firefox",
        "New Incognito Tab - Chromium",
    ],
)
def test_sensitive_sites_in_a_browser_title_are_sensitive(tmp_path: Path, title: str) -> None:
    apps = SensitiveApps.from_policy(load_policy(), tmp_path)
    assert apps.is_sensitive("chromium", AppCategory.BROWSER, f"chromium Chromium {title}")


@pytest.mark.parametrize(
    "title",
    ["Pull requests · hearth - Chromium", "main26.py - Code", "Quarterly plan - Google Docs"],
)
def test_ordinary_titles_are_not_sensitive(tmp_path: Path, title: str) -> None:
    apps = SensitiveApps.from_policy(load_policy(), tmp_path)
    assert not apps.is_sensitive("chromium", AppCategory.BROWSER, f"chromium Chromium {title}")


def test_the_employee_can_add_a_site_and_keeps_their_apps(tmp_path: Path) -> None:
    add_app(tmp_path, "gimp")
    assert add_site(tmp_path, "  Intranet.Example.COM ") == ("intranet.example.com",)
    apps = SensitiveApps.from_policy(load_policy(), tmp_path)
    assert apps.is_sensitive("firefox", AppCategory.BROWSER, "Pay slips - intranet.example.com")
    assert load_additions(tmp_path) == ("gimp",)
    assert remove_site(tmp_path, "intranet.example.com") == ()
    with pytest.raises(SensitiveAppError, match="not a site"):
        add_site(tmp_path, "x")
