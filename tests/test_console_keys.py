"""The API Keys page: empty state, create → shown once → masked, filters, revoke, roll, roles."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session
from streamlit.testing.v1 import AppTest

from core.auth.verifier import Verifier
from core.keys import service as keys
from core.keys.policy import KeyStatus
from pages import _ui
from tests import test_console_app as app
from tests.factories import OrgFixture
from tests.test_console_app import (
    Console,
    assert_clean,
    assert_refused,
    button,
    everything,
    texts,
)

console = app.console  # fixtures shared with the console's entry tests
org = app.org


def _create(at: AppTest, name: str, expiry: str = "30 days") -> AppTest:
    button(at, "Create API key").click().run()
    at.text_input(key="create_name").input(name)
    at.radio(key="create_expiry").set_value(expiry)
    return button(at, "Generate key").click().run()


def _table(at: AppTest):
    assert at.dataframe, "no key table"
    return at.dataframe[0].value


def _keys(console: Console, org: OrgFixture, **kw) -> list[keys.KeyView]:
    with Session(console.engine) as s:
        return keys.list_keys(s, org.id, org.admin, **kw)


def _verify(console: Console, secret: str) -> str:
    from core.config import Settings

    verifier = Verifier(console.engine, Settings.from_env().pepper)
    return verifier.verify_key(secret).code.value


def test_empty_state_invites_to_create_the_first_key(console: Console, org: OrgFixture) -> None:
    at = console.signed_in("admin@acme.test", "API Keys")
    assert "No API keys generated" in everything(at)
    assert "Create API key" in [b.label for b in at.button]
    assert not at.dataframe


def test_create_shows_the_key_once_then_only_masked(console: Console, org: OrgFixture) -> None:
    at = console.signed_in("member@acme.test", "API Keys")
    _create(at, "Production Server")
    assert_clean(at)
    shown = [c.value for c in at.code]
    assert len(shown) == 1 and shown[0].startswith("isk_")
    secret = shown[0]
    assert any("will not be shown again" in w for w in texts(at, "warning"))
    assert "API key 'Production Server' created" in texts(at, "toast")
    assert secret not in str(at.session_state.to_dict())
    assert _verify(console, secret) == "valid"
    button(at, "Done").click().run()
    assert_clean(at)
    assert secret not in everything(at)
    table = _table(at)
    assert list(table["Name"]) == ["Production Server"]
    view = _keys(console, org)[0]
    assert list(table["Key"]) == [view.masked] and secret not in table.to_string()
    assert list(table["Status"]) == ["🟢 Active"]
    assert list(table["Created by"]) == ["member@acme.test"]
    assert table["Expires"][0] in ("in 29 days", "in 30 days")
    assert list(table["Last used"]) == ["Never"]
    at.run()
    assert secret not in everything(at) and not at.code


@pytest.mark.parametrize(
    ("name", "message"),
    [("", "key name must not be empty"), ("x" * 101, "key name must be at most 100")],
)
def test_create_refuses_a_bad_name_clearly(
    console: Console, org: OrgFixture, name: str, message: str
) -> None:
    at = console.signed_in("admin@acme.test", "API Keys")
    _create(at, name)
    assert_refused(at, message)
    assert not at.code
    assert _keys(console, org) == []


def test_custom_expiry_uses_the_chosen_date(console: Console, org: OrgFixture) -> None:
    at = console.signed_in("admin@acme.test", "API Keys")
    button(at, "Create API key").click().run()
    at.text_input(key="create_name").input("Development Testing")
    at.radio(key="create_expiry").set_value("Custom")
    target = at.date_input(key="create_custom").value + timedelta(days=10)
    at.date_input(key="create_custom").set_value(target)
    button(at, "Generate key").click().run()
    assert_clean(at)
    assert _keys(console, org)[0].expires_at.date() == target


def _seed(
    console: Console, org: OrgFixture, name: str, actor=None, days: int = 90, age: int = 0
) -> str:
    """Create a key `age` days ago that lived `days` days; return its secret."""
    from core.clock import utcnow
    from core.config import Settings

    with Session(console.engine) as s, s.begin():
        new = keys.create_key(
            s,
            org.id,
            actor or org.admin,
            name=name,
            expires=days,
            pepper=Settings.from_env().pepper,
            now=utcnow() - timedelta(days=age),
        )
    return new.key


def test_revoke_asks_for_confirmation_and_records_the_reason(
    console: Console, org: OrgFixture
) -> None:
    secret = _seed(console, org, "Mobile App")
    at = console.signed_in("admin@acme.test", "API Keys")
    button(at, "Revoke").click().run()
    assert "Revoke key" in [b.label for b in at.button]
    button(at, "Cancel").click().run()
    assert _keys(console, org)[0].status == KeyStatus.ACTIVE
    button(at, "Revoke").click().run()
    at.text_input(key="reason").input("leaked in a log")
    button(at, "Revoke key").click().run()
    assert_clean(at)
    assert "API key 'Mobile App' revoked" in texts(at, "toast")
    assert list(_table(at)["Status"]) == ["🔴 Revoked"]
    view = _keys(console, org)[0]
    assert view.status == KeyStatus.REVOKED and view.revoke_reason == "leaked in a log"
    assert _verify(console, secret) == "key_revoked"
    assert console.actions(org.id)[-1] == "api_key.revoked"


def test_roll_shows_the_new_key_once_and_ends_the_old_one(
    console: Console, org: OrgFixture
) -> None:
    old_secret = _seed(console, org, "Production Server")
    at = console.signed_in("admin@acme.test", "API Keys")
    button(at, "Roll").click().run()
    at.radio(key="roll_grace").set_value("0")
    button(at, "Roll key").click().run()
    assert_clean(at)
    new_secret = at.code[0].value
    assert new_secret.startswith("isk_") and new_secret != old_secret
    assert "API key 'Production Server' rolled" in texts(at, "toast")
    assert _verify(console, new_secret) == "valid"
    assert _verify(console, old_secret) == "key_revoked"
    button(at, "Done").click().run()
    assert new_secret not in everything(at)
    assert set(_table(at)["Status"]) == {"🟢 Active", "🔴 Revoked"}


def test_filters_narrow_the_table(console: Console, org: OrgFixture) -> None:
    _seed(console, org, "Long Lived", days=90)
    _seed(console, org, "Short Lived", days=30, age=25)
    gone = _seed(console, org, "Old One", days=60)
    with Session(console.engine) as s, s.begin():
        key_id = next(v.id for v in keys.list_keys(s, org.id, org.admin) if v.name == "Old One")
        keys.revoke_key(s, org.admin, key_id)
    assert _verify(console, gone) == "key_revoked"
    at = console.signed_in("admin@acme.test", "API Keys")
    assert len(_table(at)) == 3
    status = next(s for s in at.selectbox if s.label == "Status")
    status.select("Revoked").run()
    assert list(_table(at)["Name"]) == ["Old One"]
    status = next(s for s in at.selectbox if s.label == "Status")
    status.select("All").run()
    within = next(s for s in at.selectbox if s.label == "Expiring within")
    within.select("7 days").run()
    assert list(_table(at)["Name"]) == ["Short Lived"]
    assert "🟠 Expiring" in list(_table(at)["Status"])
    within = next(s for s in at.selectbox if s.label == "Expiring within")
    within.select("Any time").run()
    at.toggle[0].set_value(True).run()
    assert_clean(at)
    assert "No keys match these filters." in texts(at, "info")


def test_a_member_manages_only_their_own_keys(console: Console, org: OrgFixture) -> None:
    _seed(console, org, "Admin Key")
    _seed(console, org, "Member Key", actor=org.member)
    at = console.signed_in("member@acme.test", "API Keys")
    assert len(_table(at)) == 2
    choices = at.selectbox(key="manage_key").options
    assert len(choices) == 1 and choices[0].startswith("Member Key")


def test_an_auditor_reads_keys_but_cannot_change_them(console: Console, org: OrgFixture) -> None:
    _seed(console, org, "Admin Key")
    at = console.signed_in("auditor@acme.test", "API Keys")
    assert len(_table(at)) == 1
    labels = [b.label for b in at.button]
    assert "Create API key" not in labels and "Revoke" not in labels and "Roll" not in labels
    assert "Your role can view keys but not change them." in texts(at, "caption")


def test_the_banner_warns_about_keys_about_to_expire(console: Console, org: OrgFixture) -> None:
    from core.alerts import service as alerts

    _seed(console, org, "Short Lived", days=30, age=27)
    with Session(console.engine) as s, s.begin():
        alerts.scan_expiry(s)  # the embedded worker's scan, run here at once
    at = console.signed_in("member@acme.test")
    shown = _ui.text("API key 'Short Lived'")  # alert text is escaped before Markdown
    assert any(shown in w and "expires" in w for w in texts(at, "warning"))
    at.switch_page(app.PAGES["Getting Started"]).run()
    assert any(shown in w for w in texts(at, "warning"))
