"""Key health and audit analytics on both backends, with answers worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.orm import Session

from core import analytics
from core.audit import service as audit
from core.errors import NotFound, PermissionDenied
from core.events import EventType
from core.keys import service as keys
from core.orgs.permissions import Actor
from core.usage.schema import from_rows, write_records
from tests.factories import make_org

T0 = datetime(2026, 5, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=40)


def _use(key_id: str, org_id: str, ts: datetime, n: int = 1, code: str = "valid") -> list[dict]:
    return [
        {
            "ts": ts + timedelta(seconds=i),
            "org_id": org_id,
            "key_id": key_id,
            "method": "GET",
            "path": "/v1/x",
            "status": 200 if code == "valid" else 401,
            "latency_ms": 12.5,
            "code": code,
            "client": "198.51.100.4",
        }
        for i in range(n)
    ]


@pytest.fixture
def world(session: Session, pepper: bytes, data_dir: Path):
    """Org with keys: busy (used now), idle (last used 20 days ago), never (unused),
    soon (expires in 5 days), gone (revoked); plus another org with its own busy key."""
    acme = make_org(session, "Acme", now=T0)
    other = make_org(session, "Other", now=T0)
    with session.begin():

        def mk(org, name, days, who=None):
            return keys.create_key(
                session,
                org.id,
                who or org.admin,
                name=name,
                expires=days,
                pepper=pepper,
                now=T0,
            ).id

        busy = mk(acme, "busy", 90)
        idle = mk(acme, "idle", 90, acme.member)
        never = mk(acme, "never", 90)
        soon = mk(acme, "soon", 45)
        gone = mk(acme, "gone", 90)
        keys.revoke_key(session, acme.admin, gone, reason="leaked", now=T0 + timedelta(days=1))
        theirs = mk(other, "theirs", 90)
    rows = (
        _use(busy, acme.id, NOW - timedelta(days=1), 5)
        + _use(busy, acme.id, NOW - timedelta(days=10), 3)
        + _use(idle, acme.id, NOW - timedelta(days=20), 2)
        + _use(soon, acme.id, NOW - timedelta(days=2), 4)
        + _use(gone, acme.id, NOW - timedelta(days=3), 6, code="key_revoked")
        + _use(theirs, other.id, NOW - timedelta(days=1), 9)
    )
    write_records(data_dir, from_rows(rows))
    ids = {"busy": busy, "idle": idle, "never": never, "soon": soon, "gone": gone}
    return acme, other, ids, data_dir


def test_idle_keys_lists_live_keys_unused_for_n_days(session, world) -> None:
    acme, _, ids, data_dir = world
    df = analytics.idle_keys(session, acme.admin, acme.id, data_dir, days=14, now=NOW)
    assert list(df["key_id"]) == [ids["idle"]]
    assert df["idle_days"][0] == 20
    assert df["calls_total"][0] == 2
    assert analytics.idle_keys(session, acme.admin, acme.id, data_dir, days=21, now=NOW).empty
    every = analytics.idle_keys(session, acme.admin, acme.id, data_dir, days=0, now=NOW)
    # longest idle first; the revoked key is not live, the unused one never used
    assert list(every["key_id"]) == [ids["idle"], ids["soon"], ids["busy"]]


def test_unused_keys_ignore_refused_calls(session, world) -> None:
    acme, _, ids, data_dir = world
    live = analytics.unused_keys(session, acme.member, acme.id, data_dir, now=NOW)
    assert list(live["key_id"]) == [ids["never"]]
    assert live["age_days"][0] == 40
    every = analytics.unused_keys(
        session, acme.auditor, acme.id, data_dir, include_inactive=True, now=NOW
    )
    # the revoked key only ever saw refused calls, so it was never used either
    assert set(every["key_id"]) == {ids["never"], ids["gone"]}


def test_expiring_keys_within_n_days_with_recent_calls(session, world) -> None:
    acme, _, ids, data_dir = world
    df = analytics.expiring_keys(session, acme.admin, acme.id, data_dir, days=7, now=NOW)
    assert list(df["key_id"]) == [ids["soon"]]
    assert df["days_left"][0] == pytest.approx(5.0)
    assert df["calls_7d"][0] == 4
    assert analytics.expiring_keys(session, acme.admin, acme.id, data_dir, days=4, now=NOW).empty


def test_key_inventory_joins_the_log(session, world) -> None:
    acme, _, ids, data_dir = world
    inv = analytics.key_inventory(session, acme.admin, acme.id, data_dir, now=NOW)
    counts = dict(zip(inv["key_id"], inv["calls_total"], strict=True))
    assert counts == {
        ids["busy"]: 8,
        ids["idle"]: 2,
        ids["never"]: 0,
        ids["soon"]: 4,
        ids["gone"]: 0,
    }
    assert set(inv[inv["status"] == "revoked"]["key_id"]) == {ids["gone"]}


def test_key_functions_refuse_other_organizations(session, world) -> None:
    acme, other, _, data_dir = world
    for fn in (analytics.idle_keys, analytics.unused_keys, analytics.expiring_keys):
        with pytest.raises(NotFound):
            fn(session, other.admin, acme.id, data_dir, now=NOW)
    # the system actor reading Other sees only Other's key
    inv = analytics.key_inventory(session, Actor.system(), other.id, data_dir, now=NOW)
    assert list(inv["name"]) == ["theirs"]
    assert list(inv["calls_total"]) == [9]


def test_usage_mismatches_names_keys_whose_sql_counters_disagree(session, world) -> None:
    acme, _, ids, data_dir = world
    df = analytics.usage_mismatches(session, acme.admin, acme.id, data_dir, now=NOW)
    # nothing rolled the log into SQL in this test, so every used key disagrees
    assert set(df["key_id"]) == {ids["busy"], ids["idle"], ids["soon"]}


@pytest.fixture
def trail(session: Session):
    acme = make_org(session, "Acme", now=T0)
    other = make_org(session, "Other", now=T0)
    system = Actor.system("console")
    with session.begin():
        for i, email in enumerate(["member@acme.test"] * 3 + ["ghost@nowhere.test"]):
            audit.record(
                session,
                acme.id,
                system,
                EventType.SIGNIN_FAILED,
                details={"email": email, "reason": "bad_password"},
                now=T0 + timedelta(days=1, minutes=i),
            )
        audit.record(  # as the console's sign-in service records it: the user is the actor
            session,
            acme.id,
            acme.member,
            EventType.SIGNIN_FAILED,
            target=("user", acme.member.user_id),
            details={"reason": "locked", "failures": "5"},
            now=T0 + timedelta(days=2),
        )
        audit.record(
            session,
            other.id,
            system,
            EventType.SIGNIN_FAILED,
            details={"email": "member@acme.test"},
            now=T0 + timedelta(days=1),
        )
    return acme, other


def test_audit_activity_by_actor_and_action(session, trail) -> None:
    acme, _ = trail
    df = analytics.audit_activity(session, acme.auditor, acme.id)
    counts = {(a, b): n for a, b, n in zip(df["actor"], df["action"], df["events"], strict=True)}
    # make_org: org.created and the four member.added, all by the operator (cli)
    assert counts == {
        ("cli", "org.created"): 1,
        ("cli", "member.added"): 4,
        ("console", "auth.signin_failed"): 4,
        ("member@acme.test", "auth.signin_failed"): 1,
    }
    assert df["events"].iloc[0] == 4
    by_action = analytics.audit_activity(session, acme.admin, acme.id, by="action")
    assert dict(zip(by_action["action"], by_action["events"], strict=True)) == {
        "member.added": 4,
        "auth.signin_failed": 5,
        "org.created": 1,
    }
    since = analytics.audit_activity(
        session, acme.admin, acme.id, by=("day",), since=T0 + timedelta(days=1)
    )
    assert list(since["events"]) == [4, 1]


def test_signin_failures_per_email_and_day(session, trail) -> None:
    acme, _ = trail
    df = analytics.signin_failures(session, acme.auditor, acme.id)
    assert list(df["email"]) == ["member@acme.test", "ghost@nowhere.test"]
    assert list(df["failures"]) == [4, 1]  # 3 named in details + 1 by the member as actor
    assert list(df["peak_hour"]) == [3, 1]
    assert list(df["while_locked"]) == [1, 0]
    assert df["first_at"][0] == pd.Timestamp(T0 + timedelta(days=1))
    by_day = analytics.signin_failures(session, acme.auditor, acme.id, by="day")
    assert list(by_day["failures"]) == [4, 1]
    assert list(by_day["emails"]) == [2, 1]


def test_audit_functions_need_audit_read(session, trail) -> None:
    acme, other = trail
    with pytest.raises(PermissionDenied):
        analytics.audit_activity(session, acme.member, acme.id)
    with pytest.raises(NotFound):
        analytics.signin_failures(session, other.admin, acme.id)
    theirs = analytics.audit_events(session, other.admin, other.id, action="auth.signin_failed")
    assert len(theirs) == 1


def test_organizations_lists_only_the_actors_own(session, trail) -> None:
    acme, other = trail
    assert list(analytics.organizations(session, acme.member)["name"]) == ["Acme"]
    assert list(analytics.organizations(session, other.auditor)["name"]) == ["Other"]
    assert list(analytics.organizations(session, Actor.system())["name"]) == ["Acme", "Other"]


def test_keys_still_called_after_revocation_name_their_owner(session: Session, world) -> None:
    acme, other, ids, data_dir = world
    df = analytics.stale_key_calls(session, acme.admin, acme.id, data_dir, until=NOW)
    assert df["key_id"].tolist() == [ids["gone"]]
    row = df.iloc[0]
    assert (row["name"], row["owner"], row["calls"], row["revoked_calls"]) == (
        "gone", acme.admin.email, 6, 6,
    )  # fmt: skip
    with pytest.raises(NotFound):
        analytics.stale_key_calls(session, other.admin, acme.id, data_dir, until=NOW)


def test_key_lists_honour_a_past_end(session: Session, world, pepper: bytes) -> None:
    acme, _other, ids, data_dir = world
    with session.begin():
        later = keys.create_key(session, acme.id, acme.admin, name="later", expires=30,
                                pepper=pepper, now=NOW).id  # fmt: skip
    before_revocation = T0 + timedelta(hours=12)
    inv = analytics.key_inventory(session, acme.admin, acme.id, data_dir, now=before_revocation)
    assert later not in set(inv["key_id"])
    gone = inv.set_index("key_id").loc[ids["gone"]]
    assert gone["status"] != "revoked" and pd.isna(gone["revoked_at"])
    unused = analytics.unused_keys(session, acme.admin, acme.id, data_dir, now=NOW)
    assert later in set(unused["key_id"])
    unused_then = analytics.unused_keys(
        session, acme.admin, acme.id, data_dir, now=NOW - timedelta(days=1)
    )
    assert later not in set(unused_then["key_id"])
