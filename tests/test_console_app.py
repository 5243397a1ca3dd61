"""The console's entry: first-run setup, sign-in, sessions across refreshes, navigation by role.

Each test drives `console.py` with Streamlit's AppTest against a real database (SQLite and
PostgreSQL); the helpers here are shared by the other console tests.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.middleware import Middleware
from streamlit.testing.v1 import AppTest

from core.audit.models import AuditEvent
from core.clock import utcnow
from core.sessions import service as sessions
from core.sessions import signin, web
from core.validation import PASSWORD_RULES
from pages import _alerts, _ui
from tests.factories import PASSWORD, OrgFixture, make_org

ROOT = Path(__file__).resolve().parents[1]
PAGE_BY_URL = {
    "/": None,
    "/account": "pages/account.py",
    "/api-keys": "pages/api_keys.py",
}
PAGES = {
    "Dashboard": "pages/dashboard.py",
    "API Keys": "pages/api_keys.py",
    "Webhooks": "pages/webhooks.py",
    "Getting Started": "pages/getting_started.py",
    "Usage": "pages/usage.py",
    "Audit Log": "pages/audit_log.py",
    "Members": "pages/members.py",
    "Settings": "pages/settings.py",
}


def http_post(app: Any, path: str, fields: dict[str, str], headers: dict[str, str]) -> Any:
    """POST a form to an ASGI app in process, as a browser would (no redirect followed)."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.post(path, data=fields, headers=headers, follow_redirects=False)

    return asyncio.run(go())


class FakeClient:
    """What Streamlit captures from a tab's websocket handshake: cookies, headers, address."""

    def __init__(self, cookies: dict[str, str], headers: dict[str, str], remote_ip: str) -> None:
        self.cookies = dict(cookies)
        self.headers = list(headers.items())
        self.remote_ip = remote_ip


_CONNECTED: list[FakeClient | None] = [None]


def _client_context() -> FakeClient | None:
    """Stands in for Streamlit's look-up of the running tab's connection (AppTest has no
    websocket): `st.context.cookies`, `.headers` and `.ip_address` read this tab's."""
    return _CONNECTED[0]


class Tab(AppTest):
    """A browser tab: an AppTest whose runs see the cookies the tab connected with."""

    def __init__(self, script: Path, client: FakeClient) -> None:
        super().__init__(script, default_timeout=60)
        self.client = client

    def _run(self, widget_state: Any = None, timeout: float | None = None) -> AppTest:
        _CONNECTED[0] = self.client
        try:
            return super()._run(widget_state, timeout)
        finally:
            _CONNECTED[0] = None


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form" and a.get("data-console-post"):
            self.forms.append({"action": a["action"], "mode": a["data-console-post"], "fields": {}})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value") or ""


@dataclass
class Browser:
    """A browser: a cookie jar shared by its tabs, a client address and a user agent.

    Its tabs post the forms the console renders to the console's real session routes
    (what the page's script does) and keep the cookies the routes set, so a sign-in
    through the pages ends with the HttpOnly cookie the route issued.
    """

    console: Console
    address: str = "203.0.113.7"
    user_agent: str = "Mozilla/5.0 (Test)"
    jar: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.jar.setdefault(web.BINDING_COOKIE, secrets.token_urlsafe(24))

    def open(self, page: str | None = None) -> Tab:
        """Open the console in a new tab (a new connection: it sees the jar as it is now)."""
        headers = {"User-Agent": self.user_agent, "Host": "testserver"}
        tab = Tab(self.console.root / "console.py", FakeClient(self.jar, headers, self.address))
        tab.run()
        if page:
            tab.switch_page(page).run()
        return tab

    def forms(self, at: AppTest) -> list[dict[str, Any]]:
        parser = _FormParser()
        for element in at.get("html"):
            parser.feed(str(getattr(element, "value", "")))
        return parser.forms

    def post(self, action: str, fields: dict[str, str]) -> Any:
        """POST like the console page's script: same-origin, with this browser's cookies."""
        cookie = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        headers = {
            "Origin": "null",
            "Sec-Fetch-Site": "same-origin",
            "Cookie": cookie,
            "User-Agent": self.user_agent,
        }
        response = http_post(self.console.routes_app(), action, fields, headers)
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in header:
                self.jar.pop(name, None)
            else:
                self.jar[name] = value
        return response

    def follow(self, at: AppTest) -> Tab | None:
        """Post the forms the last run rendered; return the tab a navigation opened."""
        opened = None
        for form in self.forms(at):
            response = self.post(form["action"], form["fields"])
            if form["mode"] == "navigate":
                assert response.status_code == 303, response.text
                opened = self.open(PAGE_BY_URL.get(response.headers["location"]))
        return opened


@dataclass
class Console:
    engine: Engine
    root: Path = ROOT  # where console.py and pages/ are read from

    def routes_app(self) -> Starlette:
        """The console's own HTTP routes and headers, as `streamlit run` serves them."""
        routes = web.ConsoleRoutes(lambda: self.engine).routes()
        return Starlette(routes=routes, middleware=[Middleware(web.SecurityHeaders)])

    def browser(self, **kwargs: Any) -> Browser:
        return Browser(self, **kwargs)

    def app(self, token: str | None = None) -> Tab:
        """Return the console, run once, in a browser whose session cookie is `token`."""
        b = self.browser()
        if token:
            b.jar[web.SESSION_COOKIE] = token
        return b.open()

    def token(self, email: str, *, lifetime: timedelta = timedelta(hours=1), now=None) -> str:
        """Sign in (password checked) and open a session, as the session route does."""
        policy = sessions.SessionPolicy(lifetime=lifetime)
        with Session(self.engine) as s, s.begin():
            who = signin.sign_in(s, email, PASSWORD, signin.Client.of("198.51.100.1"), now=now)
            token, _ = sessions.open_session(s, who.result().user_id, policy=policy, now=now)
        return token

    def signed_in(self, email: str, page: str | None = None) -> AppTest:
        at = self.app(self.token(email))
        if page:
            at.switch_page(PAGES[page]).run()
        assert_clean(at)
        return at

    def actions(self, org_id: str) -> list[str]:
        with Session(self.engine) as s:
            return list(
                s.execute(
                    select(AuditEvent.action)
                    .where(AuditEvent.org_id == org_id)
                    .order_by(AuditEvent.seq)
                ).scalars()
            )


@pytest.fixture
def console(
    database_url: str, data_dir: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Console]:
    import streamlit.runtime.context

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("INTEGRATION_DATA_DIR", str(data_dir))
    monkeypatch.delenv("INTEGRATION_PEPPER", raising=False)
    for name in (
        sessions.SESSION_ENV,
        sessions.IDLE_ENV,
        web.SECURE_ENV,
        "INTEGRATION_CONSOLE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(sessions.SETUP_OPEN_ENV, "0")
    monkeypatch.setenv("INTEGRATION_EMBEDDED_WORKER", "0")
    monkeypatch.setenv("INTEGRATION_WEBHOOK_ALLOW_HTTP", "1")
    monkeypatch.setenv("INTEGRATION_WEBHOOK_ALLOW_PRIVATE", "1")
    monkeypatch.setattr(streamlit.runtime.context, "_get_client_context", _client_context)
    try:
        yield Console(engine)
    finally:
        _alerts.embedded_worker.clear()
        _ui._key_labels.clear()
        _ui.engine_for.clear()


@pytest.fixture
def org(console: Console, session: Session) -> OrgFixture:
    return make_org(session)


def texts(at: AppTest, kind: str) -> list[str]:
    return [str(getattr(e, "value", "")) for e in at.get(kind)]


def everything(at: AppTest) -> str:
    """All text the page shows (markdown, titles, alerts, code, captions)."""
    kinds = ["title", "header", "subheader", "markdown", "caption", "code", "info", "warning"]
    kinds += ["error", "success", "toast"]
    return "\n".join(t for k in kinds for t in texts(at, k))


def button(at: AppTest, label: str) -> Any:
    found = [b for b in at.button if b.label == label]
    assert found, f"no button {label!r} in {[b.label for b in at.button]}"
    return found[0]


def faults(at: AppTest) -> list[_ui.Fault]:
    """The errors the console showed through `_ui.show_error` in the last run."""
    return list(at.session_state[_ui.FAULTS_KEY]) if _ui.FAULTS_KEY in at.session_state else []


def assert_clean(at: AppTest) -> None:
    """The last run raised nothing and showed no error: no traceback, no refusal, no
    database failure, no 'something went wrong' (each is recorded by `_ui.show_error`)."""
    assert not at.exception, [e.value for e in at.exception]
    assert _ui.FAULTS_KEY in at.session_state, "the router did not run"
    assert not faults(at), faults(at)


def assert_refused(at: AppTest, fragment: str) -> None:
    """The last run showed exactly one error, a refusal whose message holds `fragment`
    (nothing crashed, nothing failed in the database)."""
    assert not at.exception, [e.value for e in at.exception]
    shown = faults(at)
    assert [f.kind for f in shown] == ["refused"], shown
    assert fragment in shown[0].message, shown
    assert any(fragment in e for e in texts(at, "error")), texts(at, "error")


def nav_pages(at: AppTest) -> set[str]:
    """The titles of the pages the navigation offers (resolved the way AppTest resolves)."""
    offered = set()
    for title, path in PAGES.items():
        try:
            at.switch_page(path)
        except ValueError:
            continue
        offered.add(title)
    at.switch_page(PAGES["Dashboard"])
    return offered


# --- first run ------------------------------------------------------------------------


def _setup_token(console: Console) -> str:
    """The setup token the operator reads in the console's log."""
    with Session(console.engine) as s, s.begin():
        return sessions.issue_setup_token(s)


def _fill_setup(at: AppTest, password: str, repeat: str | None = None, token: str = "") -> None:
    if token:
        at.text_input(key="setup_token").input(token)
    at.text_input(key="setup_org").input("Acme")
    at.text_input(key="setup_name").input("Ann Admin")
    at.text_input(key="setup_email").input("ann@acme.test")
    at.text_input(key="setup_password").input(password)
    at.text_input(key="setup_repeat").input(password if repeat is None else repeat)
    button(at, "Create organization").click().run()


def test_first_run_setup_needs_the_token_from_the_log_and_signs_the_admin_in(
    console: Console, caplog: pytest.LogCaptureFixture
) -> None:
    b = console.browser()
    at = b.open()
    assert "Welcome to Integration Settings" in texts(at, "title")
    assert PASSWORD_RULES in texts(at, "caption")
    logged = [r.getMessage() for r in caplog.records if "setup token" in r.getMessage()]
    token = logged[-1].rsplit(" ", 1)[-1]  # the page printed one: none was live yet
    _fill_setup(at, "correct-horse-42", token="setup_" + "x" * 43)
    assert_refused(at, "setup token is not correct")
    _fill_setup(at, "correct-horse-42", token=token)
    assert_clean(at)
    assert not faults(at)
    dashboard = b.follow(at)  # the page posts its handoff; the route sets the cookie
    assert dashboard is not None
    assert_clean(dashboard)
    assert "Acme" in texts(dashboard, "title")
    assert b.jar[web.SESSION_COOKIE].startswith("cs_")
    assert all("cs_" not in str(v) for v in dashboard.query_params.values())
    assert "correct-horse-42" not in str(at.session_state.to_dict())
    assert token not in str(at.session_state.to_dict())
    with Session(console.engine) as s:
        org_id = s.execute(select(AuditEvent.org_id)).scalars().first()
        assert not sessions.has_setup_token(s)
    assert org_id is not None
    assert console.actions(org_id) == ["org.created", "member.added"]


def test_setup_is_open_without_a_token_only_when_configured(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sessions.SETUP_OPEN_ENV, "1")
    b = console.browser()
    at = b.open()
    assert not [w for w in at.text_input if w.key == "setup_token"]
    _fill_setup(at, "correct-horse-42")
    dashboard = b.follow(at)
    assert dashboard is not None and "Acme" in texts(dashboard, "title")


@pytest.mark.parametrize(
    ("password", "repeat", "message"),
    [
        ("short", None, PASSWORD_RULES),
        ("password1234", None, PASSWORD_RULES),
        ("correct-horse-42", "correct-horse-43", "The two passwords do not match."),
    ],
)
def test_first_run_setup_refuses_bad_passwords(
    console: Console, password: str, repeat: str | None, message: str
) -> None:
    at = console.app()
    _fill_setup(at, password, repeat, token=_setup_token(console))
    assert_refused(at, message)
    assert "Welcome to Integration Settings" in texts(at, "title")
    with Session(console.engine) as s:
        assert sessions.needs_setup(s)


# --- sign-in and sessions -------------------------------------------------------------


def _sign_in(at: AppTest, email: str, password: str) -> AppTest:
    at.text_input(key="signin_email").input(email)
    at.text_input(key="signin_password").input(password)
    return button(at, "Sign in").click().run()


def test_sign_in_sets_an_http_only_cookie_and_no_url_carries_it(
    console: Console, org: OrgFixture
) -> None:
    b = console.browser()
    at = b.open()
    assert "Sign in" in [b.label for b in at.button]
    _sign_in(at, "member@acme.test", PASSWORD)
    assert_clean(at)
    assert web.SESSION_COOKIE not in b.jar  # the page cannot set it: the route does
    (form,) = b.forms(at)
    assert form["action"] == web.SESSION_PATH and form["fields"]["handoff"].startswith("hof_")
    response = b.post(form["action"], form["fields"])
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    dashboard = b.open(PAGE_BY_URL[response.headers["location"]])
    assert_clean(dashboard)
    assert "Acme" in texts(dashboard, "title")
    assert dashboard.query_params == {"org": org.id}
    again = b.post(form["action"], form["fields"])  # the handoff worked once
    assert again.status_code == 400


def test_a_handoff_works_only_in_the_browser_it_was_issued_to(
    console: Console, org: OrgFixture
) -> None:
    victim, attacker = console.browser(), console.browser(address="198.51.100.66")
    at = _sign_in(attacker.open(), "member@acme.test", PASSWORD)
    (form,) = attacker.forms(at)
    response = victim.post(form["action"], form["fields"])  # login CSRF: refused
    assert response.status_code == 400
    assert web.SESSION_COOKIE not in victim.jar


def test_wrong_passwords_get_one_answer_and_the_password_never_stays(
    console: Console, org: OrgFixture
) -> None:
    at = console.app()
    for email in ("member@acme.test", "nobody@acme.test"):
        _sign_in(at, email, "not-the-password-1")
        assert_refused(at, "Incorrect email or password.")
    assert "not-the-password-1" not in str(at.session_state.to_dict())
    _sign_in(at, "member@acme.test", PASSWORD)
    assert_clean(at)


def test_a_refresh_keeps_the_session_and_sign_out_ends_it_server_side(
    console: Console, org: OrgFixture
) -> None:
    token = console.token("admin@acme.test")
    b = console.browser()
    b.jar[web.SESSION_COOKIE] = token
    at = b.open()
    assert "Acme" in texts(at, "title")
    refreshed = b.open()  # a refresh: a new connection with the same cookie
    assert "Acme" in texts(refreshed, "title")
    button(refreshed, "Sign out").click().run()
    assert_clean(refreshed)
    assert "You have signed out." in texts(refreshed, "info")
    with Session(console.engine) as s:
        assert sessions.resume(s, token) is None  # deleted, whatever the browser keeps
    b.follow(refreshed)  # the page asks the browser to drop the cookie
    assert web.SESSION_COOKIE not in b.jar
    stolen = console.app(token)  # the old value, replayed from elsewhere
    assert "Sign in" in [b.label for b in stolen.button]
    assert "Acme" not in texts(stolen, "title")


def test_an_expired_session_asks_to_sign_in_again(console: Console, org: OrgFixture) -> None:
    token = console.token(
        "admin@acme.test", lifetime=timedelta(minutes=5), now=utcnow() - timedelta(minutes=6)
    )
    at = console.app(token)
    assert_clean(at)
    assert "Your session has ended. Please sign in again." in texts(at, "info")


def test_an_idle_session_ends_after_the_idle_timeout(
    console: Console, org: OrgFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = console.token("admin@acme.test", now=utcnow() - timedelta(minutes=31))
    with Session(console.engine) as s:
        assert sessions.resume(s, token, now=utcnow() - timedelta(minutes=2)) is not None
    at = console.app(token)
    assert "Your session has ended. Please sign in again." in texts(at, "info")
    monkeypatch.setenv(sessions.IDLE_ENV, "45")
    assert "Acme" in texts(console.app(token), "title")


def test_a_made_up_token_is_just_a_sign_in_page(console: Console, org: OrgFixture) -> None:
    at = console.app("cs_" + "A" * 43)
    assert_clean(at)
    assert "Sign in" in [b.label for b in at.button]


# --- navigation by role ---------------------------------------------------------------

ROLE_PAGES = {
    "admin": set(PAGES),
    "member": {"Dashboard", "API Keys", "Getting Started", "Usage"},
    "auditor": {"Dashboard", "API Keys", "Webhooks", "Getting Started", "Usage", "Audit Log"},
}


@pytest.mark.parametrize("role", list(ROLE_PAGES))
def test_each_role_sees_only_its_pages_and_every_page_renders(
    console: Console, org: OrgFixture, role: str
) -> None:
    at = console.signed_in(f"{role}@acme.test")
    assert nav_pages(at) == ROLE_PAGES[role]
    for title in sorted(ROLE_PAGES[role]):
        at.switch_page(PAGES[title]).run()
        assert_clean(at)
        assert not texts(at, "error"), (title, texts(at, "error"))
        assert texts(at, "title"), title
    assert f"· {role.title()}" in " ".join(texts(at, "caption"))


def test_a_user_in_two_organizations_switches_in_the_sidebar(
    console: Console, org: OrgFixture, session: Session
) -> None:
    from core.orgs import service as orgs

    with session.begin():
        orgs.create_organization(session, "Beta", "member@acme.test", None)
    at = console.signed_in("member@acme.test")
    switcher = at.selectbox(key="org_switcher")
    assert [at.title[0].value] == ["Acme"]
    beta = next(o for o in switcher.options if o == "Beta")
    switcher.select(beta).run()
    assert_clean(at)
    assert "Beta" in texts(at, "title")
    assert nav_pages(at) == ROLE_PAGES["admin"]  # admin of Beta, member of Acme


def test_an_unreachable_database_gets_one_sentence_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:9/nowhere")
    monkeypatch.setenv("INTEGRATION_DATA_DIR", str(tmp_path))
    try:
        at = AppTest.from_file(str(ROOT / "console.py"), default_timeout=60).run()
    finally:
        _ui.engine_for.clear()
    assert not at.exception
    assert texts(at, "error") == ["The database could not complete the request. Please try again."]
    assert [(f.kind, f.error) for f in faults(at)] == [("database", "OperationalError")]


def test_a_user_without_an_organization_is_told_so_and_can_sign_out(
    console: Console, org: OrgFixture, session: Session
) -> None:
    from core.orgs import service as orgs

    token = console.token("member@acme.test")
    with session.begin():
        orgs.remove_member(session, org.id, org.admin, org.member.user_id)
    at = console.app(token)
    assert_clean(at)
    assert any("does not belong to any organization" in i for i in texts(at, "info"))
    button(at, "Sign out").click().run()
    assert "Sign in" in [b.label for b in at.button]
    with Session(console.engine) as s:
        assert sessions.resume(s, token) is None


def test_the_session_lifetime_is_configurable(
    console: Console, org: OrgFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.orgs import tokens
    from core.sessions.models import ConsoleSession

    monkeypatch.setenv(sessions.SESSION_ENV, "0.5")
    b = console.browser()
    b.follow(_sign_in(b.open(), "admin@acme.test", PASSWORD))
    with Session(console.engine) as s:
        row = s.get(ConsoleSession, tokens.token_hash(b.jar[web.SESSION_COOKIE]))
        assert row is not None
        assert row.expires_at - row.created_at == timedelta(minutes=30)
