"""The console's entry: first-run setup, sign-in, sessions across refreshes, navigation by role.

Each test drives `console.py` with Streamlit's AppTest against a real database (SQLite and
PostgreSQL); the helpers here are shared by the other console tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from streamlit.testing.v1 import AppTest

from core.audit.models import AuditEvent
from core.clock import utcnow
from core.sessions import service as signin
from core.validation import PASSWORD_RULES
from pages import _alerts, _ui
from tests.factories import PASSWORD, OrgFixture, make_org

ROOT = Path(__file__).resolve().parents[1]
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


@dataclass
class Console:
    engine: Engine
    root: Path = ROOT  # where console.py and pages/ are read from

    def app(self, token: str | None = None) -> AppTest:
        """Return the console, run once, as a browser carrying `token` in its URL."""
        at = AppTest.from_file(str(self.root / "console.py"), default_timeout=60)
        if token:
            at.query_params["session"] = token
        return at.run()

    def token(self, email: str, *, lifetime: timedelta = timedelta(hours=1), now=None) -> str:
        with Session(self.engine) as s, s.begin():
            outcome = signin.sign_in(s, email, PASSWORD, lifetime=lifetime, now=now)
        token = outcome.result().token
        assert token
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
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("INTEGRATION_DATA_DIR", str(data_dir))
    monkeypatch.delenv("INTEGRATION_PEPPER", raising=False)
    monkeypatch.delenv(signin.SESSION_ENV, raising=False)
    monkeypatch.setenv("INTEGRATION_EMBEDDED_WORKER", "0")
    monkeypatch.setenv("INTEGRATION_WEBHOOK_ALLOW_HTTP", "1")
    monkeypatch.setenv("INTEGRATION_WEBHOOK_ALLOW_PRIVATE", "1")
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


def _fill_setup(at: AppTest, password: str, repeat: str | None = None) -> None:
    at.text_input(key="setup_org").input("Acme")
    at.text_input(key="setup_name").input("Ann Admin")
    at.text_input(key="setup_email").input("ann@acme.test")
    at.text_input(key="setup_password").input(password)
    at.text_input(key="setup_repeat").input(password if repeat is None else repeat)
    button(at, "Create organization").click().run()


def test_first_run_setup_states_the_rules_and_signs_the_admin_in(console: Console) -> None:
    at = console.app()
    assert "Welcome to Integration Settings" in texts(at, "title")
    assert PASSWORD_RULES in texts(at, "caption")
    _fill_setup(at, "correct-horse-42")
    assert_clean(at)
    assert "Acme" in texts(at, "title")  # the dashboard
    token = at.query_params["session"]
    assert token.startswith("cs_")
    assert "correct-horse-42" not in str(at.session_state.to_dict())
    with Session(console.engine) as s:
        org_id = s.execute(select(AuditEvent.org_id)).scalars().first()
    assert org_id is not None
    assert console.actions(org_id) == ["org.created", "member.added", "auth.signin_succeeded"]


@pytest.mark.parametrize(
    ("password", "repeat", "message"),
    [
        ("short", None, PASSWORD_RULES),
        ("correct-horse-42", "correct-horse-43", "The two passwords do not match."),
    ],
)
def test_first_run_setup_refuses_bad_passwords(
    console: Console, password: str, repeat: str | None, message: str
) -> None:
    at = console.app()
    _fill_setup(at, password, repeat)
    assert_refused(at, message)
    assert "Welcome to Integration Settings" in texts(at, "title")
    with Session(console.engine) as s:
        assert signin.needs_setup(s)


# --- sign-in and sessions -------------------------------------------------------------


def _sign_in(at: AppTest, email: str, password: str) -> AppTest:
    at.text_input(key="signin_email").input(email)
    at.text_input(key="signin_password").input(password)
    return button(at, "Sign in").click().run()


def test_sign_in_form_opens_the_dashboard(console: Console, org: OrgFixture) -> None:
    at = console.app()
    assert "Sign in" in [b.label for b in at.button]
    _sign_in(at, "member@acme.test", PASSWORD)
    assert_clean(at)
    assert "Acme" in texts(at, "title")
    assert at.query_params["session"].startswith("cs_")
    assert at.query_params["org"] == org.id


def test_wrong_password_then_lockout_show_clear_messages(console: Console, org: OrgFixture) -> None:
    at = console.app()
    for _ in range(signin.MAX_FAILED_SIGNINS - 1):
        _sign_in(at, "member@acme.test", "not-the-password-1")
        assert "Incorrect email or password." in texts(at, "error")
    _sign_in(at, "member@acme.test", "not-the-password-1")
    assert any("Too many failed sign-ins" in e for e in texts(at, "error"))
    assert "not-the-password-1" not in str(at.session_state.to_dict())
    _sign_in(at, "member@acme.test", PASSWORD)
    assert_refused(at, "Too many failed sign-ins")
    assert "session" not in at.query_params


def test_a_refresh_keeps_the_session_and_sign_out_ends_it(
    console: Console, org: OrgFixture
) -> None:
    token = console.token("admin@acme.test")
    at = console.app(token)
    assert "Acme" in texts(at, "title")
    refreshed = console.app(token)  # a new browser session with the same URL
    assert "Acme" in texts(refreshed, "title")
    button(refreshed, "Sign out").click().run()
    assert_clean(refreshed)
    assert "session" not in refreshed.query_params
    assert "You have signed out." in texts(refreshed, "info")
    again = console.app(token)
    assert "Sign in" in [b.label for b in again.button]
    assert "Acme" not in texts(again, "title")


def test_an_expired_session_asks_to_sign_in_again(console: Console, org: OrgFixture) -> None:
    token = console.token(
        "admin@acme.test", lifetime=timedelta(minutes=5), now=utcnow() - timedelta(minutes=6)
    )
    at = console.app(token)
    assert_clean(at)
    assert "Your session has ended. Please sign in again." in texts(at, "info")
    assert "session" not in at.query_params


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
        assert signin.resume(s, token) is None


def test_the_session_lifetime_is_configurable(
    console: Console, org: OrgFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.sessions.models import ConsoleSession

    monkeypatch.setenv(signin.SESSION_ENV, "0.5")
    at = _sign_in(console.app(), "admin@acme.test", PASSWORD)
    assert_clean(at)
    with Session(console.engine) as s:
        row = s.get(ConsoleSession, signin.token_hash(at.query_params["session"]))
        assert row is not None
        assert row.expires_at - row.created_at == timedelta(minutes=30)
