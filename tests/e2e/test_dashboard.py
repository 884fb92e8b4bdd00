"""The dashboard end to end: a real `hearth dashboard` process and the Chromium it starts.

`hearth dashboard` starts the browser itself (``BROWSER`` points at headless
Chromium with a DevTools port), on the launch file; the test then drives that same
browser over CDP and reads every process's command line, as another local user can.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

from client.consent import grant
from client.control_commands import status_report
from client.dashboard.auth import token_path
from client.device import Device
from client.sensitive_apps import SensitiveApps, load_site_additions
from client.vault import Vault
from policy.events import AppCategory, Focus, Key, KeyClass, Modality
from privacy.policy import load_policy

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_TIMEOUT = 60.0


def _require(condition: bool, why: str) -> None:
    """Skip when a real component is missing, except on CI, where that is a failure."""
    if condition:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{why} (CI must run the dashboard end to end)")
    pytest.skip(why)


def _hearth(*args: str) -> list[str]:
    return [sys.executable, "-c", "from client.cli import app; app()", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


@dataclass
class Dashboard:
    origin: str
    launch_file: Path
    devtools_port: int
    process: subprocess.Popen[str]
    output: list[str]


def _browser_script(tmp_path: Path) -> Path:
    """What ``BROWSER`` names: headless Chromium with a DevTools port, on the URL it is given."""
    profile = tmp_path / "chromium-profile"
    script = tmp_path / "browser.sh"
    args = " ".join([*CHROMIUM_ARGS, "--remote-debugging-port=0", f"--user-data-dir={profile}"])
    script.write_text(f'#!/bin/sh\nexec {CHROMIUM} {args} "$1"\n')
    script.chmod(0o700)
    return script


@pytest.fixture
def dashboard(hearth_home: Path, tmp_path: Path, browser_available: None) -> Iterator[Dashboard]:
    env = _env()
    env["BROWSER"] = str(_browser_script(tmp_path))
    process = subprocess.Popen(
        _hearth("dashboard"),
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    origin = launch = None
    seen: list[str] = []
    started: list[psutil.Process] = []
    try:
        while origin is None or launch is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or process.poll() is not None:
                pytest.fail(f"hearth dashboard did not print its address: {''.join(seen)}")
            try:
                line = lines.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            seen.append(line)
            if line.startswith("hearth dashboard: http://127.0.0.1:"):
                origin = line.split(": ", 1)[1].strip().rstrip("/")
            elif line.startswith("Log in by opening file://"):
                launch = Path(line.split("file://", 1)[1].split(" ", 1)[0])
        active = tmp_path / "chromium-profile" / "DevToolsActivePort"
        while not active.exists() or not active.read_text().strip():
            if time.monotonic() > deadline:
                pytest.fail("the browser hearth dashboard started never opened its DevTools port")
            time.sleep(0.1)
        started = psutil.Process(process.pid).children(recursive=True)
        port = int(active.read_text().split()[0])
        yield Dashboard(
            origin=origin, launch_file=launch, devtools_port=port, process=process, output=seen
        )
    finally:
        started += (
            psutil.Process(process.pid).children(recursive=True) if process.poll() is None else []
        )
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for child in {c.pid: c for c in started}.values():  # the Chromium it started
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(started, timeout=10)


def _every_command_line() -> str:
    """What ``ps`` shows another local user: every process's /proc/PID/cmdline."""
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
    return "\n".join(lines)


def _wait_for_location(page: Page, url: str) -> str:
    """The page's own ``location.href`` once it is ``url`` (or the last one seen).

    Asked of the page, not Playwright's cached ``page.url``: the launch pages may
    navigate while Playwright attaches over CDP, and a navigation finished before
    the attach leaves the cached URL behind for good.
    """
    from playwright.sync_api import Error as PlaywrightError  # noqa: PLC0415

    deadline = time.monotonic() + START_TIMEOUT
    href = ""
    while time.monotonic() < deadline:
        try:
            href = str(page.evaluate("location.href"))
        except PlaywrightError:  # the page was between documents
            href = ""
        if href == url:
            break
        time.sleep(0.1)
    return href


def _seen(page: Page) -> str:
    """What the browser shows, for a failure message (never a live code: spent ones only)."""
    from playwright.sync_api import Error as PlaywrightError  # noqa: PLC0415

    try:
        return f"{page.url}: {page.inner_text('body')[:300]}"
    except PlaywrightError as exc:
        return f"{page.url}: {exc}"


def _code(launch_file: Path) -> str:
    match = re.search(r"/launch\?code=([A-Za-z0-9_-]+)", launch_file.read_text())
    assert match, "the launch file carries no code"
    return match.group(1)


@pytest.fixture
def recorded(hearth_home: Path) -> Path:
    grant(hearth_home, (Modality.POINTER, Modality.KEYS, Modality.APPS))
    events = [Focus(0, 0.0, "code", AppCategory.EDITOR)]
    events += [Key(i, i * 0.1, KeyClass.LETTER) for i in range(1, 50)]
    with Vault.open(hearth_home / "vault") as vault:
        vault.append(events)
    return hearth_home


@pytest.fixture
def browser_available() -> None:
    """Chromium and Playwright (Python) are here, checked before any process starts."""
    _require(CHROMIUM.exists(), f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401, PLC0415
    except ImportError:
        _require(False, "playwright (Python) is not installed")


def test_the_employee_controls_everything_from_a_real_browser(
    recorded: Path, dashboard: Dashboard, tmp_path: Path
) -> None:
    listening = [
        c.laddr
        for c in psutil.Process(dashboard.process.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening, "the dashboard listens nowhere"
    assert all(addr.ip == "127.0.0.1" for addr in listening), listening  # loopback only
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    token = token_path(recorded).read_text().strip()
    with sync_playwright() as p:
        # The very browser `hearth dashboard` started, on the launch file.
        browser = p.chromium.connect_over_cdp(f"http://127.0.0.1:{dashboard.devtools_port}")
        try:
            page = browser.contexts[0].pages[0]
            landed = _wait_for_location(page, f"{dashboard.origin}/")
            assert landed == f"{dashboard.origin}/", _seen(page)
            page.wait_for_load_state()
            page.set_viewport_size({"width": 1280, "height": 900})

            # No secret on any command line (any code, spent or live), none in the history.
            assert stat.S_IMODE(dashboard.launch_file.stat().st_mode) == 0o600
            history = page.context.new_cdp_session(page).send("Page.getNavigationHistory")
            urls = [entry["url"] for entry in history["entries"]]
            assert urls == [f"{dashboard.origin}/"], urls  # the launch pages replaced themselves
            commands = _every_command_line()
            assert dashboard.launch_file.as_uri() in commands  # the browser got the path
            live = _code(dashboard.launch_file)  # renewed after the browser's login
            for secret in (token, live, "/launch?code=", "token="):
                assert secret not in commands, secret
                assert secret not in "".join(dashboard.output), secret  # nor what it printed

            # Another browser: nothing without the cookie; the code works once, then never.
            stranger = browser.new_context().new_page()
            for path in ("/", "/api/state"):
                refused = stranger.goto(f"{dashboard.origin}{path}")
                assert refused is not None and refused.status == 401
            # The launch page refreshes itself to "/" at once: wait for that navigation
            # rather than for the launch page's own load, which it may pre-empt.
            first = stranger.goto(f"{dashboard.origin}/launch?code={live}", wait_until="commit")
            assert first is not None and first.status == 200
            stranger.wait_for_url(f"{dashboard.origin}/")
            stranger.wait_for_load_state()
            stranger.context.clear_cookies()
            again = stranger.goto(f"{dashboard.origin}/launch?code={live}")
            assert again is not None and again.status == 403
            assert stranger.goto(f"{dashboard.origin}/").status == 401  # type: ignore[union-attr]
            stranger.close()

            elsewhere: list[str] = []
            page.on(
                "request",
                lambda r: None if r.url.startswith(dashboard.origin) else elsewhere.append(r.url),
            )
            assert page.get_by_role("heading", name="hearth on this laptop").is_visible()
            assert page.locator("#state").get_attribute("data-state") == "consented"

            # Pause until resumed: `hearth status` (another process) agrees.
            page.get_by_role("button", name="Pause until I resume").click()
            page.wait_for_url(f"{dashboard.origin}/?done=paused")
            assert "Paused until you resume" in page.locator("#state").inner_text()
            status = subprocess.run(
                _hearth("status", "--json"),
                cwd=ROOT,
                env=_env(),
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            )
            assert json.loads(status.stdout)["state"] == "paused"

            # Resume, with the keyboard alone.
            page.get_by_role("button", name="Resume", exact=True).focus()
            page.keyboard.press("Enter")
            page.wait_for_url(f"{dashboard.origin}/?done=resumed")
            assert page.locator("#state").get_attribute("data-state") == "consented"
            assert status_report()["state"] == "consented"

            # A round's upload, logged as the ClientApp logs it, shows after a reload.
            assert page.locator("#uploads-empty").is_visible()
            Device(recorded).log_upload(
                {
                    "round": 4,
                    "bytes": 51_234,
                    "arrays": [["embed.weight", [64, 32]], ["head.bias", [64]]],
                    "epsilon": 0.731,
                }
            )
            page.reload()
            table = page.locator("#uploads").inner_text()
            assert "embed.weight" in table and "64\u00d732" in table
            assert "51,234" in table and "0.731" in table

            # Add an app of one's own to the sensitive list; it is in force at once.
            page.get_by_label("App id to add").fill("gimp")
            page.get_by_role("button", name="Add", exact=True).click()
            page.wait_for_url(f"{dashboard.origin}/?done=app-added")
            assert "gimp" in page.locator("#your-apps").inner_text()
            assert "gimp" in SensitiveApps.from_policy(load_policy(), recorded).apps

            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

            page.get_by_role("button", name="Remove gimp").click()
            page.wait_for_url(f"{dashboard.origin}/?done=app-removed")
            assert "gimp" not in SensitiveApps.from_policy(load_policy(), recorded).apps

            # Add a site of one's own (a browser tab's title names it); `hearth` agrees at once.
            page.get_by_label("Site to add").fill("Payslips.Example-Intranet.com")
            page.get_by_role("button", name="Add site").click()
            page.wait_for_url(f"{dashboard.origin}/?done=site-added")
            site = "payslips.example-intranet.com"
            assert site in page.locator("#your-sites").inner_text()
            assert "workday" in page.locator("#policy-sites").inner_text()  # read-only
            assert load_site_additions(recorded) == (site,)  # the file the recorder watches
            title = "March - Payslips.Example-Intranet.com - Chromium"
            in_force = SensitiveApps.from_policy(load_policy(), recorded)
            assert in_force.is_sensitive("chromium", AppCategory.BROWSER, title)
            page.get_by_role("button", name=f"Remove site {site}").click()
            page.wait_for_url(f"{dashboard.origin}/?done=site-removed")
            assert site not in SensitiveApps.from_policy(load_policy(), recorded).sites
            assert page.locator("#your-sites").inner_text() == "You have added none."

            # Delete all my data: refused by the browser until confirmed.
            delete = page.get_by_role("button", name="Delete all my data")
            delete.click()
            assert (recorded / "vault").exists()
            page.get_by_label("Yes, delete everything").check()
            delete.click()
            page.wait_for_url(f"{dashboard.origin}/?done=deleted")
            assert "The vault is empty" in page.locator("#vault-size").inner_text()
            assert not (recorded / "vault").exists()

            # Revoke consent.
            page.get_by_label("Yes, stop recording for good").check()
            page.get_by_role("button", name="Revoke consent").click()
            page.wait_for_url(f"{dashboard.origin}/?done=revoked")
            assert page.locator("#state").get_attribute("data-state") == "not consented"
            assert status_report()["state"] == "not consented"

            # Without the cookie (a fresh browser profile), the dashboard refuses.
            stranger = browser.new_context().new_page()
            response = stranger.goto(f"{dashboard.origin}/")
            assert response is not None and response.status == 401
            assert elsewhere == []
        finally:
            browser.close()
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
