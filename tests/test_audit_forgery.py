"""A database writer without the audit key cannot make a rewritten chain verify.

Each test plays an attacker with full write access to the database (raw SQL, the
product's own hash functions) but not the audit key, and checks `verify_chain` names
the first event they touched: re-chained rewrites, truncated tails, deleted or replayed
checkpoints, a swapped key. Key changes and concurrent writers keep a chain intact.
"""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, select, text, update
from sqlalchemy.orm import Session

from core.audit import checkpoints
from core.audit import service as audit
from core.audit.keyring import AuditKey, AuditKeyring, bind, keyring_for
from core.audit.models import AuditCheckpoint, AuditEvent
from core.config import Settings
from core.db import make_engine, migrate
from core.events import EventType
from core.orgs.models import Organization
from core.orgs.permissions import Actor
from tests.factories import OrgFixture, make_org

REVOKE_SEQ = 6


@pytest.fixture
def org(session: Session, now: datetime) -> OrgFixture:
    """An organization whose sixth event is a revocation with a reason, ten events in all."""
    org = make_org(session, now=now)
    with session.begin():
        audit.record(
            session, org.id, org.admin, EventType.API_KEY_REVOKED,
            target=("api_key", "key_1"), details={"name": "billing", "reason": "leaked in CI"},
            now=now,
        )  # fmt: skip
        for i in range(4):
            audit.record(session, org.id, org.admin, EventType.SETTINGS_CHANGED,
                         details={"n": i}, now=now + timedelta(minutes=i))  # fmt: skip
    assert audit.verify_chain(session, org.id, org.auditor).ok
    session.rollback()  # end the read
    return org


def _events(session: Session, org_id: str) -> list[AuditEvent]:
    return list(
        session.execute(
            select(AuditEvent).where(AuditEvent.org_id == org_id).order_by(AuditEvent.seq)
        ).scalars()
    )


def _rechain_from(session: Session, org_id: str, seq: int, rehash) -> None:
    """Recompute every hash from `seq` on and move the organization's head: a forger's rewrite."""
    events = _events(session, org_id)
    prev = events[seq - 2].hash if seq > 1 else audit.GENESIS
    for e in events[seq - 1 :]:
        e.prev_hash = prev
        e.hash = rehash(e)
        prev = e.hash
    session.execute(update(Organization).where(Organization.id == org_id).values(audit_head=prev))


def _forger_key(real_id: str) -> AuditKey:
    """A key of the forger's own that claims the real key's id."""
    own = AuditKey.from_secret(secrets.token_bytes(32))
    return AuditKey(real_id, own.chain_key, own.signing_key)


def _unkeyed(e: AuditEvent) -> str:
    e.key_id = None
    return audit.legacy_hash(e)


@pytest.mark.parametrize("how", ["unkeyed_sha256", "own_key_under_the_real_id"])
def test_a_rewritten_and_rechained_event_is_named(
    session: Session, org: OrgFixture, how: str
) -> None:
    real = keyring_for(session)
    forger = AuditKeyring(_forger_key(real.current.id))
    rehash = _unkeyed if how == "unkeyed_sha256" else (lambda e: audit.event_hash(e, forger))
    with session.begin():
        revoke = _events(session, org.id)[REVOKE_SEQ - 1]
        revoke.details = {**revoke.details, "reason": "routine rotation"}
        _rechain_from(session, org.id, REVOKE_SEQ, rehash)
        session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.org_id == org.id))
    report = audit.verify_chain(session, org.id, org.auditor)
    assert not report.ok and report.first_bad_seq == REVOKE_SEQ, report
    assert f"event #{REVOKE_SEQ} was altered" in report.describe()


def test_rewriting_every_event_without_the_key_is_found(session: Session, org: OrgFixture) -> None:
    with session.begin():
        _rechain_from(session, org.id, 1, _unkeyed)
        session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.org_id == org.id))
    report = audit.verify_chain(session, org.id, org.auditor)
    assert not report.ok and report.first_bad_seq == 1 and "keyed" in report.describe()


def _truncate(session: Session, org_id: str, keep: int) -> None:
    """Delete the events after `keep` and point the head at event `keep`: a clean-looking log."""
    head = _events(session, org_id)[keep - 1].hash
    session.execute(delete(AuditEvent).where(AuditEvent.org_id == org_id, AuditEvent.seq > keep))
    session.execute(
        update(Organization)
        .where(Organization.id == org_id)
        .values(audit_seq=keep, audit_head=head)
    )


def test_a_truncated_tail_is_found_by_the_signed_checkpoint(
    session: Session, org: OrgFixture, now: datetime
) -> None:
    with session.begin():
        assert audit.seal(session, org.id, now=now) is not None  # seals event #10
    with session.begin():
        _truncate(session, org.id, 7)
    report = audit.verify_chain(session, org.id, org.auditor)
    assert not report.ok and report.first_bad_seq == 8
    assert "events #8 to #10 were removed" in report.describe()


def test_a_truncated_tail_with_its_checkpoints_deleted_is_found_by_the_copy(
    session: Session, org: OrgFixture, now: datetime
) -> None:
    with session.begin():
        audit.seal(session, org.id, now=now)
    copy = checkpoints.digest_path(keyring_for(session).digest_dir, org.id)
    assert copy.is_file() and len(copy.read_text().splitlines()) == 2
    with session.begin():
        _truncate(session, org.id, 7)
        session.execute(
            delete(AuditCheckpoint).where(AuditCheckpoint.org_id == org.id, AuditCheckpoint.n > 1)
        )
    report = audit.verify_chain(session, org.id, org.auditor)
    assert not report.ok and report.first_bad_seq == 8
    assert "with their checkpoints" in report.describe()


def test_a_rolled_back_seal_leaves_no_copy_outside_the_database(
    session: Session, org: OrgFixture, now: datetime
) -> None:
    copy = checkpoints.digest_path(keyring_for(session).digest_dir, org.id)
    before = copy.read_text()
    session.begin()
    audit.seal(session, org.id, now=now)
    session.rollback()
    assert copy.read_text() == before
    assert audit.verify_chain(session, org.id, org.auditor).ok


def test_a_deleted_middle_checkpoint_is_found(
    session: Session, org: OrgFixture, now: datetime
) -> None:
    with session.begin():
        audit.record(session, org.id, org.admin, EventType.SETTINGS_CHANGED, now=now)
        audit.seal(session, org.id, now=now)
        audit.record(session, org.id, org.admin, EventType.SETTINGS_CHANGED, now=now)
        audit.seal(session, org.id, now=now)
    with session.begin():
        session.execute(
            delete(AuditCheckpoint).where(AuditCheckpoint.org_id == org.id, AuditCheckpoint.n == 2)
        )
    report = audit.verify_chain(session, org.id, org.auditor)
    assert not report.ok and "checkpoint #2 was removed" in report.describe()


def test_a_replayed_old_checkpoint_does_not_verify(
    session: Session, org: OrgFixture, now: datetime
) -> None:
    """Copying checkpoint #1's signature over #2 (to hide what #2 sealed) breaks its signature."""
    with session.begin():
        audit.seal(session, org.id, now=now)
    with session.begin():
        first = session.execute(
            select(AuditCheckpoint).where(AuditCheckpoint.org_id == org.id, AuditCheckpoint.n == 1)
        ).scalar_one()
        session.execute(
            update(AuditCheckpoint)
            .where(AuditCheckpoint.org_id == org.id, AuditCheckpoint.n == 2)
            .values(seq=first.seq, head=first.head, ts=first.ts, signature=first.signature)
        )
    report = audit.verify_chain(session, org.id, org.auditor)
    assert not report.ok and "checkpoint #2 has a forged signature" in report.describe()


def test_a_checkpoint_forged_with_another_key_is_refused(
    session: Session, org: OrgFixture, now: datetime
) -> None:
    real = keyring_for(session)
    forger = AuditKeyring(_forger_key(real.current.id))
    with session.begin():
        last = checkpoints.latest(session, org.id)
        checkpoints.seal(session, org.id, 10, _events(session, org.id)[9].hash, forger, now,
                         last=last)  # fmt: skip
    report = audit.verify_chain(session, org.id, org.auditor)
    assert not report.ok and "forged signature" in report.describe()


def test_a_missing_audit_key_makes_verification_fail_naming_the_key(
    session: Session, org: OrgFixture
) -> None:
    other = AuditKeyring.from_secret(secrets.token_bytes(32))
    report = audit.verify_chain(session, org.id, org.auditor, keyring=other)
    assert not report.ok and report.first_bad_seq == 1
    assert keyring_for(session).current.id in report.describe()
    assert "not configured" in report.describe()


def test_a_rotated_key_continues_the_chain_and_old_events_need_the_retired_key(
    session: Session, engine: Engine, org: OrgFixture, now: datetime, settings: Settings
) -> None:
    old = keyring_for(session)
    new = AuditKey.from_secret(secrets.token_bytes(32))
    bind(engine, AuditKeyring(new, (old.current,), old.digest_dir))
    with session.begin():
        audit.record(session, org.id, org.admin, EventType.SETTINGS_CHANGED, now=now)
    events = _events(session, org.id)
    assert [e.action for e in events[-2:]] == ["audit.key_changed", "settings.changed"]
    assert events[-2].details == {
        "from_key": old.current.id, "to_key": new.id, "from_key_held": True,
    }  # fmt: skip
    assert audit.verify_chain(session, org.id, org.auditor).ok
    without_old = AuditKeyring(new, (), old.digest_dir)
    report = audit.verify_chain(session, org.id, org.auditor, keyring=without_old)
    assert not report.ok and report.first_bad_seq == 1


def test_a_retired_key_cannot_take_the_chain_back(
    session: Session, engine: Engine, org: OrgFixture, now: datetime
) -> None:
    """Whoever holds a retired key appends a 'change' back to it: the downgrade is named."""
    old = keyring_for(session)
    new = AuditKey.from_secret(secrets.token_bytes(32))
    rotated = AuditKeyring(new, (old.current,), old.digest_dir)
    bind(engine, rotated)
    with session.begin():
        audit.record(session, org.id, org.admin, EventType.SETTINGS_CHANGED, now=now)
    bind(engine, AuditKeyring(old.current, (), old.digest_dir))  # the thief's keyring
    with session.begin():
        audit.record(session, org.id, org.admin, EventType.API_KEY_REVOKED, now=now)
    report = audit.verify_chain(session, org.id, org.auditor, keyring=rotated)
    assert not report.ok and report.first_bad_seq == 13
    assert "back to retired audit key" in report.describe()


def test_an_emptied_log_is_not_intact(session: Session, org: OrgFixture) -> None:
    with session.begin():
        session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.org_id == org.id))
        session.execute(delete(AuditEvent).where(AuditEvent.org_id == org.id))
        session.execute(
            update(Organization)
            .where(Organization.id == org.id)
            .values(audit_seq=0, audit_head=audit.GENESIS)
        )
    report = audit.verify_chain(session, org.id, org.auditor)
    assert not report.ok and "no audit events" in report.describe()


def test_checkpoints_are_sealed_periodically(
    session: Session, org: OrgFixture, now: datetime
) -> None:
    with session.begin():
        for _ in range(checkpoints.SEAL_EVERY_EVENTS):
            audit.record(session, org.id, org.admin, EventType.SETTINGS_CHANGED, now=now)
        audit.record(session, org.id, org.admin, EventType.SETTINGS_CHANGED,
                     now=now + checkpoints.SEAL_EVERY)  # fmt: skip
    cps = session.execute(
        select(AuditCheckpoint.n, AuditCheckpoint.seq).where(AuditCheckpoint.org_id == org.id)
    ).all()
    assert [tuple(c) for c in cps] == [(1, 1), (2, 101), (3, 111)]
    assert audit.verify_chain(session, org.id, org.auditor).ok


def test_concurrent_writers_keep_one_chain_and_numbered_checkpoints(
    engine: Engine, org: OrgFixture, now: datetime
) -> None:
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for i in range(10):
                with Session(engine) as s, s.begin():
                    at = now + timedelta(hours=worker * 10 + i)  # every event due a seal
                    audit.record(s, org.id, org.admin, EventType.SETTINGS_CHANGED,
                                 details={"w": worker, "i": i}, now=at)  # fmt: skip
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    with Session(engine) as s:
        report = audit.verify_chain(s, org.id, org.auditor)
        ns = (
            s.execute(select(AuditCheckpoint.n).where(AuditCheckpoint.org_id == org.id))
            .scalars()
            .all()
        )
    assert report.ok and report.checked == 50, report
    assert sorted(ns) == list(range(1, len(ns) + 1)) and len(ns) > 10


def test_the_upgrade_seals_an_unkeyed_chain_as_it_was(tmp_path: Path) -> None:
    """A database at 0005 with unkeyed events: the upgrade appends a keyed seal and a checkpoint."""
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, database_url=f"sqlite:///{tmp_path / 'old.db'}")
    engine = make_engine(settings.database_url)
    bind(engine, AuditKeyring.from_settings(settings))
    try:
        migrate(engine, "0005")
        ts = datetime(2026, 1, 5, 9, 0)
        head = audit.GENESIS
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO organizations (id, name, created_at, max_key_lifetime_days, "
                "alert_lead_days, api_base_url, audit_seq, audit_head) VALUES "
                "('org_old', 'Old Co', :ts, 365, '{\"days\": [30]}', 'https://x', 0, :g)"
            ), {"ts": ts, "g": head})  # fmt: skip
            for seq in (1, 2, 3):
                e = AuditEvent(
                    org_id="org_old", seq=seq, ts=ts.replace(tzinfo=UTC),
                    actor_type="system", actor_id=None, actor_email="cli",
                    action="settings.changed", target_type=None, target_id=None,
                    details={"n": seq}, prev_hash=head, key_id=None,
                )  # fmt: skip
                e.hash = audit.legacy_hash(e)
                conn.execute(text(
                    "INSERT INTO audit_events (org_id, seq, ts, actor_type, actor_email, action,"
                    " details, prev_hash, hash) VALUES ('org_old', :seq, :ts, 'system', 'cli',"
                    " 'settings.changed', :d, :p, :h)"
                ), {"seq": seq, "ts": ts, "d": f'{{"n": {seq}}}', "p": head,
                    "h": e.hash})  # fmt: skip
                head = e.hash
            conn.execute(
                text("UPDATE organizations SET audit_seq = 3, audit_head = :h"), {"h": head}
            )
        migrate(engine)
        with Session(engine) as s:
            report = audit.verify_chain(s, "org_old", Actor.system())
            assert report.ok and report.checked == 4 and report.checkpoints == 1, report
            seal = _events(s, "org_old")[3]
            assert seal.action == "audit.chain_upgraded"
            assert seal.details["legacy_events"] == 3 and seal.details["legacy_head"] == head
        with engine.begin() as conn:  # an edit of the unkeyed past after the upgrade
            conn.execute(text("UPDATE audit_events SET details = '{\"n\": 9}' WHERE seq = 2"))
        with Session(engine) as s:
            report = audit.verify_chain(s, "org_old", Actor.system())
        assert not report.ok and report.first_bad_seq == 2
    finally:
        engine.dispose()


def test_the_audit_key_is_a_0600_file_or_a_long_environment_secret(tmp_path: Path) -> None:
    import stat

    from core.errors import ValidationError

    settings = Settings.from_env({"INTEGRATION_DATA_DIR": str(tmp_path)})
    ring = AuditKeyring.from_settings(settings)
    path = tmp_path / "audit_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert AuditKeyring.from_settings(settings).current.id == ring.current.id  # stable
    env = {"INTEGRATION_DATA_DIR": str(tmp_path), "INTEGRATION_AUDIT_KEY": "k" * 40,
           "INTEGRATION_AUDIT_KEY_RETIRED": path.read_text().strip()}  # fmt: skip
    rotated = AuditKeyring.from_settings(Settings.from_env(env))
    assert rotated.current.id != ring.current.id
    assert [k.id for k in rotated.retired] == [ring.current.id]
    with pytest.raises(ValidationError, match="at least 32"):
        Settings.from_env({"INTEGRATION_AUDIT_KEY": "short"})
    assert "k" * 40 not in repr(Settings.from_env(env))


@pytest.mark.slow
def test_cli_seal_signs_every_head(
    session: Session, org: OrgFixture, database_url: str, data_dir: Path
) -> None:
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(DATABASE_URL=database_url, INTEGRATION_DATA_DIR=str(data_dir))
    cmd = [sys.executable, "-m", "core", "audit", "seal", "--json"]
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"org_id": org.id, "checkpoint": 2, "seq": 10}]
    again = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=60)
    assert json.loads(again.stdout)[0]["checkpoint"] is None  # already sealed
    assert audit.verify_chain(session, org.id, org.auditor).sealed_seq == 10
