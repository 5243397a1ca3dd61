"""Create, list, revoke and roll keys, and what the verifier says at each moment."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.auth.contract import Code
from core.auth.verifier import Verifier
from core.errors import Conflict, ValidationError
from core.keys import service as keys
from tests.factories import OrgFixture, make_org


@pytest.fixture
def org(session: Session, now: datetime) -> OrgFixture:
    return make_org(session, now=now)


def verifier_at(engine: Engine, pepper: bytes, when: datetime) -> Verifier:
    return Verifier(engine, pepper, clock=lambda: when.timestamp())


def test_create_returns_the_key_once_and_lists_it_masked(
    session: Session, org: OrgFixture, pepper: bytes, now: datetime
) -> None:
    with session.begin():
        new = keys.create_key(
            session,
            org.id,
            org.member,
            name="  Production Server ",
            expires=30,
            pepper=pepper,
            now=now,
        )
    assert new.name == "Production Server"
    assert new.masked == f"isk_…{new.key[-4:]}"
    assert new.expires_at == now + timedelta(days=30)
    assert new.key not in repr(new)
    (view,) = keys.list_keys(session, org.id, org.auditor, now=now)
    assert view.id == new.id and view.masked == new.masked
    assert view.status == "active" and view.created_by == org.member.email
    assert view.usage_count == 0 and view.last_used_at is None
    assert new.key not in str(view.to_dict())


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("x" * 101, "at most 100 characters"),
        ("tab\there", "printable"),
        ("new\nline", "printable"),
    ],
)
def test_bad_names_are_refused(
    session: Session, org: OrgFixture, pepper: bytes, name: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message), session.begin():
        keys.create_key(session, org.id, org.admin, name=name, expires=30, pepper=pepper)
    assert keys.list_keys(session, org.id, org.admin) == []


def test_a_hundred_character_name_is_accepted(
    session: Session, org: OrgFixture, pepper: bytes
) -> None:
    with session.begin():
        new = keys.create_key(session, org.id, org.admin, name="é" * 100, expires=90, pepper=pepper)
    assert new.name == "é" * 100


def test_status_moves_from_active_to_expiring_to_expired(
    session: Session, org: OrgFixture, pepper: bytes, now: datetime
) -> None:
    with session.begin():
        keys.create_key(session, org.id, org.admin, name="k", expires=90, pepper=pepper, now=now)

    def status(at: datetime) -> str:
        return keys.list_keys(session, org.id, org.admin, now=at)[0].status

    assert status(now) == "active"
    assert status(now + timedelta(days=59, hours=23)) == "active"
    assert status(now + timedelta(days=60)) == "expiring"  # first lead time: 30 days
    assert status(now + timedelta(days=90)) == "expired"


def test_short_keys_are_expiring_only_within_a_lead_time_shorter_than_their_life(
    session: Session, org: OrgFixture, pepper: bytes, now: datetime
) -> None:
    with session.begin():
        keys.create_key(session, org.id, org.admin, name="k", expires=30, pepper=pepper, now=now)
    assert keys.list_keys(session, org.id, org.admin, now=now)[0].status == "active"
    later = now + timedelta(days=23)
    assert keys.list_keys(session, org.id, org.admin, now=later)[0].status == "expiring"


def test_revoke_is_felt_by_the_very_next_verification(
    engine: Engine, session: Session, org: OrgFixture, pepper: bytes, now: datetime
) -> None:
    with session.begin():
        new = keys.create_key(
            session, org.id, org.admin, name="k", expires=30, pepper=pepper, now=now
        )
    verifier = verifier_at(engine, pepper, now)
    assert verifier.verify_key(new.key).code is Code.VALID
    assert verifier.verify_key(new.key).code is Code.VALID  # now cached
    with session.begin():
        view = keys.revoke_key(session, org.admin, new.id, reason=" leaked in CI logs ", now=now)
    assert view.status == "revoked" and view.revoke_reason == "leaked in CI logs"
    assert verifier.verify_key(new.key).code is Code.KEY_REVOKED


def test_revoke_records_who_when_and_why(
    session: Session, org: OrgFixture, pepper: bytes, now: datetime
) -> None:
    with session.begin():
        new = keys.create_key(
            session, org.id, org.member, name="k", expires=30, pepper=pepper, now=now
        )
    at = now + timedelta(hours=2)
    with session.begin():
        keys.revoke_key(session, org.member, new.id, now=at)
    from core.keys.models import ApiKey

    row = session.get(ApiKey, new.id)
    assert row is not None
    assert row.revoked_at == at and row.revoked_by == org.member.user_id
    assert row.revoke_reason is None


def test_revoking_twice_is_a_conflict(
    session: Session, org: OrgFixture, pepper: bytes, now: datetime
) -> None:
    with session.begin():
        new = keys.create_key(
            session, org.id, org.admin, name="k", expires=30, pepper=pepper, now=now
        )
    with session.begin():
        keys.revoke_key(session, org.admin, new.id, now=now)
    with pytest.raises(Conflict), session.begin():
        keys.revoke_key(session, org.admin, new.id, now=now)


def test_a_rolled_back_revocation_changes_nothing(
    engine: Engine, session: Session, org: OrgFixture, pepper: bytes, now: datetime
) -> None:
    with session.begin():
        new = keys.create_key(
            session, org.id, org.admin, name="k", expires=30, pepper=pepper, now=now
        )
    verifier = verifier_at(engine, pepper, now)
    assert verifier.verify_key(new.key).valid
    session.begin()
    keys.revoke_key(session, org.admin, new.id, now=now)
    session.rollback()
    assert verifier.verify_key(new.key).valid
    assert keys.list_keys(session, org.id, org.admin, now=now)[0].status == "active"


@pytest.mark.parametrize(
    ("grace", "period"),
    [
        ("0", timedelta(0)),
        ("1h", timedelta(hours=1)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
    ],
)
def test_roll_keeps_the_old_key_valid_for_the_grace_period(
    engine: Engine,
    session: Session,
    org: OrgFixture,
    pepper: bytes,
    now: datetime,
    grace: str,
    period: timedelta,
) -> None:
    with session.begin():
        old = keys.create_key(
            session, org.id, org.admin, name="Mobile App", expires=60, pepper=pepper, now=now
        )
    at = now + timedelta(days=1)
    with session.begin():
        new, old_view = keys.roll_key(
            session, org.admin, old.id, grace=grace, pepper=pepper, now=at
        )
    assert new.name == "Mobile App" and new.key != old.key
    assert new.expires_at == at + timedelta(days=60)
    assert old_view.revoked_at == at + period

    just_before = at + period - timedelta(seconds=1)
    if period:
        assert verifier_at(engine, pepper, just_before).verify_key(old.key).valid
    ended = verifier_at(engine, pepper, at + period).verify_key(old.key)
    assert ended.code is Code.KEY_REVOKED
    assert verifier_at(engine, pepper, at).verify_key(new.key).valid


def test_roll_grace_never_outlasts_the_old_keys_expiry(
    engine: Engine, session: Session, org: OrgFixture, pepper: bytes, now: datetime
) -> None:
    with session.begin():
        old = keys.create_key(
            session, org.id, org.admin, name="k", expires=30, pepper=pepper, now=now
        )
    at = old.expires_at - timedelta(days=2)
    with session.begin():
        _new, old_view = keys.roll_key(
            session, org.admin, old.id, grace="7d", pepper=pepper, now=at
        )
    assert old_view.revoked_at == old.expires_at


@pytest.mark.parametrize("grace", ["2h", "", "forever", "7"])
def test_roll_refuses_unknown_grace_periods(
    session: Session, org: OrgFixture, pepper: bytes, now: datetime, grace: str
) -> None:
    with session.begin():
        old = keys.create_key(
            session, org.id, org.admin, name="k", expires=30, pepper=pepper, now=now
        )
    with pytest.raises(ValidationError, match="0, 1h, 24h, 7d"), session.begin():
        keys.roll_key(session, org.admin, old.id, grace=grace, pepper=pepper, now=now)


def test_revoked_or_expired_keys_cannot_be_rolled(
    session: Session, org: OrgFixture, pepper: bytes, now: datetime
) -> None:
    with session.begin():
        a = keys.create_key(
            session, org.id, org.admin, name="a", expires=30, pepper=pepper, now=now
        )
        b = keys.create_key(
            session, org.id, org.admin, name="b", expires=30, pepper=pepper, now=now
        )
        keys.revoke_key(session, org.admin, a.id, now=now)
    with pytest.raises(Conflict, match="revoked"), session.begin():
        keys.roll_key(session, org.admin, a.id, grace="0", pepper=pepper, now=now)
    with pytest.raises(Conflict, match="expired"), session.begin():
        keys.roll_key(
            session, org.admin, b.id, grace="0", pepper=pepper, now=now + timedelta(days=31)
        )


def test_a_key_is_refused_at_the_exact_second_it_expires_even_when_cached(
    engine: Engine, session: Session, org: OrgFixture, pepper: bytes, now: datetime
) -> None:
    with session.begin():
        new = keys.create_key(
            session, org.id, org.admin, name="k", expires=30, pepper=pepper, now=now
        )
    clock = {"t": now.timestamp()}
    verifier = Verifier(engine, pepper, clock=lambda: clock["t"])
    assert verifier.verify_key(new.key).valid
    clock["t"] = new.expires_at.timestamp() - 0.001
    assert verifier.verify_key(new.key).valid
    clock["t"] = new.expires_at.timestamp()
    assert verifier.verify_key(new.key).code is Code.KEY_EXPIRED


def test_unknown_keys_with_a_valid_checksum_are_invalid(engine: Engine, pepper: bytes) -> None:
    from core.keys import format as keyformat

    verdict = Verifier(engine, pepper).verify_key(keyformat.generate())
    assert verdict.code is Code.INVALID_KEY and verdict.key_id is None


def test_keys_hashed_with_another_pepper_are_unknown(
    engine: Engine, session: Session, org: OrgFixture, pepper: bytes
) -> None:
    with session.begin():
        new = keys.create_key(session, org.id, org.admin, name="k", expires=30, pepper=pepper)
    other = Verifier(engine, b"another-pepper-entirely")
    assert other.verify_key(new.key).code is Code.INVALID_KEY
