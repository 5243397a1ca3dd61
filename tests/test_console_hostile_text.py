"""Text a person typed is rendered as text on every page that shows it: names that look
like Markdown images and links, HTML, `:color[…]` directives and `$math$` are escaped
before they reach Markdown, a dialog, a toast, a banner or a caption (tables show plain
text already)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session
from streamlit.testing.v1 import AppTest

from core.clock import utcnow
from core.config import Settings
from core.keys import service as keys
from core.orgs import invitations, users
from core.orgs import service as orgs
from core.orgs.permissions import Actor
from pages import _ui
from tests import test_console_app as app
from tests.factories import PASSWORD
from tests.test_console_app import PAGES, Console, assert_clean, button

console = app.console

IMAGE_LINK = "![p](http://attacker.example/px.png) [Verify](http://attacker.example/ph)"
MARKUP = "<img src=x onerror=alert(1)> :red[alarm] $x^2$ **bold** www.attacker.example"
# What must never reach a Markdown source unescaped (a backslash before it escapes it).
RAW = ["![", "](", "<img", ":red[", "$x^2$", "**bold**", "www.attacker", "http://attacker"]
UNESCAPED = [re.compile(r"(?<!\\)" + re.escape(raw)) for raw in RAW]
MARKDOWN_KINDS = ["title", "header", "subheader", "markdown", "caption", "info", "warning"]
MARKDOWN_KINDS += ["error", "success", "toast"]


def _sources(at: AppTest) -> list[str]:
    return [str(getattr(e, "value", "")) for k in MARKDOWN_KINDS for e in at.get(k)]


def _assert_text_only(at: AppTest, where: str) -> list[str]:
    shown = _sources(at)
    for source in shown:
        for raw in UNESCAPED:
            assert not raw.search(source), (where, raw.pattern, source)
    return shown


@pytest.fixture
def hostile(console: Console, session: Session) -> dict[str, str]:
    """An organization, a person and keys named by an attacker."""
    operator = Actor.system("cli")
    with session.begin():
        org, admin = orgs.create_organization(session, IMAGE_LINK, "admin@x.test", PASSWORD)
        users.create_user(session, "eve@x.test", PASSWORD, display_name=MARKUP)
        orgs.add_member(session, org.id, operator, "eve@x.test", "member")
        actor = Actor.user(admin.id, admin.email)
        for name in (IMAGE_LINK, MARKUP):
            keys.create_key(
                session,
                org.id,
                actor,
                name=name,
                expires=10,
                pepper=Settings.from_env().pepper,
                now=utcnow() - timedelta(days=1),
            )
        issued = invitations.invite(session, org.id, actor, "new@x.test", "member")
    return {"org": org.id, "invite": issued.token}


def test_the_escape_keeps_the_words_and_drops_the_markup() -> None:
    escaped = _ui.text(IMAGE_LINK + " " + MARKUP)
    for raw in UNESCAPED:
        assert not raw.search(escaped), raw.pattern
    for raw in UNESCAPED:  # the check itself sees every raw form
        assert raw.search(IMAGE_LINK + " " + MARKUP), raw.pattern
    assert "Verify" in escaped and "alarm" in escaped and "attacker" in escaped


@pytest.mark.parametrize("title", sorted(PAGES))
def test_hostile_names_stay_text_on_every_page(
    console: Console, hostile: dict[str, str], title: str
) -> None:
    at = console.signed_in("admin@x.test", title)
    assert_clean(at)
    shown = _assert_text_only(at, title)
    if title == "Dashboard":  # the organization's name is the page's title
        assert _ui.text(IMAGE_LINK) in shown


def test_hostile_names_stay_text_in_dialogs_toasts_and_the_account_page(
    console: Console, hostile: dict[str, str]
) -> None:
    at = console.signed_in("admin@x.test", "API Keys")
    button(at, "Revoke").click().run()
    assert any(_ui.text(IMAGE_LINK) in s or _ui.text(MARKUP) in s for s in _sources(at))
    _assert_text_only(at, "revoke dialog")
    at.text_input(key="reason").input(MARKUP)
    button(at, "Revoke key").click().run()
    assert_clean(at)
    _assert_text_only(at, "revoke toast")
    member = console.signed_in("eve@x.test")
    member.switch_page("pages/account.py").run()
    assert_clean(member)
    shown = _assert_text_only(member, "account")
    assert any(_ui.text(MARKUP) in s for s in shown)


def test_a_hostile_organization_name_stays_text_on_the_invitation_page(
    console: Console, hostile: dict[str, str]
) -> None:
    b = console.browser()
    at = b.open()
    at.query_params["token"] = hostile["invite"]
    at.switch_page("pages/accept_invitation.py").run()
    assert_clean(at)
    shown = _assert_text_only(at, "accept invitation")
    assert any(_ui.text(IMAGE_LINK) in s for s in shown)
    assert "token" not in at.query_params  # the token left the address bar
