"""End to end in Debian's Chromium: first-run setup (with the token from the console's
log) → sign in → create a key → the key authenticates a request to `python -m core serve`
→ revoke it in the console → the next request is refused with key_revoked → the audit log
shows it all → the CSV export downloads. Then the session cookie, and the reported
cross-tenant takeover, step by step.

Screenshots of every page land in test-artifacts/console/; with
INTEGRATION_UPDATE_SCREENSHOTS=1 the main ones are copied to docs/ for the README.
"""

from __future__ import annotations

import csv
import io
import os
import re
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
EXPECT_TIMEOUT = 20_000  # ms: a sign-in is an argon2 check, a redirect and a page load

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


class Stack(tuple):
    """(console URL, service URL), with the console's log."""

    log: Path
    env: dict[str, str]

    def setup_token(self) -> str:
        found = re.findall(r"setup token[^:]*: (setup_[A-Za-z0-9_-]{43})", self.log.read_text())
        assert found, self.log.read_text()
        return found[-1]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
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
            result = Stack((f"http://127.0.0.1:{ui_port}", f"http://127.0.0.1:{api_port}"))
            result.log = tmp_path / "console.log"
            result.env = {
                k: v for k, v in env.items() if k.startswith(("INTEGRATION_", "DATABASE"))
            }
            yield result
        finally:
            _stop(api)
    finally:
        _stop(console)


def _whoami(api: str, key: str) -> httpx.Response:
    return httpx.get(f"{api}/v1/whoami", headers={"Authorization": f"x-api-key {key}"}, timeout=5)


def test_console_end_to_end_in_chromium(stack: Stack) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=EXPECT_TIMEOUT)
    ui, api = stack
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
            page.set_default_timeout(20_000)
            csp_violations: list[str] = []
            page.on(
                "console",
                lambda m: (
                    csp_violations.append(m.text) if "Content Security Policy" in m.text else None
                ),
            )

            def shot(name: str) -> None:
                tables = page.get_by_test_id("stDataFrame")
                for i in range(tables.count()):
                    if tables.nth(i).is_visible():  # not in a tab that is not open
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
            page.get_by_role("textbox", name="Setup token", exact=True).fill(stack.setup_token())
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
            assert "cs_" not in page.url
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
            assert "cs_" not in signed_in_url
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_text("You have signed out.")).to_be_visible()
            page.goto(signed_in_url)
            expect(page.get_by_role("button", name="Sign in")).to_be_visible()
            expect(page.get_by_role("heading", name="Audit Log", exact=True)).to_have_count(0)
            assert csp_violations == [], csp_violations  # the headers do not break the page
        finally:
            browser.close()
    if os.environ.get("INTEGRATION_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        for name in DOC_SHOTS:
            shutil.copyfile(ARTIFACTS / f"{name}.png", DOCS / f"console-{name}.png")


def _launch(p):  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT)
    return p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def _setup(page, stack: Stack, email: str = "ann@acme.example") -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.goto(stack[0])
    page.get_by_role("textbox", name="Setup token", exact=True).fill(stack.setup_token())
    page.get_by_role("textbox", name="Organization name", exact=True).fill("Acme")
    page.get_by_role("textbox", name="Your name", exact=True).fill("Ann Admin")
    page.get_by_role("textbox", name="Email", exact=True).fill(email)
    page.get_by_role("textbox", name="Password", exact=True).fill(PASSWORD)
    page.get_by_role("textbox", name="Repeat password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Create organization").click()
    expect(page.get_by_role("heading", name="Acme", exact=True)).to_be_visible()


def _sign_in(page, ui: str, email: str, password: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(ui)
    page.get_by_role("textbox", name="Email", exact=True).fill(email)
    page.get_by_role("textbox", name="Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_the_session_lives_in_an_http_only_cookie_in_chromium(stack: Stack) -> None:
    """After sign-in the URL holds no credential; the cookie is HttpOnly; a refresh keeps
    the session; the same URL in a fresh browser shows sign-in; after sign-out the old
    cookie value no longer works."""
    from playwright.sync_api import expect, sync_playwright

    ui, _api = stack
    with sync_playwright() as p:
        browser = _launch(p)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.set_default_timeout(20_000)
            _setup(page, stack)
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_text("You have signed out.")).to_be_visible()
            _sign_in(page, ui, "ann@acme.example", PASSWORD)
            expect(page.get_by_role("heading", name="Acme", exact=True)).to_be_visible()
            (cookie,) = [c for c in context.cookies() if c["name"] == "isc_session"]
            assert cookie["value"].startswith("cs_") and cookie["value"] not in page.url
            assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
            assert page.evaluate("document.cookie").find("cs_") == -1  # scripts cannot read it
            response = page.request.get(ui)
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "no-referrer"
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
            page.reload()
            expect(page.get_by_role("heading", name="Acme", exact=True)).to_be_visible()
            url = page.url

            fresh = browser.new_context().new_page()
            fresh.goto(url)
            expect(fresh.get_by_role("button", name="Sign in")).to_be_visible()
            expect(fresh.get_by_role("heading", name="Acme", exact=True)).to_have_count(0)

            # A member's key named like a phishing link renders as text in the revoke dialog.
            hostile = "![p](http://attacker.example/px.png) [Verify](http://attacker.example/ph)"
            _cli(stack, "keys", "create", "--org", "Acme", "--name", hostile, "--expires", "30",
                 "--by", "ann@acme.example")  # fmt: skip
            page.get_by_test_id("stSidebarNav").get_by_text("API Keys", exact=True).click()
            page.get_by_role("button", name="Revoke").click()
            dialog = page.get_by_role("dialog")
            expect(dialog).to_contain_text("[Verify](http")
            expect(dialog.locator("img[src*='attacker'], a[href*='attacker']")).to_have_count(0)
            expect(page.locator("img[src*='attacker'], a[href*='attacker']")).to_have_count(0)
            dialog.get_by_role("button", name="Cancel").click()

            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_text("You have signed out.")).to_be_visible()
            replay = browser.new_context()
            replay.add_cookies([{"name": cookie["name"], "value": cookie["value"], "url": ui}])
            stolen = replay.new_page()
            stolen.goto(url)
            expect(stolen.get_by_role("button", name="Sign in")).to_be_visible()
            expect(stolen.get_by_role("heading", name="Acme", exact=True)).to_have_count(0)
        finally:
            browser.close()


def _cli(stack: Stack, *args: str, stdin: str = "") -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(stack.env)
    done = subprocess.run(
        [sys.executable, "-m", "core", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_reported_takeover_fails_at_every_step_in_chromium(stack: Stack) -> None:
    """Beta's admin tries the reported takeover of vic@acme.example, of Acme: no
    password field for another person, the invitation they hold needs vic's own password,
    sign-in with a password they chose fails, and no reset link is theirs to issue."""
    from playwright.sync_api import expect, sync_playwright

    ui, _api = stack
    attacker_password = "beta-admin-chose-this-1"
    vic_password = "vic-own-passphrase-7"
    with sync_playwright() as p:
        browser = _launch(p)
        try:
            acme = browser.new_context().new_page()
            acme.set_default_timeout(20_000)
            _setup(acme, stack)
            _cli(stack, "init", "--org", "Beta", "--admin", "eve@beta.example",
                 "--password-stdin", stdin=PASSWORD + "\n")  # fmt: skip

            # Acme's admin invites vic as admin in the console; vic accepts with vic's password.
            acme.get_by_test_id("stSidebarNav").get_by_text("Members", exact=True).click()
            expect(acme.get_by_role("heading", name="Members", exact=True)).to_be_visible()
            expect(acme.locator("input[type=password]")).to_have_count(0)
            acme.get_by_role("textbox", name="Email", exact=True).fill("vic@acme.example")
            acme.get_by_role("button", name="Invite").click()
            link = acme.get_by_test_id("stCode").inner_text().strip()
            assert "/accept-invitation?token=inv_" in link
            vic = browser.new_context().new_page()
            vic.set_default_timeout(20_000)
            vic.goto(link)
            expect(vic.get_by_text("You are invited to join")).to_be_visible()
            assert "token=" not in vic.url  # the token left the address bar
            vic.get_by_role("textbox", name="Choose a password", exact=True).fill(vic_password)
            vic.get_by_role("textbox", name="Repeat password", exact=True).fill(vic_password)
            vic.get_by_role("button", name="Create account and accept").click()
            expect(vic.get_by_role("heading", name="Acme", exact=True)).to_be_visible()

            # Beta's admin: the console has no password field for someone else ...
            eve = browser.new_context().new_page()
            eve.set_default_timeout(20_000)
            _sign_in(eve, ui, "eve@beta.example", PASSWORD)
            expect(eve.get_by_role("heading", name="Beta", exact=True)).to_be_visible()
            eve.get_by_test_id("stSidebarNav").get_by_text("Members", exact=True).click()
            expect(eve.locator("input[type=password]")).to_have_count(0)
            eve.get_by_role("textbox", name="Email", exact=True).fill("vic@acme.example")
            eve.get_by_role("button", name="Invite").click()
            beta_link = eve.get_by_test_id("stCode").inner_text().strip()
            # ... the link they hold asks for vic's own password ...
            eve.goto(beta_link)
            expect(eve.get_by_text("This email has an account")).to_be_visible()
            eve.get_by_role("textbox", name="Password", exact=True).fill(attacker_password)
            eve.get_by_role("button", name="Sign in and accept").click()
            expect(eve.get_by_text("Incorrect email or password")).to_be_visible()
            # ... signing in as vic with a password of their choosing fails ...
            elsewhere = browser.new_context().new_page()
            elsewhere.set_default_timeout(20_000)
            _sign_in(elsewhere, ui, "vic@acme.example", attacker_password)
            expect(elsewhere.get_by_text("Incorrect email or password")).to_be_visible()
            # ... and the command line refuses them a password or a reset link.
            env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
            env.update(stack.env)
            for args in (
                ["users", "add", "--org", "Beta", "--email", "vic@acme.example", "--role",
                 "member", "--by", "eve@beta.example", "--password-stdin"],
                ["users", "set-password", "vic@acme.example", "--by", "eve@beta.example",
                 "--password-stdin"],
                ["users", "reset-link", "vic@acme.example", "--org", "Beta", "--by",
                 "eve@beta.example"],
            ):  # fmt: skip
                done = subprocess.run(
                    [sys.executable, "-m", "core", *args],
                    input=attacker_password + "\n",
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=ROOT,
                    timeout=120,
                )
                assert done.returncode == 1, (args, done.stdout, done.stderr)

            # vic still signs in with vic's own password, into Acme.
            again = browser.new_context().new_page()
            again.set_default_timeout(20_000)
            _sign_in(again, ui, "vic@acme.example", vic_password)
            expect(again.get_by_role("heading", name="Acme", exact=True)).to_be_visible()
            expect(again.get_by_text("Signed in as")).to_contain_text("vic@acme.example")
        finally:
            browser.close()
