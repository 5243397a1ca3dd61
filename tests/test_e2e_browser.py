"""End to end in Debian's Chromium: first-run setup → sign in → create a key → the key
authenticates a request to `python -m core serve` → revoke it in the console → the next
request is refused with key_revoked → the audit log shows it all → the CSV export downloads.

Screenshots of every page land in test-artifacts/console/; with
INTEGRATION_UPDATE_SCREENSHOTS=1 the main ones are copied to docs/ for the README.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "console"
DOCS = ROOT / "docs"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct-horse-42"
DOC_SHOTS = ("dashboard", "api-keys-created", "api-keys", "usage", "audit-log", "getting-started")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], env: dict[str, str], log: Path, ready: str) -> subprocess.Popen:
    """Start a process of ours and return once `ready` (a URL) answers 200."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{args[2:4]} exited: {log.read_text(errors='replace')}")
        try:
            if httpx.get(ready, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{args[2:4]} did not start: {log.read_text(errors='replace')}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The console and the HTTP service on free loopback ports, sharing one fresh database."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    data = tmp_path / "data"
    data.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(
        DATABASE_URL=f"sqlite:///{data / 'integration.db'}",
        INTEGRATION_DATA_DIR=str(data),
        INTEGRATION_SERVICE_TOKEN="svc-token-for-browser-test-0123",
    )
    env.pop("DATABASE_URL_OVERRIDE", None)
    ui_port, api_port = _free_port(), _free_port()
    console = _start(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "console.py",
            "--server.port",
            str(ui_port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        env,
        tmp_path / "console.log",
        f"http://127.0.0.1:{ui_port}/_stcore/health",
    )
    try:
        api = _start(
            [sys.executable, "-m", "core", "serve", "--port", str(api_port)],
            env,
            tmp_path / "serve.log",
            f"http://127.0.0.1:{api_port}/healthz",
        )
        try:
            yield f"http://127.0.0.1:{ui_port}", f"http://127.0.0.1:{api_port}"
        finally:
            _stop(api)
    finally:
        _stop(console)


def _whoami(api: str, key: str) -> httpx.Response:
    return httpx.get(f"{api}/v1/whoami", headers={"Authorization": f"x-api-key {key}"}, timeout=5)


def test_console_end_to_end_in_chromium(stack: tuple[str, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    ui, api = stack
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
            page.set_default_timeout(20_000)

            def shot(name: str) -> None:
                tables = page.get_by_test_id("stDataFrame")
                for i in range(tables.count()):
                    expect(tables.nth(i).locator("canvas").first).to_be_visible()
                page.wait_for_timeout(700)  # let tables, charts and toasts paint
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

            def assert_no_error_shown() -> None:
                """No error alert and no exception element: what a crash would render."""
                app = page.get_by_test_id("stApp")
                expect(app).to_have_attribute("data-test-script-state", "notRunning")
                for test_id in ("stAlertContentError", "stException"):
                    expect(page.get_by_test_id(test_id)).to_have_count(0)

            def goto(title: str) -> None:
                page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
                heading = "Acme" if title == "Dashboard" else title  # the dashboard's is the org's
                expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
                assert_no_error_shown()

            # First run: the setup form states the password rules.
            page.goto(ui)
            expect(page.get_by_text("Welcome to Integration Settings")).to_be_visible()
            expect(page.get_by_text("Passwords need 12")).to_be_visible()
            shot("setup")
            page.get_by_role("textbox", name="Organization name", exact=True).fill("Acme")
            page.get_by_role("textbox", name="Your name", exact=True).fill("Ann Admin")
            page.get_by_role("textbox", name="Email", exact=True).fill("ann@acme.example")
            page.get_by_role("textbox", name="Password", exact=True).fill(PASSWORD)
            page.get_by_role("textbox", name="Repeat password", exact=True).fill(PASSWORD)
            page.get_by_role("button", name="Create organization").click()
            expect(page.get_by_role("heading", name="Acme", exact=True)).to_be_visible()

            # Sign out, then sign in through the form.
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_text("You have signed out.")).to_be_visible()
            shot("sign-in")
            page.get_by_role("textbox", name="Email", exact=True).fill("ann@acme.example")
            page.get_by_role("textbox", name="Password", exact=True).fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name="Acme", exact=True)).to_be_visible()
            assert "session=cs_" in page.url
            page.reload()  # a refresh keeps the session
            expect(page.get_by_role("heading", name="Acme", exact=True)).to_be_visible()

            # Create a key and read it from the dialog, once.
            goto("API Keys")
            expect(page.get_by_text("No API keys generated")).to_be_visible()
            shot("api-keys-empty")
            page.get_by_role("button", name="Create API key").click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_role("textbox", name="Key name", exact=True).fill("Production Server")
            dialog.get_by_role("button", name="Generate key").click()
            code = dialog.get_by_test_id("stCode")
            expect(code).to_be_visible()
            key = code.inner_text().strip()
            assert key.startswith("isk_"), key
            expect(dialog.get_by_text("It will not be shown again")).to_be_visible()
            shot("api-keys-created")

            # The key authenticates a request to the HTTP service.
            ok = _whoami(api, key)
            assert ok.status_code == 200, ok.text

            dialog.get_by_role("button", name="Done").click()
            expect(page.get_by_role("dialog")).to_have_count(0)
            assert key not in page.content()

            # Revoke it in the console, with a reason.
            page.get_by_role("button", name="Revoke").click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_role("textbox", name="Reason (optional)", exact=True).fill("browser test")
            dialog.get_by_role("button", name="Revoke key").click()
            expect(page.get_by_text("API key 'Production Server' revoked")).to_be_visible()

            # Every service process learns of the revocation within a second.
            deadline = time.monotonic() + 5
            refused = _whoami(api, key)
            while refused.status_code == 200 and time.monotonic() < deadline:
                time.sleep(0.2)
                refused = _whoami(api, key)
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "key_revoked"

            # A second key makes some traffic for the Usage page and the Dashboard.
            page.get_by_role("button", name="Create API key").click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_role("textbox", name="Key name", exact=True).fill("Mobile App")
            dialog.get_by_role("button", name="Generate key").click()
            second = dialog.get_by_test_id("stCode").inner_text().strip()
            dialog.get_by_role("button", name="Done").click()
            expect(page.get_by_role("dialog")).to_have_count(0)
            codes = [_whoami(api, second).status_code for _ in range(20)]
            codes += [_whoami(api, key).status_code for _ in range(3)]
            assert codes == [200] * 20 + [401] * 3
            time.sleep(2)  # the service flushes its usage log every second
            shot("api-keys")

            for title, name in [
                ("Dashboard", "dashboard"),
                ("Webhooks", "webhooks"),
                ("Getting Started", "getting-started"),
                ("Usage", "usage"),
                ("Members", "members"),
                ("Settings", "settings"),
            ]:
                goto(title)
                shot(name)

            # The audit log shows it all, and its CSV export downloads.
            goto("Audit Log")
            expect(page.get_by_text("Chain intact")).to_be_visible()
            shot("audit-log")
            page.get_by_role("button", name="Prepare export").click()
            with page.expect_download() as info:
                page.get_by_test_id("stDownloadButton").first.get_by_role("button").click()
            provenance, _, text = Path(info.value.path()).read_text().partition("\n")
            assert provenance.startswith("# provenance: ")
            actions = [row["action"] for row in csv.DictReader(io.StringIO(text))]
            for action in (
                "org.created",
                "auth.signin_succeeded",
                "api_key.created",
                "api_key.revoked",
            ):
                assert action in actions, actions
            assert key not in text

            # A refresh on any page keeps the session; after sign-out the URL is dead.
            page.reload()
            expect(page.get_by_role("heading", name="Audit Log", exact=True)).to_be_visible()
            signed_in_url = page.url
            assert "session=cs_" in signed_in_url
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_text("You have signed out.")).to_be_visible()
            page.goto(signed_in_url)
            expect(page.get_by_role("button", name="Sign in")).to_be_visible()
            expect(page.get_by_role("heading", name="Audit Log", exact=True)).to_have_count(0)
        finally:
            browser.close()
    if os.environ.get("INTEGRATION_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        for name in DOC_SHOTS:
            shutil.copyfile(ARTIFACTS / f"{name}.png", DOCS / f"console-{name}.png")
