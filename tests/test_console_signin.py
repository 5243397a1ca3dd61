"""Console sign-in: first-run setup, rate limiting, sessions and their audit trail."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit.models import AuditEvent
from core.errors import AuthenticationFailed, Conflict, RateLimited, ValidationError
from core.orgs import service as orgs
from core.orgs.models import User
from core.sessions import service as signin
from core.sessions.models import ConsoleSession
from core.validation import PASSWORD_RULES
from tests.factories import PASSWORD, make_org

HOUR = timedelta(hours=1)


@contextlib.contextmanager
def _tx(session: Session) -> Iterator[None]:
    """Commit a block, ending first the read transaction an earlier check opened."""
    session.rollback()
    with session.begin():
        yield


def _attempt(session: Session, email: str, password: str, now, lifetime=HOUR):
    with _tx(session):
        outcome = signin.sign_in(session, email, password, lifetime=lifetime, now=now)
    return outcome


def _actions(session: Session, org_id: str) -> list[str]:
    return list(
        session.execute(
            select(AuditEvent.action).where(AuditEvent.org_id == org_id).order_by(AuditEvent.seq)
        ).scalars()
    )


def test_first_run_setup_creates_the_org_and_its_admin_once(session: Session, now) -> None:
    with session.begin():
        assert signin.needs_setup(session)
        _org, admin = signin.first_run_setup(
            session, "Acme", "Ann@Acme.test", PASSWORD, display_name="Ann", now=now
        )
    assert admin.email == "ann@acme.test" and admin.display_name == "Ann"
    assert admin.password_hash.startswith("$argon2id$")
    assert orgs.memberships_of(session, admin.id)[0][1] == "admin"
    with _tx(session):
        assert not signin.needs_setup(session)
        with pytest.raises(Conflict):
            signin.first_run_setup(session, "Other", "bob@other.test", PASSWORD, now=now)


@pytest.mark.parametrize("password", ["short1!", "onlyletterslong", "123456789012345"])
def test_first_run_setup_states_the_password_rules(session: Session, now, password) -> None:
    with session.begin(), pytest.raises(ValidationError) as info:
        signin.first_run_setup(session, "Acme", "ann@acme.test", password, now=now)
    assert info.value.message == PASSWORD_RULES
    assert session.execute(select(User)).first() is None


def test_sign_in_opens_a_session_that_resumes_until_it_expires(session: Session, now) -> None:
    org = make_org(session, now=now)
    outcome = _attempt(session, "ADMIN@acme.test ", PASSWORD, now)
    signed = outcome.result()
    assert signed.token and signed.token.startswith("cs_")
    assert signed.expires_at == now + HOUR
    stored = session.execute(select(ConsoleSession)).scalar_one()
    assert stored.token_hash == signin.token_hash(signed.token) != signed.token
    resumed = signin.resume(session, signed.token, now=now + HOUR - timedelta(seconds=1))
    assert resumed is not None and resumed.user_id == org.admin.user_id
    assert signin.resume(session, signed.token, now=now + HOUR) is None
    assert (
        signin.resume(
            session, signed.token[:-1] + ("x" if signed.token[-1] != "x" else "y"), now=now
        )
        is None
    )
    assert _actions(session, org.id)[-1] == "auth.signin_succeeded"


def test_sign_out_ends_the_session(session: Session, now) -> None:
    make_org(session, now=now)
    token = _attempt(session, "member@acme.test", PASSWORD, now).result().token
    with _tx(session):
        assert signin.sign_out(session, token)
    assert signin.resume(session, token, now=now) is None
    with _tx(session):
        assert not signin.sign_out(session, token)


@pytest.mark.parametrize(
    ("email", "password"),
    [("admin@acme.test", "wrong-password-1"), ("nobody@acme.test", PASSWORD), ("", "")],
)
def test_bad_credentials_get_one_message(session: Session, now, email, password) -> None:
    make_org(session, now=now)
    outcome = _attempt(session, email, password, now)
    with pytest.raises(AuthenticationFailed, match="Incorrect email or password"):
        outcome.result()
    assert session.execute(select(ConsoleSession)).first() is None


def test_failed_sign_ins_lock_the_account_then_a_success_resets(session: Session, now) -> None:
    org = make_org(session, now=now)
    for i in range(signin.MAX_FAILED_SIGNINS - 1):
        with pytest.raises(AuthenticationFailed):
            _attempt(session, "member@acme.test", f"wrong-pass-{i}", now).result()
    with pytest.raises(RateLimited, match="Try again in 5 minutes") as info:
        _attempt(session, "member@acme.test", "wrong-pass-x", now).result()
    assert info.value.retry_after == pytest.approx(300)
    # Locked: even the right password is refused, without revealing it was right.
    with pytest.raises(RateLimited):
        _attempt(session, "member@acme.test", PASSWORD, now + timedelta(minutes=4)).result()
    # Another account is not affected.
    assert _attempt(session, "admin@acme.test", PASSWORD, now).result()
    later = now + timedelta(minutes=5, seconds=1)
    assert _attempt(session, "member@acme.test", PASSWORD, later).result()
    user = orgs.user_by_email(session, "member@acme.test")
    session.refresh(user)
    assert user.failed_signins == 0 and user.locked_until is None
    failed = [a for a in _actions(session, org.id) if a == "auth.signin_failed"]
    assert len(failed) == signin.MAX_FAILED_SIGNINS + 1


def test_repeated_lockouts_grow_longer(session: Session, now) -> None:
    make_org(session, now=now)
    at = now
    for _ in range(signin.MAX_FAILED_SIGNINS):
        _attempt(session, "member@acme.test", "wrong-pass-0", at)
    at += timedelta(minutes=6)
    with pytest.raises(RateLimited, match="10 minutes"):
        _attempt(session, "member@acme.test", "wrong-pass-0", at).result()


def test_sign_in_events_go_to_every_organization_of_the_user(session: Session, now) -> None:
    first = make_org(session, "Acme", now=now)
    with _tx(session):
        second, _ = orgs.create_organization(session, "Beta", "admin@acme.test", None, now=now)
    _attempt(session, "admin@acme.test", "wrong-password-1", now)
    for org_id in (first.id, second.id):
        event = (
            session.execute(
                select(AuditEvent)
                .where(AuditEvent.org_id == org_id)
                .order_by(AuditEvent.seq.desc())
            )
            .scalars()
            .first()
        )
        assert event is not None and event.action == "auth.signin_failed"
        assert event.actor_email == "admin@acme.test"
        assert "wrong-password-1" not in str(event.details)


def test_a_disabled_account_cannot_sign_in_or_resume(session: Session, now) -> None:
    make_org(session, now=now)
    token = _attempt(session, "member@acme.test", PASSWORD, now).result().token
    with _tx(session):
        orgs.user_by_email(session, "member@acme.test").disabled = True
    assert signin.resume(session, token, now=now) is None
    with pytest.raises(AuthenticationFailed):
        _attempt(session, "member@acme.test", PASSWORD, now).result()


@pytest.mark.parametrize(("value", "hours"), [(None, 12.0), ("", 12.0), ("0.5", 0.5), ("48", 48.0)])
def test_session_lifetime_comes_from_the_environment(value, hours) -> None:
    env = {} if value is None else {signin.SESSION_ENV: value}
    assert signin.session_lifetime(env) == timedelta(hours=hours)


@pytest.mark.parametrize("value", ["abc", "0", "-1", "100000", "nan"])
def test_a_bad_session_lifetime_is_refused_clearly(value) -> None:
    with pytest.raises(ValidationError, match=signin.SESSION_ENV):
        signin.session_lifetime({signin.SESSION_ENV: value})
