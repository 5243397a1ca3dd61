"""The audit hash chain: every change is recorded, and tampering is found and named."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text, update
from sqlalchemy.orm import Session

from core.audit import service as audit
from core.audit.keyring import keyring_for, load_public_key
from core.audit.models import AuditEvent
from core.keys import service as keys
from core.orgs import service as orgs
from tests.factories import OrgFixture, make_org

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def org(session: Session, pepper: bytes, now: datetime) -> OrgFixture:
    org = make_org(session, now=now)
    with session.begin():
        k = keys.create_key(
            session, org.id, org.admin, name="k", expires=30, pepper=pepper, now=now
        )
        keys.roll_key(session, org.admin, k.id, grace="1h", pepper=pepper, now=now)
        orgs.change_role(
            session, org.id, org.admin, org.other_member.user_id or "", "auditor", now=now
        )
        orgs.update_settings(session, org.id, org.admin, max_key_lifetime_days=200, now=now)
    return org


def test_every_change_is_in_the_log_in_order(session: Session, org: OrgFixture) -> None:
    actions = [e.action for e in audit.list_events(session, org.id, org.auditor)]
    assert actions == [
        "org.created",
        "member.added",
        "member.added",
        "member.added",
        "member.added",
        "api_key.created",
        "api_key.rolled",
        "member.role_changed",
        "settings.changed",
    ]
    report = audit.verify_chain(session, org.id, org.auditor)
    assert report.ok and report.checked == 9


def test_audit_rows_never_carry_a_secret(session: Session, org: OrgFixture) -> None:
    for event in audit.list_events(session, org.id, org.admin):
        assert "isk_" not in str(event.details).replace("isk_…", "")
    with pytest.raises(ValueError, match="secrets"):
        audit.record(session, org.id, org.admin, "api_key.created", details={"key": "x"})
    session.rollback()


def _tamper(session: Session, sql: str, **params: object) -> None:
    with session.begin():
        session.execute(text(sql), params)


def test_an_edited_event_is_named(session: Session, org: OrgFixture) -> None:
    with session.begin():
        session.execute(
            update(AuditEvent)
            .where(AuditEvent.org_id == org.id, AuditEvent.seq == 6)
            .values(details={"name": "innocent"})
        )
    report = audit.verify_chain(session, org.id, org.admin)
    assert not report.ok and report.first_bad_seq == 6 and "altered" in report.describe()


def test_an_edited_actor_is_named(session: Session, org: OrgFixture) -> None:
    _tamper(
        session,
        "UPDATE audit_events SET actor_email = 'someone@else' WHERE org_id = :o AND seq = 7",
        o=org.id,
    )
    report = audit.verify_chain(session, org.id, org.admin)
    assert not report.ok and report.first_bad_seq == 7


def test_a_removed_event_is_named(session: Session, org: OrgFixture) -> None:
    _tamper(session, "DELETE FROM audit_events WHERE org_id = :o AND seq = 4", o=org.id)
    report = audit.verify_chain(session, org.id, org.admin)
    assert not report.ok and report.first_bad_seq == 4 and "removed" in report.describe()


def test_removing_the_last_event_is_found(session: Session, org: OrgFixture) -> None:
    _tamper(session, "DELETE FROM audit_events WHERE org_id = :o AND seq = 9", o=org.id)
    report = audit.verify_chain(session, org.id, org.admin)
    assert not report.ok and report.first_bad_seq == 9


def test_reordered_events_are_found(session: Session, org: OrgFixture) -> None:
    # Swap the sequence numbers of events 5 and 6 (through a free value).
    _tamper(session, "UPDATE audit_events SET seq = 1000 WHERE org_id = :o AND seq = 5", o=org.id)
    _tamper(session, "UPDATE audit_events SET seq = 5 WHERE org_id = :o AND seq = 6", o=org.id)
    _tamper(session, "UPDATE audit_events SET seq = 6 WHERE org_id = :o AND seq = 1000", o=org.id)
    report = audit.verify_chain(session, org.id, org.admin)
    assert not report.ok and report.first_bad_seq == 5


def test_a_consistent_rewrite_of_one_event_still_breaks_the_next(
    session: Session, org: OrgFixture
) -> None:
    """Recomputing the edited event's own hash does not help: the next event's link breaks."""
    with session.begin():
        event = session.execute(
            audit.select(AuditEvent).where(AuditEvent.org_id == org.id, AuditEvent.seq == 6)
        ).scalar_one()
        event.details = {"name": "forged"}
        event.hash = audit.event_hash(event, keyring_for(session))
    report = audit.verify_chain(session, org.id, org.admin)
    assert not report.ok and report.first_bad_seq == 7


@pytest.mark.slow
def test_cli_verify_exits_non_zero_naming_the_event(
    session: Session, org: OrgFixture, database_url: str, data_dir: Path
) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "INTEGRATION_DATA_DIR": str(data_dir)}
    cmd = [sys.executable, "-m", "core", "audit", "verify", "--org", org.name]
    ok = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "9 events verified" in ok.stdout
    _tamper(
        session,
        "UPDATE audit_events SET action = 'api_key.revoked' WHERE org_id = :o AND seq = 7",
        o=org.id,
    )
    bad = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "event #7 was altered" in bad.stdout
    pem = subprocess.run(
        [sys.executable, "-m", "core", "audit", "public-key"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert pem.returncode == 0 and pem.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    public = keyring_for(session).current.public_key
    assert load_public_key(pem.stdout.encode()).public_bytes_raw() == public.public_bytes_raw()
