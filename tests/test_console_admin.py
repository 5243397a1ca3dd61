"""Dashboard, Getting Started, Usage, Webhooks, Audit Log, Members and Settings pages."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from sqlalchemy.orm import Session
from streamlit.testing.v1 import AppTest

from core.clock import utcnow
from core.config import Settings
from core.errors import PermissionDenied
from core.keys import service as keys
from core.orgs import service as orgs
from core.sessions.service import SignedIn
from core.usage import schema as usage_schema
from pages import _ui
from tests import test_console_app as app
from tests.factories import OrgFixture
from tests.test_console_app import (
    ROOT,
    Console,
    assert_clean,
    assert_refused,
    button,
    everything,
    texts,
)

console = app.console  # fixtures shared with the console's entry tests
org = app.org


def test_dashboard_counts_keys_by_status(console: Console, org: OrgFixture) -> None:
    with Session(console.engine) as s, s.begin():
        pepper = Settings.from_env().pepper
        for name in ("One", "Two", "Three"):
            keys.create_key(s, org.id, org.admin, name=name, expires=30, pepper=pepper)
        first = keys.list_keys(s, org.id, org.admin)[0]
        keys.revoke_key(s, org.admin, first.id)
    at = console.signed_in("auditor@acme.test")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Active keys"] == "2"
    assert metrics["Revoked"] == "1"
    assert metrics["Expiring soon"] == "0"


def test_getting_started_uses_the_organizations_api_base_url(
    console: Console, org: OrgFixture
) -> None:
    with Session(console.engine) as s, s.begin():
        orgs.update_settings(s, org.id, org.admin, api_base_url="https://api.acme.test/")
    at = console.signed_in("member@acme.test", "Getting Started")
    code = [c.value for c in at.code]
    assert "Authorization: x-api-key YOUR_KEY" in code
    assert any(c.startswith('curl -sS "https://api.acme.test/v1/whoami"') for c in code)
    python = next(c for c in code if 'API_BASE = "https://api.acme.test"' in c)
    compile(python, "getting-started-example", "exec")  # the example is valid Python
    assert "HTTPS" in everything(at)


def test_usage_page_shows_an_empty_state_without_calls(console: Console, org: OrgFixture) -> None:
    at = console.signed_in("member@acme.test", "Usage")
    assert_clean(at)
    assert "No API calls in this period" in everything(at)
    assert not at.metric


def _write_usage(data_dir: Path, org_id: str, key_id: str, n_ok: int, n_bad: int) -> None:
    now = utcnow()
    rows = [
        {
            "ts": now - timedelta(minutes=i + 1),
            "org_id": org_id,
            "key_id": key_id,
            "method": "GET",
            "path": "/v1/whoami",
            "status": 200 if i < n_ok else 401,
            "latency_ms": float(1 + i % 10),
            "code": "valid" if i < n_ok else "key_revoked",
            "client": "127.0.0.1",
        }
        for i in range(n_ok + n_bad)
    ]
    table = pa.Table.from_pylist(rows, schema=usage_schema.SCHEMA)
    usage_schema.write_file(usage_schema.partition_dir(data_dir, f"{now:%Y-%m-%d}"), table)


def test_usage_page_charts_the_usage_log(console: Console, org: OrgFixture, data_dir: Path) -> None:
    with Session(console.engine) as s, s.begin():
        new = keys.create_key(
            s, org.id, org.member, name="Mobile App", expires=30, pepper=Settings.from_env().pepper
        )
    _write_usage(data_dir, org.id, new.id, n_ok=30, n_bad=10)
    _write_usage(data_dir, org.id, "key_second", n_ok=20, n_bad=0)
    _write_usage(data_dir, "org_someone_else", "key_other", n_ok=50, n_bad=0)
    at = console.signed_in("member@acme.test", "Usage")
    assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Calls"] == "60"
    assert metrics["Error rate"] == "16.7%"
    assert len(at.get("vega_lite_chart")) == 4
    at.selectbox(key="usage_key").set_value(new.id).run()
    assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Calls with this key"] == "40"
    assert metrics["Error rate"] == "25.0%"
    dashboard = console.signed_in("member@acme.test")
    assert {m.label: m.value for m in dashboard.metric}["Calls, last 24 h"] == "60"


def test_webhooks_page_renders_for_admins(console: Console, org: OrgFixture) -> None:
    at = console.signed_in("admin@acme.test", "Webhooks")
    assert_clean(at)
    assert "Webhooks" in texts(at, "title")


def test_audit_log_shows_the_chain_filters_and_exports_csv(
    console: Console, org: OrgFixture
) -> None:
    at = console.signed_in("auditor@acme.test", "Audit Log")
    assert any("Chain intact" in s for s in texts(at, "success"))
    frame = at.dataframe[0].value
    assert "member.added" in set(frame["Action"])
    assert "auth.signin_succeeded" in set(frame["Action"])
    at.selectbox(key="audit_action").select("member.added").run()
    assert set(at.dataframe[0].value["Action"]) == {"member.added"}
    at.text_input(key="audit_actor").input("nobody@acme.test").run()
    assert_refused(at, "no event of this organization has actor 'nobody@acme.test'")
    at.text_input(key="audit_actor").input("").run()
    button(at, "Prepare export").click().run()
    assert_clean(at)
    assert any(t.startswith("Export ready: 4 events") for t in texts(at, "toast"))
    prepared = at.session_state["_audit_export"]
    provenance, _, body = prepared[2].decode().partition("\r\n")
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [r["action"] for r in rows] == ["member.added"] * 4
    assert '"action": "member.added"' in provenance
    assert json.loads(prepared[3])["records"]["seqs"] == [int(r["seq"]) for r in rows]
    assert len(at.get("download_button")) == 2


def test_members_page_invites_changes_and_protects_the_last_admin(
    console: Console, org: OrgFixture
) -> None:
    at = console.signed_in("admin@acme.test", "Members")
    assert set(at.dataframe[0].value["Email"]) >= {"admin@acme.test", "auditor@acme.test"}
    assert not [w for w in at.text_input if w.type == "password"]  # no one types a password
    at.text_input(key="invite_email").input("new@acme.test")
    at.selectbox(key="invite_role").select("auditor")
    button(at, "Invite").click().run()
    assert_clean(at)
    assert [c.value for c in at.code if "accept-invitation?token=inv_" in c.value]
    assert "new@acme.test" not in set(at.dataframe[0].value["Email"])  # not a member yet
    admin_id = org.admin.user_id
    at.selectbox(key="role_member").set_value(admin_id)
    at.selectbox(key="role_new").select("member")
    button(at, "Change role").click().run()
    assert_refused(at, "last admin cannot be demoted")
    at.selectbox(key="remove_member").set_value(org.member.user_id)
    at.checkbox(key="remove_sure").check().run()
    button(at, "Remove member").click().run()
    assert_clean(at)
    assert "member@acme.test" not in set(at.dataframe[0].value["Email"])
    assert console.actions(org.id)[-2:] == ["member.invited", "member.removed"]


def test_members_page_refuses_a_bad_email(console: Console, org: OrgFixture) -> None:
    at = console.signed_in("admin@acme.test", "Members")
    at.text_input(key="invite_email").input("not an email")
    button(at, "Invite").click().run()
    assert_refused(at, "not a valid email address")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("set_base", "ftp://api.acme.test", "API base URL must be an http(s) URL"),
        ("set_leads", "30, x", "whole numbers"),
        ("set_leads", "0", "alert lead times must be"),
    ],
)
def test_settings_refuses_bad_values_clearly(
    console: Console, org: OrgFixture, field: str, value: str, message: str
) -> None:
    at = console.signed_in("admin@acme.test", "Settings")
    at.text_input(key=field).input(value)
    button(at, "Save settings").click().run()
    assert_refused(at, message)


def test_settings_saves_and_audits(console: Console, org: OrgFixture) -> None:
    at = console.signed_in("admin@acme.test", "Settings")
    at.number_input(key="set_max_days").set_value(90)
    at.text_input(key="set_leads").input("14, 3")
    button(at, "Save settings").click().run()
    assert_clean(at)
    assert "Settings saved" in texts(at, "toast")
    with Session(console.engine) as s:
        saved = orgs.get_organization(s, org.id, org.admin)
        assert (saved.max_key_lifetime_days, saved.lead_days) == (90, [14, 3])
    assert console.actions(org.id)[-1] == "settings.changed"


def test_a_page_opened_outside_the_roles_navigation_is_refused(
    console: Console, org: OrgFixture
) -> None:
    """A member reaching the Members page anyway is stopped by the page and by core."""
    settings = Settings.from_env()
    engine = _ui.engine_for(settings.database_url)
    from core.clock import utcnow

    member = SignedIn(org.member.user_id, "member@acme.test", "member", utcnow())
    at = AppTest.from_file(str(ROOT / "pages" / "members.py"), default_timeout=60)
    at.session_state[_ui.CONTEXT_KEY] = _ui.Context(
        settings, engine, member, org.id, org.name, "member"
    )
    at.run()
    assert_refused(at, "Your role (member) cannot open this page.")
    assert not at.dataframe
    with Session(console.engine) as s, pytest.raises(PermissionDenied):
        orgs.list_members(s, org.id, org.member)


def test_a_corrupt_usage_file_is_named_not_fatal(
    console: Console, org: OrgFixture, data_dir: Path
) -> None:
    with Session(console.engine) as s, s.begin():
        new = keys.create_key(
            s, org.id, org.member, name="Mobile App", expires=30, pepper=Settings.from_env().pepper
        )
    _write_usage(data_dir, org.id, new.id, n_ok=30, n_bad=10)
    day = next((data_dir / "usage").glob("date=*"))
    (day / "torn.parquet").write_bytes(b"PAR1 torn in half")
    at = console.signed_in("member@acme.test", "Usage")
    assert_clean(at)
    assert {m.label: m.value for m in at.metric}["Calls"] == "40"
    warning = " ".join(w.value for w in at.warning)
    assert f"{day.name}/torn.parquet" in warning
    at = console.signed_in("member@acme.test")
    assert_clean(at)
    assert "torn.parquet" in " ".join(w.value for w in at.warning)
