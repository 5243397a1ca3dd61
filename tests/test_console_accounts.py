"""A person's account in the console: accepting an invitation, changing the password,
a reset link, and signing out everywhere — each ending the sessions it must."""

from __future__ import annotations

from sqlalchemy.orm import Session

from core.orgs import invitations, users
from core.orgs.permissions import Actor
from core.sessions import service as sessions
from core.sessions import web
from tests import test_console_app as app
from tests.factories import PASSWORD, OrgFixture
from tests.test_console_app import Console, assert_clean, assert_refused, button, texts

console = app.console
org = app.org
NEW_PASSWORD = "a-new-passphrase-9"


def _alive(console: Console, token: str) -> bool:
    with Session(console.engine) as s:
        return sessions.resume(s, token) is not None


def test_a_new_person_accepts_an_invitation_and_is_signed_in(
    console: Console, org: OrgFixture
) -> None:
    with Session(console.engine) as s, s.begin():
        issued = invitations.invite(s, org.id, org.admin, "vic@acme.test", "auditor")
    b = console.browser()
    at = b.open()
    at.query_params["token"] = issued.token
    at.switch_page("pages/accept_invitation.py").run()
    assert_clean(at)
    assert "token" not in at.query_params
    at.text_input(key="accept_name").input("Vic")
    at.text_input(key="accept_password").input("password1234")
    at.text_input(key="accept_repeat").input("password1234")
    button(at, "Create account and accept").click().run()
    assert_refused(at, "Passwords need 12")
    at.text_input(key="accept_password").input(NEW_PASSWORD)
    at.text_input(key="accept_repeat").input(NEW_PASSWORD)
    button(at, "Create account and accept").click().run()
    dashboard = b.follow(at)
    assert dashboard is not None
    assert_clean(dashboard)
    assert "Acme" in texts(dashboard, "title")
    assert "· Auditor" in " ".join(texts(dashboard, "caption"))
    assert issued.token not in str(at.session_state.to_dict())


def test_an_existing_account_signs_in_to_accept(console: Console, org: OrgFixture) -> None:
    with Session(console.engine) as s, s.begin():
        users.create_user(s, "vic@acme.test", NEW_PASSWORD)
        issued = invitations.invite(s, org.id, org.admin, "vic@acme.test", "member")
    b = console.browser()
    at = b.open()
    at.query_params["token"] = issued.token
    at.switch_page("pages/accept_invitation.py").run()
    assert any("has an account" in t for t in texts(at, "markdown"))
    at.text_input(key="accept_password").input(PASSWORD)  # someone else's guess
    button(at, "Sign in and accept").click().run()
    assert_refused(at, "Incorrect email or password")
    at.text_input(key="accept_password").input(NEW_PASSWORD)
    button(at, "Sign in and accept").click().run()
    dashboard = b.follow(at)
    assert dashboard is not None and "Acme" in texts(dashboard, "title")


def test_changing_the_password_ends_every_session_and_signs_this_browser_in_anew(
    console: Console, org: OrgFixture
) -> None:
    other = console.token("member@acme.test")
    b = console.browser()
    b.jar[web.SESSION_COOKIE] = old = console.token("member@acme.test")
    at = b.open("pages/account.py")
    assert_clean(at)
    at.text_input(key="pw_current").input("not-my-password-1")
    at.text_input(key="pw_new").input(NEW_PASSWORD)
    at.text_input(key="pw_repeat").input(NEW_PASSWORD)
    button(at, "Change password").click().run()
    assert_refused(at, "current password is not correct")
    assert _alive(console, other)
    at.text_input(key="pw_current").input(PASSWORD)
    at.text_input(key="pw_new").input(NEW_PASSWORD)
    at.text_input(key="pw_repeat").input(NEW_PASSWORD)
    button(at, "Change password").click().run()
    assert not _alive(console, other) and not _alive(console, old)
    page = b.follow(at)
    assert page is not None
    assert_clean(page)
    assert b.jar[web.SESSION_COOKIE] not in (old, other)
    assert "My account" in texts(page, "title")


def test_a_reset_link_sets_a_new_password_and_ends_every_session(
    console: Console, org: OrgFixture
) -> None:
    token = console.token("member@acme.test")
    with Session(console.engine) as s, s.begin():
        issued = users.issue_reset(s, Actor.system("cli"), "member@acme.test")
    b = console.browser()
    at = b.open()
    at.query_params["token"] = issued.token
    at.switch_page("pages/reset_password.py").run()
    assert_clean(at)
    assert "token" not in at.query_params
    at.text_input(key="reset_password").input(NEW_PASSWORD)
    at.text_input(key="reset_repeat").input(NEW_PASSWORD)
    button(at, "Set password").click().run()
    assert_clean(at)
    assert any("every session of yours has ended" in t for t in texts(at, "success"))
    assert not _alive(console, token)
    again = b.open()
    again.query_params["token"] = issued.token
    again.switch_page("pages/reset_password.py").run()
    assert_refused(again, "not valid or has expired")


def test_sign_out_everywhere_ends_every_session(console: Console, org: OrgFixture) -> None:
    elsewhere = console.token("admin@acme.test")
    b = console.browser()
    b.jar[web.SESSION_COOKIE] = here = console.token("admin@acme.test")
    at = b.open("pages/account.py")
    assert any("2 open sessions" in t for t in texts(at, "caption"))
    button(at, "Sign out everywhere").click().run()
    assert_clean(at)
    assert "You have signed out everywhere." in texts(at, "info")
    assert not _alive(console, here) and not _alive(console, elsewhere)
    b.follow(at)
    assert web.SESSION_COOKIE not in b.jar


def test_an_admin_issues_a_reset_link_but_never_a_password(
    console: Console, org: OrgFixture
) -> None:
    at = console.signed_in("admin@acme.test", "Members")
    at.selectbox(key="reset_member").set_value(org.member.user_id)
    button(at, "Issue reset link").click().run()
    assert_clean(at)
    assert [c.value for c in at.code if "/reset-password?token=pwr_" in c.value]
    assert not [w for w in at.text_input if w.type == "password"]
